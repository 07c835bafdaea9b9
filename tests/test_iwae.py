"""Tests for vaecourse.iwae: the IWAE bound as a training objective (VAE.elbo(bound="iwae"), TrainConfig.bound) and
the signal-to-noise ratio of its gradients (chapter 10)."""

import math

import pytest
import torch
from data_helpers import binary
from torch.distributions import Independent, Normal

import vaecourse as vc
from vaecourse.iwae import gradient_snr, iwae_bound, iwae_terms, signal_to_noise


def small_vae(**overrides):
    fields = dict(data_dim=12, latent_dim=3, hidden_dims=(16,), likelihood="bernoulli")
    fields.update(overrides)
    torch.manual_seed(0)
    return vc.VAE(vc.VAEConfig(**fields))


def linear_gaussian():
    """A linear-Gaussian model with its exact log p(x), three data points and a deliberately poor Gaussian q."""
    generator = torch.Generator().manual_seed(0)
    W = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    model = vc.models.LinearGaussian(W, torch.zeros(5, dtype=torch.float64), 0.5)
    x = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    posterior = model.posterior(x)
    std = posterior.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    q = Independent(Normal(posterior.mean.detach() + 0.3, 1.5 * std.detach()), 1)  # shifted and too wide
    return model, x, q


def test_at_k_1_the_bound_is_the_elbo_with_a_sampled_kl():
    model = small_vae().double()
    x = binary(6, 12).double()
    torch.manual_seed(1)
    bound = model.elbo(x, num_samples=1, bound="iwae")
    torch.manual_seed(1)
    elbo = model.elbo(x, num_samples=1, analytic_kl=False)
    assert torch.allclose(bound.objective, elbo.elbo, atol=1e-12)
    assert torch.equal(bound.z, elbo.z)


def test_the_bound_is_above_the_elbo_of_the_same_samples_for_every_draw():
    """log (1/K) Σ w_k ≥ (1/K) Σ log w_k by Jensen's inequality: for every draw, not only on average."""
    model = small_vae().double()
    x = binary(20, 12).double()
    for seed in range(5):
        torch.manual_seed(seed)
        terms = model.elbo(x, num_samples=10, bound="iwae", analytic_kl=False)
        assert (terms.objective >= terms.elbo - 1e-12).all()
        assert (terms.objective > terms.elbo).any()


def test_the_bound_rises_with_k_and_reaches_log_p():
    model, x, q = linear_gaussian()
    exact = model.log_marginal(x).detach()  # [3]
    torch.manual_seed(2)
    gaps, errors = {}, {}
    for k, repeats in [(1, 500), (10, 500), (100, 500), (1000, 100)]:
        with torch.no_grad():
            values = iwae_terms(model, x.expand(repeats, 3, 5), q, k).objective  # [R, 3]: R independent bounds
        gaps[k] = exact - values.mean(0)
        errors[k] = values.std(0) / math.sqrt(repeats)
    for k in gaps:  # a lower bound: the gap is ≥ 0, up to 4 standard errors of its estimate
        assert (gaps[k] > -4 * errors[k]).all(), k
    for smaller, larger in [(1, 10), (10, 100)]:  # each tenfold K closes the gap by far more than 4 SE
        assert (gaps[smaller] - gaps[larger] > 4 * (errors[smaller] + errors[larger])).all()
    # the gap shrinks like 1/K (2.9 nats at K = 1 here): at K = 1000 it is within 0.02 nats plus 4 SE of zero
    assert (gaps[1000].abs() < 0.02 + 4 * errors[1000]).all()


def test_with_the_exact_posterior_as_q_the_bound_is_log_p_for_any_k():
    model, x, _ = linear_gaussian()
    exact = model.log_marginal(x).detach()
    posterior = model.posterior(x)
    torch.manual_seed(3)
    for k in (1, 7):
        with torch.no_grad():
            assert torch.allclose(iwae_terms(model, x, posterior, k).objective, exact, atol=1e-9)


def test_gradients_reach_every_parameter_and_the_shapes_follow_the_elbo():
    model = small_vae()
    x = binary(4, 12)
    terms = model.elbo(x, num_samples=5, bound="iwae")
    assert terms.objective.shape == terms.elbo.shape == terms.kl.shape == (4,)
    assert terms.z.shape == (5, 4, 3)
    terms.objective.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    torch.manual_seed(4)
    direct = iwae_bound(model, x, 5)
    torch.manual_seed(4)
    assert torch.equal(direct, model.elbo(x, num_samples=5, bound="iwae").objective)


