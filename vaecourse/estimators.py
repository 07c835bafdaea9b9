r"""Monte Carlo estimators of log p(x) and of the ELBO (chapters 2-3, used by every later chapter).

Each estimator is a pure function of a model with ``.prior`` (p(z)) and ``.likelihood(z)`` (p(x|z, θ)), the data
``x`` ``[B, D]`` (or any ``[..., D]``) and a sample count; it returns one value per example, and the caller
averages. Sums of probabilities are taken in log space (``logsumexp``), and large sample counts are processed in
chunks, so that memory stays bounded at 10⁶ samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, kl_divergence

from .checks import check_num_samples, check_positive_int

__all__ = [
    "AmortizedModel",
    "ElboTerms",
    "Estimate",
    "LatentVariableModel",
    "closed_form_kl",
    "effective_sample_size",
    "elbo",
    "exact_elbo",
    "kl",
    "log_importance_weights",
    "log_marginal_is",
    "log_marginal_naive",
    "log_mean_exp_in_chunks",
]

_CHUNK_ELEMENTS = 2**22  # about 32 MB of float64 per intermediate tensor


@runtime_checkable
class LatentVariableModel(Protocol):
    """What the estimators need from a model (chapters 1-3): the prior p(z) and the likelihood p(x|z, θ), each a
    ``torch.distributions.Distribution`` (``models.LinearGaussian``, ``models.NonlinearToy``, ``vae.VAE``)."""

    @property
    def prior(self) -> Distribution: ...

    def likelihood(self, z: torch.Tensor) -> Distribution: ...


@runtime_checkable
class AmortizedModel(LatentVariableModel, Protocol):
    """A latent variable model with an encoder q_φ(z|x) (chapters 4-8): what :func:`vaecourse.log_likelihood`
    and :mod:`vaecourse.surgery` need. ``encode(x)`` checks ``x`` and returns a distribution with batch shape
    ``x.shape[:-1]``."""

    def encode(self, x: torch.Tensor) -> Distribution: ...


@dataclass
class ElboTerms:
    """The ELBO and its parts, one value per example: ``elbo = log_px_z - kl`` (chapter 3).

    ``log_px_z`` is E_q[log p(x|z, θ)] (the reconstruction term), ``kl`` is KL(q(z) ‖ p(z)), and ``z`` the samples
    of q they were estimated with (``[S, ..., d]``; ``None`` for a closed form). ``objective`` is what training
    climbs: ``log_px_z - β·kl`` (the β-VAE objective, chapter 6), the ELBO itself at β = 1; ``elbo`` stays the
    ELBO whatever β, as Pyro keeps the reported loss apart from the differentiated one.
    """

    elbo: torch.Tensor
    log_px_z: torch.Tensor
    kl: torch.Tensor
    z: torch.Tensor | None
    objective: torch.Tensor | None = None

    def __post_init__(self):
        if self.objective is None:
            self.objective = self.elbo


@dataclass
class Estimate:
    """A Monte Carlo estimate (nats) and its standard error: the mean of independent values and their standard
    deviation over √n (:meth:`of`)."""

    value: float
    standard_error: float

    @classmethod
    def of(cls, values: torch.Tensor) -> Estimate:
        """The mean of ``values`` (any shape, in float64) and its standard error (NaN for a single value).

        >>> print(Estimate.of(torch.tensor([1.0, 2.0, 3.0])))
        2.00 ± 0.58
        """
        values = values.double().flatten()
        error = values.std().item() / math.sqrt(len(values)) if len(values) > 1 else math.nan
        return cls(values.mean().item(), error)

    def __str__(self) -> str:
        return f"{self.value:.2f} ± {self.standard_error:.2f}"


def _draw(distribution: Distribution, num_samples: int, batch_shape: torch.Size, reparameterize: bool):
    """``num_samples`` draws for every example: ``[K, *batch_shape, d]``, whatever the distribution's batch."""
    own = distribution.batch_shape
    if len(own) > len(batch_shape) or (len(own) and batch_shape[len(batch_shape) - len(own) :] != own):
        raise ValueError(f"a proposal with batch shape {tuple(own)} does not fit data of batch {tuple(batch_shape)}")
    shape = (num_samples, *batch_shape[: len(batch_shape) - len(own)])
    if reparameterize and distribution.has_rsample:
        return distribution.rsample(shape)
    return distribution.sample(shape)


