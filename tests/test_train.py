"""vaecourse.train.fit: budgets, reproducibility, schedules, early stopping and the NaN guard."""

import copy
import math

import pytest
import torch

import vaecourse as vc
from vaecourse.train import DivergenceError


@pytest.fixture(scope="module")
def digits():
    return vc.data.load("digits", "train").x, vc.data.load("digits", "valid").x


def digits_vae(seed=0, **overrides):
    torch.manual_seed(seed)
    fields = dict(data_dim=64, latent_dim=2, hidden_dims=(32,), likelihood="binomial")
    fields.update(overrides)
    return vc.VAE(vc.VAEConfig(**fields))


def config(**fields):
    return vc.TrainConfig(**{"batch_size": 64, "epochs": 3, "progress": False, **fields})


@pytest.mark.slow
def test_training_raises_the_elbo_and_records_history(digits):
    train, valid = digits
    model = digits_vae()
    before = vc.train.mean_elbo(model, valid)
    result = vc.fit(model, train, valid, config=config(epochs=8, lr=3e-3))
    after = vc.train.mean_elbo(model, valid)
    assert after > before + 20  # a random decoder starts far below (about -300 nats): training gains > 20
    assert result.epochs == 8 and result.steps == 8 * math.ceil(len(train) / 64)
    for key in ("train_elbo", "train_kl", "valid_elbo", "lr", "beta", "seconds"):
        assert len(result.history[key]) == 8, key
    assert result.history["train_elbo"][-1] > result.history["train_elbo"][0]
    assert result.images_per_second > 0 and result.train_seconds > 0
    summary = result.summary()
    assert {"images_per_second", "train_seconds", "epochs", "final_train_elbo", "final_valid_elbo"} <= set(summary)
    assert not model.training


@pytest.mark.slow
def test_cpu_runs_are_reproducible_given_the_seed(digits):
    train, _ = digits
    states = []
    for seed in (5, 5, 6):
        model = digits_vae(seed=0)
        vc.fit(model, train, config=config(seed=seed))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_seconds_budget_stops_at_the_first_step_past_it(digits, monkeypatch):
    train, _ = digits
    now = [0.0]

    def fake_clock():  # every reading of the clock is 10 ms later: the test does not depend on the machine's speed
        now[0] += 0.01
        return now[0]

    monkeypatch.setattr(vc.train, "_clock", fake_clock)
    result = vc.fit(digits_vae(), train, config=config(epochs=None, seconds=0.5, batch_size=8))
    assert 0.5 <= result.train_seconds <= 0.5 + 0.03  # at most a step's readings past the budget
    assert result.epochs >= 1 and result.history["seconds"][-1] == result.train_seconds


@pytest.mark.slow
def test_cosine_schedule_and_kl_warmup(digits):
    train, _ = digits
    result = vc.fit(digits_vae(), train, config=config(epochs=4, schedule="cosine", lr=1e-2, warmup_epochs=2))
    assert result.history["beta"] == [0.0, 0.5, 1.0, 1.0]
    lrs = result.history["lr"]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-3 * 1e-2 / 1e-3  # decays towards 0
    assert result.history["lr"][0] < 1e-2


def test_early_stopping_restores_the_best_weights(digits):
    train, valid = digits
    model = digits_vae()
    # a large step size makes the validation ELBO stall quickly
    result = vc.fit(model, train, valid, config=config(epochs=40, patience=2, lr=3e-2))
    best = max(result.history["valid_elbo"])
    assert result.best_epoch == result.history["valid_elbo"].index(best) + 1
    if result.stopped_early:
        assert result.epochs == result.best_epoch + 2
    assert vc.train.mean_elbo(model, valid) == pytest.approx(best, abs=1e-3)


def test_gradient_clipping_bounds_the_update(digits):
    train, _ = digits
    model = digits_vae()
    vc.fit(model, train, config=config(epochs=1, clip_grad_norm=1e-6, lr=1e-3))
    untouched = digits_vae()
    # Adam normalises the step, so clipping is visible in the moments, not the size: check it ran and stayed finite
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), untouched.parameters(), strict=True))


def test_nan_guard_names_the_step_and_the_term(digits):
    train, _ = digits
    model = digits_vae()
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 4 else output

    model.decoder.net.register_forward_hook(poison)
    with pytest.raises(DivergenceError, match=r"step 3: the log_px_z term"):
        vc.fit(model, train, config=config())


def test_nan_guard_names_the_kl_term(digits):
    train, _ = digits
    model = digits_vae()
    with torch.no_grad():
        model.encoder.net[-1].bias[:2].fill_(float("inf"))  # μ = ∞: the KL diverges, and the decoder sees ∞
    with pytest.raises(DivergenceError, match="step 0: .*the kl term"):
        vc.fit(model, train, config=config())


