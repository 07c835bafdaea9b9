"""Tests of vaecourse.vi: the Gaussian families of q, the exact monitor, and the ELBO fits over q and over (q, θ)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from vaecourse import amortized, estimators, models, vi

FAMILIES = [vi.DiagonalGaussian, vi.FullGaussian]
DOUBLE = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: one CPU thread is faster than several that wait for each other (10x on a busy
    2-core machine, where batched Cholesky factors and inverses otherwise spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def correlated_model() -> models.LinearGaussian:
    """D = 3, d = 2, with a posterior whose correlation is about −0.94."""
    W = 1.5 * torch.tensor([[1.0, 0.9], [0.9, 1.0], [0.5, 0.5]], dtype=DOUBLE)
    return models.LinearGaussian(W, torch.zeros(3, dtype=DOUBLE), 0.5)


def random_model(data_dim=4, latent_dim=2, seed=0) -> models.LinearGaussian:
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(data_dim, latent_dim, generator=generator, dtype=DOUBLE)
    b = torch.randn(data_dim, generator=generator, dtype=DOUBLE)
    return models.LinearGaussian(W, b, 0.2 + torch.rand(data_dim, generator=generator, dtype=DOUBLE))


def random_q(family, batch_size, latent_dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch_size, latent_dim, generator=generator, dtype=DOUBLE)
    scale = 0.2 + torch.rand(batch_size, latent_dim, generator=generator, dtype=DOUBLE)
    if family is vi.DiagonalGaussian:
        return vi.DiagonalGaussian(batch_size, latent_dim, loc=loc, scale=scale, dtype=DOUBLE)
    lower = torch.randn(batch_size, latent_dim, latent_dim, generator=generator, dtype=DOUBLE).tril(-1)
    return vi.FullGaussian(batch_size, latent_dim, loc=loc, scale_tril=lower + torch.diag_embed(scale), dtype=DOUBLE)


# --- The families ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch_shape, expected", [((), ()), (3, (3,)), ((2, 3), (2, 3))])
@pytest.mark.parametrize("latent_dim", [1, 3])
def test_family_gives_one_q_per_example_with_the_right_shapes(family, batch_shape, expected, latent_dim):
    q = family(batch_shape, latent_dim)()
    assert q.batch_shape == expected and q.event_shape == (latent_dim,)
    z = q.rsample((5,))
    assert z.shape == (5, *expected, latent_dim)
    assert q.log_prob(z).shape == (5, *expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_starts_at_the_standard_normal_prior(family):
    q = family(4, 3, dtype=DOUBLE)()
    torch.testing.assert_close(q.mean, torch.zeros(4, 3, dtype=DOUBLE))
    covariance = MultivariateNormal(q.mean, scale_tril=torch.diag_embed(q.stddev)).covariance_matrix
    torch.testing.assert_close(covariance, torch.eye(3, dtype=DOUBLE).expand(4, 3, 3))
    prior = models.standard_normal(3, q.mean)
    torch.testing.assert_close(estimators.kl(q, prior), torch.zeros(4, dtype=DOUBLE))


def test_family_returns_the_torch_distributions_of_the_course():
    assert isinstance(vi.DiagonalGaussian(2, 3)(), Independent)
    assert isinstance(vi.FullGaussian(2, 3)(), MultivariateNormal)


def test_diagonal_gaussian_takes_initial_mean_and_standard_deviation():
    loc = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    scale = torch.tensor([0.5, 3.0])  # broadcast over the batch
    q = vi.DiagonalGaussian(2, 2, loc=loc, scale=scale)()
    torch.testing.assert_close(q.mean, loc)
    torch.testing.assert_close(q.stddev, scale.expand(2, 2))
    torch.testing.assert_close(q.variance, (scale**2).expand(2, 2))


def test_full_gaussian_round_trips_its_cholesky_factor_and_covariance():
    generator = torch.Generator().manual_seed(0)
    lower = torch.randn(3, 4, 4, generator=generator, dtype=DOUBLE).tril(-1)
    L = lower + torch.diag_embed(0.5 + torch.rand(3, 4, generator=generator, dtype=DOUBLE))
    module = vi.FullGaussian(3, 4, scale_tril=L, dtype=DOUBLE)
    torch.testing.assert_close(module.scale_tril(), L)
    torch.testing.assert_close(module().covariance_matrix, L @ L.mT)
    assert module.off_diagonal.shape == (3, 6)


@pytest.mark.parametrize("family", FAMILIES)
def test_samples_of_q_have_its_mean_and_covariance(family):
    """Goodness of fit of ``rsample``: the sample mean lies within 4 standard errors of q's mean."""
    torch.manual_seed(0)
    module = random_q(family, 2, 3)
    q = module()
    num_samples = 20_000
    with torch.no_grad():
        z = q.rsample((num_samples,))  # [S, B, d]
        covariance = MultivariateNormal(q.mean, scale_tril=torch.linalg.cholesky(_covariance(q))).covariance_matrix
        standard_error = covariance.diagonal(dim1=-2, dim2=-1).sqrt() / math.sqrt(num_samples)
        assert bool(((z.mean(0) - q.mean).abs() < 4 * standard_error).all())
        sample_covariance = torch.einsum("sbi,sbj->bij", z - q.mean, z - q.mean) / num_samples
        torch.testing.assert_close(sample_covariance, covariance, atol=0.1, rtol=0.05)


