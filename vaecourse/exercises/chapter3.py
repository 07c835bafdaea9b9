r"""Checkers for the exercises of chapter 3, "Variational inference and the ELBO".

- :func:`check_elbo_monte_carlo`: the Monte Carlo ELBO from the log-densities of K samples,
  L ≈ (1/K) Σ_k [log p(x|z_k) + log p(z_k) − log q(z_k)], z_k ~ q.
- :func:`check_gaussian_entropy`: the entropy of N(μ, L Lᵀ), H = (d/2)(1 + log 2π) + Σ_j log L_jj.
- :func:`check_mean_field_scale`: the standard deviations of the best diagonal q for a Gaussian posterior
  N(μ, Σ), σ_j = 1 / sqrt((Σ⁻¹)_jj).

Every input is built from a fixed seed, so a correct answer matches the reference to rounding.
"""

from __future__ import annotations

import math

import torch

from ..models import LinearGaussian
from ..vi import DiagonalGaussian
from .checking import DEFAULT_DIAGNOSES, Result, check_function, close_enough

__all__ = ["check_elbo_monte_carlo", "check_gaussian_entropy", "check_mean_field_scale"]


# --- The Monte Carlo ELBO ------------------------------------------------------------------------------------


def elbo_monte_carlo_reference(log_px_z: torch.Tensor, log_pz: torch.Tensor, log_qz: torch.Tensor) -> torch.Tensor:
    """(1/K) Σ_k [log p(x|z_k) + log p(z_k) − log q(z_k)]: inputs ``[K, B]``, one ELBO per example ``[B]``."""
    return (log_px_z + log_pz - log_qz).mean(dim=0)


