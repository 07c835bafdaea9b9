r"""How good is a Monte Carlo estimate of p(x)? Exact variances and sample counts (chapter 2).

The naive estimator of the lecture averages the likelihood over K draws of the prior,

.. math::  \hat p(x) = \frac{1}{K} \sum_{k=1}^{K} p(x \mid z_k, \theta), \qquad z_k \sim p(z).

It is unbiased, and its relative error sd(p̂)/p(x) is √(ρ/K), with ρ the *relative variance* of one term,

.. math::  \rho(x) = \frac{\operatorname{Var}_{p(z)}[p(x \mid z, \theta)]}{p(x \mid \theta)^2}.

For the linear-Gaussian model ρ has a closed form (:func:`relative_variance_naive`), and so does its analogue
for importance sampling with any Gaussian proposal (:func:`relative_variance_is`). With them, chapter 2 checks
measured errors against the exact ones and counts the samples a given accuracy needs,
K = ρ/ε² (:func:`samples_needed`), which grows exponentially with the latent dimension
(:func:`isotropic_model`, :func:`fit_exponential_rate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from .checks import check_positive_int
from .models import LinearGaussian, gaussian_moments

__all__ = [
    "ExponentialFit",
    "fit_exponential_rate",
    "isotropic_model",
    "log_mean_exp",
    "relative_error",
    "relative_variance_is",
    "relative_variance_naive",
    "rms_relative_error",
    "samples_needed",
]


def isotropic_model(
    latent_dim: int, weight: float = 1.0, noise_std: float = 0.5, *, dtype=torch.float64, device=None
) -> LinearGaussian:
    r"""The linear-Gaussian model with D = d, W = w·I, b = 0 and noise σ: chapter 2's family of models.

    Every coordinate is the same one-dimensional model, x_j = w z_j + σ ε_j, so the difficulty of estimating
    p(x) by prior sampling grows with d at a fixed rate per dimension: 1 + ρ(x) = Π_j (1 + ρ₁(x_j)).

    >>> posterior = isotropic_model(3).posterior(torch.zeros(3, dtype=torch.float64))
    >>> round(posterior.covariance_matrix[0, 0].item(), 12)  # σ² / (w² + σ²)
    0.2
    """
    check_positive_int(latent_dim, "latent_dim")
    W = weight * torch.eye(latent_dim, dtype=dtype, device=device)
    return LinearGaussian(W, torch.zeros(latent_dim, dtype=dtype, device=device), noise_std)


@torch.no_grad()
def relative_variance_naive(model: LinearGaussian, x: torch.Tensor) -> torch.Tensor:
    r"""ρ(x) = Var_{p(z)}[p(x|z, θ)] / p(x|θ)², exactly, for the linear-Gaussian model (chapter 2).

    The second moment is a Gaussian integral. Squaring a Gaussian density halves its covariance,
    N(x; m, Ψ)² = N(0; 0, 2Ψ) · N(x; m, Ψ/2), and integrating N(x; W z + b, Ψ/2) against p(z) = N(0, I) gives

    .. math::  \mathbb E_{p(z)}[p(x \mid z, \theta)^2] = \mathcal N(0; 0, 2\Psi)\,
               \mathcal N(x;\ b,\ W W^\top + \Psi/2),

    while p(x|θ) = N(x; b, W Wᵀ + Ψ). So 1 + ρ = N(0; 0, 2Ψ) N(x; b, W Wᵀ + Ψ/2) / N(x; b, W Wᵀ + Ψ)².
    One value per example, shape ``x.shape[:-1]``; computed in log space, returned as ρ (which may be huge).
    """
    noise = model.noise_std
    squared_noise = Independent(Normal(torch.zeros_like(noise), math.sqrt(2) * noise), 1)  # N(·; 0, 2Ψ)
    half_noise = MultivariateNormal(model.b, covariance_matrix=model.W @ model.W.T + torch.diag(noise**2) / 2)
    log_second_moment = squared_noise.log_prob(torch.zeros_like(noise)) + half_noise.log_prob(x)
    return torch.expm1(log_second_moment - 2 * model.log_marginal(x))


@torch.no_grad()
def relative_variance_is(model: LinearGaussian, x: torch.Tensor, proposal: Distribution) -> torch.Tensor:
    r"""ρ_q(x) = Var_q[w] / p(x|θ)² for the importance weight w = p(x, z|θ) / q(z), z ~ q (chapter 2).

    Since p(x, z|θ) = p(x|θ) p(z|x, θ), the weight divided by p(x) is p(z|x)/q(z), and ρ_q is the
    χ²-divergence of the posterior from the proposal:

    .. math::  1 + \rho_q(x) = \int \frac{p(z \mid x, \theta)^2}{q(z)}\, dz .

    For a Gaussian q (one for all examples, or one per example) and the linear-Gaussian model, the integrand is
    an unnormalised Gaussian with precision P = 2 Σ_post⁻¹ − Σ_q⁻¹ and mean m = P⁻¹(2 Σ_post⁻¹ μ_post − Σ_q⁻¹ μ_q),
    so the integral is its value at m times (2π)^{d/2} |P|^{-1/2}. Where P is not positive definite (q has
    too light tails: much narrower than the posterior) the variance is infinite and ``inf`` is returned.
    With q = p(z) this is :func:`relative_variance_naive`; with q = p(z|x, θ) it is 0.
    """
    posterior = model.posterior(x)
    mean_q, covariance_q = gaussian_moments(proposal)
    precision_post = torch.linalg.inv(posterior.covariance_matrix)  # [..., d, d]
    precision_q = torch.linalg.inv(covariance_q)
    precision = 2 * precision_post - precision_q  # P, [..., d, d]
    shape = torch.broadcast_shapes(precision.shape[:-2], posterior.mean.shape[:-1], mean_q.shape[:-1])
    precision = precision.expand(*shape, -1, -1)
    positive = torch.linalg.eigvalsh(precision)[..., 0] > 0
    safe = torch.where(positive[..., None, None], precision, torch.eye(precision.shape[-1]).to(precision))
    covariance = torch.linalg.inv(safe)
    covariance = (covariance + covariance.mT) / 2
    drift = 2 * (precision_post @ posterior.mean[..., None]) - precision_q @ mean_q[..., None]
    mode = (covariance @ drift.expand(*shape, -1, -1))[..., 0]  # m, [..., d]
    log_integral = (
        2 * posterior.log_prob(mode)
        - proposal.log_prob(mode)
        - MultivariateNormal(mode, covariance_matrix=covariance).log_prob(mode)
    )
    return torch.where(positive, torch.expm1(log_integral), torch.full_like(log_integral, math.inf))


def log_mean_exp(log_weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r"""log (1/K) Σ_k exp(a_k) over ``dim``, in log space (chapter 2): the naive estimate log p̂(x) from the
    table a_k = log p(x|z_k, θ), or any importance-sampling estimate from its log-weights.

    >>> log_mean_exp(torch.tensor([-1000.0, -1000.0])).item()
    -1000.0
    """
    return torch.logsumexp(log_weights, dim) - math.log(log_weights.shape[dim])


def relative_error(log_estimates: torch.Tensor, log_exact: torch.Tensor) -> torch.Tensor:
    """p̂/p − 1 from log p̂ and log p, elementwise (chapter 2): ``expm1`` keeps small errors accurate."""
    return torch.expm1(log_estimates - log_exact)


def rms_relative_error(log_estimates: torch.Tensor, log_exact: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r"""The root-mean-square relative error over repeated estimates, √(mean_r (p̂_r/p − 1)²) (chapter 2).

    ``log_estimates`` holds the repeats along ``dim``; for the naive estimator it tends to √(ρ/K).

    >>> rms_relative_error(torch.tensor([0.0, 0.0]), torch.tensor(0.0)).item()
    0.0
    """
    return relative_error(log_estimates, log_exact).square().mean(dim).sqrt()


def samples_needed(relative_variance, relative_error: float = 0.1):
    r"""K = ρ/ε²: the number of samples for which the relative error √(ρ/K) of the estimate is ε (chapter 2).

    >>> samples_needed(4.0, 0.5)
    16.0
    """
    if not relative_error > 0:
        raise ValueError(f"relative_error must be positive, got {relative_error}")
    return relative_variance / relative_error**2


@dataclass
class ExponentialFit:
    """A least-squares fit log K = intercept + rate · d (chapter 2); ``factor`` = e^rate, the growth per dimension."""

    rate: float
    intercept: float

    @property
    def factor(self) -> float:
        return math.exp(self.rate)

    def __call__(self, latent_dims) -> torch.Tensor:
        """The fitted K at the given latent dimensions."""
        return torch.exp(self.intercept + self.rate * torch.as_tensor(latent_dims, dtype=torch.float64))


def fit_exponential_rate(latent_dims, samples) -> ExponentialFit:
    """Fit log K = intercept + rate · d by least squares to sample counts K measured at latent dimensions d.

    >>> fit = fit_exponential_rate([1, 2, 3], [2.0, 4.0, 8.0])
    >>> round(fit.factor, 6)
    2.0
    """
    d = torch.as_tensor(latent_dims, dtype=torch.float64).flatten()
    log_k = torch.as_tensor(samples, dtype=torch.float64).flatten().log()
    if d.numel() != log_k.numel() or d.numel() < 2:
        raise ValueError(f"need at least two pairs (d, K) of the same length, got {d.numel()} and {log_k.numel()}")
    design = torch.stack([torch.ones_like(d), d], dim=1)  # [n, 2]
    intercept, rate = torch.linalg.lstsq(design, log_k[:, None]).solution[:, 0].tolist()
    return ExponentialFit(rate=rate, intercept=intercept)