def _covariance(q):
    return q.covariance_matrix if isinstance(q, MultivariateNormal) else torch.diag_embed(q.variance)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_every_parameter_through_rsample(family):
    module = random_q(family, 3, 2)
    z = module().rsample((4,))
    (z**2).sum().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name


@pytest.mark.parametrize("family, init", [(vi.DiagonalGaussian, "scale"), (vi.FullGaussian, "scale_tril")])
def test_family_takes_dtype_from_its_initial_values_unless_told(family, init):
    value = torch.eye(2, dtype=DOUBLE) if init == "scale_tril" else torch.ones(2, dtype=DOUBLE)
    assert family(3, 2, **{init: value})().mean.dtype == DOUBLE
    assert family(3, 2, loc=torch.zeros(2, dtype=DOUBLE))().mean.dtype == DOUBLE
    assert family(3, 2, loc=torch.zeros(2, dtype=DOUBLE), dtype=torch.float32)().mean.dtype == torch.float32
    assert family(3, 2, loc=[0.0, 1.0])().mean.dtype == torch.get_default_dtype()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_shape": 0, "latent_dim": 2}, "batch_shape"),
        ({"batch_shape": (2, -1), "latent_dim": 2}, "batch_shape"),
        ({"batch_shape": 2, "latent_dim": 0}, "latent_dim"),
        ({"batch_shape": 2, "latent_dim": 2, "loc": torch.zeros(3, 2)}, "loc"),
    ],
)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_rejects_bad_shapes(family, kwargs, match):
    with pytest.raises(ValueError, match=match):
        family(**kwargs)


@pytest.mark.parametrize("scale", [torch.tensor([1.0, 0.0]), torch.tensor([1.0, -1.0]), torch.tensor([1.0, math.inf])])
def test_diagonal_gaussian_rejects_non_positive_scales(scale):
    with pytest.raises(ValueError, match="positive"):
        vi.DiagonalGaussian(2, 2, scale=scale)


@pytest.mark.parametrize(
    "scale_tril",
    [torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.5, 0.0]]), torch.tensor([[-1.0, 0], [0, 1]])],
)
def test_full_gaussian_rejects_a_matrix_that_is_not_a_cholesky_factor(scale_tril):
    with pytest.raises(ValueError, match="lower triangular"):
        vi.FullGaussian(2, 2, scale_tril=scale_tril)


# --- The exact monitor: the gap identity ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_gap_of_the_elbo_is_the_kl_to_the_posterior_for_any_gaussian_q(family):
    """log p(x|θ) − L_{q,θ}(x) = KL(q(z) ‖ p(z|x, θ)), to rounding, for random q's (float64)."""
    model = random_model()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=DOUBLE)
    with torch.no_grad():
        metrics = vi.exact_metrics(model, x)(random_q(family, 6, 2)())
    gap = metrics["log_px"] - metrics["exact_elbo"]
    assert bool((metrics["kl_posterior"] > 0.01).all())  # the q's are far from the posterior
    assert (gap - metrics["kl_posterior"]).abs().max() < 1e-10


def test_monitor_reads_theta_at_each_call():
    model = random_model()
    x = torch.zeros(2, 4, dtype=DOUBLE)
    monitor = vi.exact_metrics(model, x)
    q = vi.DiagonalGaussian(2, 2, dtype=DOUBLE)()
    with torch.no_grad():
        before = monitor(q)["log_px"]
        model.b.add_(1.0)
        after = monitor(q)["log_px"]
    assert not torch.allclose(before, after)


# --- Fitting q with θ fixed ----------------------------------------------------------------------------------


def mean_field_optimum(posterior: MultivariateNormal):
    """The best diagonal q for a Gaussian posterior: its mean, σ_j = (Λ_jj)^(-1/2), and the KL it leaves."""
    precision = torch.linalg.inv(posterior.covariance_matrix)
    diagonal = precision.diagonal(dim1=-2, dim2=-1)
    kl = 0.5 * (diagonal.log().sum(-1) - torch.logdet(precision))
    return posterior.mean, diagonal.rsqrt(), kl