def test_bad_data_and_bad_config_fail_before_training(digits):
    train, _ = digits
    with pytest.raises(ValueError, match="grey levels"):
        vc.fit(digits_vae(), train * 0.9, config=config())
    with pytest.raises(ValueError, match="binary"):
        vc.fit(digits_vae(likelihood="bernoulli"), train, config=config())
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        vc.fit(digits_vae(), train[0], config=config())
    with pytest.raises(ValueError, match="needs a validation set"):
        vc.fit(digits_vae(), train, config=config(patience=3))
    for fields, message in [
        ({"epochs": None, "seconds": None}, "epochs or seconds"),
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"schedule": "linear"}, "schedule"),
        ({"beta": -0.5}, "beta"),
        ({"seed": -1}, "seed"),
    ]:
        with pytest.raises(ValueError, match=message):
            vc.TrainConfig(**{"progress": False, **fields})


def test_validation_elbo_uses_common_random_numbers_and_leaves_the_generator_alone(digits):
    _, valid = digits
    model = digits_vae()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = vc.train.mean_elbo(model, valid)
    second = vc.train.mean_elbo(model, valid)
    assert first == second
    assert torch.equal(torch.rand(3), expected_next)
    assert vc.train.mean_elbo(model, valid, seed=None) != first  # fresh noise without a seed


@pytest.mark.parametrize("value, shown", [("off", False), ("0", False), ("no", False), ("on", True)])
def test_the_progress_bar_follows_the_widgets_setting(monkeypatch, value, shown):
    monkeypatch.setenv("VAECOURSE_WIDGETS", value)
    bar = vc.train._progress(vc.TrainConfig(), 3)
    assert (bar is not None) == shown
    if bar is not None:
        bar.close()


def test_step_is_the_lectures_algorithm_written_out():
    """train.step with a given ε takes the same SGD step as the algorithm written out by hand."""
    torch.manual_seed(0)
    model = vc.VAE(vc.VAEConfig(data_dim=12, latent_dim=2, hidden_dims=(8,))).double()
    x = (torch.rand(6, 12, dtype=torch.float64) < 0.4).double()
    eps = torch.randn(6, 2, dtype=torch.float64)
    by_hand = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    terms = vc.train.step(model, optimizer, x, beta=0.5, eps=eps)

    q = by_hand.encoder(x)
    z = q.mean + q.stddev * eps
    log_px_z = by_hand.likelihood(z).log_prob(x)
    kl = torch.distributions.kl_divergence(q, by_hand.prior)
    hand_optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    hand_optimizer.zero_grad()
    (kl * 0.5 - log_px_z).mean().backward()
    hand_optimizer.step()

    torch.testing.assert_close(terms.elbo, (log_px_z - kl).detach())
    torch.testing.assert_close(terms.objective, (log_px_z - 0.5 * kl).detach())
    for (name, got), expected in zip(model.named_parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(got, expected, msg=name)


def test_step_refuses_a_nan_loss_before_it_reaches_the_weights():
    model = vc.VAE(vc.VAEConfig(data_dim=12, latent_dim=2, hidden_dims=(8,)))
    with torch.no_grad():
        model.encoder.net[-1].bias[:2].fill_(float("inf"))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(DivergenceError, match="training diverged: .*the kl term"):
        vc.train.step(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.ones(3, 12))
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_free_bits_refuse_the_iwae_bound():
    # free bits change the ELBO's KL term; the IWAE bound has none to change
    with pytest.raises(ValueError, match="free_bits"):
        vc.TrainConfig(bound="iwae", free_bits=0.5)
    model = vc.VAE(vc.VAEConfig(data_dim=4, latent_dim=2, hidden_dims=(8,)))
    optimizer = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="free_bits"):
        vc.train.step(model, optimizer, torch.ones(3, 4), free_bits=0.5, bound="iwae")


def test_fit_new_draws_the_initial_weights_from_the_config_seed_and_leaves_the_generator_alone(digits):
    train, _ = digits
    model_config = vc.VAEConfig(data_dim=64, latent_dim=2, hidden_dims=(32,), likelihood="binomial")
    before = torch.random.get_rng_state()
    model, result = vc.train.fit_new(model_config, train, config=config(epochs=1, seed=3))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert result.epochs == 1
    with vc.runtime.seeded(3):  # the same weights as a model built inside seeded(3), then fitted with seed 3
        again = vc.VAE(model_config)
    vc.fit(again, train, config=config(epochs=1, seed=3))
    assert all(torch.equal(model.state_dict()[k], again.state_dict()[k]) for k in model.state_dict())
