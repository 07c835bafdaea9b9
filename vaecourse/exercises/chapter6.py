r"""Checkers for the exercises of chapter 6, "The variational autoencoder".

- :func:`check_vae_loss`: ``vae_loss(x, logits, mean, std)``, the lecture's loss for one example and one sample
  z* of q_φ(z|x): −log p_θ(x|z*) (Bernoulli pixels, summed over the D pixels) + KL(N(μ, diag σ²) ‖ N(0, I)),
  one value per example;
- :func:`check_fixed_loss`: the repaired version of a loss that averages where it should sum: the training loss,
  the negative ELBO averaged over the batch, one number;
- :func:`check_training_step`: ``training_step(model, optimizer, x, eps)``, one step of the lecture's training
  algorithm: encoder → (μ, σ) → z* = μ + σ·ε* → decoder → loss → gradient step on φ and θ.

Every input is built from a fixed seed, so a correct answer matches the reference to rounding.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from ..runtime import seeded
from ..train import step
from ..vae import VAE, VAEConfig
from .checking import DEFAULT_DIAGNOSES, Result, _call, check_function, close_enough, require_function

__all__ = ["check_fixed_loss", "check_training_step", "check_vae_loss"]

_DTYPE = torch.float64


# --- The reference and its parts -------------------------------------------------------------------------------


def negative_elbo(x: torch.Tensor, logits: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    r"""−log p_θ(x|z) + KL(q_φ(z|x) ‖ N(0, I)) per example ``[B]``: Bernoulli pixels with ``logits`` ``[B, D]`` (the
    decoder's output at one sample z* of q), q = N(``mean``, diag ``std``²) ``[B, d]``. Its batch mean is the loss
    that :func:`vaecourse.fit` minimises (chapter 6)."""
    log_px_z = Independent(Bernoulli(logits=logits), 1).log_prob(x)  # summed over the D pixels
    q = Independent(Normal(mean, std), 1)
    prior = Independent(Normal(torch.zeros_like(mean), torch.ones_like(std)), 1)
    return kl_divergence(q, prior) - log_px_z


def _pixel_terms(x, logits):
    """−log p(x_j | z) for each pixel, ``[B, D]`` (the binary cross-entropy)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def _kl_terms(mean, std, variance=None):
    """2·KL per latent coordinate, ``[B, d]``: σ² + μ² − 1 − log σ² (with ``variance`` in the place of σ²)."""
    variance = std**2 if variance is None else variance
    return variance + mean**2 - 1 - torch.log(variance)


def _loss_cases(shapes: list[tuple[int, int, int]], seed: int) -> list[dict]:
    """Binary images x ``[B, D]``, decoder logits, and q's (μ, σ) ``[B, d]`` with σ far from 1 (σ, σ² and log σ
    differ)."""
    generator = torch.Generator().manual_seed(seed)
    cases = []
    for batch_size, data_dim, latent_dim in shapes:
        x = (torch.rand(batch_size, data_dim, generator=generator, dtype=_DTYPE) < 0.3).to(_DTYPE)
        logits = 2.0 * torch.randn(batch_size, data_dim, generator=generator, dtype=_DTYPE)
        mean = 1.5 * torch.randn(batch_size, latent_dim, generator=generator, dtype=_DTYPE)
        std = 0.3 + 2.2 * torch.rand(batch_size, latent_dim, generator=generator, dtype=_DTYPE)
        cases.append({"x": x, "logits": logits, "mean": mean, "std": std})
    return cases


def _collapse_note(data_dim: int) -> str:
    return (
        f"the KL then weighs D = {data_dim} times more than the reconstruction (β = D), and training collapses every "
        "q_φ(z|x) onto the prior (section 2 of the chapter)"
    )


# --- Exercise 1: the loss of one example ------------------------------------------------------------------------


def _loss_mistakes(got, expected, case):
    x, logits, mean, std = case["x"], case["logits"], case["mean"], case["std"]
    data_dim = x.shape[-1]
    pixels = _pixel_terms(x, logits)  # [B, D]
    reconstruction = pixels.sum(-1)  # −log p(x|z), [B]
    kl_terms = _kl_terms(mean, std)  # [B, d]
    kl = 0.5 * kl_terms.sum(-1)
    if bool(torch.isnan(got).any()) and not bool(torch.isnan(expected).any()):
        return (
            "some values are nan: the logits are log-odds, not probabilities, and log of a negative logit is nan. "
            "The pixel probabilities are sigmoid(logits); compute log p(x|z) stably with "
            "F.binary_cross_entropy_with_logits(logits, x, reduction='none') or Bernoulli(logits=logits).log_prob(x)"
        )
    variants = [
        (
            pixels.mean(-1) + kl,
            f"you averaged the reconstruction term over the D = {data_dim} pixels: log p(x|z) is the log-probability "
            "of the whole image, a sum over its pixels (.sum(-1)). With the mean, the loss is "
            "(1/D)(−log p(x|z) + D·KL): " + _collapse_note(data_dim),
        ),
        (
            pixels.mean(-1) + 0.5 * kl_terms.mean(-1),
            f"you averaged both terms, over the D = {data_dim} pixels and over the d latent coordinates: both are "
            "log-densities of a whole vector, so both are sums (.sum(-1))",
        ),
        (
            reconstruction + 0.5 * kl_terms.mean(-1),
            "the KL is a sum over the d latent coordinates, not a mean: the coordinates of q are independent, so their "
            "KLs add up",
        ),
        (
            reconstruction,
            "the KL term is missing: loss = −log p(x|z) + KL(q_φ(z|x) ‖ p(z)), the regularisation term of the slide",
        ),
        (kl, "the reconstruction term −log p(x|z) is missing: loss = −log p(x|z) + KL(q_φ(z|x) ‖ p(z))"),
        (
            reconstruction - kl,
            "the KL is added to the loss, not subtracted: the ELBO is log p(x|z) − KL, and the loss is its negative, "
            "−log p(x|z) + KL",
        ),
        (
            -reconstruction + kl,
            "the reconstruction term has the wrong sign: the loss has −log p(x|z), the binary cross-entropy, which is "
            "positive",
        ),
        (
            -expected,
            "this is the ELBO, log p(x|z) − KL; the loss is its negative, −log p(x|z) + KL",
        ),
        (
            reconstruction + 0.5 * _kl_terms(mean, std, variance=std).sum(-1),
            "std is σ, the standard deviation: the KL needs the variance σ² = std**2 (the slide's N(μ, σ) means the "
            "variance σ², see the errata)",
        ),
        (
            reconstruction + 0.5 * (std**2 + mean**2 - 1 - torch.log(std)).sum(-1),
            "the KL has log σ², which is 2 log σ: you wrote log σ",
        ),
        (
            reconstruction + kl_terms.sum(-1),
            "the factor ½ of the KL is missing: KL = ½ Σ_j (σ_j² + μ_j² − 1 − log σ_j²)",
        ),
    ]
    probabilities = torch.sigmoid(logits)
    swapped = -(probabilities * torch.log(x).clamp_min(-100) + (1 - probabilities) * torch.log1p(-x).clamp_min(-100))
    variants.append(
        (
            swapped.sum(-1) + kl,
            "the arguments of binary_cross_entropy are swapped: it takes (input, target) = (probabilities, data)",
        )
    )
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


def _reduction_hint(got, case) -> str | None:
    """For an answer of the wrong shape: which reduction was taken where."""
    x, logits, mean, std = case["x"], case["logits"], case["mean"], case["std"]
    per_example = negative_elbo(x, logits, mean, std)
    pixels = _pixel_terms(x, logits)
    kl_terms = _kl_terms(mean, std)
    if not isinstance(got, torch.Tensor):
        return None
    got = got.detach().to(_DTYPE)
    if got.shape == pixels.shape:
        return "you returned one value per pixel: sum the reconstruction term over the D pixels (dim=-1)"
    if got.numel() != 1:
        return None
    scalars = [
        (
            per_example.mean(),
            "you averaged over the batch: return one value per example, [B]; the training loop "
            "averages over the batch itself",
        ),
        (per_example.sum(), "you summed over the batch: return one value per example, [B]"),
        (
            pixels.mean() + 0.5 * kl_terms.mean(),
            f"everything is averaged, over the batch, the D = {x.shape[-1]} pixels and the d latent coordinates (the "
            "default reduction='mean' of binary_cross_entropy, and torch.mean): "
            + _collapse_note(x.shape[-1])
            + "; return one value per example, summed over the pixels and the latent coordinates",
        ),
        (
            pixels.mean() + 0.5 * kl_terms.sum(-1).mean(),
            f"the reconstruction is averaged over the batch and the D = {x.shape[-1]} pixels (the default "
            "reduction='mean' of binary_cross_entropy): "
            + _collapse_note(x.shape[-1])
            + "; use reduction='none' and sum over the pixels, one value per example",
        ),
    ]
    return next((hint for value, hint in scalars if close_enough(got.reshape(()), value)), None)


def _with_reduction_hint(result: Result, function, case, generic: str) -> Result:
    if result.kind != "shape":
        return result
    got, problem = _call(function, case)
    hint = None if problem else _reduction_hint(got, case)
    result.details = [hint or generic]
    return result


def check_vae_loss(function: Callable) -> Result:
    """Check ``function(x, logits, mean, std) -> [B]``: the VAE's loss for each example and one sample z* of q,
    −log p_θ(x|z*) + KL(N(μ, diag σ²) ‖ N(0, I)) (chapter 6).

    ``x`` ``[B, D]`` holds binary pixels, ``logits`` ``[B, D]`` the decoder's output at z* (Bernoulli log-odds),
    ``mean`` and ``std`` ``[B, d]`` the encoder's μ and σ. Diagnoses a mean over the pixels (β = D), a missing term,
    a sign, σ for σ², log σ for log σ², a missing ½, a mean over the batch, swapped arguments, logits taken for
    probabilities.
    """
    require_function(function, "check_vae_loss", "vae_loss")
    cases = _loss_cases([(4, 784, 8), (6, 20, 2), (3, 9, 5)], seed=6)
    result = check_function("vae_loss", function, negative_elbo, cases, diagnoses=(_loss_mistakes, *DEFAULT_DIAGNOSES))
    return _with_reduction_hint(
        result, function, cases[0], "one value per example: sum over the pixels and the latent coordinates only"
    )


# --- Exercise 2: the averaged loss, repaired --------------------------------------------------------------------


def buggy_loss(x: torch.Tensor, logits: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The loss of exercise 2 as found: it runs, it decreases, and it averages where it should sum."""
    reconstruction = F.binary_cross_entropy_with_logits(logits, x)  # the default reduction="mean"
    kl = -0.5 * torch.mean(1 + torch.log(std**2) - mean**2 - std**2)
    return reconstruction + kl


def _training_loss(x, logits, mean, std):
    return negative_elbo(x, logits, mean, std).mean()


def _fixed_loss_mistakes(got, expected, case):
    x, logits, mean, std = case["x"], case["logits"], case["mean"], case["std"]
    batch_size, data_dim = x.shape
    pixels = _pixel_terms(x, logits)
    reconstruction = pixels.sum(-1).mean()
    kl_terms = _kl_terms(mean, std)
    kl = 0.5 * kl_terms.sum(-1).mean()
    variants = [
        (
            buggy_loss(x, logits, mean, std),
            "this is still the loss as found: both torch.mean and the default reduction='mean' divide by the pixels "
            f"(D = {data_dim}) and the latent coordinates as well as by the batch; " + _collapse_note(data_dim),
        ),
        (
            reconstruction + 0.5 * kl_terms.mean(),
            "the reconstruction is repaired, but the KL is still averaged over the d latent coordinates: sum it over "
            "them (dim=-1), then average over the batch",
        ),
        (
            pixels.mean() + kl,
            f"the KL is repaired, but the reconstruction is still averaged over the D = {data_dim} pixels: use "
            "reduction='none', sum over the pixels (dim=-1), then average over the batch; " + _collapse_note(data_dim),
        ),
        (
            pixels.sum() + kl,
            "the reconstruction is summed over the batch as well as the pixels (reduction='sum'): divide it by the "
            "batch size B, as the KL is averaged over the batch",
        ),
        (
            pixels.sum() + kl * batch_size,
            "you summed over the batch: the training loss is the mean over the batch (a sum makes the step size grow "
            "with the batch size); divide by B",
        ),
        (
            reconstruction - kl,
            "the KL is added to the loss, not subtracted: −ELBO = −log p(x|z) + KL",
        ),
    ]
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


def check_fixed_loss(function: Callable) -> Result:
    """Check ``function(x, logits, mean, std) -> scalar``: the training loss, the mean over the batch of
    −log p_θ(x|z*) + KL(q ‖ N(0, I)), repaired from :func:`buggy_loss`, which averages over the pixels and the latent
    coordinates (chapter 6). Diagnoses each part left averaged, a sum over the batch, a sign."""
    require_function(function, "check_fixed_loss", "fixed_loss")
    cases = _loss_cases([(5, 784, 16), (8, 30, 3), (2, 12, 6)], seed=16)
    result = check_function(
        "fixed loss", function, _training_loss, cases, diagnoses=(_fixed_loss_mistakes, *DEFAULT_DIAGNOSES)
    )
    if result.kind == "shape":
        got, problem = _call(function, cases[0])
        per_example = negative_elbo(**cases[0])
        if not problem and isinstance(got, torch.Tensor) and close_enough(got.detach().to(_DTYPE), per_example):
            result.details = [
                "one value per example is exercise 1's answer: the training loss averages it over the batch"
            ]
        else:
            result.details = ["the training loss is one number: the mean over the batch of the per-example loss"]
    return result


# --- Exercise 3: one training step ------------------------------------------------------------------------------

_STEP_LR = 0.05
_STALE_GRADIENT = 0.5  # what .grad holds before the step: a forgotten zero_grad adds it to the update


def _step_case(seed: int, batch_size: int, data_dim: int, latent_dim: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):
        model = VAE(VAEConfig(data_dim=data_dim, latent_dim=latent_dim, hidden_dims=(16,))).to(_DTYPE)
    x = (torch.rand(batch_size, data_dim, generator=generator, dtype=_DTYPE) < 0.4).to(_DTYPE)
    eps = torch.randn(batch_size, latent_dim, generator=generator, dtype=_DTYPE)
    return {"model": model, "x": x, "eps": eps}


def _reference_step(model, optimizer, x, eps):
    """One step of the lecture's algorithm: the package's :func:`vaecourse.train.step` with the given noise; returns
    the loss of the batch (before the update)."""
    return -step(model, optimizer, x, eps=eps).objective.mean()


def _variant_step(
    model,
    optimizer,
    x,
    eps,
    *,
    zero_grad=True,
    detach_z=False,
    variance_in_z=False,
    pixel_mean=False,
    batch_sum=False,
    with_kl=True,
    sign=1.0,
):
    """One step of the lecture's algorithm written out, with the mistakes that the diagnoses compare with."""
    q = model.encoder(x)
    mean, std = q.mean, q.stddev
    z = mean + (std**2 if variance_in_z else std) * eps
    if detach_z:
        z = z.detach()
    pixels = model.likelihood(z).base_dist.log_prob(x)  # log p(x_j | z), [B, D]
    log_px_z = pixels.mean(-1) if pixel_mean else pixels.sum(-1)
    kl = kl_divergence(q, model.prior) if with_kl else torch.zeros_like(log_px_z)
    per_example = kl - log_px_z
    loss = per_example.sum() if batch_sum else per_example.mean()
    if zero_grad:
        optimizer.zero_grad()
    (sign * loss).backward()
    optimizer.step()
    return loss


_STEP_TOLERANCE = {"rtol": 1e-6, "atol": 1e-8}  # parameters after one step (and the loss), in float64


def _parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _encoder_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.encoder.parameters()])


