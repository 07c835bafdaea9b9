r"""Checkers for the exercises of chapter 7, "ELBO surgery".

- :func:`check_log_q_avg`: ``log_q_avg(z, loc, scale)``, the log-density of the aggregate posterior
  q_avg(z) = (1/n) Σ_i N(z | μ_i, diag σ_i²) at points z ``[m, d]``, one value per point ``[m]``;
- :func:`check_mutual_information`: ``mutual_information(z, loc, scale)``, the Monte Carlo estimate of
  I_q[x, z] = (1/n) Σ_i KL(q(z|x_i) ‖ q_avg(z)) from one draw z_i ~ q(z|x_i) per example:
  (1/n) Σ_i [log q(z_i|x_i) − log q_avg(z_i)], one number.

``loc`` and ``scale`` ``[n, d]`` are the encoder's μ and σ (standard deviations, PyTorch's ``scale``) for the n
examples. Every input is built from a fixed seed, so a correct answer matches the reference to rounding; each
typical slip (a missing −log n, a logsumexp per coordinate, σ for σ², a mean of log-densities, the example's own
component left out, a sign) is named.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.distributions import Independent, Normal

from .checking import DEFAULT_DIAGNOSES, Result, check_function, close_enough, require_function

__all__ = ["check_log_q_avg", "check_mutual_information", "log_q_avg", "mutual_information"]

_DTYPE = torch.float64


# --- The references ---------------------------------------------------------------------------------------------


def _component_log_probs(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z_m | μ_i, diag σ_i²) for every point and every component, ``[m, n]``."""
    return Independent(Normal(loc, scale), 1).log_prob(z[:, None, :])  # [m, n]


def log_q_avg(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""log q_avg(z) = log (1/n) Σ_i N(z | μ_i, diag σ_i²) = logsumexp_i log N(z | μ_i, diag σ_i²) − log n, for z
    ``[m, d]`` and the n posteriors' ``loc``, ``scale`` ``[n, d]`` → ``[m]`` (chapter 7; the package's
    :class:`vaecourse.surgery.AggregatePosterior` computes the same in chunks)."""
    return torch.logsumexp(_component_log_probs(z, loc, scale), dim=1) - math.log(len(loc))


def mutual_information(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""The estimate (1/n) Σ_i [log q(z_i | x_i) − log q_avg(z_i)] of I_q[x, z], with z_i ``[n, d]`` one draw from
    each posterior q(z | x_i) = N(``loc[i]``, diag ``scale[i]``²) (chapter 7; as in
    :func:`vaecourse.surgery.decompose`)."""
    own = Independent(Normal(loc, scale), 1).log_prob(z)  # log q(z_i | x_i), [n]
    return (own - log_q_avg(z, loc, scale)).mean()


# --- Exercise: log q_avg ----------------------------------------------------------------------------------------


def _log_q_avg_cases() -> list[dict]:
    """Posteriors with σ far from 1 (σ, σ² and log σ differ) and points both near the components and between them."""
    generator = torch.Generator().manual_seed(7)
    cases = []
    for num_points, num_components, latent_dim in [(6, 5, 3), (4, 40, 2), (5, 3, 6)]:
        loc = 1.5 * torch.randn(num_components, latent_dim, generator=generator, dtype=_DTYPE)
        scale = 0.2 + 1.3 * torch.rand(num_components, latent_dim, generator=generator, dtype=_DTYPE)
        z = 1.2 * torch.randn(num_points, latent_dim, generator=generator, dtype=_DTYPE)
        cases.append({"z": z, "loc": loc, "scale": scale})
    return cases


def _log_q_avg_mistakes(got, expected, case):
    z, loc, scale = case["z"], case["loc"], case["scale"]
    n = len(loc)
    log_n = math.log(n)
    per_coordinate = Normal(loc, scale).log_prob(z[:, None, :])  # [m, n, d]
    components = per_coordinate.sum(-1)  # [m, n]
    variants = [
        (
            expected + log_n,
            f"every value is log n = log {n} too large: q_avg is the mean of the n densities, (1/n) Σ_i, so "
            "subtract log n after the logsumexp",
        ),
        (
            (torch.logsumexp(per_coordinate, dim=1) - log_n).sum(-1),
            "you took the logsumexp over the components for each coordinate separately, then summed over the "
            "coordinates: that is a product of d one-dimensional mixtures, not the mixture of the n diagonal "
            "Gaussians. Sum log N over the d coordinates first (one log-density per component), then logsumexp over "
            "the n components",
        ),
        (
            torch.logsumexp(per_coordinate, dim=1).sum(-1),
            "the logsumexp runs over the components for each coordinate separately (a product of d one-dimensional "
            "mixtures), and −log n is missing: sum over the d coordinates first, then logsumexp over the n "
            "components, then subtract log n",
        ),
        (
            log_q_avg(z, loc, scale**2),
            "scale is σ, the standard deviation: Normal(loc, scale) takes it as it is. You passed σ², the variance "
            "(see the errata on N(μ, σ²))",
        ),
        (
            log_q_avg(z, loc, scale.sqrt()),
            "scale is already σ, the standard deviation: do not take its square root",
        ),
        (
            components.mean(-1),
            "you averaged the log-densities of the components, (1/n) Σ_i log N(z | μ_i, σ_i²): that is the log of "
            "a geometric mean, below log q_avg by Jensen's inequality. q_avg averages the densities: "
            "logsumexp over the components − log n",
        ),
        (
            components.sum(-1),
            "you summed the log-densities of the components (a product of the n densities): q_avg is their "
            "mean, logsumexp over the components − log n",
        ),
    ]
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