def test_fit_q_with_the_exact_elbo_finds_the_posterior_with_a_full_covariance_q():
    model = random_model()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=DOUBLE)
    module = vi.FullGaussian(5, 2, dtype=DOUBLE)
    history = vi.fit_q(model, x, module, steps=200, lr=0.1, exact=True)
    with torch.no_grad():
        final = vi.exact_metrics(model, x)(module())
    assert final["kl_posterior"].max() < 1e-6
    assert bool((history["elbo"][-1] > history["elbo"][0] + 0.1).all())


def test_fit_q_records_the_elbo_its_terms_and_the_monitor_for_each_step_and_example():
    model = random_model()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=DOUBLE)
    module = random_q(vi.FullGaussian, 5, 2)
    with torch.no_grad():
        first_kl = estimators.kl(module(), model.posterior(x))
    history = vi.fit_q(model, x, module, steps=4, lr=0.1, exact=True, monitor=vi.exact_metrics(model, x))
    assert set(history) == {"elbo", "log_px_z", "kl", "log_px", "exact_elbo", "kl_posterior"}
    assert all(value.shape == (4, 5) for value in history.values())
    torch.testing.assert_close(history["elbo"], history["exact_elbo"])  # exact: the objective is the closed form
    torch.testing.assert_close(history["elbo"], history["log_px_z"] - history["kl"])
    torch.testing.assert_close(history["kl_posterior"][0], first_kl)  # row 0: before the first update
    assert not torch.equal(history["elbo"][0], history["elbo"][1])


def test_fit_q_with_a_diagonal_q_stops_at_the_mean_field_optimum():
    """Mean field matches the precision: σ_j² = 1/Λ_jj; the gap left is ½(Σ_j log Λ_jj − log det Λ) > 0."""
    model = correlated_model()
    x = torch.tensor([[1.0, 2.0, 0.5]], dtype=DOUBLE)
    module = vi.DiagonalGaussian(1, 2, dtype=DOUBLE)
    vi.fit_q(model, x, module, steps=300, lr=0.1, exact=True)
    mean, scale, kl_min = mean_field_optimum(model.posterior(x))
    with torch.no_grad():
        q = module()
        torch.testing.assert_close(q.mean, mean, atol=1e-4, rtol=0)
        torch.testing.assert_close(q.stddev, scale, atol=1e-4, rtol=0)
        gap = model.log_marginal(x) - estimators.exact_elbo(model, x, q).elbo
    assert kl_min.item() > 1.0
    assert abs(gap.item() - kl_min.item()) < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_q_with_reparameterized_samples_approaches_the_best_q_of_its_family(family):
    torch.manual_seed(0)
    model = correlated_model()
    x = torch.tensor([[1.0, 2.0, 0.5]], dtype=DOUBLE)
    module = family(1, 2, dtype=DOUBLE)
    vi.fit_q(model, x, module, steps=200, lr=0.05, num_samples=64)
    with torch.no_grad():
        kl = vi.exact_metrics(model, x)(module())["kl_posterior"].item()
    best = 0.0 if family is vi.FullGaussian else mean_field_optimum(model.posterior(x))[2].item()
    assert best <= kl < best + 0.05


def test_fit_q_leaves_the_model_and_its_gradients_alone():
    model = random_model()
    x = torch.zeros(3, 4, dtype=DOUBLE)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    vi.fit_q(model, x, vi.DiagonalGaussian(3, 2, dtype=DOUBLE), steps=5, lr=0.1, num_samples=2)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]) and parameter.grad is None, name


def test_fit_q_works_for_any_model_with_a_prior_and_a_likelihood():
    """The nonlinear toy has no closed form: the Monte Carlo ELBO rises, and stays below log p(x)."""
    torch.manual_seed(0)
    toy = models.NonlinearToy(latent_dim=1)
    x = torch.tensor([[1.0, -0.5], [-1.5, 0.2]])
    module = vi.DiagonalGaussian(2, 1)
    history = vi.fit_q(toy, x, module, steps=150, lr=0.05, num_samples=16)
    assert bool((history["elbo"][-20:].mean(0) > history["elbo"][:20].mean(0) + 0.5).all())
    with torch.no_grad():
        num_samples = 10_000
        terms = estimators.elbo(toy, x, module(), num_samples)
        per_sample = toy.likelihood(terms.z).log_prob(x) - terms.kl  # [S, B]
        standard_error = per_sample.std(0) / math.sqrt(num_samples)
        assert bool((terms.elbo <= toy.log_marginal(x) + 4 * standard_error).all())