def _run_step(step, case, eps=None):
    """Run ``step`` on a fresh copy of the case's model, from stale gradients; returns (model, value, problem)."""
    model = copy.deepcopy(case["model"])
    optimizer = torch.optim.SGD(model.parameters(), lr=_STEP_LR)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, _STALE_GRADIENT)
    arguments = {
        "model": model,
        "optimizer": optimizer,
        "x": case["x"].clone(),
        "eps": case["eps"] if eps is None else eps,
    }
    with seeded(0):
        value, problem = _call(step, arguments)
    return model, value, problem


_STEP_VARIANTS = [
    (
        {"zero_grad": False},
        "the gradients were not zeroed: .grad still held the previous step's gradient, and backward() adds to it. "
        "Call optimizer.zero_grad() before loss.backward()",
    ),
    (
        {"sign": -1.0},
        "the step went uphill on the loss: minimise the loss −ELBO (gradient descent), i.e. climb the ELBO",
    ),
    (
        {"pixel_mean": True},
        "the reconstruction term is averaged over the pixels: " + _collapse_note(12) + "; sum over the pixels",
    ),
    (
        {"batch_sum": True},
        "the loss is summed over the batch: average it over the batch (a sum makes the step size grow with B)",
    ),
    ({"variance_in_z": True}, "z* = μ + σ·ε* uses the standard deviation σ (q.stddev), not the variance σ²"),
    ({"with_kl": False}, "the KL term is missing from the loss: loss = −log p(x|z*) + KL(q_φ(z|x) ‖ p(z))"),
]


