r"""The diagonal Gaussian written out by hand, where chapter 5 teaches it: the reparameterized sample and the KL.

The lecture's encoder outputs q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)) (the slide writes N(μ, σ); the second argument
is the variance, see the errata). Everywhere else the package takes these formulas from ``torch.distributions``
(``Independent(Normal(mean, std), 1)``, ``rsample``, ``kl_divergence``); here they are typed once, as the book
derives them, and the tests check them against ``torch.distributions``. All functions take the standard deviation σ
(PyTorch's ``scale``), never the variance, and broadcast their arguments like any elementwise torch code.
"""

from __future__ import annotations

import torch

__all__ = ["kl_diagonal_gaussians", "kl_to_standard_normal", "reparameterize"]


def _check_gaussian(mean: torch.Tensor, std: torch.Tensor, name: str = "") -> torch.Size:
    """The broadcast shape ``[..., d]`` of ``mean`` and ``std``, or ``ValueError`` (σ must be positive)."""
    for label, tensor in ((f"mean{name}", mean), (f"std{name}", std)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"{label} must be a floating-point torch.Tensor, got {type(tensor).__name__}")
    try:
        shape = torch.broadcast_shapes(mean.shape, std.shape)
    except RuntimeError as error:
        raise ValueError(
            f"mean{name} {tuple(mean.shape)} and std{name} {tuple(std.shape)} do not broadcast together"
        ) from error
    if len(shape) == 0:
        raise ValueError(f"mean{name} and std{name} must have a last (latent) dimension [..., d], got scalars")
    if not bool((std > 0).all()):
        raise ValueError(f"std{name} must be positive: it is σ, the standard deviation (not log σ)")
    return shape


def reparameterize(mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    r"""The reparameterized sample of chapter 5, z = g_φ(x, ε) = μ_φ(x) + σ_φ(x) · ε with ε ~ N(0, I).

    ``mean`` (μ) and ``std`` (σ, the standard deviation) are ``[..., d]``; ``eps`` broadcasts against them
    (e.g. ``[S, ..., d]`` for S samples), and is drawn from N(0, I) in their shape when not given. The sample is a
    differentiable function of μ and σ, which is what lets ∇_φ pass inside the expectation. It is what
    ``Normal(mean, std).rsample()`` computes.

    >>> reparameterize(torch.tensor([1.0]), torch.tensor([2.0]), eps=torch.tensor([[0.5], [-1.0]]))
    tensor([[ 2.],
            [-1.]])
    """
    shape = _check_gaussian(mean, std)
    if eps is None:
        eps = torch.randn(shape, dtype=mean.dtype, device=mean.device)
    return mean + std * eps


def kl_to_standard_normal(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    r"""KL(N(μ, diag σ²) ‖ N(0, I)) in closed form, one value per example (chapter 5):

    .. math::  KL = \frac12 \sum_{j=1}^{d} \big(\sigma_j^2 + \mu_j^2 - 1 - \log \sigma_j^2\big),

    summed over the last (latent) dimension: ``[..., d]`` gives ``[...]``. Its gradient is in closed form too:
    ∂KL/∂μ_j = μ_j, ∂KL/∂σ_j = σ_j − 1/σ_j.

    >>> kl_to_standard_normal(torch.zeros(2, 3), torch.ones(2, 3))
    tensor([0., 0.])
    """
    _check_gaussian(mean, std)
    variance = std**2
    return 0.5 * (variance + mean**2 - 1 - torch.log(variance)).sum(-1)


def kl_diagonal_gaussians(
    mean_q: torch.Tensor, std_q: torch.Tensor, mean_p: torch.Tensor, std_p: torch.Tensor
) -> torch.Tensor:
    r"""KL(q ‖ p) between two diagonal Gaussians q = N(μ_q, diag σ_q²) and p = N(μ_p, diag σ_p²) (chapter 5):

    .. math::  KL = \frac12 \sum_{j=1}^{d} \Big(\frac{\sigma_{q,j}^2}{\sigma_{p,j}^2}
               + \frac{(\mu_{q,j} - \mu_{p,j})^2}{\sigma_{p,j}^2} - 1 - \log \frac{\sigma_{q,j}^2}{\sigma_{p,j}^2}\Big),

    summed over the last dimension; all four arguments broadcast (a prior ``[d]`` against a batch ``[B, d]``).
    With μ_p = 0, σ_p = 1 it is :func:`kl_to_standard_normal`.

    >>> kl_diagonal_gaussians(torch.zeros(1), torch.ones(1), torch.ones(1), torch.ones(1))
    tensor(0.5000)
    """
    shape_q = _check_gaussian(mean_q, std_q, "_q")
    shape_p = _check_gaussian(mean_p, std_p, "_p")
    try:
        torch.broadcast_shapes(shape_q, shape_p)
    except RuntimeError as error:
        raise ValueError(f"q {tuple(shape_q)} and p {tuple(shape_p)} do not broadcast together") from error
    variance_ratio = (std_q / std_p) ** 2
    scaled_distance = ((mean_q - mean_p) / std_p) ** 2
    return 0.5 * (variance_ratio + scaled_distance - 1 - torch.log(variance_ratio)).sum(-1)
