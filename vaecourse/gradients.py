r"""Monte Carlo estimators of the gradient ∇_φ E_{q_φ(z)}[f(z)] of an expectation (chapter 5).

The ELBO's reconstruction term E_{q_φ(z|x)}[log p(x|z, θ)] is such an expectation, and its gradient with respect to
the encoder's parameters φ is what the E-step needs. The distribution q_φ depends on φ, so the gradient cannot
simply be moved inside the integral (the lecture's E-step slide). Three estimators, one interface:

- :func:`pathwise` — the reparameterization trick, z = g_φ(ε) = μ + σ·ε: average ∇_φ f(g_φ(ε_s)). Unbiased.
- :func:`score_function` — REINFORCE (Williams, 1992): average f(z_s) ∇_φ log q_φ(z_s), optionally with a baseline.
  Unbiased, needs no reparameterization, but has a high variance.
- :func:`naive` — differentiate f at samples held fixed, ignoring that q depends on φ: average ∇_φ f(z_s). Biased
  (the slide's "≠"), shown to be wrong.

Each takes the integrand ``f``, a ``q_factory`` that builds q_φ from the parameters, the parameters ``params``
(tensors with ``requires_grad``) and ``num_samples`` S, and returns one gradient estimate *per sample*,
:class:`GradientSamples`, so that the estimators' variance can be measured and not only their mean.

How the per-sample gradients are computed: every sample gets its own copy of the parameters (``[S, *shape]``), so one
backward pass gives all S gradients at once. Hence the one requirement on ``q_factory``: it must accept parameters
with an extra leading dimension of size S and return a distribution with batch shape ``[S, ...]``, as elementwise
code does (``Independent(Normal(mean, std), 1)`` or ``MultivariateNormal(mean, scale_tril=L)``).
``f(z, q)`` receives the samples ``[S, ...]`` and that batched q, and returns one value per sample ``[S]`` (values
``[S, ...]`` are summed over the trailing dimensions). Most integrands ignore q, like log p(x|z, θ); one that uses
it (log q(z), or an analytic KL of q) depends on φ directly as well as through z, and that dependence is
differentiated too. ``f`` must reach the parameters only through q: a closure over ``params`` is detected and
refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from .checks import check_num_samples

__all__ = ["GradientSamples", "exact_gradient", "flatten", "naive", "pathwise", "score_function"]

Integrand = Callable[[torch.Tensor, Distribution], torch.Tensor]
Factory = Callable[..., Distribution]


@dataclass(frozen=True)
class GradientSamples:
    """S one-sample estimates of a gradient, the parameters flattened and concatenated: ``samples`` is ``[S, P]``.

    The estimate of the gradient is their ``mean``; ``standard_error`` is that estimate's Monte Carlo error,
    ``variance`` the per-coordinate variance of one sample and ``total_variance`` its sum over the coordinates,
    E‖ĝ − E ĝ‖² (the trace of the covariance): the number chapter 5 compares estimators with.
    ``shapes`` are the parameters' shapes, to :meth:`unflatten` a ``[P]`` vector back into them.

    >>> grads = GradientSamples(torch.tensor([[1.0, 2.0], [3.0, 2.0]]), (torch.Size([2]),))
    >>> grads.mean, grads.total_variance
    (tensor([2., 2.]), tensor(2.))
    """

    samples: torch.Tensor  # [S, P]
    shapes: tuple[torch.Size, ...]

    def __post_init__(self):
        if self.samples.ndim != 2 or self.samples.shape[1] != sum(math.prod(shape) for shape in self.shapes):
            raise ValueError(
                f"samples must be [S, P] with P = {sum(math.prod(s) for s in self.shapes)} (the parameters' sizes), "
                f"got shape {tuple(self.samples.shape)}"
            )

    @property
    def num_samples(self) -> int:
        return self.samples.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        """The S-sample estimate of the gradient, ``[P]``."""
        return self.samples.mean(0)

    @property
    def variance(self) -> torch.Tensor:
        """The variance of one sample, per coordinate, ``[P]`` (unbiased, divides by S − 1)."""
        if self.num_samples < 2:
            raise ValueError("a variance needs at least 2 samples")
        return self.samples.var(0)

    @property
    def total_variance(self) -> torch.Tensor:
        """Σ_p Var(ĝ_p): the expected squared distance of one sample from the mean, a scalar."""
        return self.variance.sum()

    @property
    def standard_error(self) -> torch.Tensor:
        """The Monte Carlo standard error of :attr:`mean`, √(variance / S), ``[P]``."""
        return (self.variance / self.num_samples).sqrt()

    def z_scores(self, exact) -> torch.Tensor:
        """(mean − exact) / standard error per coordinate; ``exact`` is a ``[P]`` vector or tensors like params.

        For an unbiased estimator these are about N(0, 1); |z| > 4 is a sign of bias.
        """
        exact = exact if isinstance(exact, torch.Tensor) else flatten(exact)
        return (self.mean - exact.to(self.samples)) / self.standard_error

    def unflatten(self, vector: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Split a ``[..., P]`` vector (e.g. :attr:`mean`) into tensors shaped like the parameters."""
        sizes = [math.prod(shape) for shape in self.shapes]
        pieces = vector.split(sizes, dim=-1)
        return tuple(
            piece.reshape((*vector.shape[:-1], *shape)) for piece, shape in zip(pieces, self.shapes, strict=True)
        )


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one ``[P]`` vector, in the layout of :attr:`GradientSamples.samples`."""
    return torch.cat([tensor.reshape(-1) for tensor in tensors])


def exact_gradient(value: Callable[..., torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""∇ of a closed-form ``value(*params)`` (summed if it has several entries) by autograd, as a ``[P]`` vector.

    The exact answer the estimators are compared with in chapter 5, e.g. the ELBO of the linear-Gaussian model,
    ``value = lambda mean, std: exact_elbo(model, x, Independent(Normal(mean, std), 1)).elbo``.
    """
    params = _check_params(params)
    result = value(*params)
    return flatten(torch.autograd.grad(result.sum(), params, allow_unused=True, materialize_grads=True))