def check_training_step(function: Callable) -> Result:
    """Check ``function(model, optimizer, x, eps) -> loss``: one step of the lecture's training algorithm
    (chapter 6) on a small :class:`vaecourse.VAE` with plain SGD.

    The step encodes ``x`` (q = ``model.encoder(x)``), forms z* = μ + σ·ε* with the given ``eps`` ``[B, d]``, decodes
    (``model.likelihood(z)``), computes the loss, the batch mean of −log p(x|z*) + KL(q ‖ p(z)), zeroes the old
    gradients, back-propagates and takes the optimizer's step; it returns the loss (before the step). Diagnoses
    a missing zero_grad or step, an ascent, z cut from the encoder (``sample``, ``detach``), noise other than ``eps``,
    σ² for σ, a mean over the pixels, a sum over the batch, a missing KL.
    """
    require_function(function, "check_training_step", "training_step")
    exercise = "training_step"
    cases = [_step_case(seed, *shape) for seed, shape in ((1, (8, 12, 2)), (2, (5, 12, 3)))]
    for number, case in enumerate(cases, start=1):
        where = f"case {number} of {len(cases)}"
        got_model, value, problem = _run_step(function, case)
        if problem:
            return problem.result(exercise)
        expected_model, expected_loss, _ = _run_step(_reference_step, case)
        got, expected = _parameters(got_model), _parameters(expected_model)
        if close_enough(got, expected, **_STEP_TOLERANCE):
            if value is None:
                return Result(
                    exercise, False, f"the step is right, but it returned None ({where})", ["return the loss"]
                )
            try:
                value = float(value.detach() if isinstance(value, torch.Tensor) else value)
            except (TypeError, ValueError, RuntimeError):
                return Result(
                    exercise, False, f"return the loss, a number or a 0-d tensor; got {type(value).__name__} ({where})"
                )
            if not math.isclose(
                value, expected_loss.item(), rel_tol=_STEP_TOLERANCE["rtol"], abs_tol=_STEP_TOLERANCE["atol"]
            ):
                return Result(
                    exercise,
                    False,
                    f"the step is right, but it returned {value:.4g} instead of the loss {expected_loss.item():.4g} "
                    f"({where})",
                    ["return the loss of this batch, the value that was back-propagated"],
                )
            continue
        initial = _parameters(case["model"])
        if torch.equal(got, initial):
            hint = "the parameters did not move: call optimizer.step() after loss.backward()"
            return Result(exercise, False, f"not yet ({where})", [hint])
        for options, hint in _STEP_VARIANTS:
            variant_model, _, _ = _run_step(functools.partial(_variant_step, **options), case)
            if close_enough(got, _parameters(variant_model), **_STEP_TOLERANCE):
                return Result(exercise, False, f"not yet ({where})", [hint])
        detached_model, _, _ = _run_step(functools.partial(_variant_step, detach_z=True), case)
        if close_enough(_encoder_parameters(got_model), _encoder_parameters(detached_model), **_STEP_TOLERANCE):
            hint = (
                "the encoder moved by the KL's gradient alone: z was cut from the encoder's graph (q.sample() or "
                ".detach()), so the reconstruction term's gradient never reached φ — chapter 5's naive gradient. "
                "Form z = μ + σ·ε with the eps that is passed in"
            )
            return Result(exercise, False, f"not yet ({where})", [hint])
        other_model, _, _ = _run_step(function, case, eps=torch.flip(case["eps"], dims=[0]))
        if close_enough(got, _parameters(other_model), **_STEP_TOLERANCE):
            hint = (
                "your step does not use eps: with other noise passed in it takes the same step. Form z = μ + σ·ε "
                "with the eps that is passed in (rsample() draws its own)"
            )
            return Result(exercise, False, f"not yet ({where})", [hint])
        gap = (got - expected).abs().max().item()
        return Result(
            exercise, False, f"the parameters after the step differ from the reference by up to {gap:.3g} ({where})"
        )
    return Result(exercise, True, f"correct on all {len(cases)} cases")