def test_fit_q_accepts_one_q_shared_by_all_examples():
    model = random_model()
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(3), dtype=DOUBLE)
    history = vi.fit_q(model, x, vi.FullGaussian((), 2, dtype=DOUBLE), steps=3, lr=0.1, exact=True)
    assert history["elbo"].shape == (3, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_fit_q_rejects_bad_arguments(kwargs, match):
    model = random_model()
    arguments = {"steps": 2, "lr": 0.1, "num_samples": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        vi.fit_q(model, torch.zeros(1, 4, dtype=DOUBLE), vi.DiagonalGaussian(1, 2, dtype=DOUBLE), **arguments)


def test_fit_q_needs_a_q_with_parameters():
    class Fixed(torch.nn.Module):
        def forward(self):
            return models.standard_normal(2, torch.zeros((), dtype=DOUBLE))

    with pytest.raises(ValueError, match="no parameters"):
        vi.fit_q(random_model(), torch.zeros(1, 4, dtype=DOUBLE), Fixed(), steps=2, lr=0.1)


# --- Fitting q and θ together --------------------------------------------------------------------------------


def test_fit_joint_reaches_the_maximum_likelihood_and_closes_the_gap():
    """With d = D − 1 the closed-form maximum (probabilistic PCA) is the best Gaussian, which the joint fit
    of θ and full-covariance q's attains: log-likelihood up, KL(q ‖ p(z|x, θ)) down to ~0."""
    torch.manual_seed(0)
    truth = random_model(data_dim=3, latent_dim=2, seed=4)
    x, _ = truth.sample(50)
    best = models.LinearGaussian.fit_ml(x, 2).log_marginal(x).mean().item()
    model = models.LinearGaussian(0.5 * torch.randn(3, 2, dtype=DOUBLE), torch.zeros(3, dtype=DOUBLE), 1.0)
    q_module = vi.FullGaussian(50, 2, dtype=DOUBLE)
    history = vi.fit_joint(model, x, q_module, 150, 0.1, exact=True, monitor=vi.exact_metrics(model, x))
    log_px, kl_posterior = history["log_px"].mean(1), history["kl_posterior"].mean(1)
    assert log_px[-1] > log_px[0] + 1.0
    assert kl_posterior[-1] < 1e-3 < kl_posterior[0]
    with torch.no_grad():
        assert abs(model.log_marginal(x).mean().item() - best) < 2e-3


def test_fit_joint_with_samples_changes_theta_and_raises_the_likelihood():
    torch.manual_seed(0)
    x, _ = random_model(seed=5).sample(50)
    model = random_model(seed=6)
    W = model.W.detach().clone()
    q_module = vi.DiagonalGaussian(50, 2, dtype=DOUBLE)
    history = vi.fit_joint(model, x, q_module, 100, 0.05, num_samples=4, monitor=vi.exact_metrics(model, x))
    assert not torch.equal(model.W.detach(), W)
    assert history["log_px"].mean(1)[-1] > history["log_px"].mean(1)[0] + 0.5


# --- Chapter 4 (vaecourse.amortized): per-datapoint VI, the amortized encoder, and EM by gradients ---------------


def test_per_datapoint_vi_with_a_full_covariance_family_reaches_the_exact_posterior():
    """One q_i per x_i, fitted separately: with the full-covariance family each ELBO reaches log p(x_i) to 1e-4."""
    model = random_model()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=DOUBLE)
    fit = amortized.fit_per_datapoint(model, x, steps=300, lr=0.05, family=vi.FullGaussian, exact=True)
    assert isinstance(fit.q_module, vi.FullGaussian) and fit.history["elbo"].shape == (300, 5)
    with torch.no_grad():
        gap = model.log_marginal(x) - estimators.exact_elbo(model, x, fit.q_module()).elbo
    assert bool((gap >= -1e-10).all()) and gap.max() < 1e-4


def test_per_datapoint_vi_with_the_default_diagonal_family_stops_at_the_mean_field_gap():
    model = correlated_model()
    x = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 2.0]], dtype=DOUBLE)
    fit = amortized.fit_per_datapoint(model, x, steps=300, lr=0.1, exact=True)
    assert isinstance(fit.q_module, vi.DiagonalGaussian)
    with torch.no_grad():
        gap = model.log_marginal(x) - estimators.exact_elbo(model, x, fit.q_module()).elbo
    kl_min = mean_field_optimum(model.posterior(x))[2]
    torch.testing.assert_close(gap, kl_min, atol=1e-6, rtol=0)


@pytest.mark.parametrize("x", [torch.tensor(1.0, dtype=DOUBLE), torch.zeros(2, 3, dtype=torch.long), [[1.0] * 3]])
def test_per_datapoint_vi_rejects_data_that_are_not_a_float_tensor(x):
    with pytest.raises(ValueError, match="x must be"):
        amortized.fit_per_datapoint(correlated_model(), x, steps=2, lr=0.1)


# The encoder: a module whose call returns q_φ(z|x).