def pathwise(f: Integrand, q_factory: Factory, params, num_samples: int) -> GradientSamples:
    r"""The pathwise (reparameterization) estimator of ∇_φ E_{q_φ(z)}[f(z)] (chapter 5).

    With z = g_φ(ε), ε ~ p(ε) independent of φ (for a Gaussian, z = μ + σ·ε), LOTUS moves the expectation to ε,
    and the gradient passes inside:

    .. math::  \nabla_\phi \mathbb E_{q_\phi(z)}[f(z)] = \mathbb E_{p(\epsilon)}[\nabla_\phi f(g_\phi(\epsilon))]
               \approx \nabla_\phi f(g_\phi(\epsilon_s)), \qquad \epsilon_s \sim p(\epsilon).

    Sample s is ∇_φ f(z_s, q) with z_s = ``q.rsample()``: q must have ``rsample``. Unbiased.
    Returns :class:`GradientSamples` ``[S, P]``; see the module's docstring for ``f`` and ``q_factory``.
    """
    params = _check_params(params)
    check_num_samples(num_samples)
    copies = _per_sample_copies(params, num_samples)
    q = _build(q_factory, copies, num_samples)
    if not q.has_rsample:
        raise ValueError(
            f"{type(q).__name__} has no rsample: the pathwise estimator needs a reparameterizable q "
            "(use score_function for this one)"
        )
    values = _values(f, q.rsample(), q, num_samples)
    return _gradient_samples(values.sum(), copies, params)


def score_function(
    f: Integrand, q_factory: Factory, params, num_samples: int, baseline: None | str | float = None
) -> GradientSamples:
    r"""The score-function (REINFORCE) estimator of ∇_φ E_{q_φ(z)}[f(z)] (chapter 5; Williams, 1992).

    From ∇_φ q_φ = q_φ ∇_φ log q_φ (and E_q[∇_φ log q_φ] = 0, which allows a baseline b):

    .. math::  \nabla_\phi \mathbb E_{q_\phi(z)}[f(z)] = \mathbb E_{q_\phi(z)}\big[(f(z) - b)\,
               \nabla_\phi \log q_\phi(z)\big] \approx (f(z_s) - b_s)\, \nabla_\phi \log q_\phi(z_s),
               \qquad z_s \sim q_\phi.

    The samples z_s = ``q.sample()`` carry no gradient: only the density is differentiated, so any q with a
    differentiable ``log_prob`` will do. If f uses q (depends on φ directly), its direct gradient ∇_φ f(z_s) at
    fixed z_s is added, which keeps the estimator unbiased.

    ``baseline``: ``None`` (b = 0); a number (a constant b, e.g. a running average of f kept by the caller); or
    ``"mean"``, the leave-one-out mean b_s = (1/(S−1)) Σ_{k≠s} f(z_k). The leave-one-out mean is independent of
    z_s, so each sample stays unbiased; the plain batch mean, which includes f(z_s) itself, would shrink the
    expected gradient by the factor (S − 1)/S. With ``"mean"`` the samples are weakly dependent (covariance
    g gᵀ/(S−1)², g the exact gradient), negligible next to the score function's variance. Needs S ≥ 2.
    """
    params = _check_params(params)
    check_num_samples(num_samples)
    baseline = _check_baseline(baseline, num_samples)
    copies = _per_sample_copies(params, num_samples)
    q = _build(q_factory, copies, num_samples)
    z = q.sample()  # no gradient flows through the samples
    values = _values(f, z, q, num_samples)
    log_q = _per_sample(q.log_prob(z), num_samples, "q.log_prob(z)")
    weights = values.detach()
    if baseline == "mean":
        weights = weights - (weights.sum() - weights) / (num_samples - 1)  # leave-one-out mean
    elif baseline is not None:
        weights = weights - baseline
    return _gradient_samples((weights * log_q).sum() + values.sum(), copies, params)