def _chunk_size(num_samples: int, batch_shape: torch.Size, width: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return check_positive_int(chunk_size, "chunk_size")
    per_sample = max(1, math.prod(batch_shape)) * max(1, width)
    return max(1, min(num_samples, _CHUNK_ELEMENTS // per_sample))


def log_mean_exp_in_chunks(
    terms_of: Callable[[int, int], torch.Tensor], count: int, chunk_size: int, dim: int = 0
) -> torch.Tensor:
    """log (1/N) Σ_n exp(a_n) over N = ``count`` terms along ``dim``, produced ``chunk_size`` at a time by
    ``terms_of(start, size)``, so that memory holds one chunk (the importance-sampling estimators over samples,
    :class:`vaecourse.surgery.AggregatePosterior` over its n components).

    >>> a = torch.randn(10, 3)
    >>> torch.allclose(log_mean_exp_in_chunks(lambda start, size: a[start : start + size], 10, 4),
    ...                torch.logsumexp(a, 0) - math.log(10))
    True
    """
    total = None
    for start in range(0, count, chunk_size):
        chunk = torch.logsumexp(terms_of(start, min(chunk_size, count - start)), dim=dim)
        total = chunk if total is None else torch.logaddexp(total, chunk)
    return total - math.log(count)


def log_importance_weights(model, x: torch.Tensor, proposal: Distribution, num_samples: int) -> torch.Tensor:
    r"""log w_k = log p(x, z_k | θ) − log q(z_k), z_k ~ q, as a ``[K, ...]`` tensor (chapter 2).

    ``proposal`` is q: one per example (batch shape ``x.shape[:-1]``) or one for all (e.g. the prior). Not
    chunked: meant for studying the weights themselves (effective sample size, their spread) at moderate K.
    Samples are reparameterized where q allows it, so the weights can be differentiated.
    """
    check_num_samples(num_samples)
    z = _draw(proposal, num_samples, x.shape[:-1], reparameterize=True)  # [K, ..., d]
    return model.likelihood(z).log_prob(x) + model.prior.log_prob(z) - proposal.log_prob(z)


@torch.no_grad()
def log_marginal_naive(model, x: torch.Tensor, num_samples: int, chunk_size: int | None = None) -> torch.Tensor:
    r"""The naive Monte Carlo estimate of log p(x | θ) from prior samples (chapter 2):

    .. math::  \log \frac{1}{K} \sum_{k=1}^{K} p(x \mid z_k, \theta), \qquad z_k \sim p(z),

    with fresh samples for each example. Its exponent is an unbiased estimate of p(x|θ); the log is biased
    downwards (Jensen). Evaluation only: no gradients.
    """
    check_num_samples(num_samples)
    size = _chunk_size(num_samples, x.shape[:-1], x.shape[-1], chunk_size)

    def log_weights(k):
        z = _draw(model.prior, k, x.shape[:-1], reparameterize=False)  # [k, ..., d]
        return model.likelihood(z).log_prob(x)

    return log_mean_exp_in_chunks(lambda start, k: log_weights(k), num_samples, size)


@torch.no_grad()
def log_marginal_is(
    model, x: torch.Tensor, proposal: Distribution, num_samples: int, chunk_size: int | None = None
) -> torch.Tensor:
    r"""The importance-sampling estimate of log p(x | θ) with proposal q (chapters 2, 6-8):

    .. math::  \log \frac{1}{K} \sum_{k=1}^{K} \frac{p(x, z_k \mid \theta)}{q(z_k)}, \qquad z_k \sim q.

    With a proposal per example, q(z|x), this is the IWAE bound of Burda et al. (2016); with the exact posterior
    every weight equals p(x|θ) and the estimate is exact for any K. Evaluation only: no gradients.
    """
    check_num_samples(num_samples)
    size = _chunk_size(num_samples, x.shape[:-1], x.shape[-1], chunk_size)

    def log_weights(k):
        z = _draw(proposal, k, x.shape[:-1], reparameterize=False)
        return model.likelihood(z).log_prob(x) + model.prior.log_prob(z) - proposal.log_prob(z)

    return log_mean_exp_in_chunks(lambda start, k: log_weights(k), num_samples, size)


def effective_sample_size(log_weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r"""Kish's effective sample size (Σ w_k)² / Σ w_k² of importance weights given as logs (chapter 2).

    K for equal weights, 1 when one weight dominates.

    >>> effective_sample_size(torch.zeros(10)).item()
    10.0
    """
    return torch.exp(2 * torch.logsumexp(log_weights, dim) - torch.logsumexp(2 * log_weights, dim))


def _as_multivariate_normal(distribution: Distribution) -> MultivariateNormal | None:
    if isinstance(distribution, MultivariateNormal):
        return distribution
    if (
        isinstance(distribution, Independent)
        and isinstance(distribution.base_dist, Normal)
        and distribution.reinterpreted_batch_ndims == 1
    ):
        return MultivariateNormal(distribution.mean, scale_tril=torch.diag_embed(distribution.stddev))
    return None


def closed_form_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q ‖ p) in closed form where torch has it (or both are Gaussians); ``None`` where there is none."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        pass
    gaussian_q, gaussian_p = _as_multivariate_normal(q), _as_multivariate_normal(p)
    if gaussian_q is not None and gaussian_p is not None:
        return kl_divergence(gaussian_q, gaussian_p)
    return None


def kl(q: Distribution, p: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
    r"""KL(q ‖ p): analytic where a closed form exists, else the Monte Carlo mean of log q(z) − log p(z)
    over the samples ``z`` ``[S, ...]`` of q (mixtures and flows have no closed form). Chapters 3, 5, 8.
    """
    closed_form = closed_form_kl(q, p)
    if closed_form is not None:
        return closed_form
    if z is None:
        raise ValueError(
            f"KL({type(q).__name__} ‖ {type(p).__name__}) has no closed form: pass samples z of q to estimate it"
        )
    return (q.log_prob(z) - p.log_prob(z)).mean(0)


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    q: Distribution,
    num_samples: int = 1,
    analytic_kl: bool = True,
    z: torch.Tensor | None = None,
) -> ElboTerms:
    r"""The evidence lower bound of chapter 3, estimated with ``num_samples`` reparameterized samples of q:

    .. math::  \mathcal L_{q,\theta}(x) = \mathbb E_{q(z)}[\log p(x \mid z, \theta)] - KL(q(z) \,\|\, p(z))
               \le \log p(x \mid \theta).

    The KL is analytic where it exists (and ``analytic_kl`` is true), else estimated from the same samples.
    Gradients reach θ through the likelihood and q's parameters through ``rsample``. Given samples ``z``
    ``[S, ..., d]`` (e.g. μ + σ·ε from a chosen ε) are used instead of new ones.
    """
    check_num_samples(num_samples)
    if z is None:
        z = _draw(q, num_samples, x.shape[:-1], reparameterize=True)  # [S, ..., d]
    log_px_z = model.likelihood(z).log_prob(x).mean(0)
    kl_term = kl(q, model.prior, z) if analytic_kl else (q.log_prob(z) - model.prior.log_prob(z)).mean(0)
    kl_term = kl_term.expand_as(log_px_z)
    return ElboTerms(elbo=log_px_z - kl_term, log_px_z=log_px_z, kl=kl_term, z=z)


def exact_elbo(model, x: torch.Tensor, q: Distribution) -> ElboTerms:
    """The ELBO in closed form, for models with ``expected_log_likelihood`` (the linear-Gaussian model) and a
    Gaussian q: the exact value that chapter 3 checks the identity log p(x) − L = KL(q ‖ p(z|x)) with."""
    log_px_z = model.expected_log_likelihood(x, q)
    kl_term = kl(q, model.prior).expand_as(log_px_z)
    return ElboTerms(elbo=log_px_z - kl_term, log_px_z=log_px_z, kl=kl_term, z=None)