def test_bad_bound_and_beta_get_clear_errors():
    model = small_vae()
    with pytest.raises(ValueError, match="bound must be one of"):
        model.elbo(binary(2, 12), bound="vimco")
    with pytest.raises(ValueError, match="β = 1"):
        model.elbo(binary(2, 12), num_samples=3, beta=0.5, bound="iwae")
    with pytest.raises(ValueError, match="TrainConfig.bound"):
        vc.TrainConfig(bound="vimco")
    with pytest.raises(ValueError, match="beta = 1 and no warm-up"):
        vc.TrainConfig(bound="iwae", beta=0.5)
    with pytest.raises(ValueError, match="beta = 1 and no warm-up"):
        vc.TrainConfig(bound="iwae", warmup_epochs=2)


@pytest.mark.slow
def test_fit_climbs_the_iwae_bound():
    x = binary(200, 12, seed=5)
    model = small_vae()
    torch.manual_seed(6)
    before = iwae_bound(model, x, 20).mean().item()
    config = vc.TrainConfig(epochs=20, batch_size=50, lr=1e-2, num_samples=20, bound="iwae", progress=False)
    result = vc.fit(model, x, config=config)
    torch.manual_seed(6)
    after = iwae_bound(model, x, 20).mean().item()
    assert result.epochs == 20 and math.isfinite(result.final_train_elbo)
    # independent pixels, each on with probability 0.3: the best model scores −12·H(0.3) = −7.33 nats; the bound
    # starts 1.2 nats below it, and 80 steps recover more than half of that
    assert after > before + 0.6


def test_signal_to_noise_of_known_gaussian_columns():
    """Columns N(μ, σ²) with μ/σ = 0.5, 0 and 2: the estimate is within 4 standard errors of the truth.
    The delta method gives Var(SNR̂) ≈ (1 + SNR²/2) / R for one column of R draws."""
    repeats = 4000
    generator = torch.Generator().manual_seed(7)
    mean, std = torch.tensor([1.0, 0.0, -4.0]), torch.tensor([2.0, 1.0, 2.0])
    samples = mean + std * torch.randn(repeats, 3, generator=generator, dtype=torch.float64)
    estimate = signal_to_noise(samples)
    truth = (mean.abs() / std).double()
    standard_error = ((1 + truth**2 / 2) / repeats).sqrt()
    assert ((estimate[[0, 2]] - truth[[0, 2]]).abs() < 4 * standard_error[[0, 2]]).all()
    # a zero mean gives |N(0, σ²/R)| / σ: the floor E = √(2/(πR)), below 4/√R
    assert estimate[1] < 4 / math.sqrt(repeats)
    constant = signal_to_noise(torch.ones(5, 2))
    assert torch.isnan(constant).all()
    with pytest.raises(ValueError, match="R >= 2"):
        signal_to_noise(torch.ones(1, 3))


def test_gradient_snr_is_signal_to_noise_of_the_repeated_gradients():
    model = small_vae().double()
    x = binary(3, 12).double()
    snr = gradient_snr(model, x, num_samples=4, repeats=30, seed=8)
    rows = []
    with vc.runtime.seeded(8):
        for _ in range(30):
            loss = -model.elbo(x, num_samples=4, bound="iwae").objective.mean()
            grads = torch.autograd.grad(loss, list(model.encoder.parameters()) + list(model.decoder.parameters()))
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    by_hand = signal_to_noise(torch.stack(rows))
    size = sum(p.numel() for p in model.encoder.parameters())
    both = torch.cat([snr.encoder_per_parameter, snr.decoder_per_parameter])
    assert torch.allclose(both, by_hand, atol=1e-6, equal_nan=True)
    assert math.isclose(snr.encoder, by_hand[:size].nanmean().item(), rel_tol=1e-9)
    assert math.isclose(snr.decoder, by_hand[size:].nanmean().item(), rel_tol=1e-9)
    assert all(p.grad is None for p in model.parameters())  # the model's own gradients are left alone
    with pytest.raises(ValueError, match="repeats must be at least 2"):
        gradient_snr(model, x, 4, repeats=1)


@pytest.mark.slow
def test_rainforth_effect_encoder_snr_falls_and_decoder_snr_rises_with_k():
    """Rainforth et al. (2018): on one data point the encoder's SNR falls like 1/√K and the decoder's rises like
    √K. From K = 1 to 1000 the ratios move by far more than their noise (each mean over parameters of 200 repeats:
    relative errors of a few per cent)."""
    model = small_vae(data_dim=64, hidden_dims=(32,))
    x = binary(1, 64, seed=9)
    low = gradient_snr(model, x, 1, repeats=200, seed=10)
    high = gradient_snr(model, x, 1000, repeats=200, seed=10)
    assert high.encoder < 0.7 * low.encoder
    assert high.decoder > 1.5 * low.decoder
