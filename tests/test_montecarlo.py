"""Tests of vaecourse.montecarlo: the exact relative variances against Monte Carlo, their two derivations against
each other, the isotropic family, and the small helpers (log-mean-exp, relative error, samples needed, the fit).

Exactness tests run in float64. Statistical tests fix a seed and write their tolerance as 4 standard errors,
the standard error computed in the test from the same draws.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaecourse.estimators import log_importance_weights, log_marginal_naive
from vaecourse.models import LinearGaussian
from vaecourse.montecarlo import (
    ExponentialFit,
    fit_exponential_rate,
    isotropic_model,
    log_mean_exp,
    relative_error,
    relative_variance_is,
    relative_variance_naive,
    rms_relative_error,
    samples_needed,
)

F64 = torch.float64


def small_model(data_dim=4, latent_dim=2, noise_std=0.8, seed=0) -> LinearGaussian:
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(data_dim, latent_dim, generator=generator, dtype=F64)
    b = torch.randn(data_dim, generator=generator, dtype=F64)
    return LinearGaussian(W, b, noise_std)


def data(model, *batch, seed=1) -> torch.Tensor:
    torch.manual_seed(seed)
    x, _ = model.sample(math.prod(batch))
    return x.reshape(*batch, model.data_dim)


def monte_carlo_relative_variance(model, x, proposal, num_samples, seed=2):
    """(mean of (w/p)², its standard error) − (1, 0), over ``num_samples`` importance weights for each x."""
    torch.manual_seed(seed)
    with torch.no_grad():
        log_w = log_importance_weights(model, x, proposal, num_samples)  # [K, B]
        squares = torch.exp(2 * (log_w - model.log_marginal(x)))
    return squares.mean(0) - 1, squares.std(0) / math.sqrt(num_samples)


# --- the naive estimator's relative variance ρ ---------------------------------------------------------------------


def test_relative_variance_naive_matches_monte_carlo_within_4_standard_errors():
    model = small_model()
    x = data(model, 3)
    exact = relative_variance_naive(model, x)
    estimate, standard_error = monte_carlo_relative_variance(model, x, model.prior, 400_000)
    assert exact.shape == (3,)
    assert bool(((estimate - exact).abs() < 4 * standard_error).all()), (exact, estimate, standard_error)
    assert bool((exact > 0.5).all())  # a non-trivial ρ, so the comparison can fail


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
def test_relative_variance_naive_equals_the_chi_square_form_with_the_prior_as_proposal(batch):
    model = small_model(data_dim=5, latent_dim=3, noise_std=0.5)
    x = data(model, *batch) if batch else data(model, 1)[0]
    naive = relative_variance_naive(model, x)
    chi_square = relative_variance_is(model, x, model.prior)
    assert naive.shape == chi_square.shape == batch
    torch.testing.assert_close(naive, chi_square, rtol=1e-9, atol=0)


def test_relative_error_of_the_naive_estimator_is_sqrt_rho_over_k():
    model = small_model()
    x = data(model, 1)[0]
    rho = relative_variance_naive(model, x)
    num_samples, repeats = 20, 4000
    torch.manual_seed(3)
    log_estimates = log_marginal_naive(model, x.expand(repeats, -1), num_samples)
    squared = relative_error(log_estimates, model.log_marginal(x).detach()) ** 2
    standard_error = squared.std() / math.sqrt(repeats)
    assert abs(squared.mean() - rho / num_samples) < 4 * standard_error
    assert math.isclose(rms_relative_error(log_estimates, model.log_marginal(x).detach()), squared.mean().sqrt())


# --- importance sampling with a Gaussian proposal --------------------------------------------------------------------


def test_relative_variance_is_zero_with_the_exact_posterior():
    model = small_model()
    x = data(model, 4)
    rho = relative_variance_is(model, x, model.posterior(x))
    assert rho.shape == (4,)
    assert bool((rho.abs() < 1e-10).all())


def test_relative_variance_is_matches_monte_carlo_for_a_wrong_proposal():
    model = small_model()
    x = data(model, 3)
    posterior = model.posterior(x)
    proposal = MultivariateNormal(posterior.mean + 0.2, covariance_matrix=1.5 * posterior.covariance_matrix)
    exact = relative_variance_is(model, x, proposal)
    estimate, standard_error = monte_carlo_relative_variance(model, x, proposal, 200_000)
    assert bool(((estimate - exact).abs() < 4 * standard_error).all()), (exact, estimate, standard_error)
    assert bool((exact > 0.05).all())


def test_relative_variance_is_accepts_a_diagonal_gaussian_proposal():
    model = small_model()
    x = data(model, 2)
    posterior = model.posterior(x)
    diagonal = torch.distributions.Independent(torch.distributions.Normal(posterior.mean, posterior.stddev * 1.2), 1)
    as_full = MultivariateNormal(posterior.mean, covariance_matrix=torch.diag_embed(diagonal.variance))
    torch.testing.assert_close(relative_variance_is(model, x, diagonal), relative_variance_is(model, x, as_full))


def test_relative_variance_is_infinite_for_a_proposal_much_narrower_than_the_posterior():
    model = small_model()
    x = data(model, 2)
    posterior = model.posterior(x)

    def scaled(factor):
        return MultivariateNormal(posterior.mean, covariance_matrix=factor * posterior.covariance_matrix)

    # ∫ p²/q is finite iff 2Σ_post⁻¹ − Σ_q⁻¹ is positive definite, i.e. iff factor > 1/2
    assert bool(torch.isinf(relative_variance_is(model, x, scaled(0.4))).all())
    finite = relative_variance_is(model, x, scaled(0.6))
    assert bool(torch.isfinite(finite).all()) and bool((finite > 0).all())
    # for q = N(m, cΣ) and p = N(m, Σ) in d dimensions, 1 + ρ = (c / √(2c − 1))^d
    expected = (0.6 / math.sqrt(2 * 0.6 - 1)) ** model.latent_dim - 1
    torch.testing.assert_close(finite, torch.full_like(finite, expected))


# --- the isotropic family ------------------------------------------------------------------------------------------


def test_isotropic_model_has_the_announced_structure():
    model = isotropic_model(3, weight=2.0, noise_std=0.5)
    assert model.data_dim == model.latent_dim == 3
    torch.testing.assert_close(model.W, 2.0 * torch.eye(3, dtype=F64))
    torch.testing.assert_close(model.noise_std, torch.full((3,), 0.5, dtype=F64))
    posterior_variance = 0.25 / (4.0 + 0.25)  # σ² / (w² + σ²) in every coordinate
    covariance = model.posterior(torch.zeros(3, dtype=F64)).covariance_matrix
    torch.testing.assert_close(covariance, posterior_variance * torch.eye(3, dtype=F64))


@pytest.mark.parametrize("latent_dim", [0, -1, 2.0, True])
def test_isotropic_model_rejects_a_bad_dimension(latent_dim):
    with pytest.raises(ValueError, match="latent_dim"):
        isotropic_model(latent_dim)


def test_relative_variance_factorises_over_the_coordinates_of_the_isotropic_family():
    x = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64)
    whole = torch.log1p(relative_variance_naive(isotropic_model(4), x))
    per_coordinate = torch.log1p(relative_variance_naive(isotropic_model(1), x[:, None]))  # [4]
    torch.testing.assert_close(whole, per_coordinate.sum())


def test_relative_variance_naive_at_the_origin_has_the_one_dimensional_closed_form():
    # at x = 0, 1 + ρ₁ = ∫ N(z; 0, s²)² / N(z; 0, 1) dz = 1 / (s √(2 − s²)), s² the posterior variance
    model = isotropic_model(1, weight=1.0, noise_std=0.5)
    s2 = 0.25 / 1.25
    expected = 1 / math.sqrt(s2 * (2 - s2)) - 1
    assert math.isclose(relative_variance_naive(model, torch.zeros(1, dtype=F64)).item(), expected, rel_tol=1e-12)


# --- helpers --------------------------------------------------------------------------------------------------------


def test_log_mean_exp_matches_the_direct_formula_and_survives_underflow():
    torch.manual_seed(0)
    log_weights = torch.randn(7, 3, dtype=F64)
    torch.testing.assert_close(log_mean_exp(log_weights), log_weights.exp().mean(0).log())
    torch.testing.assert_close(log_mean_exp(log_weights, dim=1), log_weights.exp().mean(1).log())
    shifted = log_mean_exp(log_weights - 1000)
    assert bool(torch.isfinite(shifted).all())
    torch.testing.assert_close(shifted, log_mean_exp(log_weights) - 1000)


def test_relative_error_is_accurate_for_tiny_errors():
    # exp(1e-15) − 1 would give 1.11e-15 (the spacing of floats near 1); expm1 keeps every digit
    error = relative_error(torch.tensor(1e-15, dtype=F64), torch.tensor(0.0, dtype=F64))
    assert math.isclose(error.item(), 1e-15, rel_tol=1e-9)
    torch.testing.assert_close(
        relative_error(torch.tensor([0.0, math.log(2)]), torch.tensor(0.0)), torch.tensor([0.0, 1.0])
    )


def test_samples_needed_is_rho_over_epsilon_squared():
    assert samples_needed(4.0, 0.2) == pytest.approx(100.0)
    torch.testing.assert_close(samples_needed(torch.tensor([1.0, 2.0]), 0.1), torch.tensor([100.0, 200.0]))
    with pytest.raises(ValueError, match="relative_error"):
        samples_needed(1.0, 0.0)


def test_fit_exponential_rate_recovers_a_known_rate():
    dims = torch.arange(1, 11, dtype=F64)
    samples = 7.0 * torch.exp(0.9 * dims)
    fit = fit_exponential_rate(dims, samples)
    assert isinstance(fit, ExponentialFit)
    assert math.isclose(fit.rate, 0.9, rel_tol=1e-10)
    assert math.isclose(fit.intercept, math.log(7.0), rel_tol=1e-10)
    assert math.isclose(fit.factor, math.exp(0.9), rel_tol=1e-10)
    torch.testing.assert_close(fit(dims), samples)


def test_fit_exponential_rate_is_least_squares_on_the_log():
    dims = [1, 2, 3]
    samples = [math.exp(1.0), math.exp(1.0), math.exp(4.0)]  # log K = 1, 1, 4: slope 1.5, intercept −1
    fit = fit_exponential_rate(dims, samples)
    assert math.isclose(fit.rate, 1.5, rel_tol=1e-10) and math.isclose(fit.intercept, -1.0, abs_tol=1e-10)
    with pytest.raises(ValueError, match="two pairs"):
        fit_exponential_rate([1], [2.0])
