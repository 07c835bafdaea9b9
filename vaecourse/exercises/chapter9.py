r"""Checkers for the exercises of chapter 9, "Beyond the lecture (1): real-valued pixels and posterior collapse".

- :func:`check_gaussian_log_likelihood`: ``gaussian_log_likelihood(x, loc, sigma)``, the Gaussian decoder's
  log-likelihood of each image, log N(x; μ, diag σ²) = −Σ_j (x_j − μ_j)²/(2σ_j²) − Σ_j log σ_j − (D/2) log 2π;
- :func:`check_free_bits_kl`: ``free_bits_kl(kl, free_bits)``, the KL term of the free-bits objective of Kingma et
  al. (2016), Σ_j max(λ, mean over the batch of KL_j), from the KL per example and latent dimension ``[B, d]``.

Every input is built from a fixed seed, so a correct answer matches the reference to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import Independent, Normal

from ..collapse import free_bits_kl
from .checking import DEFAULT_DIAGNOSES, Result, check_function, close_enough, require_function

__all__ = ["check_free_bits_kl", "check_gaussian_log_likelihood", "free_bits_kl", "gaussian_log_likelihood"]

_DTYPE = torch.float64


def _first_hint(got: torch.Tensor, variants) -> str | None:
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


# --- Exercise 1: the Gaussian decoder's log-likelihood ------------------------------------------------------------


def gaussian_log_likelihood(x: torch.Tensor, loc: torch.Tensor, sigma) -> torch.Tensor:
    r"""log N(x; loc, diag σ²) of each image, ``x`` and ``loc`` ``[B, D]`` → ``[B]``; ``sigma`` is σ, the standard
    deviation: a number or a ``[D]`` tensor (chapter 9). The reference, from ``torch.distributions``."""
    scale = torch.as_tensor(sigma, dtype=loc.dtype).expand_as(loc)
    return Independent(Normal(loc, scale), 1).log_prob(x)


def _gaussian_mistakes(got, expected, case):
    x, loc = case["x"], case["loc"]
    sigma = torch.as_tensor(case["sigma"], dtype=_DTYPE).expand_as(loc)
    squared = (x - loc) ** 2
    dimension = x.shape[-1]
    constant = 0.5 * dimension * math.log(2 * math.pi)
    log_sigma = sigma.log().sum(-1)
    variants = [
        (
            -(squared / (2 * sigma**4)).sum(-1) - 2 * log_sigma - constant,
            "sigma is σ, the standard deviation: you used σ² where σ belongs (the variance of the Gaussian is σ²)",
        ),
        (
            -(squared / (2 * sigma)).sum(-1) - 0.5 * log_sigma - constant,
            "sigma is already σ, the standard deviation: you took it for the variance σ²",
        ),
        (
            -(squared / (2 * sigma**2)).mean(-1) - log_sigma / dimension - constant / dimension,
            "you averaged over the pixels: log N(x; μ, diag σ²) of an image is a sum over its D pixels (.sum(-1)), "
            "as the ELBO's reconstruction term is",
        ),
        (
            -squared.sum(-1),
            "that is the summed squared error alone: the log-likelihood divides it by 2σ² and adds "
            "−Σ_j log σ_j − (D/2) log 2π",
        ),
        (
            -(squared / sigma**2).sum(-1) - log_sigma - constant,
            "the squared error is divided by σ², not by 2σ²: −(x − μ)²/(2σ²) per pixel",
        ),
        (
            -(squared / (2 * sigma**2)).sum(-1) - constant,
            "the term −Σ_j log σ_j is missing: it is what makes a small σ expensive (without it σ → 0 wins)",
        ),
    ]
    return _first_hint(got, variants)


def _gaussian_cases() -> list[dict]:
    """Images in [0, 1], means near them, and σ a number (twice) or one σ per pixel, far from 1 (σ, σ² and √σ
    differ)."""
    generator = torch.Generator().manual_seed(9)
    cases = []
    for batch_size, pixels, sigma in ((5, 8, 0.1), (4, 6, None), (3, 64, 0.4)):
        x = torch.rand(batch_size, pixels, generator=generator, dtype=_DTYPE)
        loc = (x + 0.2 * torch.randn(batch_size, pixels, generator=generator, dtype=_DTYPE)).clamp(0, 1)
        if sigma is None:
            sigma = 0.05 + 0.5 * torch.rand(pixels, generator=generator, dtype=_DTYPE)
        cases.append({"x": x, "loc": loc, "sigma": sigma})
    return cases


def check_gaussian_log_likelihood(function: Callable) -> Result:
    """Check ``function(x, loc, sigma) -> [B]``: the Gaussian decoder's log-likelihood of each image (chapter 9),
    log N(x; μ, diag σ²), for σ a number or one σ per pixel. Diagnoses σ² or √σ where σ belongs, a mean over the
    pixels, the squared error alone, a missing 2 or a missing −Σ log σ, and a missing −(D/2) log 2π.
    """
    require_function(function, "check_gaussian_log_likelihood")
    return check_function(
        "gaussian_log_likelihood",
        function,
        gaussian_log_likelihood,
        _gaussian_cases(),
        diagnoses=(_gaussian_mistakes, *DEFAULT_DIAGNOSES),
    )


# --- Exercise 2: the free-bits KL term ----------------------------------------------------------------------------


def _free_bits_mistakes(got, expected, case):
    kl, floor = case["kl"], case["free_bits"]
    variants = [
        (
            kl.clamp(min=floor).mean(0).sum(),
            "you applied the floor to each example before the mean over the batch: free bits floors the batch mean "
            "of each dimension's KL, max(λ, mean_B KL_j), so that an example may still use less than λ",
        ),
        (
            kl.clamp(min=floor).sum(-1).mean(),
            "you applied the floor to each example before the mean over the batch: free bits floors the batch mean "
            "of each dimension's KL, max(λ, mean_B KL_j)",
        ),
        (
            kl.mean(0).clamp(max=floor).sum(),
            "you took the minimum of λ and the KL: the floor is a maximum, max(λ, mean_B KL_j)",
        ),
        (
            (kl.mean(0) - floor).clamp(min=0).sum(),
            "you subtracted λ (a hinge, max(0, KL_j − λ)): it has the same gradient, but the free-bits term is "
            "max(λ, KL_j), never below d·λ",
        ),
        (
            kl.mean(0).sum(),
            "the floor λ is missing or never binds: that is the plain KL term of the ELBO. Free bits floors each "
            "latent dimension's batch-mean KL separately, Σ_j max(λ, mean_B KL_j); a floor on the total KL binds "
            "only when the whole KL is below it, and then lets single dimensions collapse",
        ),
        (
            kl.sum(-1).mean().clamp(min=floor),
            "you applied the floor to the total KL: free bits floors each latent dimension's KL separately, "
            "Σ_j max(λ, mean_B KL_j), so that no dimension can collapse below λ",
        ),
        (
            kl.sum(-1).mean().clamp(min=floor * kl.shape[-1]),
            "you applied the floor d·λ to the total KL: free bits floors each latent dimension's KL separately, "
            "Σ_j max(λ, mean_B KL_j)",
        ),
    ]
    return _first_hint(got, variants)


def _free_bits_cases() -> list[dict]:
    """KLs per example and dimension ``[B, d]`` with some dimensions below the floor on average though not in every
    example, some above, and one case with every dimension below it."""
    generator = torch.Generator().manual_seed(19)
    cases = []
    for batch_size, latent_dim, floor, scale in ((6, 5, 0.5, 1.0), (8, 3, 0.25, 0.6), (4, 4, 1.0, 0.3)):
        spread = torch.linspace(0.1, 2.0, latent_dim, dtype=_DTYPE) * scale  # dimensions from collapsed to used
        uniform = torch.rand(batch_size, latent_dim, generator=generator, dtype=_DTYPE)
        kl = spread * -torch.log1p(-uniform)  # exponential draws: KLs are >= 0 and vary from example to example
        cases.append({"kl": kl, "free_bits": floor})
    return cases


def check_free_bits_kl(function: Callable) -> Result:
    """Check ``function(kl, free_bits) -> []``: the free-bits KL term Σ_j max(λ, mean over the batch of KL_j) from the
    KL per example and latent dimension ``kl`` ``[B, d]`` and the floor λ = ``free_bits`` (chapter 9). Diagnoses a
    floor applied per example or to the total, a minimum for the maximum, a hinge, and a missing floor.
    """
    require_function(function, "check_free_bits_kl")
    return check_function(
        "free_bits_kl",
        function,
        free_bits_kl,
        _free_bits_cases(),
        diagnoses=(_free_bits_mistakes, *DEFAULT_DIAGNOSES),
    )
