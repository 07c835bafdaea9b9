r"""Posterior collapse and two remedies (chapter 9): the KL per latent dimension, KL warm-up and free bits.

A latent dimension j has *collapsed* when q_φ(z_j|x) = p(z_j) for every x: its KL term is zero, the decoder ignores
it, and its encoder mean does not move with x (it is not an active unit, :mod:`vaecourse.diagnostics`). Two
remedies change the objective that training climbs, never the ELBO that is reported:

- **KL warm-up** (KL annealing, Bowman et al., 2016): the KL weight β_t rises linearly from 0 to β over the first
  ``warmup_epochs`` epochs (:func:`kl_weight`), so the decoder learns to use z before the KL term pushes q to p;
- **free bits** (Kingma et al., 2016): each dimension's KL, averaged over the mini-batch M, costs nothing below a
  floor of λ nats,

  .. math::  \tilde{\mathcal L} = \mathbb E_{x \in M}\,\mathbb E_q[\log p_θ(x \mid z)]
             - β \sum_{j=1}^{d} \max\big(λ,\ \mathbb E_{x \in M}[KL(q_φ(z_j \mid x) \,\|\, p(z_j))]\big)

  (:func:`free_bits_kl`), so no dimension gains anything by going below λ.

Both are options of :class:`vaecourse.train.TrainConfig` (``warmup_epochs``, ``free_bits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from .diagnostics import ACTIVE_THRESHOLD, active_units

__all__ = ["LatentUsage", "free_bits_kl", "kl_per_dimension", "kl_weight", "latent_usage"]


def _diagonal_normal(distribution: Distribution, name: str) -> Normal:
    if (
        isinstance(distribution, Independent)
        and isinstance(distribution.base_dist, Normal)
        and distribution.reinterpreted_batch_ndims == 1
    ):
        return distribution.base_dist
    raise ValueError(
        f"{name} must be a diagonal Gaussian, Independent(Normal(loc, scale), 1), for a KL per latent dimension "
        f"(free bits need the N(0, I) prior, VAEConfig(prior='standard')); got {type(distribution).__name__}"
    )


def kl_per_dimension(q: Distribution, prior: Distribution) -> torch.Tensor:
    """KL(q(z_j|x) ‖ p(z_j)) for each latent dimension j, ``[..., d]`` (chapter 9): the terms whose sum over j is
    the ELBO's KL term, for a diagonal Gaussian q and a diagonal Gaussian prior such as N(0, I)."""
    return kl_divergence(_diagonal_normal(q, "q"), _diagonal_normal(prior, "the prior"))


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Σ_j max(λ, mean over the batch of KL_j): the KL term of the free-bits objective (Kingma et al., 2016), from
    the per-dimension KLs ``kl`` ``[B, d]`` and the floor λ = ``free_bits`` in nats per dimension (chapter 9). A
    dimension whose batch-mean KL is below λ counts as λ and gets no gradient from this term."""
    if not isinstance(kl, torch.Tensor) or kl.ndim != 2:
        raise ValueError(f"kl must be the KL per example and latent dimension [B, d], got {getattr(kl, 'shape', kl)}")
    if isinstance(free_bits, bool) or not isinstance(free_bits, float | int) or free_bits < 0:
        raise ValueError(f"free_bits must be a number of nats >= 0, got {free_bits!r}")
    return kl.mean(0).clamp(min=free_bits).sum()


def kl_weight(epoch: int, beta: float = 1.0, warmup_epochs: float = 0.0) -> float:
    """The KL weight of epoch ``epoch`` (0, 1, …) under KL warm-up (chapter 9): β·min(1, epoch / warmup_epochs),
    from 0 at the first epoch to β after ``warmup_epochs``; β throughout without warm-up.

    >>> [kl_weight(epoch, 1.0, 4) for epoch in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
    if not warmup_epochs:
        return beta
    return beta * min(1.0, epoch / warmup_epochs)


@dataclass(frozen=True)
class LatentUsage:
    """How a model uses its latent dimensions on some data (chapter 9): ``kl`` per dimension ``[d]`` (the mean over
    the examples of KL(q_φ(z_j|x) ‖ p(z_j)), nats), its sum ``total_kl``, and the ``active`` units (Burda et al.'s
    Cov_x E[z_j|x] > ``threshold``) with their ``count``."""

    kl: torch.Tensor
    total_kl: float
    active: torch.Tensor
    count: int
    threshold: float

    def __str__(self) -> str:
        return (
            f"{self.count} of {len(self.kl)} latent dimensions active, KL = {self.total_kl:.2f} nats "
            f"(largest per dimension {self.kl.max().item():.2f})"
        )


@torch.no_grad()
def latent_usage(model, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000) -> LatentUsage:
    """The KL per latent dimension and the active units of ``model`` over the examples ``x`` ``[N, D]``
    (chapter 9); the model needs a diagonal Gaussian encoder and prior (N(0, I))."""
    units = active_units(model, x, threshold=threshold, batch_size=batch_size)
    prior = model.prior
    kl = torch.cat([kl_per_dimension(model.encode(batch), prior) for batch in x.split(batch_size)])  # [N, d]
    per_dimension = kl.double().mean(0).cpu()
    return LatentUsage(per_dimension, per_dimension.sum().item(), units.active, units.count, units.threshold)
