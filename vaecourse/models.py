"""Latent variable models whose likelihood p(x) is known exactly (chapters 1-5).

Both models follow the interface of every model in the course: ``.prior`` is p(z), a
``torch.distributions.Distribution`` with event shape ``[d]``, and ``.likelihood(z)`` is p(x|z, θ), with event
shape ``[D]``. The estimators of :mod:`vaecourse.estimators` need nothing else, so the VAE of chapter 6 plugs
into them unchanged. Here, in addition, ``.log_marginal(x)`` gives the exact log p(x|θ) to check them against.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from .checks import check_last_dim

__all__ = ["LinearGaussian", "NonlinearToy", "gaussian_moments", "standard_normal"]


def standard_normal(latent_dim: int, like: torch.Tensor) -> Distribution:
    """N(0, I_d) with event shape ``[d]``, on the device and dtype of ``like``."""
    zeros = like.new_zeros(latent_dim)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


def gaussian_moments(q: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[..., d]`` and covariance ``[..., d, d]`` of a Gaussian q (Independent Normal or MultivariateNormal)."""
    if isinstance(q, MultivariateNormal):
        return q.mean, q.covariance_matrix
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        return q.mean, torch.diag_embed(q.variance)
    raise TypeError(f"expected a Gaussian q (Independent(Normal, 1) or MultivariateNormal), got {type(q).__name__}")


