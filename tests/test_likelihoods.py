"""Contract tests for vaecourse.likelihoods and the real-valued decoders of chapter 9: the Gaussian and continuous
Bernoulli decoders are normalised densities, MSE is the Gaussian log-likelihood up to a scale and a constant,
dequantization and bits per dimension, the BCE normaliser, and the input checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import ContinuousBernoulli, Independent, Normal

import vaecourse as vc
from vaecourse import likelihoods
from vaecourse.vae import GreyLevels


def real_vae(likelihood="gaussian", **overrides):
    fields = dict(data_dim=12, latent_dim=3, hidden_dims=(16,), likelihood=likelihood)
    fields.update(overrides)
    torch.manual_seed(0)
    return vc.VAE(vc.VAEConfig(**fields))


def pixels(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("scale", likelihoods.DECODER_SCALES)
def test_gaussian_decoder_shapes_parameters_and_gradients(scale):
    model = real_vae(decoder_scale=scale, decoder_sigma=0.3)
    x = pixels(5, 12)
    p_x = model.likelihood(model.encode(x).rsample((4,)))
    assert p_x.batch_shape == (4, 5) and p_x.event_shape == (12,)
    assert torch.allclose(p_x.stddev, torch.full_like(p_x.stddev, 0.3))
    expected = {"fixed": 0, "shared": 1, "pixel": 12}[scale]
    assert sum(p.numel() for p in model.decoder.noise.parameters()) == expected
    model.zero_grad()
    (-model.elbo(x, num_samples=2).elbo.mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(parameter.grad.abs().sum() > 0), name


@pytest.mark.parametrize("likelihood", likelihoods.CONTINUOUS)
def test_real_valued_decoders_are_normalised_densities_by_quadrature(likelihood):
    # one pixel: the Gaussian over the real line, the continuous Bernoulli over [0, 1]
    torch.manual_seed(0)
    logits = torch.tensor([[-3.0], [0.0], [0.0001], [2.5]], dtype=torch.float64)  # [4 pixels' parameters, D = 1]
    noise = likelihoods.GaussianScale(1, "fixed", 0.2).double()
    distribution = likelihoods.decoder_distribution(likelihood, logits, noise)
    low, high = (-2.0, 3.0) if likelihood == "gaussian" else (0.0, 1.0)
    grid = torch.linspace(low, high, 200001, dtype=torch.float64)[:, None, None]  # [G, 1, 1]
    density = distribution.log_prob(grid.expand(-1, 4, 1)).exp()  # [G, 4]
    mass = torch.trapezoid(density, grid[:, 0, 0], dim=0)
    assert torch.allclose(mass, torch.ones(4, dtype=torch.float64), atol=1e-6), mass


def test_gaussian_decoder_sample_and_log_prob_agree():
    # goodness of fit of sample against log_prob: the mean of −log p(x) over draws is the entropy (D/2) log(2πeσ²)
    noise = likelihoods.GaussianScale(64, "shared", 0.25)
    distribution = likelihoods.decoder_distribution("gaussian", torch.zeros(64), noise)
    with torch.no_grad():
        draws = distribution.sample((4000,))
        values = -distribution.log_prob(draws)
    entropy = 32 * math.log(2 * math.pi * math.e * 0.25**2)
    standard_error = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - entropy) < 4 * standard_error  # 4 standard errors: fails 6e-5 of the time


def test_mse_is_the_gaussian_log_likelihood_up_to_a_scale_and_a_constant():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(7, 64, generator=generator, dtype=torch.float64)
    loc = torch.rand(7, 64, generator=generator, dtype=torch.float64)
    for sigma in (0.05, 0.3, 2.0):
        squared_error = F.mse_loss(loc, x, reduction="none").sum(-1)
        by_mse = likelihoods.log_likelihood_from_squared_error(squared_error, sigma, 64)
        exact = Independent(Normal(loc, torch.full_like(loc, sigma)), 1).log_prob(x)
        assert torch.allclose(by_mse, exact, rtol=0, atol=1e-10)
        # the other way: the mean squared error is an affine function of −log N, with slope 2σ²/D
        mse = F.mse_loss(loc, x, reduction="none").mean(-1)
        rebuilt = 2 * sigma**2 / 64 * (-exact - 32 * math.log(2 * math.pi * sigma**2))
        assert torch.allclose(mse, rebuilt, atol=1e-10)


def test_dequantize_fills_each_level_s_cell_and_is_reproducible():
    x = vc.data.load("digits", "valid").x
    y = likelihoods.dequantize(x, 16, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and bool(((y >= 0) & (y < 1)).all())
    assert torch.equal((y * 17).floor(), (x * 16).round())  # level k lands in [k/17, (k+1)/17)
    again = likelihoods.dequantize(x, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, again)
    # u ~ U(0, 1): the offsets within the cells have mean 1/2 and variance 1/12
    offsets = (y * 17 - (x * 16).round()).double().flatten()
    assert abs(offsets.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / len(offsets))
    assert abs(offsets.var().item() - 1 / 12) < 0.005  # the variance's standard error is 0.0003 at n = 16000


def test_the_dequantized_density_of_a_grey_level_model_normalises_and_keeps_its_nll():
    # a binomial over the levels k/4, as a piecewise-constant density on [0, 1): it integrates to 1 (quadrature,
    # 1 pixel), and its NLL on dequantized data is the discrete NLL minus D log(levels + 1), exactly
    distribution = Independent(GreyLevels(4, probs=torch.tensor([0.3], dtype=torch.float64)), 1)
    grid = torch.linspace(0, 1, 500001, dtype=torch.float64)[:-1, None]
    density = likelihoods.dequantized_log_prob(distribution, grid, levels=4).exp()
    assert abs(density.mean().item() - 1) < 1e-5  # a mean over an even grid of [0, 1) is its integral
    model = Independent(GreyLevels(16, probs=torch.full((64,), 0.2, dtype=torch.float64)), 1)
    x = vc.data.load("digits", "test").x.double()
    y = likelihoods.dequantize(x, 16, generator=torch.Generator().manual_seed(2))
    gap = likelihoods.dequantized_log_prob(model, y, 16) - model.log_prob(x)
    assert torch.allclose(gap, torch.full_like(gap, 64 * math.log(17)))


def test_bits_per_dimension():
    assert likelihoods.bits_per_dimension(64 * math.log(2), 64) == pytest.approx(1.0)
    assert likelihoods.bits_per_dimension(0.0, 64, bins=17) == pytest.approx(math.log2(17))
    # a density on [0, 1]^D and the same model's discrete NLL give the same bits per dimension (previous test)
    nll_discrete = 150.0
    assert likelihoods.bits_per_dimension(nll_discrete - 64 * math.log(17), 64, bins=17) == pytest.approx(
        likelihoods.bits_per_dimension(nll_discrete, 64)
    )
    values = likelihoods.bits_per_dimension(torch.tensor([0.0, 64 * math.log(2)]), 64)
    assert torch.allclose(values, torch.tensor([0.0, 1.0]))


def test_bce_normaliser_by_quadrature_closed_form_and_the_continuous_bernoulli():
    logits = torch.tensor([-6.0, -1.0, -1e-4, 0.0, 1e-3, 0.7, 4.0], dtype=torch.float64)
    grid = torch.linspace(0, 1, 100001, dtype=torch.float64)[:, None]
    targets = grid.expand(-1, len(logits))  # [G, 7]
    bce = F.binary_cross_entropy_with_logits(logits.expand_as(targets), targets, reduction="none")
    by_quadrature = torch.trapezoid((-bce).exp(), grid[:, 0], dim=0).log()
    got = likelihoods.bce_log_normaliser(logits)
    assert torch.allclose(got, by_quadrature, atol=1e-6)
    lam = torch.sigmoid(logits[[0, 1, 5, 6]])
    closed_form = torch.log((2 * lam - 1) / torch.logit(lam))  # ∫₀¹ λ^x (1 − λ)^(1 − x) dx
    assert torch.allclose(got[[0, 1, 5, 6]], closed_form, atol=1e-10)
    assert bool((got < -0.69).all())  # the mass is at most 1/2: exp(−BCE) is never a density on [0, 1]
    # the continuous Bernoulli is BCE plus its normaliser: log p(x) = −BCE(x, λ) − bce_log_normaliser(λ)
    x = torch.rand(len(logits), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    continuous = ContinuousBernoulli(logits=logits).log_prob(x)
    rebuilt = -F.binary_cross_entropy_with_logits(logits, x, reduction="none") - got
    assert torch.allclose(continuous, rebuilt, atol=1e-8)


def test_a_learned_shared_sigma_has_its_optimum_at_the_root_mean_squared_residual():
    # for fixed means, E[log N] over σ is maximal at σ² = mean squared residual: the gradient for log σ is zero
    # there, and points towards it from either side
    generator = torch.Generator().manual_seed(4)
    x, loc = torch.rand(200, 16, generator=generator), torch.rand(200, 16, generator=generator)
    rms = ((x - loc) ** 2).mean().sqrt().item()
    gradients = []
    for sigma in (0.5 * rms, rms, 2 * rms):
        noise = likelihoods.GaussianScale(16, "shared", sigma)
        likelihoods.decoder_distribution("gaussian", torch.logit(loc), noise).log_prob(x).mean().backward()
        gradients.append(noise.log_sigma.grad.item())
    assert gradients[0] > 1 and abs(gradients[1]) < 1e-3 and gradients[2] < -1, gradients


def test_a_real_valued_vae_trains_and_round_trips_through_a_checkpoint(tmp_path):
    x = likelihoods.dequantize(vc.data.load("digits", "valid").x, 16, generator=torch.Generator().manual_seed(0))
    for likelihood, scale in (("gaussian", "pixel"), ("continuous_bernoulli", "shared")):
        model = vc.VAE(
            vc.VAEConfig(data_dim=64, latent_dim=2, hidden_dims=(16,), likelihood=likelihood, decoder_scale=scale)
        )
        result = vc.fit(model, x, config=vc.TrainConfig(epochs=3, batch_size=64, lr=3e-3, progress=False))
        assert result.history["train_elbo"][-1] > result.history["train_elbo"][0]
        vc.save(model, tmp_path / f"{likelihood}.pt")
        loaded = vc.load(tmp_path / f"{likelihood}.pt")
        assert loaded.config == model.config
        with torch.no_grad():
            assert torch.equal(loaded.reconstruct(x[:5]), model.reconstruct(x[:5]))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"likelihood": "poisson"}, "VAEConfig.likelihood must be one of"),
        ({"likelihood": "gaussian", "decoder_scale": "learned"}, "VAEConfig.decoder_scale must be one of"),
        ({"likelihood": "gaussian", "decoder_sigma": 0.0}, "VAEConfig.decoder_sigma must be a positive number"),
        ({"likelihood": "gaussian", "decoder_sigma": math.inf}, "VAEConfig.decoder_sigma must be a positive number"),
    ],
)
def test_config_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        vc.VAEConfig(data_dim=12, **fields)


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ValueError, match="finite"):
        real_vae("gaussian").encode(torch.full((2, 12), math.nan))
    with pytest.raises(ValueError, match=r"in \[0, 1\] for a continuous Bernoulli"):
        real_vae("continuous_bernoulli").encode(torch.full((2, 12), 1.5))
    real_vae("gaussian").encode(torch.full((2, 12), 1.5))  # a Gaussian takes any real pixel
    with pytest.raises(ValueError, match="grey levels k/16"):
        likelihoods.dequantize(torch.full((3,), 0.3), 16)
    with pytest.raises(ValueError, match="levels must be a positive int"):
        likelihoods.dequantize(torch.zeros(3), 0)
    with pytest.raises(ValueError, match=r"dequantized pixels in \[0, 1\)"):
        likelihoods.dequantized_log_prob(Independent(GreyLevels(4, probs=torch.tensor([0.3])), 1), torch.ones(1, 1), 4)
    with pytest.raises(ValueError, match="sigma must be positive"):
        likelihoods.log_likelihood_from_squared_error(torch.ones(2), 0.0, 4)
    with pytest.raises(ValueError, match="bins must be a positive int"):
        likelihoods.bits_per_dimension(1.0, 64, bins=0)
    with pytest.raises(ValueError, match="needs its σ"):
        likelihoods.decoder_distribution("gaussian", torch.zeros(3))
    with pytest.raises(ValueError, match="logits must be a floating-point tensor"):
        likelihoods.bce_log_normaliser(0.5)
