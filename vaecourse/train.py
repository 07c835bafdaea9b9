r"""Training a VAE by stochastic gradient ascent on the ELBO (chapter 6, the lecture's training algorithm):

x → encoder → (μ, σ) → z = μ + σ·ε, ε ~ N(0, I) → decoder → −ELBO → ∇ → update φ, θ (and λ, a learned prior's
parameters, chapter 8).

The data stay one tensor on the model's device: each epoch is a random permutation cut into mini-batches, with
no per-example loader. ``fit`` returns the history of the metrics it watched.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from . import collapse, widgets
from .checks import check_positive_int
from .estimators import ElboTerms
from .runtime import seeded
from .vae import VAE

__all__ = ["DivergenceError", "FitResult", "TrainConfig", "fit", "fit_new", "mean_elbo", "step"]

SCHEDULES = ("constant", "cosine")
_clock = time.perf_counter  # the wall clock of a seconds budget (a test replaces it with a fake one)


class DivergenceError(FloatingPointError):
    """The loss became NaN or infinite during training; the message names the step and the term."""


@dataclass
class TrainConfig:
    """How to train (chapter 6). Give ``epochs`` (passes over the data), ``seconds`` (a wall-clock budget), or both
    (whichever ends first).

    - ``schedule``: ``"constant"`` learning rate, or ``"cosine"`` decay from ``lr`` to 0 over the run (over the
      ``seconds`` budget when one is given, so a timed run ends at a small step size).
    - ``warmup_epochs``: the KL weight rises linearly from 0 to ``beta`` over this many epochs (KL annealing).
    - ``patience``: stop when the validation ELBO has not improved for this many epochs, and restore the best
      weights (needs ``valid``).
    - ``clip_grad_norm``: clip the gradient's global norm to this value.
    - ``free_bits``: the floor λ, in nats per latent dimension, of the free-bits objective (chapter 9,
      :mod:`vaecourse.collapse`); 0 trains on the β-weighted ELBO itself.
    - ``bound``: ``"elbo"``, or ``"iwae"`` to climb the importance-weighted bound with K = ``num_samples``
      samples (chapter 10; needs β = 1 and no warm-up). The history's ``train_elbo`` stays the ELBO.
    """

    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "constant"
    epochs: int | None = 10
    seconds: float | None = None
    beta: float = 1.0
    warmup_epochs: float = 0.0
    num_samples: int = 1
    patience: int | None = None
    clip_grad_norm: float | None = None
    seed: int = 0
    progress: bool | None = None  # None: a progress bar unless widgets are off (VAECOURSE_WIDGETS, headless runs)
    free_bits: float = 0.0
    bound: str = "elbo"

    def __post_init__(self):
        check_positive_int(self.batch_size, "TrainConfig.batch_size")
        check_positive_int(self.num_samples, "TrainConfig.num_samples")
        if not (isinstance(self.lr, float | int) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs is None and self.seconds is None:
            raise ValueError("TrainConfig needs epochs or seconds (a wall-clock budget), or both")
        if self.epochs is not None:
            check_positive_int(self.epochs, "TrainConfig.epochs")
        if self.seconds is not None and not (isinstance(self.seconds, float | int) and self.seconds > 0):
            raise ValueError(f"TrainConfig.seconds must be a positive number, got {self.seconds!r}")
        if not (isinstance(self.beta, float | int) and self.beta >= 0):
            raise ValueError(f"TrainConfig.beta must be a number >= 0, got {self.beta!r}")
        if not (isinstance(self.warmup_epochs, float | int) and self.warmup_epochs >= 0):
            raise ValueError(f"TrainConfig.warmup_epochs must be a number >= 0, got {self.warmup_epochs!r}")
        if self.patience is not None:
            check_positive_int(self.patience, "TrainConfig.patience")
        if self.clip_grad_norm is not None and not (self.clip_grad_norm > 0):
            raise ValueError(f"TrainConfig.clip_grad_norm must be positive, got {self.clip_grad_norm!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be a non-negative int, got {self.seed!r}")
        if isinstance(self.free_bits, bool) or not (isinstance(self.free_bits, float | int) and self.free_bits >= 0):
            raise ValueError(f"TrainConfig.free_bits must be a number of nats >= 0, got {self.free_bits!r}")
        if self.bound not in ("elbo", "iwae"):
            raise ValueError(f"TrainConfig.bound must be 'elbo' or 'iwae', got {self.bound!r}")
        if self.bound == "iwae" and (self.beta != 1.0 or self.warmup_epochs):
            raise ValueError("TrainConfig.bound='iwae' is a bound on log p(x): it needs beta = 1 and no warm-up")
        if self.bound == "iwae" and self.free_bits:
            raise ValueError("TrainConfig.free_bits applies to the ELBO's KL term: use it with bound='elbo'")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    """What :func:`fit` measured. Per epoch: ``train_elbo`` (the mean ELBO over the epoch's mini-batches, at β = 1),
    ``train_kl``, ``valid_elbo`` (if ``valid`` was given), ``lr``, ``beta`` and ``seconds`` (training time so far).
    ``images_per_second`` counts training steps only (validation excluded)."""

    epochs: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    best_epoch: int | None = None
    stopped_early: bool = False
    history: dict[str, list[float]] = field(
        default_factory=lambda: {k: [] for k in ("train_elbo", "train_kl", "valid_elbo", "lr", "beta", "seconds")}
    )

    @property
    def final_train_elbo(self) -> float:
        return self.history["train_elbo"][-1]

    @property
    def final_valid_elbo(self) -> float | None:
        values = self.history["valid_elbo"]
        return values[-1] if values else None

    def summary(self) -> dict:
        """The numbers a run reports (``metrics.json``)."""
        return {
            "epochs": self.epochs,
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "images_per_second": self.images_per_second,
            "final_train_elbo": self.final_train_elbo,
            "final_valid_elbo": self.final_valid_elbo,
            "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early,
        }


def _as_data(data, name: str) -> torch.Tensor:
    x = getattr(data, "x", data)  # a vaecourse.data.Dataset or a tensor
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"{name} must be a Dataset or a tensor [N, D], got {getattr(x, 'shape', type(x).__name__)}")
    return x


@torch.no_grad()
def mean_elbo(model, x: torch.Tensor, batch_size: int = 1000, seed: int | None = 0) -> float:
    """The ELBO averaged over the rows of ``x`` (one sample of z each), in nats; evaluation only.

    With a ``seed`` the noise is the same at every call (common random numbers), so that two epochs' validation
    ELBOs differ by what the weights changed, not by the draw; torch's global generator is left as it was.
    """
    was_training = model.training
    model.eval()
    total = 0.0
    with seeded(seed, x.device):
        for start in range(0, len(x), batch_size):
            total += model._elbo(x[start : start + batch_size]).elbo.sum().item()
    model.train(was_training)
    return total / len(x)


def step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    beta: float = 1.0,
    *,
    num_samples: int = 1,
    eps: torch.Tensor | None = None,
    clip_grad_norm: float | None = None,
    free_bits: float = 0.0,
    bound: str = "elbo",
) -> ElboTerms:
    r"""One step of the lecture's training algorithm (chapter 6) on a mini-batch ``batch`` ``[B, D]``; returns the
    per-example ELBO terms of the batch, computed before the update.

    x → encoder → (μ, σ) → z = μ + σ·ε → decoder → loss = −(log p(x|z) − β·KL), averaged over the batch → ∇ → update.
    ``eps`` fixes the noise ε (``[B, d]``); by default it is drawn. A NaN or infinite loss raises
    :class:`DivergenceError` before it reaches the weights. With ``free_bits`` λ > 0 the KL term of the loss is the
    free-bits one, β·Σ_j max(λ, batch-mean KL_j) over the latent coordinates j (chapter 9). ``bound="iwae"`` climbs
    the IWAE bound instead (chapter 10).
    """
    terms = model._elbo(batch, num_samples, beta, eps=eps, bound=bound, free_bits=free_bits)  # q, z, p(x|z), KL
    loss = -terms.objective.mean()  # −ELBO at β = 1: summed over the pixels, averaged over the batch
    _check_finite(loss, terms)
    optimizer.zero_grad(set_to_none=True)  # backward() adds to .grad: start from zero
    loss.backward()  # ∇ of the loss for φ, θ (and a learned prior's λ), in one pass
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()  # update φ, θ, λ together
    return terms


def _check_finite(loss: torch.Tensor, terms: ElboTerms) -> None:
    if torch.isfinite(loss):
        return
    bad = [name for name in ("log_px_z", "kl") if not bool(torch.isfinite(getattr(terms, name)).all())]
    where = " and ".join(f"the {name} term" for name in bad) or "the loss"
    raise DivergenceError(
        f"training diverged: {where} is {loss.item()} (NaN or infinite). Lower the learning rate, "
        "clip gradients (TrainConfig.clip_grad_norm) or check the data for NaN or out-of-range values"
    )


def _progress(config: TrainConfig, total: int | None):
    enabled = config.progress
    if enabled is None:
        enabled = widgets.enabled()  # VAECOURSE_WIDGETS=off (or 0, false, no) also hides the progress bar
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="epoch", desc="training", mininterval=0.5)


def fit(model: nn.Module, train, valid=None, *, config: TrainConfig | None = None) -> FitResult:
    r"""Train ``model`` (a :class:`vaecourse.vae.VAE`) on ``train`` (a Dataset or tensor ``[N, D]`` on the model's
    device) by Adam on −ELBO, summed over pixels and averaged over the mini-batch (chapter 6).

    Returns a :class:`FitResult` with the per-epoch history. The run draws from ``config.seed`` and leaves the
    caller's generators as they were; with an ``epochs`` budget, a CPU run is reproducible. A NaN or infinite
    loss raises :class:`DivergenceError` naming the step and the term.
    """
    config = config or TrainConfig()
    x = _as_data(train, "train")
    x_valid = _as_data(valid, "valid") if valid is not None else None
    model.check_data(x)
    if x_valid is not None:
        model.check_data(x_valid)
    if config.free_bits:
        collapse.kl_per_dimension(model.encode(x[:1]), model.prior)  # ValueError now if the prior is not Gaussian
    if config.patience is not None and x_valid is None:
        raise ValueError("TrainConfig.patience (early stopping) needs a validation set: fit(model, train, valid)")
    parameter = next(model.parameters())
    if x.device != parameter.device:
        raise ValueError(f"train is on {x.device} but the model is on {parameter.device}: move one with .to(...)")

    with seeded(config.seed, x.device):  # the run's draws depend on the seed alone; the caller's are left alone
        return _train(model, x, x_valid, config)


def fit_new(model_config, x_train: torch.Tensor, x_valid=None, *, config: TrainConfig) -> tuple[nn.Module, FitResult]:
    """A new :class:`vaecourse.vae.VAE` of ``model_config`` on ``x_train``'s device, its initial weights drawn from
    ``config.seed`` (the caller's generator is left as it was), trained by :func:`fit`: the model and its result."""
    with seeded(config.seed):
        model = VAE(model_config).to(x_train.device)
    return model, fit(model, x_train, x_valid, config=config)


def _train(model: nn.Module, x: torch.Tensor, x_valid: torch.Tensor | None, config: TrainConfig) -> FitResult:
    """:func:`fit` after its checks, with the generators seeded."""
    parameter = next(model.parameters())
    generator = torch.Generator(device=x.device).manual_seed(config.seed)
    model.latent_prior.initialise_from_data(x, generator=generator)  # the VampPrior's pseudo-inputs: training images
    fused = parameter.device.type in ("cpu", "cuda")  # the fused Adam kernel: one pass over all parameters
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    batches_per_epoch = math.ceil(len(x) / config.batch_size)
    total_steps = batches_per_epoch * config.epochs if config.epochs is not None else None

    result = FitResult()
    clip, fb = config.clip_grad_norm, config.free_bits
    best, best_state, since_best = -math.inf, None, 0
    bar = _progress(config, config.epochs)
    train_time, images = 0.0, 0
    model.train()
    try:
        while config.epochs is None or result.epochs < config.epochs:
            start = _clock()
            beta = collapse.kl_weight(result.epochs, config.beta, config.warmup_epochs)
            permutation = torch.randperm(len(x), device=x.device, generator=generator)
            epoch_elbo = torch.zeros((), device=x.device)
            epoch_kl = torch.zeros((), device=x.device)
            seen, out_of_time = 0, False
            for index in range(batches_per_epoch):
                fraction = _fraction(config, result.steps, total_steps, train_time + _clock() - start)
                if fraction >= 1.0 and config.seconds is not None and seen > 0:
                    out_of_time = True
                    break
                lr = config.lr * (
                    0.5 * (1 + math.cos(math.pi * min(fraction, 1.0))) if config.schedule == "cosine" else 1
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                batch = x[permutation[index * config.batch_size : (index + 1) * config.batch_size]]
                try:
                    terms = step(
                        model,
                        optimizer,
                        batch,
                        beta,
                        num_samples=config.num_samples,
                        clip_grad_norm=clip,
                        free_bits=fb,
                        bound=config.bound,
                    )
                except DivergenceError as error:  # the message names the step
                    message = str(error).replace("training diverged", f"training diverged at step {result.steps}", 1)
                    raise DivergenceError(message) from None
                result.steps += 1
                seen += len(batch)
                with torch.no_grad():
                    epoch_elbo += terms.elbo.detach().sum()
                    epoch_kl += terms.kl.detach().sum()
            train_time += _clock() - start
            images += seen
            result.epochs += 1
            history = result.history
            history["train_elbo"].append(epoch_elbo.item() / seen)
            history["train_kl"].append(epoch_kl.item() / seen)
            history["lr"].append(lr)
            history["beta"].append(beta)
            history["seconds"].append(train_time)
            if x_valid is not None:
                valid_elbo = mean_elbo(model, x_valid)
                history["valid_elbo"].append(valid_elbo)
                if valid_elbo > best:
                    best, since_best, result.best_epoch = valid_elbo, 0, result.epochs
                    if config.patience is not None:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since_best += 1
            if bar is not None:
                bar.update(1)
                shown = {"elbo": f"{history['train_elbo'][-1]:.2f}"}
                if x_valid is not None:
                    shown["valid"] = f"{history['valid_elbo'][-1]:.2f}"
                bar.set_postfix(shown)
            if config.patience is not None and since_best >= config.patience:
                result.stopped_early = True
                break
            if out_of_time or (config.seconds is not None and train_time >= config.seconds):
                break
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.train_seconds = train_time
    result.images_per_second = images / train_time if train_time > 0 else 0.0
    return result


def _fraction(config: TrainConfig, step: int, total_steps: int | None, elapsed: float) -> float:
    """How far through its budget the run is, in [0, 1+): by steps, by seconds, or the larger of the two."""
    fractions = []
    if total_steps:
        fractions.append(step / total_steps)
    if config.seconds is not None:
        fractions.append(elapsed / config.seconds)
    return max(fractions)
