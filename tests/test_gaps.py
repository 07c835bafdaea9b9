"""vaecourse.gaps: the approximation and amortization gaps, checked on linear-Gaussian models where both are known
in closed form (the exact posterior is Gaussian; the best diagonal Gaussian has the posterior's mean and variances
1/Λ_jj, Λ the posterior precision)."""

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vaecourse.gaps import inference_gaps, optimise_posterior
from vaecourse.models import LinearGaussian


def make_model(correlated: bool):
    generator = torch.Generator().manual_seed(0)
    W = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    if not correlated:  # orthogonal columns: the posterior covariance is diagonal, a diagonal q can be exact
        W = torch.linalg.qr(W).Q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    model = LinearGaussian(W, torch.zeros(6, dtype=torch.float64), 0.5).requires_grad_(False)
    z = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    x = model.likelihood(z).mean + 0.5 * torch.randn(40, 6, generator=generator, dtype=torch.float64)
    return model, x


def kl_to_posterior(model, x, loc, scale):
    """KL(N(loc, diag scale²) ‖ p(z|x)) per example: log p(x) − ELBO, exactly."""
    q = MultivariateNormal(loc, scale_tril=torch.diag_embed(scale))
    return kl_divergence(q, model.posterior(x))


def within_four_standard_errors(estimates, exact):
    deviation = (estimates - exact).double()
    return abs(deviation.mean().item()) < 4 * deviation.std().item() / math.sqrt(len(deviation))


@pytest.mark.slow
@pytest.mark.parametrize("correlated", [False, True])
def test_gaps_of_a_linear_gaussian_model_with_a_bad_encoder(correlated):
    model, x = make_model(correlated)
    bad = Independent(Normal(torch.zeros(40, 3, dtype=torch.float64), torch.ones(40, 3, dtype=torch.float64)), 1)
    generator = torch.Generator().manual_seed(1)
    gaps = inference_gaps(
        model, x, q=bad, num_samples=2000, elbo_samples=4000, steps=600, lr=0.05, optimiser_samples=64,
        generator=generator,
    )
    posterior = model.posterior(x)
    best_scale = torch.linalg.inv(posterior.covariance_matrix[0]).diagonal().rsqrt().expand(40, 3)
    found_loc, found_scale = gaps.per_example["optimal_loc"], gaps.per_example["optimal_scale"]
    best_gap = kl_to_posterior(model, x, posterior.mean, best_scale)  # the smallest KL of a diagonal Gaussian
    found_gap = kl_to_posterior(model, x, found_loc, found_scale)
    # Adam converged: q* is within 5e-3 nats of the best diagonal Gaussian for every example (an optimisation
    # tolerance: stochastic gradients from 64 draws a step), and for orthogonal columns q* is the exact posterior
    assert (found_gap - best_gap).max() < 5e-3
    if not correlated:
        assert best_gap.abs().max() < 1e-12 and found_gap.max() < 5e-3
    else:
        assert best_gap.mean() > 0.05  # a correlated posterior: a diagonal q cannot be exact
    # the estimates against the closed forms, per example, within 4 standard errors of the Monte Carlo deviation
    exact_log_p = model.log_marginal(x)
    assert within_four_standard_errors(gaps.per_example["log_likelihood"], exact_log_p)
    assert within_four_standard_errors(exact_log_p - gaps.per_example["elbo_optimal"], found_gap)
    amortization = kl_to_posterior(model, x, bad.base_dist.loc, bad.base_dist.scale) - found_gap
    assert within_four_standard_errors(gaps.per_example["elbo_optimal"] - gaps.per_example["elbo_encoder"],
                                       amortization)
    assert gaps.amortization_gap.value > 10 * gaps.amortization_gap.standard_error > 0  # a bad encoder loses
    total = gaps.approximation_gap.value + gaps.amortization_gap.value
    assert total == pytest.approx(gaps.inference_gap.value, abs=1e-9)
    assert gaps.num_examples == 40 and gaps.num_samples == 2000 and gaps.steps == 600


def test_optimise_posterior_leaves_the_model_alone_and_is_reproducible():
    model, x = make_model(True)
    model.requires_grad_(True)
    start = Independent(Normal(torch.zeros(40, 3, dtype=torch.float64), torch.ones(40, 3, dtype=torch.float64)), 1)
    first = optimise_posterior(model, x, start, steps=20, generator=torch.Generator().manual_seed(0))
    second = optimise_posterior(model, x, start, steps=20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.base_dist.loc, second.base_dist.loc)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert first.batch_shape == (40,) and first.event_shape == (3,)


def test_bad_input():
    model, x = make_model(True)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        inference_gaps(model, x[0])
    with pytest.raises(ValueError, match="batch shape"):
        inference_gaps(model, x, q=Independent(Normal(torch.zeros(3, 3), torch.ones(3, 3)), 1))
    with pytest.raises(ValueError, match="diagonal Gaussian"):
        inference_gaps(model, x, q=model.posterior(x))
    with pytest.raises(ValueError, match="num_samples"):
        inference_gaps(model, x, q=model.posterior(x), num_samples=0)
