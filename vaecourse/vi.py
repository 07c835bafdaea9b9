r"""Variational inference: families of q(z), and maximising the ELBO over q (and θ) by gradient ascent (chapter 3).

A variational family is a module whose call returns a ``torch.distributions`` q, one per example: batch shape
``[B]`` (or any ``batch_shape``), event shape ``[d]``. Its parameters are free (unconstrained) numbers; scales are
made positive with ``exp``, so the parameters of q are its mean and its log-standard-deviations.

:func:`fit_q` maximises, for every example at once, the evidence lower bound of chapter 3,

.. math::  \mathcal L_{q,\theta}(x) = \mathbb E_{q(z)}[\log p(x, z \mid \theta) - \log q(z)]
           = \log p(x \mid \theta) - KL(q(z) \,\|\, p(z \mid x, \theta)),

over the parameters of q with θ fixed; :func:`fit_joint` maximises it over q and θ together. Both need nothing of
the model but ``.prior`` and ``.likelihood(z)``, and return a history of named metrics, one value per example and
step. :func:`exact_metrics` adds the exact log p(x|θ) and KL(q ‖ p(z|x, θ)) for a model that has them.

Chapter 4's amortized inference builds on these: :mod:`vaecourse.amortized`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from .checks import check_num_samples, check_positive_int
from .estimators import elbo, exact_elbo, kl

__all__ = [
    "DiagonalGaussian",
    "FullGaussian",
    "Monitor",
    "ascend_elbo",
    "exact_metrics",
    "fit_joint",
    "fit_q",
    "record_metrics",
]

Monitor = Callable[[Distribution], dict[str, torch.Tensor]]


def _shape(batch_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
    for size in shape:
        check_positive_int(size, f"batch_shape {batch_shape!r}: each size")  # an int or a tuple of them
    return shape


def _factory(dtype, device, *values) -> tuple[torch.dtype, torch.device | None]:
    """The dtype and device asked for, else those of the first initial value given as a tensor, else torch's
    default dtype (and the CPU)."""
    given = [value for value in values if isinstance(value, torch.Tensor) and value.is_floating_point()]
    dtype = dtype or (given[0].dtype if given else torch.get_default_dtype())
    device = device or (given[0].device if given else None)
    return dtype, device


def _initial(value, shape: tuple[int, ...], name: str, dtype, device) -> torch.Tensor | None:
    """``value`` as a tensor broadcast to ``shape`` (a copy), or None when no value is given."""
    if value is None:
        return None
    value = torch.as_tensor(value, dtype=dtype, device=device)
    try:
        return value.expand(shape).clone()
    except RuntimeError as error:
        raise ValueError(f"{name} of shape {tuple(value.shape)} does not broadcast to {shape}") from error


class DiagonalGaussian(nn.Module):
    r"""The mean-field Gaussian family q(z) = N(μ, diag σ²), one q per example (chapter 3).

    Parameters: ``loc`` μ ``[*batch_shape, d]`` and ``log_scale`` log σ ``[*batch_shape, d]``; the call returns
    ``Independent(Normal(μ, σ), 1)``, batch shape ``batch_shape``, event shape ``[d]``. By default every q
    starts as N(0, I), the prior of the course's models; ``loc`` and ``scale`` (σ, a standard deviation) set
    other starting values. ``dtype`` and ``device`` default to those of ``loc`` or ``scale``, if tensors.

    >>> q = DiagonalGaussian(3, 2)()
    >>> q.batch_shape, q.event_shape, q.stddev[0]
    (torch.Size([3]), torch.Size([2]), tensor([1., 1.], grad_fn=<SelectBackward0>))
    """

    def __init__(
        self, batch_shape: int | Sequence[int], latent_dim: int, *, loc=None, scale=None, dtype=None, device=None
    ):
        super().__init__()
        shape = (*_shape(batch_shape), check_positive_int(latent_dim, "latent_dim"))
        dtype, device = _factory(dtype, device, loc, scale)
        loc = _initial(loc, shape, "loc", dtype, device)
        scale = _initial(scale, shape, "scale", dtype, device)
        if scale is not None and not bool((scale > 0).all() and torch.isfinite(scale).all()):
            raise ValueError("scale (σ, the standard deviations) must be positive and finite")
        self.loc = nn.Parameter(torch.zeros(shape, dtype=dtype, device=device) if loc is None else loc)
        self.log_scale = nn.Parameter(torch.zeros_like(self.loc) if scale is None else scale.log())

    @property
    def latent_dim(self) -> int:
        return self.loc.shape[-1]

    def forward(self) -> Independent:
        """q(z) = N(μ, diag σ²) with σ = exp(log_scale)."""
        return Independent(Normal(self.loc, self.log_scale.exp()), 1)


class FullGaussian(nn.Module):
    r"""The full-covariance Gaussian family q(z) = N(μ, L Lᵀ), one q per example (chapter 3).

    L is lower triangular with a positive diagonal: ``log_diagonal`` holds log L_jj ``[*batch_shape, d]`` and
    ``off_diagonal`` the d(d−1)/2 entries below the diagonal ``[*batch_shape, d(d−1)/2]`` (row by row). The call
    returns ``MultivariateNormal(μ, scale_tril=L)``. By default every q starts as N(0, I); ``loc`` and
    ``scale_tril`` (a lower-triangular L with a positive diagonal) set other starting values; ``dtype`` and
    ``device`` default to theirs, if tensors.

    >>> q = FullGaussian(3, 2, scale_tril=torch.tensor([[1.0, 0.0], [0.5, 2.0]]))()
    >>> q.covariance_matrix[0]
    tensor([[1.0000, 0.5000],
            [0.5000, 4.2500]], grad_fn=<SelectBackward0>)
    """

    def __init__(
        self, batch_shape: int | Sequence[int], latent_dim: int, *, loc=None, scale_tril=None, dtype=None, device=None
    ):
        super().__init__()
        batch = _shape(batch_shape)
        d = check_positive_int(latent_dim, "latent_dim")
        dtype, device = _factory(dtype, device, loc, scale_tril)
        rows, cols = torch.tril_indices(d, d, offset=-1, device=device)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)
        loc = _initial(loc, (*batch, d), "loc", dtype, device)
        self.loc = nn.Parameter(torch.zeros((*batch, d), dtype=dtype, device=device) if loc is None else loc)
        scale_tril = _initial(scale_tril, (*batch, d, d), "scale_tril", dtype, device)
        if scale_tril is None:
            log_diagonal = torch.zeros((*batch, d), dtype=dtype, device=device)
            off_diagonal = torch.zeros((*batch, len(rows)), dtype=dtype, device=device)
        else:
            diagonal = scale_tril.diagonal(dim1=-2, dim2=-1)
            if not bool(torch.equal(scale_tril, scale_tril.tril())) or not bool((diagonal > 0).all()):
                raise ValueError("scale_tril must be lower triangular with a positive diagonal (a Cholesky factor)")
            log_diagonal, off_diagonal = diagonal.log(), scale_tril[..., rows, cols]
        self.log_diagonal = nn.Parameter(log_diagonal)
        self.off_diagonal = nn.Parameter(off_diagonal)

    @property
    def latent_dim(self) -> int:
        return self.loc.shape[-1]

    def scale_tril(self) -> torch.Tensor:
        """L ``[*batch_shape, d, d]``: the off-diagonal entries below, exp(log_diagonal) on the diagonal."""
        lower = self.off_diagonal.new_zeros((*self.loc.shape, self.latent_dim))
        lower[..., self._rows, self._cols] = self.off_diagonal
        return lower + torch.diag_embed(self.log_diagonal.exp())

    def forward(self) -> MultivariateNormal:
        """q(z) = N(μ, L Lᵀ)."""
        return MultivariateNormal(self.loc, scale_tril=self.scale_tril())


def exact_metrics(model, x: torch.Tensor) -> Monitor:
    r"""A monitor for :func:`fit_q` / :func:`fit_joint` on a model whose likelihood and posterior are exact
    (the linear-Gaussian model): for a Gaussian q it returns, one value per example,

    - ``log_px``: log p(x|θ) (``model.log_marginal``);
    - ``exact_elbo``: the ELBO in closed form (:func:`vaecourse.estimators.exact_elbo`);
    - ``kl_posterior``: KL(q(z) ‖ p(z|x, θ)) in closed form (``model.posterior``), the gap of the ELBO.

    θ is read at each call, so the monitor follows the model while :func:`fit_joint` changes it.
    """

    def monitor(q: Distribution) -> dict[str, torch.Tensor]:
        return {
            "log_px": model.log_marginal(x),
            "exact_elbo": exact_elbo(model, x, q).elbo,
            "kl_posterior": kl(q, model.posterior(x)),
        }

    return monitor


def record_metrics(history: dict[str, list[torch.Tensor]], terms, q: Distribution, monitor: Monitor | None) -> None:
    """Append one step's per-example metrics to ``history``: ``elbo``, ``log_px_z`` and ``kl`` from the ELBO
    ``terms``, and what ``monitor(q)`` adds (e.g. :func:`exact_metrics`)."""
    metrics = {"elbo": terms.elbo, "log_px_z": terms.log_px_z, "kl": terms.kl}
    if monitor is not None:
        with torch.no_grad():
            metrics.update(monitor(q))
    for name, value in metrics.items():
        history.setdefault(name, []).append(value.detach().expand(terms.elbo.shape).clone())


def ascend_elbo(
    parameters: Iterable[nn.Parameter], model, x, q_module, steps, lr, num_samples, exact, monitor, average
):
    """Adam on −ELBO over ``parameters``, the loop shared by :func:`fit_q`, :func:`fit_joint` and chapter 4's fits
    (:mod:`vaecourse.amortized`); the history holds, for each step, the metrics before its update."""
    check_positive_int(steps, "steps")
    check_num_samples(num_samples)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    parameters = [p for p in parameters if p.requires_grad]
    if not parameters:
        raise ValueError("there are no parameters to optimise: does q_module have any nn.Parameter?")
    optimizer = torch.optim.Adam(parameters, lr=lr)
    history: dict[str, list[torch.Tensor]] = {}
    for _ in range(steps):
        q = q_module()
        terms = exact_elbo(model, x, q) if exact else elbo(model, x, q, num_samples)
        objective = terms.elbo.mean() if average else terms.elbo.sum()
        # Gradients of exactly these parameters: fit_q leaves the model's .grad untouched.
        gradients = torch.autograd.grad(-objective, parameters, allow_unused=True)
        record_metrics(history, terms, q, monitor)
        for parameter, gradient in zip(parameters, gradients, strict=True):
            parameter.grad = gradient
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {name: torch.stack(values) for name, values in history.items()}


def fit_q(
    model,
    x: torch.Tensor,
    q_module: nn.Module,
    steps: int,
    lr: float,
    num_samples: int = 1,
    exact: bool = False,
    monitor: Monitor | None = None,
) -> dict[str, torch.Tensor]:
    r"""Maximise the ELBO over q with θ fixed: Adam on q_module's parameters (chapter 3; the E-step of chapter 4).

    .. math::  q^* = \arg\max_q \mathcal L_{q,\theta}(x) = \arg\min_q KL(q(z) \,\|\, p(z \mid x, \theta)).

    ``q_module()`` returns q, one per example of ``x`` ``[B, D]`` (or one shared q). Each step ascends the ELBO
    estimated with ``num_samples`` reparameterized samples of q (:func:`vaecourse.estimators.elbo`), or its closed
    form if ``exact`` (:func:`vaecourse.estimators.exact_elbo`, linear-Gaussian model only). The objective is the
    sum of the examples' ELBOs, so each q follows the gradient of its own ELBO.

    Returns the history: ``elbo``, ``log_px_z`` and ``kl`` (KL(q ‖ p(z)), the terms of the ELBO that was
    differentiated) and whatever ``monitor(q)`` returns (e.g. :func:`exact_metrics`), each ``[steps, B]``; row t
    holds the values after t updates. The model's parameters and their ``.grad`` are left as they were.
    """
    return ascend_elbo(q_module.parameters(), model, x, q_module, steps, lr, num_samples, exact, monitor, average=False)


def fit_joint(
    model,
    x: torch.Tensor,
    q_module: nn.Module,
    steps: int,
    lr: float,
    num_samples: int = 1,
    exact: bool = False,
    monitor: Monitor | None = None,
) -> dict[str, torch.Tensor]:
    r"""Maximise the average ELBO over q and θ together: Adam on q_module's and the model's parameters (chapter 3).

    .. math::  \max_{q_1,\dots,q_n,\ \theta}\ \frac1n \sum_{i=1}^n \mathcal L_{q_i,\theta}(x_i),
               \qquad \mathcal L_{q_i,\theta}(x_i) = \log p(x_i \mid \theta) - KL(q_i(z) \,\|\, p(z \mid x_i, \theta)),

    which raises the likelihood of the data and shrinks the gap at once. ``q_module()`` returns one q per row of
    ``x`` ``[n, D]``. Arguments and the returned history are those of :func:`fit_q`; the model is changed in
    place.
    """
    parameters = [*q_module.parameters(), *model.parameters()]
    return ascend_elbo(parameters, model, x, q_module, steps, lr, num_samples, exact, monitor, average=True)