class LinearGaussian(nn.Module):
    r"""The linear-Gaussian latent variable model (probabilistic PCA / factor analysis), chapters 1-5.

    .. math::  z \sim \mathcal N(0, I_d), \qquad x \mid z \sim \mathcal N(W z + b,\ \Psi),
               \quad \Psi = \operatorname{diag}(\sigma^2),

    so that p(x|θ) = N(x; b, W Wᵀ + Ψ) and p(z|x, θ) are Gaussian in closed form: the exact answers that
    the Monte Carlo estimators and the ELBO are checked against.

    ``W`` is ``[D, d]``, ``b`` is ``[D]`` and ``noise_std`` (σ, a standard deviation) a positive number or a
    ``[D]`` tensor. All three are learnable parameters; the dtype follows ``W``.

    >>> model = LinearGaussian(torch.ones(3, 1), torch.zeros(3), 0.5)
    >>> model.marginal().covariance_matrix[0]
    tensor([1.2500, 1.0000, 1.0000], grad_fn=<SelectBackward0>)
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, noise_std: float | torch.Tensor):
        super().__init__()
        W = torch.as_tensor(W)
        if W.ndim != 2 or not W.is_floating_point():
            raise ValueError(f"W must be a floating-point matrix of shape [D, d], got shape {tuple(W.shape)}")
        b = torch.as_tensor(b, dtype=W.dtype, device=W.device)
        if b.shape != W.shape[:1]:
            raise ValueError(f"b must have shape [D] = [{W.shape[0]}] to match W [D, d], got {tuple(b.shape)}")
        noise_std = torch.as_tensor(noise_std, dtype=W.dtype, device=W.device)
        if noise_std.ndim > 1 or (noise_std.ndim == 1 and noise_std.shape != b.shape):
            raise ValueError(f"noise_std must be a number or a [D] tensor, got shape {tuple(noise_std.shape)}")
        if not bool((noise_std > 0).all()) or not bool(torch.isfinite(noise_std).all()):
            raise ValueError(f"noise_std must be positive and finite, got {noise_std.tolist()}")
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(b.clone())
        self.log_noise_std = nn.Parameter(noise_std.log().expand(W.shape[0]).clone())

    @property
    def data_dim(self) -> int:
        return self.W.shape[0]

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    @property
    def noise_std(self) -> torch.Tensor:
        """σ, the standard deviation of x | z, ``[D]``."""
        return self.log_noise_std.exp()

    @property
    def prior(self) -> Distribution:
        """p(z) = N(0, I_d)."""
        return standard_normal(self.latent_dim, self.W)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x | z, θ) = N(W z + b, diag σ²); ``z`` is ``[..., d]``, the result has batch shape ``[...]``."""
        check_last_dim(z, self.latent_dim, "z")
        return Independent(Normal(z @ self.W.T + self.b, self.noise_std), 1)

    def marginal(self) -> MultivariateNormal:
        """p(x | θ) = N(b, W Wᵀ + diag σ²), exactly."""
        covariance = self.W @ self.W.T + torch.diag(self.noise_std**2)
        return MultivariateNormal(self.b, covariance_matrix=covariance)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x | θ) exactly, one value per example: shape ``x.shape[:-1]``."""
        check_last_dim(x, self.data_dim, "x")
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """p(z | x, θ) = N(Σ Wᵀ Ψ⁻¹ (x − b), Σ) with Σ = (I + Wᵀ Ψ⁻¹ W)⁻¹, batched over ``x`` ``[..., D]``."""
        check_last_dim(x, self.data_dim, "x")
        scaled_W = self.W / self.noise_std[:, None] ** 2  # Ψ⁻¹ W, [D, d]
        precision = torch.eye(self.latent_dim, dtype=self.W.dtype, device=self.W.device) + self.W.T @ scaled_W
        covariance = torch.linalg.inv(precision)
        covariance = (covariance + covariance.T) / 2  # exactly symmetric for the Cholesky factorisation
        mean = (x - self.b) @ scaled_W @ covariance  # [..., d]
        scale_tril = torch.linalg.cholesky(covariance)  # one factorisation, shared by every example
        return MultivariateNormal(mean, scale_tril=scale_tril.expand(*mean.shape[:-1], -1, -1))

    def expected_log_likelihood(self, x: torch.Tensor, q: Distribution) -> torch.Tensor:
        """E_{q(z)}[log p(x | z, θ)] in closed form, for a Gaussian q over z (used by ``exact_elbo``).

        With m, S the mean and covariance of q: −½ Σ_j [log 2πσ_j² + ((x − W m − b)_j² + (W S Wᵀ)_jj) / σ_j²].
        """
        check_last_dim(x, self.data_dim, "x")
        mean, covariance = gaussian_moments(q)
        check_last_dim(mean, self.latent_dim, "q's mean")
        variance = self.noise_std**2
        residual = x - mean @ self.W.T - self.b  # [..., D]
        spread = torch.einsum("jk,...kl,jl->...j", self.W, covariance, self.W)  # diag(W S Wᵀ), [..., D]
        return -0.5 * (torch.log(2 * math.pi * variance) + (residual**2 + spread) / variance).sum(-1)

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws (x ``[n, D]``, z ``[n, d]``) of the joint p(x, z | θ)."""
        z = self.prior.sample((n,))
        return self.likelihood(z).sample(), z

    @classmethod
    def fit_ml(cls, x: torch.Tensor, latent_dim: int) -> LinearGaussian:
        r"""Maximum likelihood in closed form: probabilistic PCA (Tipping & Bishop, 1999), isotropic noise.

        With S the (1/N) sample covariance, λ₁ ≥ … ≥ λ_D its eigenvalues and U_d the leading eigenvectors:
        b = x̄, σ² = mean of the D − d smallest eigenvalues, W = U_d (Λ_d − σ² I)^{1/2}.
        """
        x = torch.as_tensor(x)
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point matrix [N, D], got shape {tuple(x.shape)}")
        data_dim = x.shape[1]
        if not 1 <= latent_dim < data_dim:
            raise ValueError(f"latent_dim must be between 1 and D - 1 = {data_dim - 1}, got {latent_dim}")
        mean = x.mean(0)
        centred = x - mean
        covariance = centred.T @ centred / x.shape[0]
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending order
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        noise_variance = eigenvalues[latent_dim:].mean()
        scale = (eigenvalues[:latent_dim] - noise_variance).clamp_min(0).sqrt()
        W = eigenvectors[:, :latent_dim] * scale
        return cls(W, mean, noise_variance.sqrt())