def randomized(encoder: amortized.GaussianEncoder, seed: int = 0) -> amortized.GaussianEncoder:
    """The encoder with random parameters (it starts with a zero last layer, at the prior)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    return encoder


ENCODERS = [
    {},
    {"hidden": (8,)},
    {"hidden": (8, 4), "activation": torch.nn.ReLU},
    {"rank": 1},
    {"hidden": (6,), "rank": 2},
    {"scale": "shared"},
    {"scale": 0.5, "hidden": (4,)},
    {"rank": 0},
]


@pytest.mark.parametrize("kwargs", ENCODERS, ids=str)
@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 3)])
def test_encoder_gives_one_gaussian_per_example_with_the_right_shapes(kwargs, batch_shape):
    encoder = randomized(amortized.GaussianEncoder(5, 2, dtype=DOUBLE, **kwargs))
    x = torch.randn(*batch_shape, 5, dtype=DOUBLE)
    q = encoder(x)
    assert isinstance(q, Independent) and isinstance(q.base_dist, Normal)
    assert q.batch_shape == batch_shape and q.event_shape == (2,)
    assert encoder.output(x).shape == (*batch_shape, 4)
    assert bool((q.base_dist.scale > 0).all())
    z = q.rsample((7,))
    assert z.shape == (7, *batch_shape, 2) and q.log_prob(z).shape == (7, *batch_shape)


@pytest.mark.parametrize("kwargs", ENCODERS, ids=str)
def test_encoder_starts_at_the_prior_for_every_x(kwargs):
    encoder = amortized.GaussianEncoder(5, 2, dtype=DOUBLE, **kwargs)
    q = encoder(torch.randn(4, 5, dtype=DOUBLE))
    torch.testing.assert_close(q.mean, torch.zeros(4, 2, dtype=DOUBLE))
    expected_scale = kwargs.get("scale") if isinstance(kwargs.get("scale"), float) else 1.0
    torch.testing.assert_close(q.stddev, torch.full((4, 2), expected_scale, dtype=DOUBLE))


@pytest.mark.parametrize("kwargs", ENCODERS, ids=str)
def test_gradients_reach_every_parameter_of_the_encoder_through_rsample(kwargs):
    encoder = randomized(amortized.GaussianEncoder(5, 2, dtype=DOUBLE, **kwargs))
    z = encoder(torch.randn(6, 5, dtype=DOUBLE)).rsample((3,))
    (z**2).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name


@pytest.mark.parametrize("kwargs", ENCODERS, ids=str)
def test_encoder_under_no_grad_builds_no_graph(kwargs):
    encoder = randomized(amortized.GaussianEncoder(5, 2, dtype=DOUBLE, **kwargs))
    with torch.no_grad():
        q = encoder(torch.randn(3, 5, dtype=DOUBLE))
    assert not q.mean.requires_grad and not q.stddev.requires_grad


def test_encoder_distribution_reads_the_mean_and_the_log_variance():
    output = torch.tensor([[0.5, -1.0, 0.0, math.log(4.0)], [2.0, 0.0, -2.0, 2.0]], dtype=DOUBLE)
    q = amortized.encoder_distribution(output)
    torch.testing.assert_close(q.mean, output[:, :2])
    torch.testing.assert_close(q.variance, output[:, 2:].exp())
    z = torch.randn(5, 2, 2, generator=torch.Generator().manual_seed(0), dtype=DOUBLE)
    covariance = torch.diag_embed(output[:, 2:].exp())
    torch.testing.assert_close(q.log_prob(z), MultivariateNormal(output[:, :2], covariance).log_prob(z))


@pytest.mark.parametrize("output", [torch.zeros(2, 3), torch.zeros(2, 0), torch.tensor(1.0), torch.zeros(2, 4).long()])
def test_encoder_distribution_rejects_an_output_that_is_not_two_halves(output):
    with pytest.raises(ValueError, match="output"):
        amortized.encoder_distribution(output)


def test_samples_of_the_encoders_q_have_its_mean_and_scale():
    """Goodness of fit of ``rsample``: sample means within 4 standard errors, sample variances within 5 %."""
    torch.manual_seed(0)
    encoder = randomized(amortized.GaussianEncoder(3, 2, hidden=(5,), dtype=DOUBLE))
    with torch.no_grad():
        q = encoder(torch.randn(4, 3, dtype=DOUBLE))
        num_samples = 20_000
        z = q.rsample((num_samples,))
        assert bool(((z.mean(0) - q.mean).abs() < 4 * q.stddev / math.sqrt(num_samples)).all())
        torch.testing.assert_close(z.var(0), q.variance, rtol=0.05, atol=0)


def test_rank_limited_linear_encoder_has_a_mean_map_of_that_rank():
    encoder = randomized(amortized.GaussianEncoder(6, 3, rank=1, dtype=DOUBLE))
    with torch.no_grad():
        basis = torch.cat([torch.zeros(1, 6, dtype=DOUBLE), torch.eye(6, dtype=DOUBLE)])
        means = encoder(basis).mean  # [7, d]: μ(0), μ(e_1), …, μ(e_6)
        jacobian = means[1:] - means[0]  # the linear map, [D, d]
    assert torch.linalg.matrix_rank(jacobian).item() == 1
    full = randomized(amortized.GaussianEncoder(6, 3, dtype=DOUBLE))
    constant = randomized(amortized.GaussianEncoder(6, 3, rank=0, dtype=DOUBLE))
    with torch.no_grad():
        assert torch.linalg.matrix_rank(full(basis).mean[1:] - full(basis).mean[0]).item() == 3
        assert torch.equal(constant(basis).mean, constant(basis[:1]).mean.expand(7, 3))  # one q for every x


def test_shared_and_fixed_scales_do_not_depend_on_x():
    x = torch.randn(5, 4, dtype=DOUBLE)
    shared = randomized(amortized.GaussianEncoder(4, 2, hidden=(3,), scale="shared", dtype=DOUBLE))
    fixed = randomized(amortized.GaussianEncoder(4, 2, scale=0.3, dtype=DOUBLE))
    with torch.no_grad():
        assert torch.equal(shared(x).stddev, shared(x[:1]).stddev.expand(5, 2))
        torch.testing.assert_close(fixed(x).stddev, torch.full((5, 2), 0.3, dtype=DOUBLE))
    assert "log_variance" in dict(shared.named_parameters())
    assert "log_variance" not in dict(fixed.named_parameters()) and "log_variance" in dict(fixed.named_buffers())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"data_dim": 0}, "data_dim"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden": (4, 0)}, "hidden"),
        ({"rank": -1}, "rank"),
        ({"rank": 1.5}, "rank"),
        ({"rank": 0, "hidden": (3,)}, "hidden"),
        ({"scale": "wide"}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"scale": math.nan}, "scale"),
        ({"scale": True}, "scale"),
    ],
)
def test_encoder_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        amortized.GaussianEncoder(**({"data_dim": 3, "latent_dim": 2} | kwargs))


@pytest.mark.parametrize("x", [torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 3).long()])
def test_encoder_rejects_data_of_the_wrong_shape_or_type(x):
    with pytest.raises(ValueError, match="x"):
        amortized.GaussianEncoder(3, 2)(x)


# Fitting the encoder on the linear-Gaussian model, where every optimum is known in closed form.


def encoder_problem(num_examples=40, seed=0):
    """A linear-Gaussian model whose posterior has correlation −0.44 (best mean-field gap 0.107 nats) and data
    drawn from it: well conditioned, so that 200 Adam steps reach every optimum to ~1e-9."""
    W = torch.tensor([[1.0, 0.6], [0.6, 1.0], [0.5, -0.2]], dtype=DOUBLE)
    model = models.LinearGaussian(W, torch.tensor([0.5, -0.5, 0.0], dtype=DOUBLE), 1.0).requires_grad_(False)
    torch.manual_seed(seed)
    return model, model.sample(num_examples)[0]


def best_in_family(model, x):
    """The ELBO of the best diagonal q for each x alone: log p(x) − KL_min."""
    with torch.no_grad():
        return model.log_marginal(x) - mean_field_optimum(model.posterior(x))[2]


def best_rank_gap(model, x, rank):
    """½ Σ_{k>r} s_k²: the least amortization gap of a linear encoder of rank r (a constant σ at the mean-field
    optimum), s_k the singular values of Λ^{1/2} M S^{1/2}, with μ(x) = M (x − b) the posterior mean, Λ the
    posterior precision and S the data's covariance (Eckart–Young)."""
    posterior = model.posterior(x)
    covariance = posterior.covariance_matrix[0]
    mean_map = covariance @ (model.W / model.noise_std[:, None] ** 2).T  # M, [d, D]
    centred = x - x.mean(0)

    def square_root(matrix):
        values, vectors = torch.linalg.eigh(matrix)
        return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T

    whitened = square_root(torch.linalg.inv(covariance)) @ mean_map @ square_root(centred.T @ centred / len(x))
    singular_values = torch.linalg.svdvals(whitened)
    return 0.5 * (singular_values[rank:] ** 2).sum()


