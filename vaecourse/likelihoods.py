r"""Real-valued pixels (chapter 9): Gaussian and continuous Bernoulli decoders, dequantization, bits per dimension.

Grey images are not binary, so chapter 9 models their pixels with densities on real numbers:

- the **Gaussian decoder** p_θ(x|z) = N(x; μ_θ(z), diag σ²), with σ fixed, one learned σ shared by all pixels, or
  one learned σ per pixel (:class:`GaussianScale`). Its log-likelihood is the squared error in disguise,

  .. math::  \log \mathcal N(\mathbf x; \boldsymbol\mu, σ^2 I)
             = -\frac{\lVert \mathbf x - \boldsymbol\mu \rVert^2}{2σ^2} - \frac D2 \log(2πσ^2)

  (:func:`log_likelihood_from_squared_error`), so "MSE" is this log-likelihood up to the scale 1/(2σ²) and a
  constant;
- the **continuous Bernoulli** of Loaiza-Ganem & Cunningham (2019), ``torch.distributions.ContinuousBernoulli``:
  the binary cross-entropy made a density on [0, 1] by its normaliser C(λ). Without it, exp(−BCE) integrates to
  less than one (:func:`bce_log_normaliser`): BCE on grey pixels is not a likelihood.

A density of real numbers and a probability of grey levels are compared after **uniform dequantization**: the
levels k = 0..n become y = (k + u)/(n + 1) with u ~ U(0, 1) (:func:`dequantize`). For any density p on [0, 1]^D,
the discrete model P(k) = ∫ p over the cell of k has −log P(k) ≤ E_u[−log p(y)] + D log(n + 1) (Jensen), so a
density's NLL plus D log(n + 1) bounds a discrete NLL from above, and :func:`bits_per_dimension` puts the two in the
same unit, bits per pixel (Theis, van den Oord & Bethge, 2016).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import ContinuousBernoulli, Distribution, Independent, Normal

from .checks import check_positive_int

__all__ = [
    "CONTINUOUS",
    "DECODER_SCALES",
    "GaussianScale",
    "bce_log_normaliser",
    "bits_per_dimension",
    "decoder_distribution",
    "dequantize",
    "dequantized_log_prob",
    "log_likelihood_from_squared_error",
]

CONTINUOUS = ("gaussian", "continuous_bernoulli")
DECODER_SCALES = ("fixed", "shared", "pixel")


def check_decoder_scale(kind: str, sigma: float) -> None:
    """``ValueError`` unless ``kind`` is one of :data:`DECODER_SCALES` and ``sigma`` a positive finite number."""
    if kind not in DECODER_SCALES:
        raise ValueError(f"VAEConfig.decoder_scale must be one of {DECODER_SCALES}, got {kind!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, float | int) or not (0 < sigma < math.inf):
        raise ValueError(f"VAEConfig.decoder_sigma must be a positive number (σ of the Gaussian), got {sigma!r}")


class GaussianScale(nn.Module):
    """σ of the Gaussian decoder (chapter 9): ``"fixed"`` at ``sigma`` (a buffer), ``"shared"`` (one learned σ) or
    ``"pixel"`` (``data_dim`` learned σs), a learned σ starting at ``sigma``. It is stored as log σ, so it stays
    positive; calling the module returns σ, ``[]`` or ``[data_dim]``.

    >>> GaussianScale(4, "pixel", 0.5)().tolist()
    [0.5, 0.5, 0.5, 0.5]
    """

    def __init__(self, data_dim: int, kind: str = "shared", sigma: float = 0.1):
        super().__init__()
        check_positive_int(data_dim, "data_dim")
        check_decoder_scale(kind, sigma)
        self.kind = kind
        log_sigma = torch.full((data_dim,) if kind == "pixel" else (), math.log(sigma))
        if kind == "fixed":
            self.register_buffer("log_sigma", log_sigma)
        else:
            self.log_sigma = nn.Parameter(log_sigma)

    def forward(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def decoder_distribution(likelihood: str, logits: torch.Tensor, noise: GaussianScale | None = None) -> Distribution:
    """p_θ(x|z) for real-valued pixels from the decoder's output ``logits`` ``[..., D]`` (chapter 9): the Gaussian
    N(sigmoid(logits), diag σ²) with σ from ``noise``, or the continuous Bernoulli with these logits."""
    if likelihood == "gaussian":
        if noise is None:
            raise ValueError("a Gaussian decoder needs its σ: pass noise=GaussianScale(...)")
        loc = torch.sigmoid(logits)  # the mean of a pixel, in [0, 1] like the data
        return Independent(Normal(loc, noise().expand_as(loc), validate_args=False), 1)
    if likelihood == "continuous_bernoulli":
        return Independent(ContinuousBernoulli(logits=logits, validate_args=False), 1)
    raise ValueError(f"likelihood must be one of {CONTINUOUS}, got {likelihood!r}")


def check_continuous_data(x: torch.Tensor, likelihood: str) -> None:
    """``ValueError`` unless ``x`` is finite (Gaussian) or in [0, 1] (continuous Bernoulli)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite (no NaN or infinity) for a real-valued decoder")
    if likelihood == "continuous_bernoulli" and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError("x must lie in [0, 1] for a continuous Bernoulli decoder")


