"""Tests of vaecourse.gaussian: the hand-typed formulas of chapter 5 against torch.distributions, in float64."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaecourse import gaussian

BATCH_SHAPES = [(), (5,), (2, 4), (3, 1, 2)]


def random_gaussian(shape, generator):
    mean = 2 * torch.randn(shape, generator=generator, dtype=torch.float64)
    std = torch.exp(torch.randn(shape, generator=generator, dtype=torch.float64))  # σ between ~0.05 and ~20
    return mean, std


def diagonal(mean, std):
    return Independent(Normal(mean, std), 1)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("dim", [1, 3, 16])
def test_kl_to_standard_normal_equals_torch(batch_shape, dim):
    generator = torch.Generator().manual_seed(dim * 100 + len(batch_shape))
    mean, std = random_gaussian((*batch_shape, dim), generator)
    standard = diagonal(torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64))
    expected = kl_divergence(diagonal(mean, std), standard)
    got = gaussian.kl_to_standard_normal(mean, std)
    assert got.shape == batch_shape
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "shape_q, shape_p, shape",
    [
        ((4, 3), (4, 3), (4,)),  # one prior per example
        ((4, 3), (3,), (4,)),  # one prior for the batch
        ((3,), (6, 3), (6,)),  # one q against many p
        ((2, 1, 3), (5, 3), (2, 5)),  # all pairs, by broadcasting
        ((7, 1), (1,), (7,)),  # one latent dimension
    ],
)
def test_kl_between_diagonal_gaussians_equals_torch_with_broadcasting(shape_q, shape_p, shape):
    generator = torch.Generator().manual_seed(len(shape_q) * 10 + len(shape_p))
    mean_q, std_q = random_gaussian(shape_q, generator)
    mean_p, std_p = random_gaussian(shape_p, generator)
    expected = kl_divergence(diagonal(mean_q, std_q), diagonal(mean_p, std_p))
    got = gaussian.kl_diagonal_gaussians(mean_q, std_q, mean_p, std_p)
    assert got.shape == shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_general_kl_reduces_to_the_standard_normal_one_and_vanishes_only_for_equal_gaussians():
    generator = torch.Generator().manual_seed(3)
    mean, std = random_gaussian((10, 4), generator)
    zeros, ones = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(
        gaussian.kl_diagonal_gaussians(mean, std, zeros, ones), gaussian.kl_to_standard_normal(mean, std)
    )
    assert torch.equal(gaussian.kl_diagonal_gaussians(mean, std, mean, std), torch.zeros(10, dtype=torch.float64))
    assert bool((gaussian.kl_to_standard_normal(mean, std) > 0).all())


def test_kl_gradient_is_mu_and_sigma_minus_one_over_sigma():
    generator = torch.Generator().manual_seed(4)
    mean, std = (t.requires_grad_() for t in random_gaussian((6,), generator))
    grad_mean, grad_std = torch.autograd.grad(gaussian.kl_to_standard_normal(mean, std), [mean, std])
    torch.testing.assert_close(grad_mean, mean.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_std, (std - 1 / std).detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("eps_shape", [(2, 3), (5, 2, 3)])
def test_reparameterize_is_what_rsample_computes(eps_shape):
    generator = torch.Generator().manual_seed(5)
    mean, std = random_gaussian((2, 3), generator)
    torch.manual_seed(0)
    expected = Normal(mean, std).rsample(eps_shape[:-2])
    torch.manual_seed(0)
    eps = torch.randn(eps_shape, dtype=torch.float64)
    torch.testing.assert_close(gaussian.reparameterize(mean, std, eps), expected, rtol=0, atol=1e-12)


def test_reparameterize_draws_its_own_noise_and_is_differentiable():
    mean = torch.full((200_000,), 1.5, dtype=torch.float64, requires_grad=True)
    std = torch.full((200_000,), 0.5, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    z = gaussian.reparameterize(mean, std)
    se_mean, se_std = 0.5 / 200_000**0.5, 0.5 / (2 * 200_000) ** 0.5  # standard errors of the sample mean and std
    assert abs(z.mean().item() - 1.5) < 4 * se_mean
    assert abs(z.std().item() - 0.5) < 4 * se_std
    grad_mean, grad_std = torch.autograd.grad(z[:3].sum(), [mean, std])
    assert torch.equal(grad_mean[:3], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(grad_std[:3], ((z[:3] - 1.5) / 0.5).detach())  # ∂z/∂σ = ε


def test_bad_inputs_are_refused_with_a_message():
    mean, std = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match="must be positive"):
        gaussian.kl_to_standard_normal(mean, torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="must be positive"):
        gaussian.reparameterize(mean, -std)
    with pytest.raises(ValueError, match="do not broadcast"):
        gaussian.kl_to_standard_normal(torch.zeros(3), torch.ones(4))
    with pytest.raises(ValueError, match="do not broadcast"):
        gaussian.kl_diagonal_gaussians(mean, std, torch.zeros(4), torch.ones(4))
    with pytest.raises(ValueError, match="scalars"):
        gaussian.kl_to_standard_normal(torch.tensor(0.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="floating-point"):
        gaussian.kl_to_standard_normal([0.0], std)
    with pytest.raises(ValueError, match="floating-point"):
        gaussian.kl_to_standard_normal(torch.zeros(3, dtype=torch.long), std)