def test_linear_encoder_reaches_the_per_datapoint_optimum_on_the_linear_model():
    """The posterior mean is linear in x and the best mean-field σ constant: a linear encoder attains, for every
    x at once, the ELBO of the best diagonal q_i (log p(x_i) − KL_min), up to 1e-6 nats."""
    model, x = encoder_problem()
    encoder = amortized.GaussianEncoder(3, 2, dtype=DOUBLE)
    history = amortized.fit_encoder(model, x, encoder, steps=200, lr=0.1, exact=True)
    with torch.no_grad():
        amortized_elbo = estimators.exact_elbo(model, x, encoder(x)).elbo
    best = best_in_family(model, x)
    assert history["elbo"].shape == (200, 40)
    assert bool((amortized_elbo <= best + 1e-10).all())
    assert (best - amortized_elbo).mean() < 1e-6


def test_a_rank_limited_encoder_leaves_the_closed_form_amortization_gap():
    model, x = encoder_problem()
    torch.manual_seed(1)  # the bottleneck's random starting point
    encoder = amortized.GaussianEncoder(3, 2, rank=1, dtype=DOUBLE)
    amortized.fit_encoder(model, x, encoder, steps=200, lr=0.1, exact=True)
    with torch.no_grad():
        amortized_elbo = estimators.exact_elbo(model, x, encoder(x)).elbo
    best = best_in_family(model, x)
    expected = best_rank_gap(model, x, rank=1)
    assert expected > 0.1
    assert abs((best - amortized_elbo).mean() - expected) < 1e-6
    assert best_rank_gap(model, x, rank=2) < 1e-10


