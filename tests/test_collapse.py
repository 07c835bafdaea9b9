"""vaecourse.collapse and the training options against posterior collapse (chapter 9): the KL per dimension, free
bits (never below its floor in the objective), the KL warm-up schedule, the latent usage report, bad input."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

import vaecourse as vc
from vaecourse import collapse


@pytest.fixture(scope="module")
def digits():
    return vc.data.load("digits", "valid").x


def small_vae(latent_dim=4, **overrides):
    torch.manual_seed(0)
    return vc.VAE(
        vc.VAEConfig(data_dim=64, latent_dim=latent_dim, hidden_dims=(32,), likelihood="binomial", **overrides)
    )


def test_kl_per_dimension_sums_to_the_elbo_s_kl(digits):
    model = small_vae()
    q = model.encode(digits)
    per_dimension = collapse.kl_per_dimension(q, model.prior)
    assert per_dimension.shape == (len(digits), 4) and bool((per_dimension >= 0).all())
    assert torch.allclose(per_dimension.sum(-1), kl_divergence(q, model.prior), atol=1e-5)
    assert torch.allclose(per_dimension.sum(-1), model.elbo(digits).kl, atol=1e-5)


def test_free_bits_never_lets_a_dimension_s_kl_below_its_floor_in_the_objective():
    generator = torch.Generator().manual_seed(0)
    kl = torch.rand(32, 6, generator=generator) * torch.tensor([0.01, 0.1, 0.4, 0.6, 1.5, 3.0])
    kl.requires_grad_(True)
    floor = 0.5
    term = collapse.free_bits_kl(kl, floor)
    means = kl.detach().mean(0)
    # each dimension counts as at least λ ...
    assert term.item() >= 6 * floor
    assert term.item() == pytest.approx(torch.maximum(means, torch.tensor(floor)).sum().item())
    # ... and one below the floor gets no gradient from the KL term: it gains nothing by shrinking further
    term.backward()
    below = means < floor
    assert below.any() and (~below).any()
    assert bool((kl.grad[:, below] == 0).all())
    assert torch.allclose(kl.grad[:, ~below], torch.full_like(kl.grad[:, ~below], 1 / 32))
    assert collapse.free_bits_kl(kl.detach(), 0.0).item() == pytest.approx(means.sum().item())


@pytest.mark.slow
def test_free_bits_objective_in_training_keeps_every_dimension_s_batch_kl_at_its_floor(digits):
    # the objective a step climbs: log p(x|z) − β Σ_u max(λ, KL_u); with a huge β the plain ELBO collapses every
    # dimension, free bits holds each one near λ
    floor = 0.3
    config = vc.TrainConfig(epochs=40, batch_size=250, lr=5e-3, beta=50.0, progress=False)
    plain, floored = small_vae(), small_vae()
    vc.fit(plain, digits, config=config)
    vc.fit(floored, digits, config=vc.TrainConfig(**{**config.to_dict(), "free_bits": floor}))
    with torch.no_grad():
        plain_kl = collapse.latent_usage(plain, digits).kl
        floored_kl = collapse.latent_usage(floored, digits).kl
    assert bool((plain_kl < 0.1).all()), plain_kl
    assert bool((floored_kl > 0.5 * floor).all()), floored_kl


def test_free_bits_objective_is_the_elbo_s_reconstruction_minus_the_floored_kl(digits):
    # VAE.elbo(free_bits=λ): the batch mean of the objective is mean log p(x|z) − β Σ_j max(λ, batch-mean KL_j),
    # from the same draws as the ELBO's terms
    model = small_vae()
    x = digits[:16]
    with vc.runtime.seeded(0):
        terms = model.elbo(x, beta=2.0, free_bits=1e-6)  # a floor below every dimension's KL: the β-objective
    assert terms.objective.mean().item() == pytest.approx((terms.log_px_z - 2.0 * terms.kl).mean().item(), abs=1e-4)
    with vc.runtime.seeded(0):
        huge = model.elbo(x, beta=1.0, free_bits=100.0)  # every dimension at the floor: d · λ = 400
    assert torch.equal(huge.log_px_z, terms.log_px_z)
    assert huge.objective.mean().item() == pytest.approx(terms.log_px_z.mean().item() - 400.0, abs=1e-3)
    with pytest.raises(ValueError, match="free_bits"):
        model.elbo(x, num_samples=3, bound="iwae", free_bits=0.5)


def test_warmup_schedule_in_the_function_and_in_fit(digits):
    assert [collapse.kl_weight(epoch, 2.0, 4) for epoch in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert collapse.kl_weight(3, 0.5, 0) == 0.5
    assert collapse.kl_weight(1, 1.0, 2.5) == pytest.approx(0.4)
    result = vc.fit(
        small_vae(), digits, config=vc.TrainConfig(epochs=6, warmup_epochs=4, batch_size=250, progress=False)
    )
    assert result.history["beta"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_latent_usage_on_a_known_case(digits):
    # two dimensions the encoder ignores (mean = bias, scale = 1: q = N(b, 1) for every x), two it uses
    model = small_vae()
    last = model.encoder.net[-1]  # rows 0..3 give μ, rows 4..7 the raw scale s, σ = softplus(s) + floor
    with torch.no_grad():
        for u in (1, 3):
            last.weight[u].zero_()
            last.bias[u] = 0.0
            last.weight[4 + u].zero_()
            last.bias[4 + u] = math.log(math.e - 1)  # softplus⁻¹(1)
        last.weight[0].mul_(20)
        last.weight[2].mul_(20)
    usage = collapse.latent_usage(model, digits)
    assert usage.count == 2 and usage.active.tolist() == [True, False, True, False]
    assert float(usage.kl[1]) < 1e-3 and float(usage.kl[3]) < 1e-3  # only the floor 1e-4 of σ is left
    assert usage.total_kl == pytest.approx(float(usage.kl.sum()))
    assert "2 of 4 latent dimensions active" in str(usage)


def test_bad_input_gets_a_clear_error(digits):
    with pytest.raises(ValueError, match=r"kl must be the KL per example and latent dimension \[B, d\]"):
        collapse.free_bits_kl(torch.ones(4), 0.5)
    with pytest.raises(ValueError, match="free_bits must be a number of nats >= 0"):
        collapse.free_bits_kl(torch.ones(4, 2), -1.0)
    with pytest.raises(ValueError, match="TrainConfig.free_bits must be a number of nats >= 0"):
        vc.TrainConfig(free_bits=-0.5)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        collapse.kl_weight(-1, 1.0, 3)
    mixture = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    with pytest.raises(ValueError, match="must be a diagonal Gaussian"):
        collapse.kl_per_dimension(Normal(torch.zeros(2), torch.ones(2)), mixture)
    model = small_vae(prior="mog", prior_options={"num_components": 3})
    with pytest.raises(ValueError, match="free bits need the N\\(0, I\\) prior"):
        vc.fit(model, digits, config=vc.TrainConfig(epochs=1, free_bits=0.5, progress=False))
