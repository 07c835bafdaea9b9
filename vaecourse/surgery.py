r"""ELBO surgery (chapter 7; Hoffman & Johnson, 2016): the average KL term of the ELBO splits in two,

.. math::  \frac1n \sum_{i=1}^{n} KL\big(q_φ(z \mid x_i) \,\|\, p(z)\big)
           = KL\big(q_{avg}(z) \,\|\, p(z)\big) + I_q[x, z],

with the aggregate posterior q_avg(z) = (1/n) Σ_i q_φ(z | x_i) (the slides' q_avg carries an index slip; see the
errata) and the mutual information between the index i of an example and its code z, I_q[x, z] ≤ log n.

The marginal KL pushes q_avg towards the prior; the mutual information rewards codes that tell the examples
apart. Both are expectations over i ~ Uniform{1..n}, z ~ q_φ(z | x_i), estimated here by Monte Carlo with
standard errors, with the exact log-density of q_avg (a logsumexp over all n components, in chunks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, constraints

from . import estimators
from .checks import check_num_samples
from .estimators import AmortizedModel, Estimate
from .priors import Prior
from .runtime import seeded

__all__ = ["AggregatePosterior", "AggregatePrior", "Estimate", "Surgery", "aggregate_posterior", "decompose"]

_CHUNK_ELEMENTS = 2**22


class AggregatePosterior(Distribution):
    r"""q_avg(z) = (1/n) Σ_i q(z | x_i): the mixture of the encoder's n posteriors, one per example, with equal
    weights. ``posteriors`` is a diagonal Gaussian with batch shape ``[n]`` (what ``model.encode(x)`` returns for
    ``x`` ``[n, D]``).

    ``log_prob`` is exact: a logsumexp over all n components, ``chunk_size`` components at a time, so that n = 10⁴
    costs memory for only a chunk. ``sample`` picks an example uniformly, then draws from its posterior.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, posteriors: Distribution, chunk_size: int | None = None):
        if not (isinstance(posteriors, Independent) and isinstance(posteriors.base_dist, Normal)):
            raise ValueError("posteriors must be diagonal Gaussians Independent(Normal(loc, scale), 1), batch [n]")
        if len(posteriors.batch_shape) != 1:
            raise ValueError(f"posteriors must have batch shape [n], got {tuple(posteriors.batch_shape)}")
        self.loc = posteriors.base_dist.loc.detach()  # [n, d]
        self.scale = posteriors.base_dist.scale.detach()
        self.num_components, latent_dim = self.loc.shape
        self.chunk_size = chunk_size
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size([latent_dim]), validate_args=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q_avg(z) for z ``[..., d]`` → ``[...]``."""
        flat = z.reshape(-1, z.shape[-1])  # [m, d]
        n, d = self.loc.shape
        size = self.chunk_size or max(1, _CHUNK_ELEMENTS // max(1, len(flat) * d))

        def log_q(start: int, count: int) -> torch.Tensor:  # log q(z | x_i) for components start..start+count: [m, c]
            loc, scale = self.loc[start : start + count], self.scale[start : start + count]  # [c, d]
            return Independent(Normal(loc, scale, validate_args=False), 1).log_prob(flat[:, None, :])

        return estimators.log_mean_exp_in_chunks(log_q, n, size, dim=1).reshape(z.shape[:-1])

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:  # noqa: B008
        shape = torch.Size(sample_shape)
        index = torch.randint(self.num_components, shape, device=self.loc.device)
        return Normal(self.loc[index], self.scale[index]).sample()

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.mean(0)


class AggregatePrior(Prior):
    """q_avg of a data set used as the prior p(z) (the "optimal prior" of chapter 7): a :class:`Prior` returning an
    :class:`AggregatePosterior` with the posteriors' parameters frozen as buffers, so that it drops into
    ``VAE.latent_prior``. It has n components (one per example): it makes the marginal KL zero on those examples
    and costs n Gaussian densities per evaluation of log p(z).

    It is a tool of the chapter, not one of the trainable :data:`~vaecourse.priors.PRIORS`: a model using it is
    not saved (:func:`vaecourse.save` says so); form it again from the saved model and the data."""

    def __init__(self, q_avg: AggregatePosterior):
        super().__init__(q_avg.event_shape[0])
        self.num_components = q_avg.num_components
        self.register_buffer("loc", q_avg.loc.clone())
        self.register_buffer("scale", q_avg.scale.clone())
        self.chunk_size = q_avg.chunk_size

    def forward(self, encoder: nn.Module | None = None) -> AggregatePosterior:
        return AggregatePosterior(Independent(Normal(self.loc, self.scale, validate_args=False), 1), self.chunk_size)


def aggregate_posterior(model: AmortizedModel, x: torch.Tensor, chunk_size: int | None = None) -> AggregatePosterior:
    """q_avg(z) of ``model``'s encoder over the examples ``x`` ``[n, D]`` (chapter 7)."""
    with torch.no_grad():
        return AggregatePosterior(model.encode(x), chunk_size=chunk_size)