def test_an_encoder_of_rank_zero_is_one_q_for_all_x_and_leaves_the_whole_spread_of_the_posterior_means():
    model, x = encoder_problem()
    encoder = amortized.GaussianEncoder(3, 2, rank=0, dtype=DOUBLE)
    amortized.fit_encoder(model, x, encoder, steps=200, lr=0.1, exact=True)
    with torch.no_grad():
        amortized_elbo = estimators.exact_elbo(model, x, encoder(x)).elbo
    assert abs((best_in_family(model, x) - amortized_elbo).mean() - best_rank_gap(model, x, rank=0)) < 1e-6


def test_a_fixed_wrong_scale_leaves_the_closed_form_variance_gap():
    """With σ fixed at 1 the gap is ½ Σ_j (Λ_jj − 1 − log Λ_jj), what a wrong variance costs whatever the mean."""
    model, x = encoder_problem()
    encoder = amortized.GaussianEncoder(3, 2, scale=1.0, dtype=DOUBLE)
    amortized.fit_encoder(model, x, encoder, steps=200, lr=0.1, exact=True)
    with torch.no_grad():
        amortized_elbo = estimators.exact_elbo(model, x, encoder(x)).elbo
        precision = torch.linalg.inv(model.posterior(x).covariance_matrix[0]).diagonal()
    best = best_in_family(model, x)
    expected = 0.5 * (precision - 1 - precision.log()).sum()
    assert expected > 0.1
    assert abs((best - amortized_elbo).mean() - expected) < 1e-6


def test_fit_encoder_leaves_the_model_alone_and_works_with_sampled_elbos():
    """On the nonlinear toy (no closed form) the Monte Carlo ELBO of an MLP encoder rises."""
    torch.manual_seed(0)
    toy = models.NonlinearToy(latent_dim=1)
    x, _ = toy.sample(32)
    encoder = amortized.GaussianEncoder(2, 1, hidden=(16,))
    history = amortized.fit_encoder(toy, x, encoder, steps=150, lr=0.03, num_samples=8)
    assert history["elbo"].shape == (150, 32)
    assert history["elbo"][-20:].mean() > history["elbo"][:20].mean() + 1.0
    model = random_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    amortized.fit_encoder(model, torch.zeros(3, 4, dtype=DOUBLE), amortized.GaussianEncoder(4, 2, dtype=DOUBLE), 3, 0.1)
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]) and parameter.grad is None, name


# The two gaps.


