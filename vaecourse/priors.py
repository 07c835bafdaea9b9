r"""Priors p(z) for the VAE: modules whose call returns a ``torch.distributions.Distribution`` (chapters 6 and 8).

A prior is a module, like the encoder and the decoder, so that a learned prior p_λ(z) (chapter 8) trains with the
rest of the model and drops into :class:`vaecourse.vae.VAE` with no other change: the VAE only ever asks for
``prior()`` and uses its ``log_prob``, ``sample`` and ``rsample``. Chapter 6 uses the fixed N(0, I).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

__all__ = ["PRIORS", "StandardNormal", "make_prior"]


class StandardNormal(nn.Module):
    r"""p(z) = N(0, I) in ``latent_dim`` dimensions, the lecture's prior (chapter 6). No parameters.

    Its mean and scale are buffers, so the prior follows the model to any device with ``.to(...)``.

    >>> prior = StandardNormal(2)()
    >>> prior.event_shape, round(prior.log_prob(torch.zeros(2)).item(), 4)
    (torch.Size([2]), -1.8379)
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}"


PRIORS = {"standard": StandardNormal}


def make_prior(name: str, latent_dim: int, **options) -> nn.Module:
    """The prior called ``name`` (``"standard"``; chapter 8 adds the learned ones) in ``latent_dim`` dimensions."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}: expected one of {', '.join(map(repr, PRIORS))}")
    return PRIORS[name](latent_dim, **options)