@dataclass
class Surgery:
    """The terms of the ELBO surgery identity on n examples, in nats (chapter 7):
    ``average_kl`` = (1/n) Σ KL(q(z|x_i) ‖ p) (analytic where the prior allows, else Monte Carlo),
    ``marginal_kl`` = KL(q_avg ‖ p), ``mutual_information`` = I_q[x, z] (bounded by ``log_n``), and
    ``residual`` = average KL − marginal KL − MI, which is zero up to Monte Carlo error."""

    average_kl: Estimate
    marginal_kl: Estimate
    mutual_information: Estimate
    residual: Estimate
    log_n: float
    num_examples: int
    num_samples: int


@torch.no_grad()
def decompose(
    model: AmortizedModel, x: torch.Tensor, num_samples: int = 1, chunk_size: int | None = None, seed: int | None = 0
) -> Surgery:
    r"""The ELBO surgery terms of ``model`` on the examples ``x`` ``[n, D]`` (chapter 7).

    With z_is ~ q(z | x_i), s = 1..S (``num_samples``):

    - MI = mean of log q(z_is | x_i) − log q_avg(z_is),
    - marginal KL = mean of log q_avg(z_is) − log p(z_is),

    each with the standard error of its mean over the n·S draws. Their sum is the Monte Carlo estimate of the
    average KL with the same draws, so the residual against the analytic average KL measures Monte Carlo error
    alone. With a ``seed`` the draws come from that seed and the caller's generator is left as it was; ``None``
    draws from the caller's generator.
    """
    check_num_samples(num_samples)
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a batch of examples [n, D], got {getattr(x, 'shape', type(x).__name__)}")
    posteriors = model.encode(x)  # batch [n]
    q_avg = AggregatePosterior(posteriors, chunk_size=chunk_size)
    with seeded(seed, x.device):
        prior = model.prior
        z = posteriors.sample((num_samples,))  # [S, n, d]
    log_q = posteriors.log_prob(z)  # [S, n]
    log_q_avg = q_avg.log_prob(z)
    log_p = prior.log_prob(z)
    closed_form = estimators.closed_form_kl(posteriors, prior)
    average = Estimate.of(closed_form) if closed_form is not None else Estimate.of(log_q - log_p)
    if closed_form is not None:  # an exact average over the n examples: no Monte Carlo error
        average = Estimate(average.value, 0.0)
    mutual_information = Estimate.of(log_q - log_q_avg)
    marginal_kl = Estimate.of(log_q_avg - log_p)
    residual_values = (closed_form[None] if closed_form is not None else log_q - log_p) - (log_q - log_p)
    residual = Estimate.of(residual_values)
    return Surgery(
        average_kl=average,
        marginal_kl=marginal_kl,
        mutual_information=mutual_information,
        residual=residual,
        log_n=math.log(len(x)),
        num_examples=len(x),
        num_samples=num_samples,
    )
