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

from . import data, estimators
from .checks import check_num_samples, check_positive_int
from .estimators import AmortizedModel, Estimate
from .priors import Prior
from .runtime import seeded

__all__ = [
    "AggregatePosterior",
    "AggregatePrior",
    "Estimate",
    "Surgery",
    "aggregate_posterior",
    "decompose",
    "SIZES",
    "decompose_by_size",
    "log_mixture_density",
]

_GEMM_CHUNK_ELEMENTS = 2**23  # [m, c] log-densities of one chunk of components: 64 MB in float64


def log_mixture_density(
    z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    r"""log q_avg(z) = log (1/n) Σ_i N(z | μ_i, diag σ_i²) for z ``[m, d]``, ``loc`` μ and ``scale`` σ ``[n, d]``
    → ``[m]``, exact, as one matrix product per chunk of components (chapter 7).

    Expanding the square, the log-density of every (point, component) pair is a dot product,

    .. math::  \log N(z \mid μ_i, σ_i^2) = \sum_j \Big[-\frac{z_j^2}{2σ_{ij}^2} + \frac{z_j μ_{ij}}{σ_{ij}^2}\Big]
               - \sum_j \Big[\frac{μ_{ij}^2}{2σ_{ij}^2} + \log σ_{ij}\Big] - \frac d2 \log 2π
               = [z^2, z, 1] \cdot [-\tfrac1{2σ_i^2}, \tfrac{μ_i}{σ_i^2}, c_i],

    so a chunk of c components costs one ``[m, 2d+1] @ [2d+1, c]`` product (a GEMM) instead of an ``[m, c, d]``
    broadcast, and a streaming logsumexp over the chunks keeps memory at one ``[m, c]`` block. Expanding the square
    cancels large terms when |z − μ| ≪ |z| (rounding error grows like ε·Σ_j z_j²/σ_ij²), so points and means are first
    centred on the mean of the μ_i. The product is taken in the inputs' dtype: in float64 it agrees with a direct
    float64 sum to 10⁻¹³–10⁻¹¹ nats; in float32 to ~10⁻⁵ nats on a trained MNIST encoder's posteriors and ~10⁻³ with
    posteriors ten times sharper (``benchmarks/surgery_qavg.py`` measures both), far below the Monte Carlo error
    of the surgery terms.
    """
    if z.ndim != 2 or loc.ndim != 2 or loc.shape != scale.shape or z.shape[1] != loc.shape[1]:
        raise ValueError(
            f"z must be [m, d] and loc, scale [n, d] with the same d, got {tuple(z.shape)}, "
            f"{tuple(loc.shape)}, {tuple(scale.shape)}"
        )
    n, d = loc.shape
    work = torch.promote_types(z.dtype, loc.dtype)
    centre = loc.to(work).mean(0)
    mean = loc.to(work) - centre  # [n, d]
    precision = scale.to(work).pow(-2)
    constant = -0.5 * (mean.pow(2) * precision).sum(1) - scale.to(work).log().sum(1) - 0.5 * d * math.log(2 * math.pi)
    weights = torch.cat([-0.5 * precision, mean * precision, constant[:, None]], dim=1).T.contiguous()  # [2d+1, n]
    points = z.to(work) - centre
    features = torch.cat([points.pow(2), points, torch.ones_like(points[:, :1])], dim=1)  # [m, 2d+1]
    size = chunk_size or max(1, _GEMM_CHUNK_ELEMENTS // max(1, len(points)))

    if torch.is_grad_enabled() and (features.requires_grad or weights.requires_grad):

        def log_q(start: int, count: int) -> torch.Tensor:  # log N(z_k | μ_i, σ_i²), components start..+count
            return features @ weights[:, start : start + count]

        return estimators.log_mean_exp_in_chunks(log_q, n, size, dim=1).to(z.dtype)
    return _streaming_log_mean_exp(features, weights, size).to(z.dtype)


def _streaming_log_mean_exp(features: torch.Tensor, weights: torch.Tensor, size: int) -> torch.Tensor:
    """log (1/n) Σ_i exp(features @ weights[:, i]) ``[m]``, without gradients: each chunk's ``[m, size]`` product is
    written into one buffer and exponentiated in place against a running maximum (an online logsumexp), so the loop
    allocates no block per chunk. In float64, 50 000 points against n = 50 000 components (d = 32) took 14 s instead of
    25 s with a fresh block and a logsumexp per chunk, on 2 CPU cores (``benchmarks/surgery_qavg.py``)."""
    m, n = len(features), weights.shape[1]
    block = torch.empty(m, min(size, n), dtype=features.dtype, device=features.device)
    top = torch.full((m,), -math.inf, dtype=features.dtype, device=features.device)
    total = torch.zeros(m, dtype=features.dtype, device=features.device)
    for start in range(0, n, size):
        count = min(size, n - start)
        out = block if count == block.shape[1] else block[:, :count].contiguous()
        torch.matmul(features, weights[:, start : start + count], out=out)  # log-densities of the chunk
        new_top = torch.maximum(top, out.amax(1))
        total.mul_((top - new_top).exp_())  # rescale the running sum to the new maximum (exp(-inf) = 0 at first)
        total.add_(out.sub_(new_top[:, None]).exp_().sum(1))
        top = new_top
    return top + total.log() - math.log(n)


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
        """log q_avg(z) for z ``[..., d]`` → ``[...]`` (by :func:`log_mixture_density`, in float64: expanding the
        square in float32 loses up to ~1e-3 nats on sharp posteriors, enough to break MI ≤ log n term by term)."""
        flat = z.reshape(-1, z.shape[-1]).double()  # [m, d]
        log_density = log_mixture_density(flat, self.loc.double(), self.scale.double(), self.chunk_size)
        return log_density.to(z.dtype).reshape(z.shape[:-1])

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
    ``residual`` = average KL − marginal KL − MI, which is zero up to Monte Carlo error. ``num_examples`` n is the
    number of posteriors in q_avg; ``num_points`` the number of them at which the terms were estimated (n unless
    :func:`decompose` was given fewer)."""

    average_kl: Estimate
    marginal_kl: Estimate
    mutual_information: Estimate
    residual: Estimate
    log_n: float
    num_examples: int
    num_samples: int
    num_points: int | None = None

    def __post_init__(self):
        if self.num_points is None:
            self.num_points = self.num_examples


@torch.no_grad()
def decompose(
    model: AmortizedModel,
    x: torch.Tensor,
    num_samples: int = 1,
    chunk_size: int | None = None,
    seed: int | None = 0,
    num_points: int | None = None,
) -> Surgery:
    r"""The ELBO surgery terms of ``model`` on the examples ``x`` ``[n, D]`` (chapter 7).

    With z_is ~ q(z | x_i), s = 1..S (``num_samples``):

    - MI = mean of log q(z_is | x_i) − log q_avg(z_is),
    - marginal KL = mean of log q_avg(z_is) − log p(z_is),

    each with the standard error of its mean over the n·S draws. Their sum is the Monte Carlo estimate of the
    average KL with the same draws, so the residual against the analytic average KL measures Monte Carlo error
    alone. With a ``seed`` the draws come from that seed and the caller's generator is left as it was; ``None``
    draws from the caller's generator.

    Both terms are means over the index i as well as over z. With ``num_points`` m < n, q_avg is still the mixture
    of all n posteriors, but the terms are estimated at m indices drawn uniformly without replacement (from the same
    seed): an unbiased estimate of the same two numbers at m/n of the cost (the cost is n·m·S Gaussian densities),
    whose standard errors now include the spread over i. The analytic average KL is still taken over all n, and the
    residual over the m examples.
    """
    check_num_samples(num_samples)
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a batch of examples [n, D], got {getattr(x, 'shape', type(x).__name__)}")
    n = len(x)
    if num_points is not None:
        check_positive_int(num_points, "num_points (or None, all n examples)")
    posteriors = model.encode(x)  # batch [n]
    q_avg = AggregatePosterior(posteriors, chunk_size=chunk_size)
    subset = num_points is not None and num_points < n
    with seeded(seed, x.device):
        prior = model.prior
        if subset:
            index = torch.randperm(n, device=x.device)[:num_points].sort().values
            chosen = Independent(Normal(q_avg.loc[index], q_avg.scale[index]), 1)
            z = chosen.sample((num_samples,))  # [S, m, d]
        else:
            index = None
            z = posteriors.sample((num_samples,))  # [S, n, d]
    # log q(z|x_i) and log q_avg(z) in float64: each MI term then stays ≤ log n up to rounding at n = 50 000
    posteriors = Independent(Normal(q_avg.loc.double(), q_avg.scale.double()), 1)
    q_avg = AggregatePosterior(posteriors, chunk_size=chunk_size)
    own = posteriors if index is None else Independent(Normal(q_avg.loc[index], q_avg.scale[index]), 1)
    log_p = prior.log_prob(z).double()  # in the prior's own dtype (a flow's weights are float32)
    z = z.double()
    log_q = own.log_prob(z)  # [S, m]
    log_q_avg = q_avg.log_prob(z)
    closed_form = estimators.closed_form_kl(posteriors, prior)  # [n] or None
    if closed_form is not None:  # an exact average over the n examples: no Monte Carlo error
        average = Estimate(closed_form.double().mean().item(), 0.0)
        own_kl = closed_form if index is None else closed_form[index]
        residual_values = own_kl[None] - (log_q - log_p)
    else:
        average = Estimate.of(log_q - log_p)
        residual_values = torch.zeros_like(log_q)  # the same draws: the split adds up exactly
    mutual_information = Estimate.of(log_q - log_q_avg)
    marginal_kl = Estimate.of(log_q_avg - log_p)
    residual = Estimate.of(residual_values)
    return Surgery(
        average_kl=average,
        marginal_kl=marginal_kl,
        mutual_information=mutual_information,
        residual=residual,
        log_n=math.log(n),
        num_examples=n,
        num_samples=num_samples,
        num_points=n if index is None else len(index),
    )


SIZES = (100, 300, 1000, 3000, 10_000, 30_000, 50_000)


def decompose_by_size(
    model,
    x: torch.Tensor,
    sizes: tuple[int, ...] | None = None,
    num_samples: int = 1,
    seed: int | None = 0,
    num_points: int | None = None,
) -> dict[int, Surgery]:
    r"""The surgery terms with q_avg formed over n evenly spaced rows of ``x`` ``[N, D]``, for each n in ``sizes``
    (default: 100, 300, 1000, … up to N, and N itself), as ``{n: Surgery}`` (chapter 7). ``num_points`` m, if
    given, estimates the terms at m of the n examples wherever n > m (:func:`decompose`; q_avg stays over all n).

    The average KL does not depend on n; its split does. The mutual information is at most log n, and reaches
    it while the n posteriors do not overlap; Hoffman & Johnson (2016) form q_avg over the whole training set,
    n = 50 000 (log n = 10.82). Subsets are spread by :func:`vaecourse.data.evenly_spaced`, since the binarized
    MNIST test file is sorted by digit.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a batch of examples [N, D], got {getattr(x, 'shape', type(x).__name__)}")
    if sizes is None:
        sizes = tuple(n for n in SIZES if n < len(x)) + (len(x),)
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(x):
            raise ValueError(f"sizes must be ints from 1 to len(x) = {len(x)}, got {n!r}")
    if num_points is not None:
        check_positive_int(num_points, "num_points (or None, all n examples)")
    return {
        n: decompose(
            model,
            data.evenly_spaced(x, n),
            num_samples=num_samples,
            seed=seed,
            num_points=None if num_points is None or num_points >= n else num_points,
        )
        for n in sizes
    }
