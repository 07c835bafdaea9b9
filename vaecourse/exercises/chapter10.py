r"""Checkers for the exercises of chapter 10, "The IWAE objective and a convolutional VAE".

- :func:`check_iwae_loss`: ``iwae_loss(model, x, num_samples)``, the training loss of an importance-weighted
  autoencoder: −(1/B) Σ_i log (1/K) Σ_k p_θ(x_i | z_k) p(z_k) / q_φ(z_k | x_i), with K = ``num_samples``
  reparameterized samples z_k ~ q_φ(z|x_i) drawn as ``model.encode(x).rsample((K,))``; one number, with gradients
  for the encoder and the decoder;
- :func:`check_signal_to_noise`: ``signal_to_noise(grads)``, Rainforth et al.'s signal-to-noise ratio of each
  coordinate of R repeated gradient estimates ``[R, P]``: |mean| / standard deviation, ``[P]``.

Every input is built from a fixed seed, so a correct answer matches the reference to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..runtime import seeded
from ..vae import VAE, VAEConfig
from .checking import DEFAULT_DIAGNOSES, Result, _call, check_function, close_enough, require_function

__all__ = ["check_iwae_loss", "check_signal_to_noise", "iwae_loss", "signal_to_noise"]

_DTYPE = torch.float64


# --- Exercise 1: the IWAE loss ----------------------------------------------------------------------------------


def _log_weights(model, x: torch.Tensor, z: torch.Tensor, q) -> torch.Tensor:
    """log w_k = log p_θ(x | z_k) + log p(z_k) − log q_φ(z_k | x), ``[K, B]``."""
    return model.likelihood(z).log_prob(x) + model.prior.log_prob(z) - q.log_prob(z)


def iwae_loss(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    r"""The reference: −mean over the batch of log (1/K) Σ_k w_k, with z_k = ``model.encode(x).rsample((K,))``."""
    q = model.encode(x)
    z = q.rsample((num_samples,))  # [K, B, d]
    log_weights = _log_weights(model, x, z, q)  # [K, B]
    return -(torch.logsumexp(log_weights, dim=0) - math.log(num_samples)).mean()


def _iwae_mistakes(got, expected, case):
    model, x, k = case["model"], case["x"], case["num_samples"]
    with seeded(case["seed"]):
        q = model.encode(x)
        z = q.rsample((k,))
    log_px_z = model.likelihood(z).log_prob(x)
    log_pz, log_qz = model.prior.log_prob(z), q.log_prob(z)
    log_w = log_px_z + log_pz - log_qz
    with seeded(case["seed"]), torch.no_grad():
        q_again = model.encode(x)
        z_fixed = q_again.sample((k,))  # the draws of q.sample(), which differ from rsample's
    sampled = _log_weights(model, x, z_fixed, q_again)

    def loss(weights, reduce=torch.Tensor.mean):
        return -reduce(torch.logsumexp(weights, dim=0) - math.log(k))

    variants = [
        (
            -log_w.mean(),
            "that is the ELBO of the K samples, the mean of the log-weights: the IWAE bound is the log of their mean, "
            "log (1/K) Σ_k w_k = logsumexp_k(log w_k) − log K, larger by Jensen's inequality",
        ),
        (
            -(torch.logsumexp(log_w, dim=0)).mean(),
            f"the −log K is missing: a mean over the K samples is Σ/K, so logsumexp_k(log w_k) − log K (K = {k})",
        ),
        (
            loss(log_px_z),
            "the weights are p(x|z) alone: w_k = p_θ(x|z_k) p(z_k) / q_φ(z_k|x), add log p(z_k) and subtract "
            "log q_φ(z_k|x)",
        ),
        (
            loss(log_px_z + log_pz + log_qz),
            "log q_φ(z_k|x) enters with a minus sign: w_k = p_θ(x|z_k) p(z_k) / q_φ(z_k|x)",
        ),
        (loss(log_px_z - log_qz), "log p(z_k), the prior's density at the sample, is missing from the weights"),
        (
            loss(log_w, torch.Tensor.sum),
            "the loss averages over the batch (like chapter 6's): −(1/B) Σ_i, not a sum",
        ),
        (
            loss(sampled),
            "draw the samples with q.rsample((K,)), the reparameterization z = μ + σ·ε of chapter 5: q.sample() "
            "gives other draws and cuts the path from the loss to the encoder's φ",
        ),
        (
            -torch.logsumexp(log_w.reshape(-1), dim=0) + math.log(log_w.numel()),
            "the log-mean-exp is over the K samples of each image (dim 0), then the loss averages over the images: "
            "you pooled the weights of all the images into one sum",
        ),
    ]
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


def _iwae_cases() -> list[dict]:
    """Small VAEs with random weights (Bernoulli pixels), binary images, and K = 1, 5, 40 samples."""
    cases = []
    for number, (batch, data_dim, latent_dim, k) in enumerate(((4, 10, 2, 5), (3, 16, 3, 40), (5, 12, 2, 1)), 1):
        with seeded(100 + number):
            model = VAE(VAEConfig(data_dim=data_dim, latent_dim=latent_dim, hidden_dims=(8,))).to(_DTYPE)
            x = (torch.rand(batch, data_dim, dtype=_DTYPE) < 0.4).to(_DTYPE)
        cases.append({"model": model, "x": x, "num_samples": k, "seed": number})
    return cases


def _without_seed(function):
    def call(model, x, num_samples, seed):
        return function(model, x, num_samples)

    return call


def check_iwae_loss(function: Callable) -> Result:
    """Check ``function(model, x, num_samples) -> loss``: the IWAE training loss (chapter 10), one number, with
    gradients for the encoder's parameters.

    ``model`` is a :class:`vaecourse.VAE` (``encode``, ``likelihood``, ``prior``), ``x`` binary images ``[B, D]``;
    the K samples are ``model.encode(x).rsample((K,))``. Diagnoses the ELBO in place of the bound, a missing
    −log K, weights without log p(z) or with +log q, a sum over the batch, weights pooled across images, and
    ``sample`` in place of ``rsample`` (no gradient reaches the encoder).
    """
    require_function(function, "check_iwae_loss")
    cases = _iwae_cases()
    diagnoses = (_iwae_mistakes, *DEFAULT_DIAGNOSES)
    result = check_function("iwae_loss", _without_seed(function), _without_seed(iwae_loss), cases, diagnoses=diagnoses)
    if not result.passed:
        return result
    case = cases[0]
    model = case["model"]
    with seeded(1):
        loss, problem = _call(_without_seed(function), case)
    if problem:
        return problem.result("iwae_loss")
    encoder = list(model.encoder.parameters())
    with seeded(1):
        reference = iwae_loss(model, case["x"], case["num_samples"])
    expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(reference, encoder)])
    got = torch.zeros_like(expected)
    if isinstance(loss, torch.Tensor) and loss.requires_grad:
        grads = torch.autograd.grad(loss, encoder, allow_unused=True)
        pairs = zip(grads, encoder, strict=True)
        got = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in pairs])
    if close_enough(got, expected):
        return result
    if not bool(got.abs().sum() > 0):
        return Result(
            "iwae_loss",
            False,
            "the values are right, but no gradient reaches the encoder",
            ["keep the loss attached to the graph (no .detach(), .item() or torch.no_grad()) and draw the samples "
             "with q.rsample((K,))"],
        )
    return Result(
        "iwae_loss",
        False,
        "the values are right, but the encoder's gradient is not",
        [
            "draw the samples with q.rsample((K,)), the reparameterization z = μ + σ·ε of chapter 5: q.sample() "
            "gives the same numbers here but cuts the path from the loss through z to the encoder's φ"
        ],
    )


# --- Exercise 2: the signal-to-noise ratio ----------------------------------------------------------------------


def signal_to_noise(grads: torch.Tensor) -> torch.Tensor:
    r"""The reference: |mean| / std (unbiased) of each column of ``grads`` ``[R, P]``, ``[P]``; NaN where a column
    does not vary, as :func:`vaecourse.iwae.signal_to_noise`."""
    std = grads.std(0)
    return torch.where(std > 0, grads.mean(0).abs() / std, math.nan)


def _snr_mistakes(got, expected, case):
    grads = case["grads"]
    repeats = grads.shape[0]
    mean, std = grads.mean(0), grads.std(0)
    variants = [
        (
            mean / std,
            "take the absolute value of the mean: the ratio measures how far the signal stands out of the noise, "
            "whatever its sign",
        ),
        (
            grads.abs().mean(0) / std,
            "the signal is |E[g]|, the absolute value of the mean, not the mean of the absolute values E|g| (which "
            "is large even for pure noise)",
        ),
        (mean.abs() / std**2, "divide by the standard deviation, not by the variance"),
        (
            mean.abs() / (std / math.sqrt(repeats)),
            "divide by the standard deviation of one estimate, not by the standard error of their mean (std/√R): "
            "the ratio describes one gradient estimate, whatever the number R of repeats",
        ),
        (
            mean.abs() / grads.std(0, correction=0),
            "use the unbiased standard deviation (divide by R − 1, torch's default)",
        ),
    ]
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


def _snr_cases() -> list[dict]:
    """Repeated estimates ``[R, P]`` with means of both signs and spreads far from 1."""
    generator = torch.Generator().manual_seed(10)
    cases = []
    for repeats, size in ((20, 6), (50, 4), (8, 9)):
        mean = 2 * torch.randn(size, generator=generator, dtype=_DTYPE)
        spread = 0.2 + 3 * torch.rand(size, generator=generator, dtype=_DTYPE)
        cases.append({"grads": mean + spread * torch.randn(repeats, size, generator=generator, dtype=_DTYPE)})
    return cases


def check_signal_to_noise(function: Callable) -> Result:
    """Check ``function(grads) -> [P]``: |mean| / standard deviation of each column of R repeated gradient
    estimates ``grads`` ``[R, P]`` (Rainforth et al., 2018; chapter 10). Diagnoses a missing absolute value, the mean
    of |g|, the variance or the standard error in place of the standard deviation, and the biased standard
    deviation."""
    require_function(function, "check_signal_to_noise")

    def positional(grads):  # whatever the learner named the argument
        return function(grads)

    return check_function(
        "signal_to_noise",
        positional,
        signal_to_noise,
        _snr_cases(),
        diagnoses=(_snr_mistakes, *DEFAULT_DIAGNOSES),
    )
