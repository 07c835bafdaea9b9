"""Small data shared by the model tests (tests/test_vae.py, test_conv.py, test_iwae.py)."""

from __future__ import annotations

import torch


def binary(*shape: int, seed: int = 0) -> torch.Tensor:
    """Binary "images" of the given shape, 30 % ones, from their own generator (the global one is left alone)."""
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.3).float()
