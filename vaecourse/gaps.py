r"""The inference gaps of a trained VAE (chapter 6; Cremer, Li & Duvenaud, 2018): where does the ELBO lose?

For each example, with the encoder's q_φ(z|x) and the best Gaussian of the same family q*(z) = argmax_q L_q(x),

.. math::  \underbrace{\log p(x) - \mathcal L_{q_φ}(x)}_{\text{inference gap}}
           = \underbrace{\log p(x) - \mathcal L_{q^*}(x)}_{\text{approximation gap}}
           + \underbrace{\mathcal L_{q^*}(x) - \mathcal L_{q_φ}(x)}_{\text{amortization gap}} .

The approximation gap is KL(q* ‖ p(z|x)), what a diagonal Gaussian cannot express; the amortization gap is what the
encoder loses by predicting q from x with one network instead of optimising it for each x (the lecture's
"encoder's limits"). q* is found by Adam on the ELBO of each example, started at the encoder's output, batched
over the examples; log p(x) is estimated by importance sampling with q* as the proposal (the IWAE bound with k
samples, Burda et al.), as Cremer et al. estimate it with IWAE (and AIS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, Normal

from . import estimators
from .checks import check_num_samples
from .estimators import Estimate
from .runtime import seeded

__all__ = ["InferenceGaps", "inference_gaps", "optimise_posterior"]

_CHUNK_ELEMENTS = 2**22


def _diagonal_gaussian(q: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1):
        raise ValueError("the posterior must be a diagonal Gaussian Independent(Normal(loc, scale), 1)")
    return q.base_dist.loc.detach(), q.base_dist.scale.detach()


def _draws(loc, scale, count, generator):
    eps = torch.randn((count, *loc.shape), generator=generator, dtype=loc.dtype, device=loc.device)
    return loc + scale * eps  # [count, B, d]


def _elbo(model, x, loc, scale, num_samples, generator) -> torch.Tensor:
    """The ELBO of each example ``[B]`` with q = N(loc, diag scale²), from ``num_samples`` reparameterized draws (in
    chunks); the KL analytic where the prior allows it."""
    q = Independent(Normal(loc, scale), 1)
    closed_form = estimators.closed_form_kl(q, model.prior)
    size = max(1, min(num_samples, _CHUNK_ELEMENTS // max(1, x.numel())))
    total = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)
    for start in range(0, num_samples, size):
        z = _draws(loc, scale, min(size, num_samples - start), generator)
        values = model.likelihood(z).log_prob(x)  # [S, B]
        if closed_form is None:
            values = values + model.prior.log_prob(z) - q.log_prob(z)
        total = total + values.double().sum(0)
    mean = total / num_samples
    return mean - closed_form.double() if closed_form is not None else mean


def _iwae(model, x, loc, scale, num_samples, generator) -> torch.Tensor:
    """The IWAE estimate of log p(x) ``[B]`` with q = N(loc, diag scale²) as the proposal:
    :func:`vaecourse.estimators.log_marginal_is`, its draws seeded from ``generator``."""
    seed = None if generator is None else int(torch.randint(2**62, (), generator=generator, device=generator.device))
    with seeded(seed, x.device):
        return estimators.log_marginal_is(model, x, Independent(Normal(loc, scale), 1), num_samples).double()


def optimise_posterior(
    model,
    x: torch.Tensor,
    q: Distribution,
    steps: int = 500,
    lr: float = 1e-2,
    num_samples: int = 16,
    generator: torch.Generator | None = None,
) -> Independent:
    r"""q*(z) for each row of ``x`` ``[B, D]``: the diagonal Gaussian that maximises the ELBO, found by ``steps`` of
    Adam (learning rate ``lr``, decayed to 0 by a cosine) on the sum over the examples of their ELBO estimates
    (``num_samples`` reparameterized draws each), started at ``q`` (the encoder's output, batch ``[B]``). The model
    is left unchanged. Chapter 6; Cremer et al. (2018)."""
    check_num_samples(steps, "steps")
    check_num_samples(num_samples)
    loc, scale = _diagonal_gaussian(q)
    loc = loc.clone().requires_grad_(True)
    log_scale = scale.log().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([loc, log_scale], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        for _ in range(steps):
            loss = -_elbo(model, x, loc, log_scale.exp(), num_samples, generator).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    finally:
        for parameter, flag in zip(model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
    return Independent(Normal(loc.detach(), log_scale.detach().exp()), 1)


@dataclass
class InferenceGaps:
    """The gaps of :func:`inference_gaps`, means over the examples with standard errors (nats), and the
    ``per_example`` values (``log_likelihood``, ``elbo_encoder``, ``elbo_optimal``, ``iwae_encoder``,
    ``iwae_optimal``, and q*'s ``optimal_loc`` and ``optimal_scale``)."""

    log_likelihood: Estimate
    elbo_optimal: Estimate
    elbo_encoder: Estimate
    approximation_gap: Estimate
    amortization_gap: Estimate
    inference_gap: Estimate
    per_example: dict
    num_examples: int
    num_samples: int
    steps: int

    def __str__(self) -> str:
        return (
            f"log p(x) {self.log_likelihood}, ELBO(q*) {self.elbo_optimal}, ELBO(q) {self.elbo_encoder}; "
            f"approximation gap {self.approximation_gap}, amortization gap {self.amortization_gap}, "
            f"inference gap {self.inference_gap} nats ({self.num_examples} examples)"
        )


def inference_gaps(
    model,
    x: torch.Tensor,
    q: Distribution | None = None,
    num_samples: int = 5000,
    elbo_samples: int = 1000,
    steps: int = 500,
    lr: float = 1e-2,
    optimiser_samples: int = 16,
    batch_size: int = 100,
    generator: torch.Generator | None = None,
) -> InferenceGaps:
    r"""The approximation and amortization gaps of ``model`` on the examples ``x`` ``[N, D]`` (chapter 6;
    Cremer, Li & Duvenaud, 2018).

    ``q`` is the amortized posterior, batch ``[N]`` (default: ``model.encode(x)``). For each batch of examples,
    q* = :func:`optimise_posterior` (``steps``, ``lr``, ``optimiser_samples``), then with fresh draws from
    ``generator``: the ELBO with q and with q* (``elbo_samples`` draws each), and log p̂(x) by the IWAE estimate with
    k = ``num_samples`` and q* as the proposal (a lower bound of log p(x) in expectation, the tighter the better
    the proposal; the IWAE estimate with the encoder's q is in ``per_example["iwae_encoder"]``; taking the larger
    of the two per example would be biased upwards where a poor proposal's estimate scatters). The gaps are paired
    differences per example, so their standard errors are those of the differences.
    """
    check_num_samples(num_samples)
    check_num_samples(elbo_samples, "elbo_samples")
    check_num_samples(batch_size, "batch_size")
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a batch of examples [N, D], got {getattr(x, 'shape', type(x).__name__)}")
    if hasattr(model, "check_data"):
        model.check_data(x)
    if q is None:
        with torch.no_grad():
            q = model.encode(x)
    loc, scale = _diagonal_gaussian(q)
    if loc.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"q must have batch shape [{len(x)}] (one posterior per example), got {tuple(loc.shape[:-1])}")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    names = ("elbo_encoder", "elbo_optimal", "iwae_encoder", "iwae_optimal", "optimal_loc", "optimal_scale")
    columns = {name: [] for name in names}
    try:
        for start in range(0, len(x), batch_size):
            rows = slice(start, start + batch_size)
            batch, batch_q = x[rows], Independent(Normal(loc[rows], scale[rows]), 1)
            best = optimise_posterior(model, batch, batch_q, steps, lr, optimiser_samples, generator)
            best_loc, best_scale = _diagonal_gaussian(best)
            columns["optimal_loc"].append(best_loc)
            columns["optimal_scale"].append(best_scale)
            with torch.no_grad():
                columns["elbo_encoder"].append(_elbo(model, batch, loc[rows], scale[rows], elbo_samples, generator))
                columns["elbo_optimal"].append(_elbo(model, batch, best_loc, best_scale, elbo_samples, generator))
                columns["iwae_encoder"].append(_iwae(model, batch, loc[rows], scale[rows], num_samples, generator))
                columns["iwae_optimal"].append(_iwae(model, batch, best_loc, best_scale, num_samples, generator))
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    per_example = {name: torch.cat(values).cpu() for name, values in columns.items()}
    log_p = per_example["iwae_optimal"]
    per_example["log_likelihood"] = log_p
    return InferenceGaps(
        log_likelihood=Estimate.of(log_p),
        elbo_optimal=Estimate.of(per_example["elbo_optimal"]),
        elbo_encoder=Estimate.of(per_example["elbo_encoder"]),
        approximation_gap=Estimate.of(log_p - per_example["elbo_optimal"]),
        amortization_gap=Estimate.of(per_example["elbo_optimal"] - per_example["elbo_encoder"]),
        inference_gap=Estimate.of(log_p - per_example["elbo_encoder"]),
        per_example=per_example,
        num_examples=len(x),
        num_samples=num_samples,
        steps=steps,
    )
