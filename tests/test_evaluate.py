"""vaecourse.evaluate.log_likelihood: the IWAE estimate of log p(x) in nats, with its standard error."""

import math

import pytest
import torch

import vaecourse as vc


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=64, latent_dim=4, hidden_dims=(64,), likelihood="binomial"))
    vc.fit(model, vc.data.load("digits", "train").x, config=vc.TrainConfig(epochs=15, lr=3e-3, progress=False))
    return model, vc.data.load("digits", "test").x


@pytest.mark.slow
def test_log_likelihood_is_above_the_elbo_and_grows_with_k(trained):
    model, x = trained
    torch.manual_seed(0)
    elbo = model.elbo(x, num_samples=100).elbo.detach().double()  # the ELBO itself, to Monte Carlo precision
    estimates = {k: vc.log_likelihood(model, x, num_samples=k, seed=k) for k in (1, 10, 200)}
    # paired differences over the same 250 test images; each must exceed 4 of its standard errors
    previous = elbo
    for k in (10, 200):
        difference = estimates[k].per_example - previous
        standard_error = difference.std() / math.sqrt(len(difference))
        assert difference.mean() > 4 * standard_error, k
        previous = estimates[k].per_example
    # k = 1 is an unbiased estimate of the ELBO: they agree within 4 standard errors
    difference = estimates[1].per_example - elbo
    assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(len(difference))


@pytest.mark.slow
def test_standard_error_and_summary(trained):
    model, x = trained
    estimate = vc.log_likelihood(model, x, num_samples=20)
    values = estimate.per_example
    assert estimate.mean == pytest.approx(values.mean().item())
    assert estimate.standard_error == pytest.approx(values.std().item() / math.sqrt(len(values)))
    assert estimate.nll == -estimate.mean
    assert "nats (IWAE, K = 20, 250 examples)" in str(estimate)


@pytest.mark.slow
def test_chunking_does_not_change_the_estimate_in_expectation(trained):
    model, x = trained
    big = vc.log_likelihood(model, x[:50], num_samples=400, batch_size=50, seed=1)
    small = vc.log_likelihood(model, x[:50], num_samples=400, batch_size=7, chunk_size=3, seed=2)
    difference = big.per_example - small.per_example
    # two independent estimates of the same quantities: their paired difference is centred on 0
    assert abs(difference.mean()) < 4 * difference.std() / math.sqrt(len(difference)) + 1e-6
    assert model.training is False


@pytest.mark.slow
def test_seed_makes_it_reproducible_and_inputs_are_checked(trained):
    model, x = trained
    a = vc.log_likelihood(model, x[:20], num_samples=30, seed=3)
    b = vc.log_likelihood(model, x[:20], num_samples=30, seed=3)
    assert torch.equal(a.per_example, b.per_example)
    with pytest.raises(ValueError, match="num_samples"):
        vc.log_likelihood(model, x, num_samples=0)
    with pytest.raises(ValueError, match="grey levels"):
        vc.log_likelihood(model, x * 0.3)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        vc.log_likelihood(model, x[0])
