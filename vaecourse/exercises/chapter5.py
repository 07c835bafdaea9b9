"""Checkers for the exercises of chapter 5 (LOTUS, the reparameterization trick and the score-function estimator).

- :func:`check_rsample`: ``rsample(mean, std, eps)``, the reparameterized sample z = μ + σ·ε;
- :func:`check_gaussian_kl`: ``gaussian_kl(mean, std)``, KL(N(μ, diag σ²) ‖ N(0, I)) per example;
- :func:`check_score_function`: ``score_function(f_values, z, mean, std)``, the per-sample REINFORCE estimates of
  ∇_(μ, σ) E_{N(μ, σ²)}[f(z)].

Every input is passed in (no randomness inside), so a correct answer matches the reference to ~1e-10.
"""

from __future__ import annotations

import torch

from ..gaussian import kl_to_standard_normal, reparameterize
from .checking import DEFAULT_DIAGNOSES, Result, check_function, close_enough

__all__ = ["check_gaussian_kl", "check_rsample", "check_score_function"]


def _with_shape_hint(result: Result, hint: str) -> Result:
    """Replace check_function's generic hint for a wrong shape by the exercise's own."""
    if result.kind == "shape":
        result.details = [hint]
    return result


def _cases(shapes: list[tuple[tuple[int, ...], tuple[int, ...]]], seed: int) -> list[dict]:
    """Gaussians with σ far from 1 (so that σ, σ² and √σ differ), and noise ε of the given shape."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for shape, eps_shape in shapes:
        mean = torch.randn(shape, generator=generator, dtype=torch.float64) * 1.5
        std = 0.3 + 2.2 * torch.rand(shape, generator=generator, dtype=torch.float64)
        eps = torch.randn(eps_shape, generator=generator, dtype=torch.float64)
        cases.append({"mean": mean, "std": std, "eps": eps})
    return cases


# Exercise 1: the reparameterized sample.


def _rsample_mistakes(got, expected, case):
    mean, std, eps = case["mean"], case["std"], case["eps"]
    if close_enough(got, mean + std**2 * eps):
        return (
            "you scaled ε by σ² (the variance): z = μ + σ·ε uses the standard deviation σ. The slide's N(μ, σ) "
            "means the variance σ² (see the errata), and std is σ itself"
        )
    if close_enough(got, mean + std.sqrt() * eps):
        return "you took √σ: std is already the standard deviation σ, use it as it is"
    if close_enough(got, std * eps + torch.zeros_like(mean)):
        return "the mean μ is missing: z = μ + σ·ε"
    if close_enough(got, mean * eps + std):
        return "μ and σ are swapped: ε is scaled by σ and shifted by μ"
    if close_enough(got, mean + eps):
        return "ε is not scaled by σ: z = μ + σ·ε"
    if close_enough(got, mean.expand_as(got)):
        return "the noise is missing: z = μ + σ·ε, with the ε that is passed in"
    return None


def _own_noise(got, expected, case):
    """Tried after the general diagnoses (a sign slip also decorrelates z from ε)."""
    mean, std, eps = case["mean"], case["std"], case["eps"]
    standardized = ((got - mean) / std).flatten()
    noise = eps.expand_as(got).flatten()
    if bool(standardized.std() > 0):
        correlation = torch.corrcoef(torch.stack([standardized, noise]))[0, 1]
        if not bool(correlation > 0.5):
            return "use the noise eps that is passed in: drawing your own makes z unrelated to it"
    return None


def check_rsample(function) -> Result:
    """Check ``function(mean, std, eps) -> z``, the reparameterized sample z = μ + σ·ε (chapter 5).

    ``mean`` and ``std`` are ``[..., d]``; ``eps`` is ``[..., d]`` or ``[S, ..., d]`` (S samples each), and ``z``
    has the broadcast shape. Diagnoses the variance used for σ, a missing mean, swapped arguments, own noise.
    """
    cases = _cases([((4, 3), (4, 3)), ((3,), (5, 3)), ((2, 3), (6, 2, 3))], seed=5)
    result = check_function(
        "rsample",
        function,
        lambda mean, std, eps: reparameterize(mean, std, eps),
        cases,
        diagnoses=(_rsample_mistakes, *DEFAULT_DIAGNOSES, _own_noise),
    )
    return _with_shape_hint(result, "z has the broadcast shape of mean, std and eps: μ + σ·ε, elementwise")


# Exercise 2: the KL divergence to the standard normal.


def _kl_terms(mean, std, variance_like=None):
    variance = std**2 if variance_like is None else variance_like
    return variance + mean**2 - 1 - torch.log(variance)


def _kl_mistakes(got, expected, case):
    mean, std = case["mean"], case["std"]
    dim = mean.shape[-1]
    terms = _kl_terms(mean, std)
    if close_enough(got, terms.sum(-1)):
        return "the factor ½ is missing: KL = ½ Σ_j (σ_j² + μ_j² − 1 − log σ_j²)"
    if close_enough(got, 0.5 * (std**2 + mean**2 - 1 - torch.log(std)).sum(-1)):
        return "the formula has log σ², which is 2 log σ: you wrote log σ"
    if close_enough(got, 0.5 * _kl_terms(mean, std, variance_like=std).sum(-1)):
        return "std is σ, the standard deviation: the formula needs the variance σ² = std**2"
    if close_enough(got, 0.5 * terms.mean(-1)):
        return "sum over the d latent coordinates, not the mean: the KL of independent coordinates adds up"
    if mean.ndim >= 2 and close_enough(got, 0.5 * terms.sum(0)):
        return "you summed over the examples (dim 0): sum over the latent dimension, the last one (dim=-1)"
    if close_enough(got, 0.5 * (std**2 + mean**2 - torch.log(std**2)).sum(-1)):
        return f"the −1 inside the sum is missing (every value is off by d/2 = {dim / 2:g})"
    return None


def check_gaussian_kl(function) -> Result:
    """Check ``function(mean, std) -> KL``: KL(N(μ, diag σ²) ‖ N(0, I)), one value per example (chapter 5).

    ``mean`` and ``std`` (σ, the standard deviation) are ``[..., d]``; the answer is ``[...]``, summed over the
    last dimension. Diagnoses a missing ½, log σ for log σ², σ for σ², a mean for a sum, the wrong dimension.
    """
    cases = [
        {"mean": case["mean"], "std": case["std"]}
        for case in _cases([((3, 3), (1,)), ((5, 2), (1,)), ((2, 4, 3), (1,)), ((6, 1), (1,))], seed=7)
    ]
    result = check_function(
        "gaussian_kl",
        function,
        kl_to_standard_normal,
        cases,
        diagnoses=(_kl_mistakes, *DEFAULT_DIAGNOSES),
    )
    return _with_shape_hint(
        result, "one KL per example: sum over the latent dimension, the last one (.sum(-1)), keep the others"
    )


# Exercise 3: the score-function estimator for a Gaussian.


def _gaussian_scores(z, mean, std):
    """∇_μ log N(z; μ, σ²) = (z − μ)/σ² and ∇_σ log N(z; μ, σ²) = ((z − μ)² − σ²)/σ³, ``[S, 2d]``."""
    centred = z - mean
    return torch.cat([centred / std**2, (centred**2 - std**2) / std**3], dim=-1)


def _score_reference(f_values, z, mean, std):
    return f_values[:, None] * _gaussian_scores(z, mean, std)


def _score_mistakes(got, expected, case):
    f_values, z, mean, std = case["f_values"], case["z"], case["mean"], case["std"]
    centred = z - mean
    scores = _gaussian_scores(z, mean, std)
    weight = f_values[:, None]
    if close_enough(got, scores):
        return "that is the score ∇ log q(z) alone: multiply it by f(z) (f_values), sample by sample"
    wrt_variance = torch.cat([centred / std**2, (centred**2 - std**2) / (2 * std**4)], dim=-1)
    if close_enough(got, weight * wrt_variance):
        return (
            "the σ part is the derivative with respect to the variance σ²; the parameter is σ: "
            "∂/∂σ log q = ((z − μ)² − σ²)/σ³"
        )
    if close_enough(got, weight * torch.cat([centred / std**2, centred**2 / std**3], dim=-1)):
        return "the normaliser 1/σ of the density depends on σ too: ∂/∂σ log q = ((z − μ)² − σ²)/σ³, not (z − μ)²/σ³"
    if close_enough(got[:, : z.shape[-1]], weight * centred / std):
        return "∂/∂μ log N(z; μ, σ²) = (z − μ)/σ²: divide by the variance, not by σ"
    if close_enough(got, weight * torch.cat([scores[:, z.shape[-1] :], scores[:, : z.shape[-1]]], dim=-1)):
        return "the two halves are swapped: first the d derivatives in μ, then the d derivatives in σ"
    return None


def _score_cases() -> list[dict]:
    generator = torch.Generator().manual_seed(11)
    cases = []
    for num_samples, dim, offset in ((5, 1, 0.0), (7, 3, 0.0), (4, 2, -20.0)):
        mean = torch.randn(dim, generator=generator, dtype=torch.float64)
        std = 0.4 + 1.5 * torch.rand(dim, generator=generator, dtype=torch.float64)
        z = mean + std * torch.randn(num_samples, dim, generator=generator, dtype=torch.float64)
        f_values = (z**2).sum(-1) + offset  # any values do; the last case adds a large constant
        cases.append({"f_values": f_values, "z": z, "mean": mean, "std": std})
    return cases


def check_score_function(function) -> Result:
    """Check ``function(f_values, z, mean, std) -> [S, 2d]``: one score-function estimate per sample (chapter 5).

    For q = N(μ, diag σ²), sample s's estimate of ∇_(μ, σ) E_q[f(z)] is f(z_s) ∇_(μ, σ) log q(z_s): the d
    derivatives in μ, then the d derivatives in σ, as ``torch.cat([..., ...], dim=-1)``. ``f_values`` ``[S]``,
    ``z`` ``[S, d]``, ``mean`` and ``std`` ``[d]``. Diagnoses a missing f, the variance's derivative for σ's, a lost
    normaliser, a wrong ∂/∂μ, swapped halves.
    """
    result = check_function(
        "score_function",
        function,
        _score_reference,
        _score_cases(),
        diagnoses=(_score_mistakes, *DEFAULT_DIAGNOSES),
    )
    return _with_shape_hint(
        result, "one estimate per sample, [S, 2d] (μ's d derivatives, then σ's): do not average over the samples"
    )