def test_inference_gaps_split_the_whole_gap():
    log_px = torch.tensor([-3.0, -5.0])
    best = torch.tensor([-3.5, -5.25])
    amortized_elbo = torch.tensor([-4.0, -7.25])
    gaps = amortized.inference_gaps(log_px, best, amortized_elbo)
    torch.testing.assert_close(gaps.approximation, torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(gaps.amortization, torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(gaps.inference, log_px - amortized_elbo)
    with pytest.raises(ValueError, match="same shape"):
        amortized.inference_gaps(log_px, best, amortized_elbo[:1])


# EM by gradients.


def em_problem(seed=0, num_examples=60):
    """Data from a linear-Gaussian model, a model to fit from a random θ, and a linear encoder at the prior."""
    torch.manual_seed(seed)
    truth = random_model(data_dim=4, latent_dim=2, seed=seed + 10)
    x, _ = truth.sample(num_examples)
    model = models.LinearGaussian(0.5 * torch.randn(4, 2, dtype=DOUBLE), torch.zeros(4, dtype=DOUBLE), 1.0)
    return model, x, amortized.GaussianEncoder(4, 2, dtype=DOUBLE)


def test_alternating_em_with_plain_gradient_steps_never_lowers_the_elbo():
    """The lecture's steps φ ← φ + η∇_φ L, θ ← θ + η∇_θ L with a small η, on the exact ELBO: each update raises
    the mean ELBO (to rounding, 1e-10), and so does each round."""
    model, x, encoder = em_problem()
    history = amortized.fit_em(model, x, encoder, rounds=30, lr=0.01, e_steps=3, m_steps=1, exact=True, optimizer="sgd")
    mean_elbo = history["elbo"].mean(1)
    assert history.phases == ("E", "E", "E", "M") * 30
    assert mean_elbo.shape == (121,) and history.per_round("elbo").shape == (31, 60)
    assert bool((mean_elbo.diff() > -1e-10).all())
    assert mean_elbo[-1] > mean_elbo[0] + 1.0


def test_alternating_em_with_adam_raises_the_elbo_round_after_round_on_average():
    """Adam's steps are not monotone one by one; the mean ELBO over each block of 10 rounds rises."""
    model, x, encoder = em_problem(seed=1)
    history = amortized.fit_em(model, x, encoder, rounds=40, lr=0.02, e_steps=3, exact=True)
    per_round = history.per_round("elbo").mean(1)[1:]  # [40]
    blocks = per_round.reshape(4, 10).mean(1)
    assert bool((blocks.diff() > 0).all())


def test_the_e_step_changes_only_phi_and_the_m_step_only_theta():
    model, x, encoder = em_problem()
    monitor = vi.exact_metrics(model, x)
    history = amortized.fit_em(model, x, encoder, rounds=3, lr=0.05, e_steps=2, m_steps=2, exact=True, monitor=monitor)
    log_px = history["log_px"].mean(1)  # depends on θ only
    kl_prior = history["kl"].mean(1)  # KL(q_φ(z|x) ‖ p(z)) depends on φ only
    for step, phase in enumerate(history.phases):
        if phase == "E":
            assert log_px[step + 1] == log_px[step], step
        else:
            assert kl_prior[step + 1] == kl_prior[step], step


def test_the_e_step_leaves_kl_to_the_posterior_above_zero():
    """Unlike classic EM, whose E-step sets q = p(z|x, θ): after many E-steps the diagonal encoder still sits at
    least KL_min(θ) (the mean-field gap of the posterior at the current θ) away from it."""
    model, x = encoder_problem()
    model.requires_grad_(True)
    with torch.no_grad():
        kl_min = mean_field_optimum(model.posterior(x))[2]  # at the starting θ
    encoder = amortized.GaussianEncoder(3, 2, dtype=DOUBLE)
    monitor = vi.exact_metrics(model, x)
    history = amortized.fit_em(model, x, encoder, rounds=1, lr=0.1, e_steps=100, exact=True, monitor=monitor)
    after_e_step = history["kl_posterior"][100]  # after 100 E-steps, before the M-step: θ is the starting θ
    assert bool((after_e_step >= kl_min - 1e-10).all()) and kl_min.min() > 0.1
    assert (after_e_step - kl_min).max() < 1e-4


def test_joint_em_updates_phi_and_theta_together_and_raises_the_likelihood():
    model, x, encoder = em_problem()
    W = model.W.detach().clone()
    history = amortized.fit_em(
        model, x, encoder, rounds=100, lr=0.05, joint=True, exact=True, monitor=vi.exact_metrics(model, x)
    )
    assert history.phases == ("joint",) * 100 and history.steps_per_round == 1
    assert not torch.equal(model.W.detach(), W)
    log_px = history["log_px"].mean(1)
    assert log_px[-1] > log_px[0] + 1.0
    for parameter in [*model.parameters(), *encoder.parameters()]:
        assert parameter.grad is None


def test_em_with_sampled_elbos_runs_on_any_model_with_a_prior_and_a_likelihood():
    torch.manual_seed(0)
    model, x, encoder = em_problem()
    history = amortized.fit_em(model, x, encoder, rounds=5, lr=0.05, num_samples=2)
    assert set(history.metrics) == {"elbo", "log_px_z", "kl"} and history["elbo"].shape == (11, 60)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rounds": 0}, "rounds"),
        ({"e_steps": 0}, "e_steps"),
        ({"m_steps": -1}, "m_steps"),
        ({"lr": 0.0}, "lr"),
        ({"num_samples": 0}, "num_samples"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_fit_em_rejects_bad_arguments(kwargs, match):
    model, x, encoder = em_problem()
    arguments = {"rounds": 1, "lr": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        amortized.fit_em(model, x, encoder, **arguments)


def test_fit_em_needs_parameters_in_the_encoder_and_the_model():
    model, x, encoder = em_problem()
    with pytest.raises(ValueError, match="both"):
        amortized.fit_em(model.requires_grad_(False), x, encoder, rounds=1, lr=0.1)
