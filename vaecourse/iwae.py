r"""The importance-weighted bound as a training objective, and the signal-to-noise ratio of its gradients
(chapter 10).

With K samples z_k ~ q_φ(z|x) and the weights w_k = p_θ(x | z_k) p(z_k) / q_φ(z_k | x), Burda et al. (2016)
train with

.. math::  \mathcal L_K(x) = \mathbb E\Big[\log \frac1K \sum_{k=1}^{K} w_k\Big]
           \;\le\; \mathcal L_{K+1}(x) \;\le\; \log p_θ(x),

the ELBO at K = 1 and log p_θ(x) as K → ∞ (when the weights are bounded). Rainforth et al. (2018) show that a
tighter bound is not always a better objective: the signal-to-noise ratio of the gradient estimate,

.. math::  \mathrm{SNR}_j = \frac{|\mathbb E[\hat g_j]|}{\operatorname{std}(\hat g_j)},

grows like √K for the decoder's parameters θ but falls like 1/√K for the encoder's φ. :func:`gradient_snr`
measures it, for each parameter over repeated estimates on one fixed mini-batch, and averages it over the
encoder's and over the decoder's parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from .checks import check_num_samples
from .estimators import ElboTerms, _draw, kl
from .montecarlo import log_mean_exp
from .runtime import seeded

__all__ = ["GradientSNR", "gradient_snr", "iwae_bound", "iwae_terms", "signal_to_noise"]


def iwae_terms(
    model, x: torch.Tensor, q: Distribution, num_samples: int, analytic_kl: bool = True, z: torch.Tensor | None = None
) -> ElboTerms:
    r"""The IWAE bound with K = ``num_samples`` reparameterized samples of ``q``, with gradients, per example:
    ``objective`` = log (1/K) Σ_k p(x | z_k) p(z_k) / q(z_k); ``elbo``, ``log_px_z`` and ``kl`` are the ELBO and its
    parts estimated from the same samples (the KL analytic where it exists and ``analytic_kl`` holds), and ``z``
    the samples ``[K, ..., d]``. Any model with ``.prior`` and ``.likelihood(z)`` will do; given ``z`` are used
    instead of new draws. By Jensen's inequality, ``objective`` ≥ the mean of the log-weights for every draw.
    """
    check_num_samples(num_samples)
    if z is None:
        z = _draw(q, num_samples, x.shape[:-1], reparameterize=True)  # [K, ..., d]
    log_px_z = model.likelihood(z).log_prob(x)  # [K, ...]
    log_pz, log_qz = model.prior.log_prob(z), q.log_prob(z)
    log_weights = log_px_z + log_pz - log_qz  # log w_k
    bound = log_mean_exp(log_weights, dim=0)
    kl_term = kl(q, model.prior, z) if analytic_kl else (log_qz - log_pz).mean(0)
    log_px_z = log_px_z.mean(0)
    kl_term = kl_term.expand_as(log_px_z)
    return ElboTerms(elbo=log_px_z - kl_term, log_px_z=log_px_z, kl=kl_term, z=z, objective=bound)


def iwae_bound(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """The IWAE bound of each row of ``x`` with ``num_samples`` samples of the model's encoder, with gradients
    (``model.encode(x)`` is the proposal): the ``objective`` of :func:`iwae_terms`."""
    return iwae_terms(model, x, model.encode(x), num_samples).objective


def signal_to_noise(samples: torch.Tensor) -> torch.Tensor:
    r"""|mean| / standard deviation of each column of ``samples`` ``[R, P]`` (R repeated estimates of P
    coordinates, R ≥ 2; the unbiased standard deviation), ``[P]``. A column with zero spread gets NaN: its ratio is
    undefined (e.g. a weight that no pixel of the batch reaches has an exactly zero gradient).

    >>> signal_to_noise(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    tensor([1.4142,    nan])
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(
            f"samples must be [R, P] with R >= 2 repeated estimates, got {getattr(samples, 'shape', samples)}"
        )
    return _ratio(samples.mean(0), samples.std(0))


def _ratio(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """|mean| / std, NaN where std = 0."""
    return torch.where(std > 0, mean.abs() / std, torch.full_like(mean, math.nan))


@dataclass(frozen=True)
class GradientSNR:
    """The gradient's signal-to-noise ratio at K = ``num_samples``, over ``repeats`` estimates on one mini-batch:
    ``encoder`` and ``decoder``, the mean over each network's parameters of the per-parameter ratio (those with a
    non-zero spread), and the per-parameter ratios themselves (``encoder_per_parameter``, ``decoder_per_parameter``,
    NaN where undefined)."""

    num_samples: int
    repeats: int
    encoder: float
    decoder: float
    encoder_per_parameter: torch.Tensor
    decoder_per_parameter: torch.Tensor

    def __str__(self) -> str:
        return f"K = {self.num_samples}: SNR encoder {self.encoder:.3f}, decoder {self.decoder:.3f}"


def gradient_snr(
    model, x: torch.Tensor, num_samples: int, repeats: int = 100, bound: str = "iwae", seed: int | None = 0
) -> GradientSNR:
    r"""The signal-to-noise ratio of the gradient of the training loss −mean over ``x`` of the bound (``"iwae"``
    with K = ``num_samples``, or ``"elbo"``) for the encoder's parameters φ and the decoder's θ, as Rainforth et
    al. (2018) measure it: ``repeats`` estimates on the same mini-batch ``x``, each with fresh noise, then
    |mean| / std per parameter, averaged over each network. ``model`` is a :class:`vaecourse.vae.VAE`; its
    gradients are left as they were, its weights untouched. With a ``seed`` the draws come from that seed and
    the caller's generator is left as it was.
    """
    check_num_samples(num_samples)
    check_num_samples(repeats, "repeats")
    if repeats < 2:
        raise ValueError(f"repeats must be at least 2 (a standard deviation), got {repeats}")
    model.check_data(x)
    encoder = [p for p in model.encoder.parameters() if p.requires_grad]
    decoder = [p for p in model.decoder.parameters() if p.requires_grad]
    params = encoder + decoder
    total = squares = None  # Σ_r ĝ_r and Σ_r ĝ_r², in float64: R estimates need not be held in memory
    with seeded(seed, x.device):
        for _ in range(repeats):
            loss = -model._elbo(x, num_samples, bound=bound).objective.mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            flat = torch.cat(
                [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)]
            ).double()
            total = flat if total is None else total + flat
            squares = flat**2 if squares is None else squares + flat**2
    mean = total / repeats
    variance = ((squares - repeats * mean**2) / (repeats - 1)).clamp_min(0)
    std = variance.sqrt()
    ratios = _ratio(mean, std).cpu()
    size = sum(p.numel() for p in encoder)
    return GradientSNR(
        num_samples=num_samples,
        repeats=repeats,
        encoder=torch.nanmean(ratios[:size]).item(),
        decoder=torch.nanmean(ratios[size:]).item(),
        encoder_per_parameter=ratios[:size],
        decoder_per_parameter=ratios[size:],
    )
