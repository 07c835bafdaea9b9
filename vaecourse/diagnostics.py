r"""Diagnostics of a trained VAE's latent space (chapters 6-8).

**Active units** (Burda, Grosse & Salakhutdinov, 2016): a latent dimension j is *active* when the encoder's mean of
z_j moves with the data,

.. math::  A_j = \operatorname{Cov}_x\big(\mathbb E_{q_φ(z \mid x)}[z_j]\big) > 0.01 .

An inactive dimension has collapsed onto the prior (its KL term is near zero and the decoder ignores it): the
number of active units is the effective size of the code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_num_samples

__all__ = ["ACTIVE_THRESHOLD", "ActiveUnits", "active_units"]

ACTIVE_THRESHOLD = 0.01  # Burda et al.'s threshold on the variance over x of E_q[z_j | x]


@dataclass
class ActiveUnits:
    """``count`` active units of ``latent_dim``; per dimension, the ``variance`` over x of E_q[z_j | x] and whether
    it is ``active`` (variance above ``threshold``)."""

    count: int
    latent_dim: int
    active: torch.Tensor
    variance: torch.Tensor
    threshold: float

    def __str__(self) -> str:
        return f"{self.count} of {self.latent_dim} latent dimensions active (Cov_x E[z_j|x] > {self.threshold:g})"


@torch.no_grad()
def active_units(model, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000) -> ActiveUnits:
    """The active units of ``model``'s encoder over the examples ``x`` ``[N, D]`` (N ≥ 2; chapter 6): the variance
    over the examples of the posterior mean ``model.encode(x).mean``, dimension by dimension, against
    ``threshold``."""
    check_num_samples(batch_size, "batch_size")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) < 2:
        raise ValueError(f"x must be a batch of at least 2 examples [N, D], got {getattr(x, 'shape', type(x))}")
    if isinstance(threshold, bool) or not isinstance(threshold, float | int) or threshold < 0:
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
    means = torch.cat([model.encode(batch).mean for batch in x.split(batch_size)]).double()  # [N, d]
    variance = means.var(0).cpu()
    active = variance > threshold
    return ActiveUnits(int(active.sum()), len(variance), active, variance, float(threshold))
