r"""Amortized inference (chapter 4): one network for every x, its gaps, and EM by gradients.

:func:`fit_per_datapoint` is per-datapoint inference by name: one q_i per x_i, n problems solved side by side
(chapter 3's :func:`vaecourse.vi.fit_q` on a batched family). :class:`GaussianEncoder` is the amortized family, a
network whose call on ``x`` ``[n, D]`` returns q_φ(z|x), one Gaussian per row, with a capacity that can be limited
(hidden widths, a rank, a shared or fixed σ); :func:`fit_encoder` fits it with θ fixed. :func:`inference_gaps`
splits the gap log p(x) − L into the approximation and the amortization gap, and :func:`fit_em` runs EM by
gradients, alternating E-steps on φ and M-steps on θ, or joint steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent, Normal

from .checks import check_last_dim, check_num_samples, check_positive_int
from .estimators import elbo, exact_elbo
from .vi import DiagonalGaussian, Monitor, ascend_elbo, fit_q, record_metrics

__all__ = [
    "EMHistory",
    "Fit",
    "GaussianEncoder",
    "InferenceGaps",
    "encoder_distribution",
    "fit_em",
    "fit_encoder",
    "fit_per_datapoint",
    "inference_gaps",
]


@dataclass
class Fit:
    """What :func:`fit_per_datapoint` returns: the fitted ``q_module`` (one q per example) and its ``history``."""

    q_module: nn.Module
    history: dict[str, torch.Tensor]


def fit_per_datapoint(
    model,
    x: torch.Tensor,
    steps: int,
    lr: float,
    family: type[nn.Module] = DiagonalGaussian,
    num_samples: int = 1,
    exact: bool = False,
    monitor: Monitor | None = None,
) -> Fit:
    r"""Per-datapoint variational inference (chapter 4): a q_i of ``family`` for every example x_i, each fitted to
    its own ELBO with θ fixed. This is :func:`fit_q` on a batched family, starting from q_i = N(0, I):

    .. math::  q_i^* = \arg\max_{q_i \in \text{family}} \mathcal L_{q_i,\theta}(x_i), \qquad i = 1, \dots, n,

    n separate optimisation problems (the slide's "problem 2"), solved side by side in one batch. ``family`` is
    :class:`DiagonalGaussian` (the default) or :class:`FullGaussian`; the other arguments are those of
    :func:`fit_q`. New data need a new fit: nothing is learned that carries over to another x.
    """
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor [n, D]")
    latent_dim = model.prior.event_shape[-1]
    q_module = family(tuple(x.shape[:-1]), latent_dim, dtype=x.dtype, device=x.device)
    history = fit_q(model, x, q_module, steps, lr, num_samples=num_samples, exact=exact, monitor=monitor)
    return Fit(q_module=q_module, history=history)


def encoder_distribution(output: torch.Tensor) -> Independent:
    r"""The Gaussian q_φ(z|x) = N(μ, diag σ²) from an encoder's raw output ``[..., 2d]`` (chapter 4).

    The first d numbers are the mean μ, the last d the log-variances log σ² (the lecture's encoder outputs μ and
    σ²; see the errata), so σ = exp(½ log σ²) > 0 for any output. Returns ``Independent(Normal(μ, σ), 1)``: batch
    shape ``[...]``, event shape ``[d]``, one log-density per example.

    >>> q = encoder_distribution(torch.tensor([[0.5, -1.0, 0.0, 2 * math.log(3.0)]]))
    >>> q.mean, q.stddev
    (tensor([[ 0.5000, -1.0000]]), tensor([[1., 3.]]))
    """
    if not isinstance(output, torch.Tensor) or not output.is_floating_point() or output.ndim == 0:
        raise ValueError("the encoder's output must be a floating-point tensor [..., 2d]")
    if output.shape[-1] % 2 or output.shape[-1] == 0:
        raise ValueError(f"the encoder's output must have an even last dimension 2d, got shape {tuple(output.shape)}")
    mean, log_variance = output.chunk(2, dim=-1)  # [..., d] each
    return Independent(Normal(mean, torch.exp(0.5 * log_variance)), 1)


class _Constant(nn.Module):
    """The same learned output for every input: ``[..., D]`` to ``[..., size]`` (the encoder of rank 0)."""

    def __init__(self, size: int, dtype=None, device=None):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(size, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(*x.shape[:-1], 1) + self.value  # not a view: under no_grad, no gradient either


class GaussianEncoder(nn.Module):
    r"""The amortized Gaussian family of chapter 4: one network φ maps every x to its own q,

    .. math::  q_\phi(z \mid x) = \mathcal N\big(\mu_\phi(x),\ \operatorname{diag} \sigma_\phi^2(x)\big),

    returned as ``Independent(Normal(μ, σ), 1)`` by :func:`encoder_distribution`: ``x`` ``[..., D]`` gives batch
    shape ``[...]`` and event shape ``[d]``. The capacity of the family is set by

    - ``hidden``: the widths of the hidden layers (each followed by ``activation``); ``()`` is a linear encoder;
    - ``rank``: if given, x first passes through a linear map to ``rank`` numbers, so that a linear encoder's mean
      μ_φ(x) = B A x + c is a matrix of rank ≤ ``rank`` applied to x; ``rank=0`` ignores x altogether: one q_φ(z)
      for every x, a parametric family without amortization;
    - ``scale``: ``"amortized"`` (σ_φ(x) from the network, which outputs [μ, log σ²], 2d numbers), ``"shared"``
      (one learned σ for every x) or a positive number (a fixed σ, not learned).

    >>> encoder = GaussianEncoder(data_dim=5, latent_dim=2, hidden=(16,))
    >>> q = encoder(torch.zeros(3, 5))
    >>> q.batch_shape, q.event_shape
    (torch.Size([3]), torch.Size([2]))
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        hidden: Sequence[int] = (),
        *,
        rank: int | None = None,
        scale: str | float = "amortized",
        activation: Callable[[], nn.Module] = nn.Tanh,
        dtype=None,
        device=None,
    ):
        super().__init__()
        self.data_dim = check_positive_int(data_dim, "data_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        hidden = tuple(hidden)
        for width in hidden:
            check_positive_int(width, "each hidden width")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 0):
            raise ValueError(f"rank must be a non-negative int or None, got {rank!r}")
        if rank == 0 and hidden:
            raise ValueError("rank=0 ignores x, so hidden layers would compute a constant: leave hidden empty")
        if isinstance(scale, str):
            if scale not in ("amortized", "shared"):
                raise ValueError(f"scale must be 'amortized', 'shared' or a positive number, got {scale!r}")
        elif isinstance(scale, bool) or not isinstance(scale, int | float) or not (0 < scale < math.inf):
            raise ValueError(f"scale must be 'amortized', 'shared' or a positive number, got {scale!r}")
        self.hidden, self.rank, self.scale = hidden, rank, scale
        factory = {"dtype": dtype, "device": device}
        layers: list[nn.Module] = []
        width = data_dim
        if rank:
            layers.append(nn.Linear(data_dim, rank, bias=False, **factory))  # the bottleneck A
            width = rank
        for size in hidden:
            layers += [nn.Linear(width, size, **factory), activation()]
            width = size
        outputs = 2 * latent_dim if scale == "amortized" else latent_dim
        if rank == 0:
            self.network = _Constant(outputs, **factory)
        else:
            last = nn.Linear(width, outputs, **factory)
            nn.init.zeros_(last.weight)  # every q_φ(z|x) starts as N(0, I), the prior, as the families above do
            nn.init.zeros_(last.bias)
            self.network = nn.Sequential(*layers, last)
        if scale == "shared":
            self.log_variance = nn.Parameter(torch.zeros(latent_dim, **factory))
        elif scale != "amortized":
            log_variance = torch.full((latent_dim,), 2 * math.log(scale), **factory)
            self.register_buffer("log_variance", log_variance)

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The raw output [μ_φ(x), log σ²_φ(x)] ``[..., 2d]`` that :func:`encoder_distribution` turns into q."""
        check_last_dim(x, self.data_dim, "x")
        output = self.network(x)
        if self.scale == "amortized":
            return output
        return torch.cat([output, self.log_variance.expand_as(output)], dim=-1)

    def forward(self, x: torch.Tensor) -> Independent:
        """q_φ(z|x), one Gaussian per example of ``x`` ``[..., D]``."""
        return encoder_distribution(self.output(x))

    def extra_repr(self) -> str:
        return f"data_dim={self.data_dim}, latent_dim={self.latent_dim}, rank={self.rank}, scale={self.scale!r}"


def fit_encoder(
    model,
    x: torch.Tensor,
    encoder: nn.Module,
    steps: int,
    lr: float,
    num_samples: int = 1,
    exact: bool = False,
    monitor: Monitor | None = None,
) -> dict[str, torch.Tensor]:
    r"""Amortized variational inference with θ fixed: Adam on the encoder's φ to maximise the average ELBO
    (chapter 4),

    .. math::  \max_\phi \frac1n \sum_{i=1}^n \mathcal L_{\phi,\theta}(x_i), \qquad
               \mathcal L_{\phi,\theta}(x) = \mathbb E_{q_\phi(z|x)}[\log p(x \mid z, \theta)]
               - KL(q_\phi(z \mid x) \,\|\, p(z)).

    One set of parameters serves every x, new ones included: q for a new x is one forward pass. ``encoder(x)``
    returns q_φ(z|x) for ``x`` ``[n, D]`` (e.g. :class:`GaussianEncoder`). Arguments and the history are those of
    :func:`fit_q`; the model's parameters and their ``.grad`` are left as they were.
    """
    return ascend_elbo(encoder.parameters(), model, x, lambda: encoder(x), steps, lr, num_samples, exact, monitor, True)


@dataclass
class InferenceGaps:
    r"""The two parts of the ELBO's gap for an amortized q (Cremer et al., 2018), one value per example:

    .. math::  \log p(x) - \mathcal L[q_\phi(z|x)]
               = \underbrace{\log p(x) - \mathcal L[q^*_x]}_{\text{approximation gap}}
               + \underbrace{\mathcal L[q^*_x] - \mathcal L[q_\phi(z|x)]}_{\text{amortization gap}},

    where q*_x is the best q of the family for x alone (per-datapoint VI). Chapter 4.
    """

    approximation: torch.Tensor
    amortization: torch.Tensor

    @property
    def inference(self) -> torch.Tensor:
        """The whole gap log p(x) − L[q_φ(z|x)] = KL(q_φ(z|x) ‖ p(z|x)): the sum of the two."""
        return self.approximation + self.amortization


def inference_gaps(log_px: torch.Tensor, best_elbo: torch.Tensor, amortized_elbo: torch.Tensor) -> InferenceGaps:
    """Split log p(x) − L[q_φ(z|x)] into the approximation and the amortization gap, one value per example
    (chapter 4): ``log_px`` is log p(x) (exact or a tight estimate), ``best_elbo`` the ELBO of the best q of the
    family for each x alone, ``amortized_elbo`` that of the encoder's q_φ(z|x), all of the same shape.

    >>> gaps = inference_gaps(torch.tensor([-3.0]), torch.tensor([-3.5]), torch.tensor([-4.25]))
    >>> gaps.approximation, gaps.amortization, gaps.inference
    (tensor([0.5000]), tensor([0.7500]), tensor([1.2500]))
    """
    shapes = {tuple(torch.as_tensor(value).shape) for value in (log_px, best_elbo, amortized_elbo)}
    if len(shapes) != 1:
        raise ValueError(f"log_px, best_elbo and amortized_elbo must have the same shape, got {sorted(shapes)}")
    return InferenceGaps(approximation=log_px - best_elbo, amortization=best_elbo - amortized_elbo)


@dataclass
class EMHistory:
    """What :func:`fit_em` returns (chapter 4).

    ``metrics``: name -> ``[T + 1, n]``; row t holds the values after t updates (row 0: at the start), for the
    names of :func:`fit_q`'s history. ``phases``: the kind of each of the T updates, ``"E"`` (φ), ``"M"`` (θ) or
    ``"joint"`` (both). ``steps_per_round``: updates per round, so that ``per_round(name)`` picks the rows at the
    end of each round.
    """

    metrics: dict[str, torch.Tensor]
    phases: tuple[str, ...]
    steps_per_round: int

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.metrics[name]

    def per_round(self, name: str) -> torch.Tensor:
        """``metrics[name]`` at the start and at the end of every round: ``[rounds + 1, n]``."""
        return self.metrics[name][:: self.steps_per_round]


def _make_optimizer(name: str, parameters: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' (the lecture's plain gradient step) or 'adam', got {name!r}")


def fit_em(
    model,
    x: torch.Tensor,
    encoder: nn.Module,
    rounds: int,
    lr: float,
    *,
    e_steps: int = 1,
    m_steps: int = 1,
    joint: bool = False,
    num_samples: int = 1,
    exact: bool = False,
    monitor: Monitor | None = None,
    optimizer: str = "adam",
) -> EMHistory:
    r"""EM by gradients (chapter 4): maximise the average ELBO (1/n) Σ_i L_{φ,θ}(x_i) over the encoder's φ and
    the model's θ, in ``rounds`` rounds of

    .. math::  \text{E-step:}\quad \phi_k = \phi_{k-1} + \eta \nabla_\phi \mathcal L_{\phi,\theta_{k-1}}(x)
               \big|_{\phi=\phi_{k-1}} \quad (\texttt{e\_steps} \text{ times}),

    .. math::  \text{M-step:}\quad \theta_k = \theta_{k-1} + \eta \nabla_\theta \mathcal L_{\phi_k,\theta}(x)
               \big|_{\theta=\theta_{k-1}} \quad (\texttt{m\_steps} \text{ times}),

    or, if ``joint``, of one step on φ and θ together (what is done in practice). ``optimizer="sgd"`` takes the
    lecture's plain steps of size η = ``lr``, which raise the ELBO at every step only while η is below about
    2 / (the ELBO's largest curvature); ``"adam"`` (the default) scales the step of each parameter, with one
    Adam for φ and one for θ, kept across rounds. Unlike classic EM, the E-step does not set q to the posterior:
    KL(q_φ(z|x) ‖ p(z|x, θ)) stays > 0. ``num_samples``, ``exact`` and ``monitor`` are those of :func:`fit_q`.
    The model and the encoder are changed in place.
    """
    for value, name in ((rounds, "rounds"), (e_steps, "e_steps"), (m_steps, "m_steps")):
        check_positive_int(value, name)
    check_num_samples(num_samples)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    phi = [p for p in encoder.parameters() if p.requires_grad]
    theta = [p for p in model.parameters() if p.requires_grad]
    if not phi or not theta:
        raise ValueError("fit_em needs parameters to optimise in both the encoder (φ) and the model (θ)")
    optimizers = {"E": _make_optimizer(optimizer, phi, lr), "M": _make_optimizer(optimizer, theta, lr)}
    groups = {"E": phi, "M": theta, "joint": phi + theta}
    schedule = ["joint"] if joint else ["E"] * e_steps + ["M"] * m_steps
    history: dict[str, list[torch.Tensor]] = {}

    def evaluate(parameters):
        q = encoder(x)
        terms = exact_elbo(model, x, q) if exact else elbo(model, x, q, num_samples)
        record_metrics(history, terms, q, monitor)
        if parameters is None:
            return None
        return torch.autograd.grad(-terms.elbo.mean(), parameters, allow_unused=True)

    phases = []
    for _ in range(rounds):
        for phase in schedule:
            parameters = groups[phase]
            gradients = evaluate(parameters)  # records the state before this update
            for parameter, gradient in zip(parameters, gradients, strict=True):
                parameter.grad = gradient
            steppers = [optimizers["E"], optimizers["M"]] if phase == "joint" else [optimizers[phase]]
            for stepper in steppers:
                stepper.step()
                stepper.zero_grad(set_to_none=True)
            phases.append(phase)
    with torch.no_grad():
        evaluate(None)  # the state after the last update
    metrics = {name: torch.stack(values) for name, values in history.items()}
    return EMHistory(metrics=metrics, phases=tuple(phases), steps_per_round=len(schedule))
