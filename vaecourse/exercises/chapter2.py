r"""Checkers for the exercises of chapter 2, "Monte Carlo estimation of p(x) and its variance".

- :func:`check_log_mean_exp`: log (1/K) Σ_k exp(a_k) over the K samples, in log space;
- :func:`check_log_marginal_naive`: the lecture's estimate log (1/K) Σ_k p(x|z_k, θ) from given prior samples z_k;
- :func:`check_effective_sample_size`: (Σ_k w_k)² / Σ_k w_k² from log-weights.

Each checker feeds the learner's function fixed inputs (some with log-weights near −1000 or +800, where
exponentiating underflows or overflows) and compares it with the package's reference.
"""

from __future__ import annotations

import math

import torch

from ..estimators import effective_sample_size
from ..models import LinearGaussian
from ..montecarlo import log_mean_exp as _log_mean_exp
from .checking import Result, check_function, close_enough, constant_offset, not_finite, sign_flipped

__all__ = ["check_effective_sample_size", "check_log_marginal_naive", "check_log_mean_exp"]


def _with_copies(function):
    """Call ``function`` on copies of the tensors, so that an in-place edit cannot change the reference's input."""

    def call(**case):
        return function(**{key: value.clone() if torch.is_tensor(value) else value for key, value in case.items()})

    return call


def _num_samples(case: dict) -> int:
    return case["z"].shape[0] if "z" in case else case["log_weights"].shape[0]


def _missing_log_k(got, expected, case):
    """An offset of exactly ±log K (the sum was not divided by K) or +2 log K (log K added, not subtracted)."""
    offset = (got - expected).double()
    num_samples = _num_samples(case)
    log_k = torch.tensor(math.log(num_samples), dtype=torch.float64)
    if not bool(torch.isfinite(offset).all()):
        return None
    if close_enough(offset.abs(), log_k.expand_as(offset), atol=1e-8):
        return (
            f"every value is off by {float(offset.mean()):+.4g} = ±log K (K = {num_samples}): "
            "a mean over the K samples is Σ/K, so subtract log K after the logsumexp"
        )
    if close_enough(offset, (2 * log_k).expand_as(offset), atol=1e-8):
        return f"every value is off by +2 log K (K = {num_samples}): log K was added where it must be subtracted"
    return None


def _other_offset(got, expected, case):
    return None if _missing_log_k(got, expected, case) else constant_offset(got, expected, {})


def _jensen(log_terms_of):
    """A diagnosis: the learner averaged the log-terms, E[log w] instead of log E[w] (a lower bound, by Jensen)."""

    def diagnose(got, expected, case):
        mean_of_logs = log_terms_of(case).mean(0)
        if close_enough(got, mean_of_logs):
            return (
                "you averaged the logs, (1/K) Σ log w_k: that is E[log w], which is below log E[w] (Jensen's "
                "inequality). Average the w_k themselves, in log space: logsumexp(log w) − log K"
            )
        return None

    return diagnose


def _log_mean_exp_cases() -> list[dict]:
    generator = torch.Generator().manual_seed(2)
    moderate = 2 * torch.randn(5, 3, generator=generator, dtype=torch.float64)
    tiny = -1000 + 3 * torch.randn(100, 4, generator=generator, dtype=torch.float64)
    huge = 800 + torch.randn(20, 2, generator=generator, dtype=torch.float64)
    far_apart = torch.stack([-1000 + torch.arange(8.0), torch.arange(8.0)], dim=1).double()  # [8, 2]
    return [{"log_weights": lw} for lw in (moderate, tiny, huge, far_apart)]


def check_log_mean_exp(function) -> Result:
    r"""Exercise: ``function(log_weights)`` with ``log_weights`` ``[K, B]`` returns log (1/K) Σ_k exp(log_weights[k])
    for each of the B columns, shape ``[B]``; stable even where exp underflows (log-weights near −1000)
    or overflows (near +800).
    """
    diagnoses = (not_finite, _jensen(lambda case: case["log_weights"]), _missing_log_k, sign_flipped, _other_offset)
    return check_function(
        "log_mean_exp", _with_copies(function), _log_mean_exp, _log_mean_exp_cases(), diagnoses=diagnoses
    )