def _elbo_case(num_samples: int, batch_size: int, data_dim: int, noise_std: float, seed: int) -> dict:
    """Log-densities of ``num_samples`` samples of a diagonal q, for ``batch_size`` examples of a linear-Gaussian
    model, in float64: the same numbers every time."""
    generator = torch.Generator().manual_seed(seed)
    latent_dim = 2
    W = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
    model = LinearGaussian(W, torch.zeros(data_dim, dtype=torch.float64), noise_std)
    x = torch.randn(batch_size, data_dim, generator=generator, dtype=torch.float64)
    loc = torch.randn(batch_size, latent_dim, generator=generator, dtype=torch.float64)
    scale = 0.2 + torch.rand(batch_size, latent_dim, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        q = DiagonalGaussian(batch_size, latent_dim, loc=loc, scale=scale, dtype=torch.float64)()
        eps = torch.randn(num_samples, batch_size, latent_dim, generator=generator, dtype=torch.float64)
        z = loc + scale * eps  # [K, B, d]
        return {
            "log_px_z": model.likelihood(z).log_prob(x),  # [K, B]
            "log_pz": model.prior.log_prob(z),
            "log_qz": q.log_prob(z),
        }


def _elbo_diagnoses():
    def variants(case):
        log_px_z, log_pz, log_qz = case["log_px_z"], case["log_pz"], case["log_qz"]
        log_weights = log_px_z + log_pz - log_qz
        num_samples = log_weights.shape[0]
        return {
            "entropy sign": (log_px_z + log_pz + log_qz).mean(0),
            "iwae": torch.logsumexp(log_weights, 0) - math.log(num_samples),
            "logsumexp": torch.logsumexp(log_weights, 0),
            "sum": log_weights.sum(0),
            "no prior": (log_px_z - log_qz).mean(0),
            "no entropy": (log_px_z + log_pz).mean(0),
        }

    hints = {
        "entropy sign": "log q(z) enters with a minus: L = E_q[log p(x|z) + log p(z) − log q(z)], i.e. the "
        "entropy H[q] = −E_q[log q(z)] is added; you added E_q[log q(z)] instead",
        "iwae": "this is log (1/K) Σ_k exp(log w_k), the log of the mean weight: the IWAE bound of Burda et al. "
        "(2016), which lies between the ELBO and log p(x). The ELBO is the mean of the log-weights (Jensen moved "
        "the log inside the expectation)",
        "logsumexp": "this is logsumexp over the samples, a log-sum, not the ELBO; the ELBO is the plain mean of the "
        "log-weights (and even log-mean-exp, with its −log K, would be the IWAE bound, not the ELBO)",
        "sum": "you summed over the K samples: the expectation over q is their mean",
        "no prior": "the term log p(z) is missing: the ELBO averages log p(x, z) − log q(z), and "
        "log p(x, z) = log p(x|z) + log p(z)",
        "no entropy": "the term − log q(z) is missing: E_q[log p(x, z)] alone is no bound on log p(x), and q "
        "would maximise it by collapsing onto the mode of p(x, z)",
    }

    def known_mistake(got, expected, case):
        for name, value in variants(case).items():
            if not close_enough(expected, value) and close_enough(got, value):
                return hints[name]
        return None

    def exponentiated(got, expected, case):
        if bool(torch.isfinite(expected).all()) and not bool(torch.isfinite(got).all()):
            return (
                "some values are inf or nan: exp of log-densities this negative underflows. The ELBO needs no exp "
                "at all: it is the mean of the log-weights (log-mean-exp, done in log space, is the IWAE bound)"
            )
        return None

    return (exponentiated, known_mistake, *DEFAULT_DIAGNOSES)


def check_elbo_monte_carlo(function) -> Result:
    """Check ``function(log_px_z, log_pz, log_qz) -> ELBO``: the inputs are log p(x|z_k), log p(z_k) and
    log q(z_k) for K samples z_k ~ q of each of B examples, ``[K, B]``; the answer is one ELBO per example,
    ``[B]``: (1/K) Σ_k [log p(x|z_k) + log p(z_k) − log q(z_k)]."""
    cases = [
        _elbo_case(num_samples=8, batch_size=3, data_dim=3, noise_std=0.5, seed=1),
        _elbo_case(num_samples=1, batch_size=5, data_dim=4, noise_std=1.0, seed=2),
        _elbo_case(num_samples=20, batch_size=2, data_dim=200, noise_std=0.05, seed=3),  # log p(x|z) ≈ −10⁴
    ]
    return check_function(
        "Monte Carlo ELBO", function, elbo_monte_carlo_reference, cases, rtol=1e-6, diagnoses=_elbo_diagnoses()
    )


# --- The entropy of a Gaussian -------------------------------------------------------------------------------


def gaussian_entropy_reference(scale_tril: torch.Tensor) -> torch.Tensor:
    """H[N(μ, L Lᵀ)] = (d/2)(1 + log 2π) + Σ_j log L_jj, for ``scale_tril`` L ``[B, d, d]``: ``[B]``."""
    d = scale_tril.shape[-1]
    return 0.5 * d * (1 + math.log(2 * math.pi)) + scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)