def naive(f: Integrand, q_factory: Factory, params, num_samples: int) -> GradientSamples:
    r"""The naive estimator: ∇_φ moved inside the integral as if q did not depend on φ — biased (chapter 5).

    .. math::  \nabla_\phi \int q_\phi(z) f(z)\, dz \;\neq\; \int q_\phi(z) \nabla_\phi f(z)\, dz
               \approx \nabla_\phi f(z_s), \qquad z_s \sim q_\phi \text{ held fixed}.

    This is the right-hand side of the lecture's E-step slide. For an integrand that does not depend on φ, such as
    log p(x|z, θ), every sample is exactly zero; for f = log p(x|z, θ) − KL(q_φ ‖ p) it is −∇_φ KL, the
    reconstruction term's gradient lost. (For θ, on which q does not depend, moving the gradient inside is right:
    that is the M-step.) Returns :class:`GradientSamples` ``[S, P]``.
    """
    params = _check_params(params)
    check_num_samples(num_samples)
    copies = _per_sample_copies(params, num_samples)
    q = _build(q_factory, copies, num_samples)
    values = _values(f, q.sample(), q, num_samples)
    return _gradient_samples(values.sum(), copies, params)


# The machinery shared by the three estimators.


def _check_params(params) -> tuple[torch.Tensor, ...]:
    params = (params,) if isinstance(params, torch.Tensor) else tuple(params)
    if not params:
        raise ValueError("params is empty: pass the tensors φ to differentiate with respect to")
    for index, param in enumerate(params):
        if not isinstance(param, torch.Tensor) or not param.is_floating_point():
            raise ValueError(f"params[{index}] must be a floating-point torch.Tensor, got {type(param).__name__}")
        if not param.requires_grad:
            raise ValueError(
                f"params[{index}] does not require grad: pass the parameters φ as tensors with requires_grad=True"
            )
    return params


def _check_baseline(baseline, num_samples: int):
    if baseline is None:
        return None
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be None, 'mean' or a number, got {baseline!r}")
        if num_samples < 2:
            raise ValueError("the leave-one-out baseline 'mean' needs num_samples >= 2")
        return baseline
    if isinstance(baseline, bool) or not isinstance(baseline, int | float):
        raise ValueError(f"baseline must be None, 'mean' or a number, got {baseline!r}")
    return float(baseline)


def _per_sample_copies(params: tuple[torch.Tensor, ...], num_samples: int) -> list[torch.Tensor]:
    """One detached copy of every parameter per sample, ``[S, *shape]``: sample s's gradient lands in row s."""
    return [p.detach().expand(num_samples, *p.shape).clone().requires_grad_(True) for p in params]


def _build(q_factory: Factory, copies: list[torch.Tensor], num_samples: int) -> Distribution:
    q = q_factory(*copies)
    if not isinstance(q, Distribution):
        raise ValueError(f"q_factory must return a torch.distributions.Distribution, got {type(q).__name__}")
    if len(q.batch_shape) == 0 or q.batch_shape[0] != num_samples:
        raise ValueError(
            f"q_factory must broadcast over a leading sample dimension: given parameters [S={num_samples}, ...] "
            f"it returned a distribution with batch shape {tuple(q.batch_shape)}, expected [{num_samples}, ...]"
        )
    return q


def _per_sample(values, num_samples: int, what: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor) or values.ndim == 0 or values.shape[0] != num_samples:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"{what} must give one value per sample, shape [S={num_samples}, ...], got {shape}")
    return values.reshape(num_samples, -1).sum(1)


def _values(f: Integrand, z: torch.Tensor, q: Distribution, num_samples: int) -> torch.Tensor:
    return _per_sample(f(z, q), num_samples, "f(z, q)")


def _gradient_samples(objective: torch.Tensor, copies: list[torch.Tensor], params) -> GradientSamples:
    """Differentiate the sum over samples with respect to the per-sample copies: row s is sample s's gradient."""
    num_samples = copies[0].shape[0]
    if objective.requires_grad:
        grads = torch.autograd.grad(objective, [*copies, *params], allow_unused=True)
    else:  # f and log q do not depend on φ at all: every gradient is zero
        grads = [None] * (2 * len(copies))
    if any(grad is not None for grad in grads[len(copies) :]):
        raise ValueError(
            "f (or q_factory) uses params directly, through a closure: it must reach φ only through its arguments "
            "(f through q), or the per-sample gradients would be wrong"
        )
    rows = [
        (torch.zeros_like(copy) if grad is None else grad).reshape(num_samples, -1)
        for grad, copy in zip(grads[: len(copies)], copies, strict=True)
    ]
    return GradientSamples(torch.cat(rows, dim=1).detach(), tuple(p.shape for p in params))
