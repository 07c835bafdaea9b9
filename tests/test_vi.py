"""Tests of vaecourse.vi: the Gaussian families of q, the exact monitor, and the ELBO fits over q and over (q, θ)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal

from vaecourse import estimators, models, vi

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
