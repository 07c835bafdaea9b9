"""vaecourse.surgery: q_avg, and average KL = marginal KL + mutual information on a trained model (chapter 7)."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal

import vaecourse as vc
from vaecourse import data as vc_data
from vaecourse.surgery import AggregatePosterior, aggregate_posterior, decompose, decompose_by_size, log_mixture_density


class FixedPosteriors(torch.nn.Module):
    """A stand-in for a VAE whose encoder gives example i the posterior N(loc[i], diag scale[i]²), whatever x is,
    with the prior N(0, I): the surgery terms then have known answers."""

    def __init__(self, loc, scale):
        super().__init__()
        self.loc, self.scale = loc, scale

    def encode(self, x):
        return Independent(Normal(self.loc[: len(x)], self.scale[: len(x)]), 1)

    @property
    def prior(self):
        zeros = torch.zeros_like(self.loc[0])
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=64, latent_dim=3, hidden_dims=(64,), likelihood="binomial"))
    vc.fit(model, vc.data.load("digits", "train").x, config=vc.TrainConfig(epochs=10, lr=3e-3, progress=False))
    return model, vc.data.load("digits", "valid").x


def test_q_avg_log_density_matches_a_direct_loop():
    torch.manual_seed(0)
    loc, scale = torch.randn(37, 3, dtype=torch.float64), torch.rand(37, 3, dtype=torch.float64) + 0.2
    posteriors = Independent(Normal(loc, scale), 1)
    z = torch.randn(5, 4, 3, dtype=torch.float64)
    direct = torch.zeros(5, 4, dtype=torch.float64)
    for i in range(37):
        direct += Independent(Normal(loc[i], scale[i]), 1).log_prob(z).exp() / 37
    for chunk_size in (None, 1, 5, 37, 100):
        assert torch.allclose(AggregatePosterior(posteriors, chunk_size).log_prob(z), direct.log(), atol=1e-12)


def test_q_avg_samples_follow_its_density():
    loc = torch.tensor([[-3.0], [0.0], [4.0]], dtype=torch.float64)
    q_avg = AggregatePosterior(Independent(Normal(loc, torch.full_like(loc, 0.5)), 1))
    torch.manual_seed(0)
    samples = q_avg.sample((30_000,))
    assert samples.shape == (30_000, 1)
    grid = torch.linspace(-8, 9, 3401, dtype=torch.float64)[:, None]
    density = q_avg.log_prob(grid).exp()
    step = (grid[1] - grid[0]).item()
    assert abs(density.sum().item() * step - 1) < 1e-6
    for f in (lambda z: z, lambda z: z**2, lambda z: (z > 1).double()):
        values = f(samples[:, 0])
        quadrature = (f(grid[:, 0]) * density).sum().item() * step
        assert abs(values.mean().item() - quadrature) < 4 * values.std().item() / math.sqrt(len(values))


def test_gemm_log_density_equals_a_direct_loop_in_float64():
    generator = torch.Generator().manual_seed(0)
    n, d = 203, 6
    loc = 5 + 3 * torch.randn(n, d, generator=generator, dtype=torch.float64)  # means far from 0 …
    scale = 0.01 + 0.5 * torch.rand(n, d, generator=generator, dtype=torch.float64)  # … some posteriors very sharp
    near = loc[:7] + scale[:7] * torch.randn(7, d, generator=generator, dtype=torch.float64)  # |z| ≫ σ, z near μ_i
    far = 4 * torch.randn(5, d, generator=generator, dtype=torch.float64)
    z = torch.cat([near, far])
    direct = torch.empty(len(z), dtype=torch.float64)
    for k in range(len(z)):
        terms = [Independent(Normal(loc[i], scale[i]), 1).log_prob(z[k]) for i in range(n)]
        direct[k] = torch.logsumexp(torch.stack(terms), 0) - math.log(n)
    for chunk_size in (None, 1, 50, n, 1000):
        assert torch.allclose(log_mixture_density(z, loc, scale, chunk_size), direct, rtol=0, atol=1e-9)
        # with gradients the chunks take the differentiable path (no buffer written in place): the same numbers
        differentiable = log_mixture_density(z.clone().requires_grad_(True), loc, scale, chunk_size)
        assert differentiable.requires_grad
        assert torch.allclose(differentiable.detach(), direct, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match=r"\[m, d\]"):
        log_mixture_density(z[0], loc, scale)
    with pytest.raises(ValueError, match="same d"):
        log_mixture_density(z[:, :2], loc, scale)


def test_identical_posteriors_have_no_mutual_information_and_the_closed_form_marginal_kl():
    n, d = 500, 3
    loc = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).expand(n, d)
    scale = torch.tensor([0.3, 1.5, 0.8], dtype=torch.float64).expand(n, d)
    model = FixedPosteriors(loc, scale)
    torch.manual_seed(0)
    terms = decompose(model, torch.zeros(n, 1), num_samples=20)
    closed_form = torch.distributions.kl_divergence(Independent(Normal(loc[0], scale[0]), 1), model.prior).item()
    # q_avg = q exactly, so every term log q(z|x_i) − log q_avg(z) is zero up to rounding
    assert abs(terms.mutual_information.value) < 1e-9
    # the marginal KL is then KL(q ‖ p), estimated from n·S draws: within 4 of its standard errors
    assert abs(terms.marginal_kl.value - closed_form) < 4 * terms.marginal_kl.standard_error
    assert terms.average_kl.value == pytest.approx(closed_form, abs=1e-9)


def test_well_separated_narrow_posteriors_have_mutual_information_log_n():
    n, d = 300, 2
    loc = torch.stack([torch.arange(n, dtype=torch.float64) * 10.0, torch.zeros(n, dtype=torch.float64)], 1)
    scale = torch.full((n, d), 0.1, dtype=torch.float64)  # 100 standard deviations apart: no overlap at all
    torch.manual_seed(0)
    terms = decompose(FixedPosteriors(loc, scale), torch.zeros(n, 1), num_samples=4)
    assert terms.mutual_information.value == pytest.approx(math.log(n), abs=1e-9)
    assert terms.log_n == pytest.approx(math.log(n))


def test_terms_at_a_subset_of_points_keep_q_avg_over_all_n():
    n, d = 300, 2
    loc = torch.stack([torch.arange(n, dtype=torch.float64) * 10.0, torch.zeros(n, dtype=torch.float64)], 1)
    scale = torch.full((n, d), 0.1, dtype=torch.float64)
    model = FixedPosteriors(loc, scale)
    terms = decompose(model, torch.zeros(n, 1), num_samples=2, num_points=40)
    # q_avg has all 300 components: the bound is log 300, not log 40, and separated posteriors reach it
    assert terms.mutual_information.value == pytest.approx(math.log(n), abs=1e-9)
    assert terms.log_n == pytest.approx(math.log(n)) and terms.num_examples == n and terms.num_points == 40
    assert decompose(model, torch.zeros(n, 1), num_points=n).num_points == n
    # identical posteriors: no information at any subset of points, and the marginal KL is KL(q ‖ p)
    same = FixedPosteriors(torch.full((n, d), 0.7, dtype=torch.float64), torch.full((n, d), 0.4, dtype=torch.float64))
    subset = decompose(same, torch.zeros(n, 1), num_samples=50, num_points=60, seed=1)
    closed_form = torch.distributions.kl_divergence(Independent(Normal(same.loc[0], same.scale[0]), 1), same.prior)
    assert abs(subset.mutual_information.value) < 1e-9
    assert abs(subset.marginal_kl.value - closed_form.item()) < 4 * subset.marginal_kl.standard_error
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_points"):
            decompose(model, torch.zeros(n, 1), num_points=bad)


def test_marginal_kl_agrees_with_quadrature_in_two_dimensions():
    generator = torch.Generator().manual_seed(1)
    n = 6
    loc = 1.5 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    scale = 0.3 + 0.5 * torch.rand(n, 2, generator=generator, dtype=torch.float64)
    model = FixedPosteriors(loc, scale)
    axis = torch.linspace(-9, 9, 1201, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)  # [1201², 2]
    step = (axis[1] - axis[0]).item()
    # q_avg on the grid as a plain mean of the n densities: independent of the GEMM log-density
    q_avg = torch.stack([Independent(Normal(loc[i], scale[i]), 1).log_prob(grid).exp() for i in range(n)]).mean(0)
    log_p = model.prior.log_prob(grid)
    inside = q_avg > 0
    quadrature = (q_avg[inside] * (q_avg[inside].log() - log_p[inside])).sum().item() * step**2
    torch.manual_seed(2)
    terms = decompose(model, torch.zeros(n, 1), num_samples=4000)
    assert abs(terms.marginal_kl.value - quadrature) < 4 * terms.marginal_kl.standard_error
    # and the mutual information is the rest of the (analytic) average KL, within its standard error
    difference = terms.average_kl.value - quadrature
    assert abs(terms.mutual_information.value - difference) < 4 * terms.mutual_information.standard_error


@pytest.mark.slow
def test_surgery_identity_with_independent_draws(trained):
    """The marginal KL from fresh draws of q_avg (its own sampler) plus the MI from independent draws of the n
    posteriors equals the analytic average KL within 4 standard errors of the sum. It fails when q_avg's sampler
    does not draw from the mixture of the posteriors, or when either estimator is biased; it cannot see a wrong
    log q_avg (any function in its place cancels in expectation), which the known-answer tests above check."""
    model, x = trained
    with torch.no_grad():
        posteriors = model.encode(x)  # batch [n]
        q_avg = AggregatePosterior(posteriors)
        prior = model.prior
        torch.manual_seed(3)
        z_pairs = posteriors.sample((40,))  # [S, n, d]: z ~ q(z|x_i) for every i
        mutual = (posteriors.log_prob(z_pairs) - q_avg.log_prob(z_pairs)).double().flatten()
        z_fresh = q_avg.sample((40 * len(x),))  # independent draws of q_avg
        marginal = (q_avg.log_prob(z_fresh) - prior.log_prob(z_fresh)).double()
        analytic = torch.distributions.kl_divergence(posteriors, prior).double().mean().item()
    error = math.hypot(mutual.std().item() / math.sqrt(len(mutual)), marginal.std().item() / math.sqrt(len(marginal)))
    assert abs(mutual.mean().item() + marginal.mean().item() - analytic) < 4 * error
    terms = decompose(model, x, num_samples=20)
    assert terms.marginal_kl.value > 0 and terms.mutual_information.value > 0
    assert terms.mutual_information.value <= terms.log_n + 4 * terms.mutual_information.standard_error
    assert terms.log_n == pytest.approx(math.log(250)) and terms.num_examples == 250


@pytest.mark.slow
def test_terms_at_a_random_subset_of_points_agree_with_all_points(trained):
    """Estimated at 60 of the 250 examples (q_avg still over all 250), each term agrees with the estimate at all 250
    within 4 standard errors of the difference; the analytic average KL is the same number."""
    model, x = trained
    everywhere = decompose(model, x, num_samples=40, seed=0)
    subset = decompose(model, x, num_samples=40, seed=1, num_points=60)
    assert subset.num_points == 60 and subset.num_examples == 250
    assert subset.average_kl.value == everywhere.average_kl.value
    for name in ("mutual_information", "marginal_kl"):
        a, b = getattr(everywhere, name), getattr(subset, name)
        assert abs(a.value - b.value) < 4 * math.hypot(a.standard_error, b.standard_error)
    assert abs(subset.residual.value) < 4 * subset.residual.standard_error


@pytest.mark.slow
def test_mutual_information_is_at_most_log_n(trained):
    model, x = trained
    for n in (2, 10, 50):
        terms = decompose(model, x[:n], num_samples=50)
        # I_q[x, z] ≤ log n exactly for q_avg over the same n; the estimate obeys it up to Monte Carlo error and the
        # float64 rounding of log q_avg (a GEMM) against log q(z|x_i) (torch.distributions): ~1e-14 at the bound
        rounding = 1e-12
        assert terms.mutual_information.value <= math.log(n) + 4 * terms.mutual_information.standard_error + rounding


@pytest.mark.slow
def test_decompose_with_a_learned_prior_uses_monte_carlo(trained):
    _, x = trained
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=64, latent_dim=2, hidden_dims=(32,), likelihood="binomial", prior="mog",
                                prior_options={"num_components": 3}))
    terms = decompose(model, x[:40], num_samples=200)
    assert terms.average_kl.standard_error > 0  # a mixture prior has no closed-form KL: Monte Carlo
    # an independent estimate of the average KL, from fresh draws, agrees within 4 standard errors of the difference
    with torch.no_grad():
        posteriors, prior = model.encode(x[:40]), model.prior
        torch.manual_seed(1)
        z = posteriors.sample((200,))
        fresh = (posteriors.log_prob(z) - prior.log_prob(z)).double().flatten()
    error = math.hypot(terms.average_kl.standard_error, fresh.std().item() / math.sqrt(len(fresh)))
    assert abs(terms.average_kl.value - fresh.mean().item()) < 4 * error


@pytest.mark.parametrize("prior", sorted(vc.priors.PRIORS))
def test_decompose_works_with_every_prior_and_keeps_the_caller_s_dtype(prior):
    # the surgery terms are taken in float64; a prior with float32 weights (a flow) still gets float32 codes
    torch.manual_seed(0)
    options = {"num_components": 5} if prior in ("mog", "vamp") else {}
    config = vc.VAEConfig(data_dim=64, latent_dim=2, hidden_dims=(16,), likelihood="binomial", prior=prior,
                          prior_options=options)  # fmt: skip
    model = vc.VAE(config)
    x = vc.data.load("digits", "valid").x[:30]
    model.latent_prior.initialise_from_data(x)  # a no-op but for the VampPrior
    terms = decompose(model, x, num_samples=3)
    values = [terms.average_kl.value, terms.marginal_kl.value, terms.mutual_information.value]
    assert all(math.isfinite(value) for value in values)
    assert terms.mutual_information.value <= math.log(30) + 1e-9
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_decompose_by_size_uses_evenly_spaced_subsets(trained):
    model, x = trained
    by_size = decompose_by_size(model, x, sizes=(10, 100, 250), num_samples=2)
    assert list(by_size) == [10, 100, 250]
    for n, terms in by_size.items():
        assert terms.num_examples == n and terms.log_n == pytest.approx(math.log(n))
        assert terms.mutual_information.value <= math.log(n) + 4 * terms.mutual_information.standard_error
    assert list(decompose_by_size(model, x[:150], num_samples=1)) == [100, 150]
    with pytest.raises(ValueError, match="sizes"):
        decompose_by_size(model, x, sizes=(0,))
    with pytest.raises(ValueError, match="sizes"):
        decompose_by_size(model, x, sizes=(251,))
    subset = decompose_by_size(model, x, sizes=(40, 250), num_samples=2, num_points=60)
    assert [(t.num_examples, t.num_points) for t in subset.values()] == [(40, 40), (250, 60)]  # q_avg over all n
    whole = decompose(model, vc_data.evenly_spaced(x, 40), num_samples=2, seed=0)  # m ≥ n: the terms at all n
    assert subset[40].mutual_information.value == whole.mutual_information.value
    with pytest.raises(ValueError, match="num_points"):
        decompose_by_size(model, x, num_points=0)


@pytest.mark.slow
def test_aggregate_posterior_of_a_model_and_bad_input(trained):
    model, x = trained
    q_avg = aggregate_posterior(model, x[:30])
    assert q_avg.num_components == 30 and q_avg.event_shape == (3,)
    with pytest.raises(ValueError, match="diagonal Gaussians"):
        AggregatePosterior(Normal(torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match=r"\[n, D\]"):
        decompose(model, x[0])


@pytest.mark.slow
def test_q_avg_as_the_prior_zeroes_the_marginal_kl_and_raises_the_training_bound(trained):
    model, _ = trained
    x = vc.data.load("digits", "train").x[::5]  # 260 training images
    torch.manual_seed(0)
    standard = model.elbo(x, num_samples=20).elbo.mean().item()
    terms = decompose(model, x, num_samples=20)
    optimal = vc.VAE(model.config)
    optimal.load_state_dict(model.state_dict())
    optimal.latent_prior = vc.surgery.AggregatePrior(aggregate_posterior(model, x))
    torch.manual_seed(0)
    with torch.no_grad():
        with_q_avg = optimal.elbo(x, num_samples=20).elbo.mean().item()
    # the ELBO gains the marginal KL (same encoder and decoder), up to the Monte Carlo error of both estimates
    error = math.hypot(terms.marginal_kl.standard_error, terms.residual.standard_error)
    assert with_q_avg - standard == pytest.approx(terms.marginal_kl.value, abs=4 * error)
    after = decompose(optimal, x, num_samples=20)
    assert abs(after.marginal_kl.value) < 4 * after.marginal_kl.standard_error + 1e-9