def check_log_q_avg(function: Callable) -> Result:
    """Check ``function(z, loc, scale) -> [m]``: log q_avg(z) for the points z ``[m, d]``, with q_avg the equal-weight
    mixture of the n diagonal Gaussians N(``loc[i]``, diag ``scale[i]``²), ``loc``, ``scale`` ``[n, d]`` (chapter 7).
    Diagnoses a missing −log n, a logsumexp per coordinate, σ² or √σ for σ, a mean or a sum of log-densities,
    exp-then-log underflow."""
    require_function(function, "check_log_q_avg")
    return check_function(
        "log q_avg",
        function,
        log_q_avg,
        _log_q_avg_cases(),
        diagnoses=(_log_q_avg_mistakes, *DEFAULT_DIAGNOSES),
    )


# --- Exercise: the mutual information ---------------------------------------------------------------------------


def _mutual_information_cases() -> list[dict]:
    """Posteriors that overlap (so that leaving out a component, or a sign, changes the answer) and one draw each."""
    generator = torch.Generator().manual_seed(17)
    cases = []
    for num_examples, latent_dim in [(12, 2), (30, 3), (7, 5)]:
        loc = torch.randn(num_examples, latent_dim, generator=generator, dtype=_DTYPE)
        scale = 0.3 + 0.9 * torch.rand(num_examples, latent_dim, generator=generator, dtype=_DTYPE)
        z = loc + scale * torch.randn(num_examples, latent_dim, generator=generator, dtype=_DTYPE)
        cases.append({"z": z, "loc": loc, "scale": scale})
    return cases


def _mutual_information_mistakes(got, expected, case):
    z, loc, scale = case["z"], case["loc"], case["scale"]
    n = len(loc)
    log_n = math.log(n)
    own = Independent(Normal(loc, scale), 1).log_prob(z)  # [n]
    all_components = _component_log_probs(z, loc, scale)  # [n, n]: row i holds log q(z_i | x_j)
    others = all_components.masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    log_q_avg_value = log_q_avg(z, loc, scale)
    per_example = own - log_q_avg_value
    variants = [
        (
            expected - log_n,
            f"the estimate is log n = log {n} too small: inside q_avg the logsumexp over the n components needs "
            "−log n, because q_avg is their mean (1/n) Σ_j",
        ),
        (
            -expected,
            "the sign is reversed: I = mean of log q(z_i|x_i) − log q_avg(z_i), the example's own posterior first "
            "(a KL is never negative, and neither is the mutual information)",
        ),
        (
            (own - all_components.mean(-1)).mean(),
            "inside q_avg you averaged the log-densities, (1/n) Σ_j log q(z_i|x_j): q_avg averages the densities, "
            "so log q_avg(z_i) = logsumexp_j log q(z_i|x_j) − log n",
        ),
        (
            per_example.exp().mean().log(),
            "you averaged the density ratios q(z_i|x_i)/q_avg(z_i) and took the log of the mean: the MI is the "
            "mean of the log-ratios, (1/n) Σ_i [log q(z_i|x_i) − log q_avg(z_i)] (each term is one sample of a KL)",
        ),
        (
            own.exp().mean().log() - log_q_avg_value.exp().mean().log(),
            "you averaged the densities over the examples before taking logs: the MI is the mean of the log-ratios, "
            "(1/n) Σ_i [log q(z_i|x_i) − log q_avg(z_i)]",
        ),
        (
            (own - (torch.logsumexp(others, dim=1) - math.log(n - 1))).mean(),
            "you left the example's own component out of q_avg: q_avg(z_i) = (1/n) Σ_j q(z_i|x_j) runs over all n "
            "examples, j = i included (its own posterior is where z_i came from, and usually its largest term)",
        ),
        (
            (own - (torch.logsumexp(others, dim=1) - log_n)).mean(),
            "you left the example's own component out of the sum in q_avg: q_avg(z_i) = (1/n) Σ_j q(z_i|x_j) runs "
            "over all n examples, j = i included",
        ),
        (
            mutual_information(z, loc, scale**2),
            "scale is σ, the standard deviation: Normal(loc, scale) takes it as it is; you passed σ², the variance",
        ),
        (
            per_example.sum(),
            "you summed over the examples: the MI is the mean, (1/n) Σ_i",
        ),
    ]
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


def check_mutual_information(function: Callable) -> Result:
    """Check ``function(z, loc, scale) -> scalar``: the estimate (1/n) Σ_i [log q(z_i|x_i) − log q_avg(z_i)] of
    I_q[x, z], with z_i = ``z[i]`` one draw from q(z|x_i) = N(``loc[i]``, diag ``scale[i]``²), ``[n, d]`` each
    (chapter 7). Diagnoses a missing −log n, a reversed sign, a mean of log-densities inside q_avg, a mean of
    ratios or densities before the log, the example's own component left out, σ², a sum over the examples."""
    require_function(function, "check_mutual_information")
    result = check_function(
        "mutual information",
        function,
        mutual_information,
        _mutual_information_cases(),
        diagnoses=(_mutual_information_mistakes, *DEFAULT_DIAGNOSES),
    )
    if result.kind == "shape":
        result.details = ["return one number, the mean over the n examples of log q(z_i|x_i) − log q_avg(z_i)"]
    return result
