"""Tests of vaecourse.gradients: the pathwise, score-function and naive estimators of chapter 5.

Statistical tests use fixed seeds and compare with exact gradients in units of the Monte Carlo standard error:
an unbiased estimator lands within 4 standard errors, a biased one far outside.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal

import vaecourse as vc
from vaecourse import gaussian, gradients

MU, SIGMA = 0.5, 0.8

# E_{N(μ, σ²)}[f(z)] for three polynomials, and its gradient in (μ, σ).
MOMENTS = {
    "z^2": (lambda z: z**2, lambda m, s: (2 * m, 2 * s)),
    "z^3": (lambda z: z**3, lambda m, s: (3 * m**2 + 3 * s**2, 6 * m * s)),
    "z^4": (lambda z: z**4, lambda m, s: (4 * m**3 + 12 * m * s**2, 12 * m**2 * s + 12 * s**3)),
}

UNBIASED = {
    "pathwise": gradients.pathwise,
    "score": gradients.score_function,
    "score, mean baseline": lambda *args: gradients.score_function(*args, baseline="mean"),
    "score, constant baseline": lambda *args: gradients.score_function(*args, baseline=3.0),
}


def normal(mean, std):
    return Normal(mean, std)


def diagonal(mean, std):
    return Independent(Normal(mean, std), 1)


def scalar_params(mu=MU, sigma=SIGMA):
    return [
        torch.tensor(mu, dtype=torch.float64, requires_grad=True),
        torch.tensor(sigma, dtype=torch.float64, requires_grad=True),
    ]


def linear_gaussian_problem(latent_dim: int, seed: int = 0):
    """The chapter's example: a linear-Gaussian model with D = 2d, an observation x, and a diagonal q that is
    not the optimum (so the ELBO's gradient is not zero); f is the ELBO's integrand log p(x|z) − KL(q ‖ p)."""
    generator = torch.Generator().manual_seed(seed)
    data_dim = 2 * latent_dim
    W = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64) / math.sqrt(latent_dim)
    b = 0.5 * torch.randn(data_dim, generator=generator, dtype=torch.float64)
    model = vc.models.LinearGaussian(W, b, 0.5)
    x = W @ torch.randn(latent_dim, generator=generator, dtype=torch.float64) + b
    x = x + 0.5 * torch.randn(data_dim, generator=generator, dtype=torch.float64)
    posterior = model.posterior(x)
    mean = posterior.mean.detach() + 0.5 * torch.randn(latent_dim, generator=generator, dtype=torch.float64)
    std = 0.7 * posterior.covariance_matrix.detach().diagonal().sqrt()
    params = [mean.requires_grad_(), std.requires_grad_()]

    def f(z, q):
        return model.likelihood(z).log_prob(x) - gaussian.kl_to_standard_normal(q.mean, q.stddev)

    exact = gradients.exact_gradient(lambda m, s: vc.estimators.exact_elbo(model, x, diagonal(m, s)).elbo, params)
    return f, params, exact


@pytest.mark.parametrize("estimator", UNBIASED.values(), ids=UNBIASED.keys())
@pytest.mark.parametrize("moment", MOMENTS.keys())
def test_estimators_are_unbiased_for_gaussian_moments(estimator, moment):
    f, gradient = MOMENTS[moment]
    torch.manual_seed(0)
    grads = estimator(lambda z, q: f(z), normal, scalar_params(), 40_000)
    exact = torch.tensor(gradient(MU, SIGMA), dtype=torch.float64)
    assert grads.samples.shape == (40_000, 2)
    assert bool((grads.z_scores(exact).abs() < 4).all()), f"z-scores {grads.z_scores(exact)}"


@pytest.mark.parametrize("estimator", UNBIASED.values(), ids=UNBIASED.keys())
def test_estimators_are_unbiased_for_the_linear_gaussian_elbo(estimator):
    f, params, exact = linear_gaussian_problem(latent_dim=3)
    torch.manual_seed(1)
    grads = estimator(f, diagonal, params, 50_000)
    assert grads.samples.shape == (50_000, 6)
    assert bool((grads.z_scores(exact).abs() < 4).all()), f"z-scores {grads.z_scores(exact)}"


def test_naive_estimator_is_biased_it_drops_the_reconstruction_gradient():
    f, params, exact = linear_gaussian_problem(latent_dim=3)
    torch.manual_seed(2)
    naive = gradients.naive(f, diagonal, params, 10_000)
    pathwise = gradients.pathwise(f, diagonal, params, 10_000)
    # The naive samples are all −∇_φ KL(q ‖ p): the slide's wrong right-hand side, with no reconstruction term.
    kl_gradient = gradients.exact_gradient(gaussian.kl_to_standard_normal, params)
    torch.testing.assert_close(naive.samples, -kl_gradient.expand(10_000, -1), rtol=0, atol=1e-12)
    error = (naive.mean - exact).abs()
    assert bool((error > 6 * pathwise.standard_error).any()), "the naive estimator's bias went undetected"
    assert float(error.max()) > 1.0


def test_naive_estimator_is_zero_when_f_does_not_depend_on_phi():
    torch.manual_seed(3)
    naive = gradients.naive(lambda z, q: z**2, normal, scalar_params(), 100)
    assert torch.equal(naive.samples, torch.zeros(100, 2, dtype=torch.float64))
    exact = torch.tensor(MOMENTS["z^2"][1](MU, SIGMA), dtype=torch.float64)
    assert float((naive.mean - exact).abs().min()) > 0.5


def test_all_three_agree_on_an_integrand_that_depends_on_phi_only():
    """f = −KL(q ‖ p) does not depend on z: its expectation is itself, and moving ∇ inside is then right."""
    f, params, _ = linear_gaussian_problem(latent_dim=2)
    minus_kl = lambda z, q: -gaussian.kl_to_standard_normal(q.mean, q.stddev)  # noqa: E731
    exact = -gradients.exact_gradient(gaussian.kl_to_standard_normal, params)
    torch.manual_seed(4)
    for estimator in (gradients.naive, gradients.pathwise):
        torch.testing.assert_close(estimator(minus_kl, diagonal, params, 50).samples, exact.expand(50, -1))
    score = gradients.score_function(minus_kl, diagonal, params, 40_000)
    assert bool((score.z_scores(exact).abs() < 4).all())


@pytest.mark.parametrize("latent_dim, at_least", [(1, 5), (8, 300)])
def test_pathwise_variance_is_below_score_function_on_the_chapter_example(latent_dim, at_least):
    f, params, _ = linear_gaussian_problem(latent_dim)
    torch.manual_seed(5)
    pathwise = gradients.pathwise(f, diagonal, params, 4000)
    score = gradients.score_function(f, diagonal, params, 4000)
    assert float(score.total_variance / pathwise.total_variance) > at_least


def test_mean_baseline_reduces_the_score_function_variance():
    f, params, _ = linear_gaussian_problem(latent_dim=4)
    torch.manual_seed(6)
    plain = gradients.score_function(f, diagonal, params, 4000)
    with_baseline = gradients.score_function(f, diagonal, params, 4000, baseline="mean")
    assert float(plain.total_variance / with_baseline.total_variance) > 10


def test_leave_one_out_baseline_is_unbiased_where_the_plain_batch_mean_is_not():
    """At S = 2 the batch mean (f_1 + f_2)/2 as a baseline halves the expected gradient; leave-one-out does not."""
    params = scalar_params(mu=1.5, sigma=0.5)
    exact = torch.tensor(MOMENTS["z^2"][1](1.5, 0.5), dtype=torch.float64)
    torch.manual_seed(7)
    runs = [gradients.score_function(lambda z, q: z**2, normal, params, 2, baseline="mean") for _ in range(2000)]
    # The two samples of a run share their baseline, so the independent units are the runs' means.
    leave_one_out = gradients.GradientSamples(torch.stack([run.mean for run in runs]), runs[0].shapes)
    assert bool((leave_one_out.z_scores(exact).abs() < 4).all())
    # With the batch mean, f_s − (f_1 + f_2)/2 = (f_s − f_other)/2: exactly half of each leave-one-out sample.
    batch_mean = gradients.GradientSamples(leave_one_out.samples / 2, leave_one_out.shapes)
    assert bool((batch_mean.z_scores(exact).abs() > 6).all())


def test_rows_are_the_gradients_of_single_samples():
    params = scalar_params()
    torch.manual_seed(8)
    pathwise = gradients.pathwise(lambda z, q: z**3, normal, params, 5)
    score = gradients.score_function(lambda z, q: z**3, normal, params, 5)
    torch.manual_seed(8)
    eps = torch.randn(5, dtype=torch.float64)
    z = MU + SIGMA * eps
    torch.testing.assert_close(pathwise.samples, torch.stack([3 * z**2, 3 * z**2 * eps], dim=1))
    z = Normal(torch.full((5,), MU, dtype=torch.float64), SIGMA).sample()
    centred = z - MU
    scores = torch.stack([centred / SIGMA**2, (centred**2 - SIGMA**2) / SIGMA**3], dim=1)
    torch.testing.assert_close(score.samples, z[:, None] ** 3 * scores)


def test_a_full_covariance_gaussian_works_too():
    """E‖z‖² = ‖μ‖² + tr(L Lᵀ) for z ~ N(μ, L Lᵀ): gradient 2μ and 2L."""
    mean = torch.tensor([0.3, -1.0], dtype=torch.float64, requires_grad=True)
    scale_tril = torch.tensor([[0.8, 0.0], [0.4, 0.5]], dtype=torch.float64, requires_grad=True)
    exact = gradients.flatten([2 * mean.detach(), 2 * scale_tril.detach()])

    def factory(mean, scale_tril):
        return MultivariateNormal(mean, scale_tril=scale_tril)

    torch.manual_seed(9)
    for estimator in (gradients.pathwise, gradients.score_function):
        grads = estimator(lambda z, q: (z**2).sum(-1), factory, [mean, scale_tril], 40_000)
        assert grads.samples.shape == (40_000, 6)
        assert bool((grads.z_scores(exact)[[0, 1, 2, 4, 5]].abs() < 4).all())


def test_score_function_handles_a_discrete_q_and_pathwise_refuses_it():
    """E_{Bernoulli(p)}[f(z)] = p f(1) + (1 − p) f(0): gradient in the logit l is p(1 − p)(f(1) − f(0))."""
    logits = torch.tensor([0.3, -1.2], dtype=torch.float64, requires_grad=True)

    def f(z, q):
        return (3 * z - 1).sum(-1)  # f(1) − f(0) = 3 per coordinate

    probs = torch.sigmoid(logits.detach())
    exact = 3 * probs * (1 - probs)
    factory = lambda logits: Independent(Bernoulli(logits=logits), 1)  # noqa: E731
    torch.manual_seed(10)
    grads = gradients.score_function(f, factory, [logits], 40_000, baseline="mean")
    assert bool((grads.z_scores(exact).abs() < 4).all())
    with pytest.raises(ValueError, match="no rsample"):
        gradients.pathwise(f, factory, [logits], 10)


def test_gradient_samples_summaries_and_unflatten():
    samples = torch.tensor([[1.0, 2.0, 3.0, 0.0], [3.0, 2.0, 1.0, 4.0]])
    grads = gradients.GradientSamples(samples, (torch.Size([]), torch.Size([3])))
    assert grads.num_samples == 2
    torch.testing.assert_close(grads.mean, torch.tensor([2.0, 2.0, 2.0, 2.0]))
    torch.testing.assert_close(grads.variance, torch.tensor([2.0, 0.0, 2.0, 8.0]))
    torch.testing.assert_close(grads.total_variance, torch.tensor(12.0))
    torch.testing.assert_close(grads.standard_error, torch.tensor([1.0, 0.0, 1.0, 2.0]))
    first, second = grads.unflatten(grads.mean)
    assert first.shape == () and second.shape == (3,)
    assert [t.shape for t in grads.unflatten(samples)] == [(2,), (2, 3)]
    z_scores = grads.z_scores([torch.tensor(1.0), torch.tensor([2.0, 1.0, 2.0])])
    torch.testing.assert_close(z_scores[[0, 2, 3]], torch.tensor([1.0, 1.0, 0.0]))
    torch.testing.assert_close(z_scores, grads.z_scores(torch.tensor([1.0, 2.0, 1.0, 2.0])), equal_nan=True)
    with pytest.raises(ValueError, match="at least 2 samples"):
        _ = gradients.GradientSamples(samples[:1], grads.shapes).variance
    with pytest.raises(ValueError, match=r"\[S, P\]"):
        gradients.GradientSamples(samples[:, :3], grads.shapes)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_num_samples_must_be_a_positive_int(bad):
    for estimator in (gradients.pathwise, gradients.score_function, gradients.naive):
        with pytest.raises(ValueError, match="num_samples must be a positive int"):
            estimator(lambda z, q: z, normal, scalar_params(), bad)


def test_params_must_be_floating_tensors_that_require_grad():
    f = lambda z, q: z  # noqa: E731
    with pytest.raises(ValueError, match="does not require grad"):
        gradients.pathwise(f, normal, [torch.tensor(0.0), torch.tensor(1.0)], 10)
    with pytest.raises(ValueError, match="floating-point"):
        gradients.score_function(f, normal, [0.0, 1.0], 10)
    with pytest.raises(ValueError, match="empty"):
        gradients.naive(f, normal, [], 10)
    with pytest.raises(ValueError, match="does not require grad"):
        gradients.exact_gradient(lambda m: m, [torch.tensor(0.0)])


@pytest.mark.parametrize("bad", ["median", True, [1.0], None])
def test_baseline_must_be_none_mean_or_a_number(bad):
    if bad is None:
        with pytest.raises(ValueError, match="needs num_samples >= 2"):
            gradients.score_function(lambda z, q: z, normal, scalar_params(), 1, baseline="mean")
        return
    with pytest.raises(ValueError, match="baseline must be None, 'mean' or a number"):
        gradients.score_function(lambda z, q: z, normal, scalar_params(), 10, baseline=bad)


def test_q_factory_and_f_contract_violations_are_reported():
    params = scalar_params()
    standard = lambda *args: Normal(torch.tensor(0.0), torch.tensor(1.0))  # noqa: E731
    with pytest.raises(ValueError, match="broadcast over a leading sample dimension"):
        gradients.pathwise(lambda z, q: z, standard, params, 10)
    with pytest.raises(ValueError, match="must return a torch.distributions.Distribution"):
        gradients.pathwise(lambda z, q: z, lambda m, s: m + s, params, 10)
    with pytest.raises(ValueError, match=r"one value per sample, shape \[S=10"):
        gradients.pathwise(lambda z, q: z.mean(), normal, params, 10)
    with pytest.raises(ValueError, match="through a closure"):
        gradients.pathwise(lambda z, q: z * params[0], normal, params, 10)
    with pytest.raises(ValueError, match="through a closure"):
        gradients.naive(lambda z, q: z * params[1], normal, params, 10)
    with pytest.raises(ValueError, match="through a closure"):
        gradients.score_function(lambda z, q: z, lambda m, s: Normal(m + params[0] * 0, s), params, 10)


def test_trailing_values_are_summed_per_sample():
    params = scalar_params()
    torch.manual_seed(11)
    per_coordinate = gradients.pathwise(lambda z, q: torch.stack([z, z**2], dim=1), normal, params, 20)
    torch.manual_seed(11)
    summed = gradients.pathwise(lambda z, q: z + z**2, normal, params, 20)
    torch.testing.assert_close(per_coordinate.samples, summed.samples)