def _check_grey_levels(x: torch.Tensor, levels: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor of grey levels k/{levels}, got {type(x).__name__}")
    counts = x * levels
    if not bool(((x >= 0) & (x <= 1) & ((counts - counts.round()).abs() < 1e-4)).all()):
        raise ValueError(f"x must hold grey levels k/{levels}, k = 0..{levels} (the data as loaded)")


def dequantize(x: torch.Tensor, levels: int = 16, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization (chapter 9): grey levels x = k/``levels`` become y = (k + u)/(levels + 1), u ~ U(0, 1)
    drawn independently for every pixel from ``generator``, so each level k fills its own cell
    [k/(levels + 1), (k + 1)/(levels + 1)) of [0, 1).

    >>> y = dequantize(torch.tensor([0.0, 0.5, 1.0]), levels=2, generator=torch.Generator().manual_seed(0))
    >>> ((y * 3).floor() == torch.tensor([0.0, 1.0, 2.0])).all().item()
    True
    """
    check_positive_int(levels, "levels")
    _check_grey_levels(x, levels)
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return ((x * levels).round() + noise) / (levels + 1)


def dequantized_log_prob(distribution: Distribution, y: torch.Tensor, levels: int = 16) -> torch.Tensor:
    """The log-density at dequantized pixels ``y`` ``[..., D]`` of a model of grey levels k/``levels`` (chapter 9):
    the probability of each pixel's level spread evenly over its cell, log P(k) + D log(levels + 1). A binomial
    decoder's NLL on dequantized data is thus its own discrete NLL minus D log(levels + 1), exactly."""
    check_positive_int(levels, "levels")
    if not isinstance(y, torch.Tensor) or not bool(((y >= 0) & (y < 1)).all()):
        raise ValueError("y must be dequantized pixels in [0, 1) (see dequantize)")
    k = (y * (levels + 1)).floor().clamp(max=levels)
    return distribution.log_prob(k / levels) + y.shape[-1] * math.log(levels + 1)


def bits_per_dimension(nll, data_dim: int, bins: int | None = None):
    """A negative log-likelihood in nats per example as bits per dimension (chapter 9): nll / (D log 2).

    For a density of dequantized data on [0, 1]^D give ``bins``, the number of grey levels (17 for the 8×8
    digits): the result is (nll + D log bins) / (D log 2), an upper bound on the bits per pixel of the grey levels,
    comparable with a discrete model's.

    >>> round(bits_per_dimension(64 * math.log(2), 64), 6)
    1.0
    >>> round(bits_per_dimension(0.0, 64, bins=16), 6)
    4.0
    """
    check_positive_int(data_dim, "data_dim")
    shift = 0.0
    if bins is not None:
        shift = data_dim * math.log(check_positive_int(bins, "bins"))
    return (nll + shift) / (data_dim * math.log(2))


def log_likelihood_from_squared_error(squared_error, sigma, data_dim: int):
    r"""log N(x; μ, σ² I) of an image from its summed squared error ‖x − μ‖² (chapter 9):
    −‖x − μ‖²/(2σ²) − (D/2) log(2πσ²). The mean squared error of ``F.mse_loss`` is ‖x − μ‖²/D."""
    check_positive_int(data_dim, "data_dim")
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    if not bool((sigma > 0).all()):
        raise ValueError(f"sigma must be positive, got {sigma.tolist()}")
    variance = sigma**2
    return -squared_error / (2 * variance) - 0.5 * data_dim * torch.log(2 * math.pi * variance)


def bce_log_normaliser(logits: torch.Tensor) -> torch.Tensor:
    r"""log ∫₀¹ exp(−BCE(x, λ)) dx for a pixel with probability λ = sigmoid(logits) (chapter 9), where
    BCE(x, λ) = −x log λ − (1 − x) log(1 − λ): the log of the total mass of the "likelihood" that binary
    cross-entropy gives a grey pixel. It is −log C(λ), with C the continuous Bernoulli's normaliser, and it is
    log(1/2) at λ = 1/2 and lower elsewhere: never 0, so exp(−BCE) is not a density of x ∈ [0, 1].

    >>> round(bce_log_normaliser(torch.tensor(0.0)).item(), 6) == round(math.log(0.5), 6)
    True
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {type(logits).__name__}")
    half = torch.full_like(logits, 0.5)
    log_c = ContinuousBernoulli(logits=logits).log_prob(half)  # = −BCE(½, λ) + log C(λ)
    return -(log_c + F.binary_cross_entropy_with_logits(logits, half, reduction="none"))
