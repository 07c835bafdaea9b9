"""vaecourse.surgery: q_avg, and average KL = marginal KL + mutual information on a trained model (chapter 7)."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal

import vaecourse as vc
from vaecourse.surgery import AggregatePosterior, aggregate_posterior, decompose


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


@pytest.mark.slow
def test_surgery_identity_holds_within_monte_carlo_error(trained):
    model, x = trained
    terms = decompose(model, x, num_samples=20)
    total = terms.marginal_kl.value + terms.mutual_information.value
    assert abs(terms.average_kl.value - total) == pytest.approx(abs(terms.residual.value), abs=1e-9)
    assert abs(terms.residual.value) < 4 * terms.residual.standard_error
    assert terms.marginal_kl.value > 0 and terms.mutual_information.value > 0
    assert terms.mutual_information.value <= terms.log_n + 4 * terms.mutual_information.standard_error
    assert terms.log_n == pytest.approx(math.log(250)) and terms.num_examples == 250


@pytest.mark.slow
def test_mutual_information_is_at_most_log_n(trained):
    model, x = trained
    for n in (2, 10, 50):
        terms = decompose(model, x[:n], num_samples=50)
        # I_q[x, z] ≤ log n exactly for q_avg over the same n; the estimate obeys it up to Monte Carlo error
        assert terms.mutual_information.value <= math.log(n) + 4 * terms.mutual_information.standard_error, n


@pytest.mark.slow
def test_decompose_with_a_learned_prior_uses_monte_carlo(trained):
    _, x = trained
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=64, latent_dim=2, hidden_dims=(32,), likelihood="binomial", prior="mog",
                                prior_options={"num_components": 3}))
    terms = decompose(model, x[:40], num_samples=5)
    assert terms.residual.value == 0.0  # the same draws estimate all three terms
    assert terms.average_kl.standard_error > 0


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