def _reference_log_marginal_naive(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log (1/K) Σ_k p(x|z_k, θ) for given prior samples z ``[K, d]`` shared by the B examples x ``[B, D]``."""
    log_px_z = model.likelihood(z[:, None, :]).log_prob(x)  # [K, B]
    return _log_mean_exp(log_px_z)


def _log_px_z(case: dict) -> torch.Tensor:
    return case["model"].likelihood(case["z"][:, None, :]).log_prob(case["x"])  # [K, B]


def _added_prior(got, expected, case):
    """The learner weighted each sample by p(x|z_k) p(z_k): the prior is already in the sampling."""
    with_prior = _log_mean_exp(_log_px_z(case) + case["model"].prior.log_prob(case["z"])[:, None])
    if close_enough(got, with_prior):
        return (
            "you multiplied by p(z_k): the z_k are drawn from the prior, so p(z) is already accounted for by the "
            "sampling; each term is p(x|z_k, θ) alone"
        )
    return None


def _log_marginal_cases() -> list[dict]:
    generator = torch.Generator().manual_seed(3)

    def case(data_dim, latent_dim, noise_std, batch, num_samples):
        W = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
        b = torch.randn(data_dim, generator=generator, dtype=torch.float64)
        model = LinearGaussian(W, b, noise_std).requires_grad_(False)
        x = b + torch.randn(batch, data_dim, generator=generator, dtype=torch.float64) * 2
        z = torch.randn(num_samples, latent_dim, generator=generator, dtype=torch.float64)
        return {"model": model, "x": x, "z": z}

    # a small model, then one with D = 200 pixels where p(x|z) is about e^-5000: exp underflows
    return [case(3, 2, 0.8, 4, 7), case(200, 2, 0.1, 3, 10)]


def check_log_marginal_naive(function) -> Result:
    r"""Exercise: ``function(model, x, z)`` returns the naive estimate log (1/K) Σ_k p(x|z_k, θ) of log p(x|θ)
    for each of the B examples x ``[B, D]``, with the K prior samples z ``[K, d]`` given (shared by all
    examples); shape ``[B]``. ``model.likelihood(z)`` is p(x|z, θ), a ``torch.distributions.Distribution``.
    """
    diagnoses = (not_finite, _jensen(_log_px_z), _added_prior, _missing_log_k, sign_flipped, _other_offset)
    return check_function(
        "log_marginal_naive",
        _with_copies(function),
        _reference_log_marginal_naive,
        _log_marginal_cases(),
        diagnoses=diagnoses,
    )


def _reciprocal(got, expected, case):
    if bool((got > 0).all()) and close_enough(got, 1 / expected, atol=1e-8):
        return "you computed Σ w² / (Σ w)², the reciprocal of the ESS: it should be (Σ w)² / Σ w²"
    return None


def _unsquared(got, expected, case):
    ones = torch.ones_like(expected)
    if close_enough(got, ones, atol=1e-8) and not close_enough(expected, ones, atol=1e-8):
        return "every value is 1: with normalised weights w̃_k = w_k / Σ w, Σ w̃_k = 1 always; the ESS is 1 / Σ w̃_k²"
    return None


def _effective_sample_size_cases() -> list[dict]:
    generator = torch.Generator().manual_seed(4)
    moderate = 1.5 * torch.randn(6, 3, generator=generator, dtype=torch.float64)
    tiny = -1000 + 2 * torch.randn(50, 2, generator=generator, dtype=torch.float64)
    huge = 750 + torch.randn(30, 2, generator=generator, dtype=torch.float64)
    return [{"log_weights": lw} for lw in (moderate, tiny, huge)]


def check_effective_sample_size(function) -> Result:
    r"""Exercise: ``function(log_weights)`` with ``log_weights`` ``[K, B]`` (log w_k) returns Kish's effective
    sample size (Σ_k w_k)² / Σ_k w_k² for each column, shape ``[B]``; stable for log-weights near ±1000.
    """
    return check_function(
        "effective_sample_size",
        _with_copies(function),
        lambda log_weights: effective_sample_size(log_weights, dim=0),
        _effective_sample_size_cases(),
        diagnoses=(not_finite, _reciprocal, _unsquared),
    )