def _entropy_case(batch_size: int, latent_dim: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    lower = torch.randn(batch_size, latent_dim, latent_dim, generator=generator, dtype=torch.float64).tril(-1)
    diagonal = 0.1 + 2 * torch.rand(batch_size, latent_dim, generator=generator, dtype=torch.float64)
    return {"scale_tril": lower + torch.diag_embed(diagonal)}


def _entropy_diagnoses():
    def known_mistake(got, expected, case):
        L = case["scale_tril"]
        d = L.shape[-1]
        log_det_L = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        constant = 0.5 * d * (1 + math.log(2 * math.pi))
        variants = {
            "the constant (d/2)(1 + log 2π) is missing: H = −E[log q(z)], and log q(z) contains −(d/2) log 2π "
            "and −½ εᵀε, whose mean is −d/2": log_det_L,
            "the +d/2 is missing: −E[log q(z)] contains +½ E[εᵀε] = d/2, besides (d/2) log 2π": log_det_L
            + 0.5 * d * math.log(2 * math.pi),
            "Σ_j log L_jj is already ½ log det Σ (det Σ = det L · det Lᵀ = Π_j L_jj²): you doubled it": constant
            + 2 * log_det_L,
            "the log-determinant enters with a plus: a wider Gaussian has a larger entropy": constant - log_det_L,
            "the constant is (d/2)(1 + log 2π): ½(1 + log 2π) for each of the d dimensions": log_det_L
            + 0.5 * (1 + math.log(2 * math.pi)),
        }
        for hint, value in variants.items():
            if not close_enough(expected, value) and close_enough(got, value):
                return hint
        if bool(torch.isfinite(expected).all()) and not bool(torch.isfinite(got).all()):
            return (
                "some values are inf or nan: did you take the log of the zeros above the diagonal? "
                "Only the diagonal of L enters: L.diagonal(dim1=-2, dim2=-1)"
            )
        return None

    return (known_mistake, *DEFAULT_DIAGNOSES)


def check_gaussian_entropy(function) -> Result:
    """Check ``function(scale_tril) -> entropy``: the entropy of N(μ, L Lᵀ) for each lower-triangular L with a
    positive diagonal in ``scale_tril`` ``[B, d, d]``, one value per example ``[B]`` (in nats)."""
    cases = [_entropy_case(3, 2, seed=1), _entropy_case(4, 1, seed=2), _entropy_case(2, 5, seed=3)]
    return check_function(
        "entropy of a Gaussian", function, gaussian_entropy_reference, cases, diagnoses=_entropy_diagnoses()
    )


# --- The best mean-field q for a Gaussian posterior ----------------------------------------------------------


def mean_field_scale_reference(posterior_covariance: torch.Tensor) -> torch.Tensor:
    """σ_j = 1 / sqrt((Σ⁻¹)_jj), the standard deviations of argmin over diagonal q of KL(q ‖ N(μ, Σ)): ``[B, d]``."""
    precision = torch.linalg.inv(posterior_covariance)
    return precision.diagonal(dim1=-2, dim2=-1).rsqrt()


def _covariance_case(batch_size: int, latent_dim: int, seed: int, correlated: bool = True) -> dict:
    generator = torch.Generator().manual_seed(seed)
    if correlated:
        factor = torch.randn(batch_size, latent_dim, latent_dim, generator=generator, dtype=torch.float64)
        covariance = factor @ factor.mT + 0.1 * torch.eye(latent_dim, dtype=torch.float64)
    else:
        variances = 0.5 + torch.rand(batch_size, latent_dim, generator=generator, dtype=torch.float64)
        covariance = torch.diag_embed(variances)
    return {"posterior_covariance": covariance}


def _mean_field_diagnoses():
    def known_mistake(got, expected, case):
        covariance = case["posterior_covariance"]
        marginal_variance = covariance.diagonal(dim1=-2, dim2=-1)
        precision_diagonal = torch.linalg.inv(covariance).diagonal(dim1=-2, dim2=-1)
        variants = {
            "these are the posterior's marginal standard deviations sqrt(Σ_jj). Minimising KL(q ‖ p) over a "
            "diagonal q matches the precision instead: 1/σ_j² = (Σ⁻¹)_jj, and the best q is narrower than the "
            "posterior's marginals": marginal_variance.sqrt(),
            "these are the variances σ_j² = 1/(Σ⁻¹)_jj; the answer (like Normal's scale) is the standard deviation "
            "σ_j: take the square root": 1 / precision_diagonal,
            "these are the marginal variances Σ_jj, and the answer is a standard deviation: the best diagonal q "
            "has 1/σ_j² = (Σ⁻¹)_jj": marginal_variance,
            "these are sqrt((Σ⁻¹)_jj) = 1/σ_j: invert them": precision_diagonal.sqrt(),
        }
        for hint, value in variants.items():
            if not close_enough(expected, value) and close_enough(got, value):
                return hint
        return None

    return (known_mistake, *DEFAULT_DIAGNOSES)


def check_mean_field_scale(function) -> Result:
    """Check ``function(posterior_covariance) -> scale``: for a Gaussian posterior with covariance Σ
    ``[B, d, d]``, the standard deviations ``[B, d]`` of the diagonal Gaussian q that maximises the ELBO
    (minimises KL(q ‖ p(z|x)))."""
    cases = [
        _covariance_case(3, 2, seed=1),
        _covariance_case(2, 4, seed=2),
        _covariance_case(2, 3, seed=3, correlated=False),
    ]
    return check_function(
        "best mean-field q", function, mean_field_scale_reference, cases, diagnoses=_mean_field_diagnoses()
    )