class NonlinearToy(nn.Module):
    r"""A small nonlinear model whose p(x) is computed by quadrature over z (chapters 1-3).

    .. math::  z \sim \mathcal N(0, I_d),\ d \in \{1, 2\}, \qquad
               x \mid z \sim \mathcal N(f(z), \sigma^2 I_2),

    with f(z) = (z₁, ½ z₁² − 1) for d = 1 (data near a parabola) and f(z) = (z₁, z₂ + ½ z₁² − 1) for d = 2
    (a banana-shaped density). ``log_marginal`` integrates p(x|z) p(z) over a grid of z, in log space.

    >>> toy = NonlinearToy()
    >>> toy.log_marginal(torch.tensor([[0.0, -1.0]])).exp().round(decimals=3)
    tensor([0.4960])
    """

    data_dim = 2

    def __init__(self, latent_dim: int = 1, noise_std: float = 0.3, *, grid_limit: float = 8.0, grid_size=None):
        super().__init__()
        if latent_dim not in (1, 2):
            raise ValueError(f"latent_dim must be 1 or 2 (p(x) is integrated on a grid), got {latent_dim}")
        if not noise_std > 0:
            raise ValueError(f"noise_std must be positive, got {noise_std}")
        self.latent_dim = latent_dim
        self.noise_std = float(noise_std)
        self.grid_limit = float(grid_limit)
        self.grid_size = grid_size or (4001 if latent_dim == 1 else 321)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(device, dtype)

    @property
    def prior(self) -> Distribution:
        """p(z) = N(0, I_d)."""
        return standard_normal(self.latent_dim, self._anchor)

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        """f(z), the mean of x given z: ``[..., d]`` to ``[..., 2]``."""
        check_last_dim(z, self.latent_dim, "z")
        first = z[..., 0]
        second = 0.5 * first**2 - 1 + (z[..., 1] if self.latent_dim == 2 else 0)
        return torch.stack([first, second], dim=-1)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x | z) = N(f(z), σ² I)."""
        mean = self.decoder(z)
        return Independent(Normal(mean, torch.full_like(mean, self.noise_std)), 1)

    def quadrature_grid(self, like: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
        """Grid points ``[G, d]`` over [−L, L]^d (dtype and device of ``like``) and the log-volume of one cell."""
        like = self._anchor if like is None else like
        axis = torch.linspace(-self.grid_limit, self.grid_limit, self.grid_size, dtype=like.dtype, device=like.device)
        log_cell = self.latent_dim * math.log(2 * self.grid_limit / (self.grid_size - 1))  # exact, not rounded
        if self.latent_dim == 1:
            return axis[:, None], log_cell
        return torch.cartesian_prod(axis, axis), log_cell

    def log_marginal(self, x: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
        """log p(x) = log ∫ p(x|z) p(z) dz by quadrature on the grid (the integrand vanishes at its edges)."""
        check_last_dim(x, self.data_dim, "x")
        grid, log_cell = self.quadrature_grid(like=x)
        log_prior = self.prior.log_prob(grid)  # [G]
        flat = x.reshape(-1, self.data_dim)
        values = []
        for start in range(0, len(flat), chunk_size):
            chunk = flat[start : start + chunk_size]
            log_joint = self.likelihood(grid[:, None, :]).log_prob(chunk) + log_prior[:, None]  # [G, B]
            values.append(torch.logsumexp(log_joint, dim=0) + log_cell)
        return torch.cat(values).reshape(x.shape[:-1]) if values else x.new_zeros(x.shape[:-1])

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws (x ``[n, 2]``, z ``[n, d]``) of the joint."""
        z = self.prior.sample((n,))
        return self.likelihood(z).sample(), z
