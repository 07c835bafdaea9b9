"""Input checks shared by the package's public functions: fail early, and say what was expected."""

from __future__ import annotations

import torch


def check_last_dim(tensor: torch.Tensor, size: int, name: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` is a floating-point tensor shaped ``[..., size]``."""
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [..., {size}], got {type(tensor).__name__}")
    if tensor.ndim == 0 or tensor.shape[-1] != size:
        raise ValueError(f"{name} must have shape [..., {size}], got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def check_positive_int(value, name: str) -> int:
    """``value`` if it is a positive int (not a bool), else ``ValueError`` naming ``name``: the one check of
    sizes, counts and widths."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_num_samples(num_samples, name: str = "num_samples") -> int:
    """A Monte Carlo sample count: :func:`check_positive_int` under the estimators' argument name."""
    return check_positive_int(num_samples, name)
