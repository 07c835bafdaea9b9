"""Tests of the chapter 6 checkers: each accepts the reference, names each typical mistake, and spots a stub."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from exercise_helpers import stub
from torch.distributions import Independent, Normal, kl_divergence

import vaecourse as vc
from vaecourse.exercises import chapter6 as exercises


def _kl(mean, std):
    return 0.5 * (std**2 + mean**2 - 1 - torch.log(std**2)).sum(-1)


def _bce(x, logits):
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none")  # [B, D]


# Exercise 1: vae_loss(x, logits, mean, std) -> [B].


def vae_loss(x, logits, mean, std):
    return _bce(x, logits).sum(-1) + _kl(mean, std)


LOSS_MISTAKES = {
    "pixel mean": (lambda x, l, m, s: _bce(x, l).mean(-1) + _kl(m, s), "averaged the reconstruction term over the D"),
    "both means": (
        lambda x, l, m, s: _bce(x, l).mean(-1) + 0.5 * (s**2 + m**2 - 1 - torch.log(s**2)).mean(-1),
        "you averaged both terms",
    ),
    "kl mean": (
        lambda x, l, m, s: _bce(x, l).sum(-1) + 0.5 * (s**2 + m**2 - 1 - torch.log(s**2)).mean(-1),
        "the KL is a sum over the d latent coordinates",
    ),
    "no kl": (lambda x, l, m, s: _bce(x, l).sum(-1), "the KL term is missing"),
    "no reconstruction": (lambda x, l, m, s: _kl(m, s), "the reconstruction term −log p(x|z) is missing"),
    "kl subtracted": (lambda x, l, m, s: _bce(x, l).sum(-1) - _kl(m, s), "the KL is added to the loss"),
    "reconstruction sign": (
        lambda x, l, m, s: -_bce(x, l).sum(-1) + _kl(m, s),
        "the reconstruction term has the wrong sign",
    ),
    "the elbo": (lambda x, l, m, s: -vae_loss(x, l, m, s), "this is the ELBO"),
    "sigma for variance": (
        lambda x, l, m, s: _bce(x, l).sum(-1) + 0.5 * (s + m**2 - 1 - torch.log(s)).sum(-1),
        "the KL needs the variance σ² = std**2",
    ),
    "log sigma": (
        lambda x, l, m, s: _bce(x, l).sum(-1) + 0.5 * (s**2 + m**2 - 1 - torch.log(s)).sum(-1),
        "you wrote log σ",
    ),
    "no half": (lambda x, l, m, s: _bce(x, l).sum(-1) + 2 * _kl(m, s), "the factor ½ of the KL is missing"),
    "swapped bce": (
        lambda x, l, m, s: F.binary_cross_entropy(x, torch.sigmoid(l), reduction="none").sum(-1) + _kl(m, s),
        "the arguments of binary_cross_entropy are swapped",
    ),
    "logits as probabilities": (
        lambda x, l, m, s: -(x * torch.log(l) + (1 - x) * torch.log(1 - l)).sum(-1) + _kl(m, s),
        "the logits are log-odds, not probabilities",
    ),
}


def _rename(function):
    return lambda x, logits, mean, std: function(x, logits, mean, std)


def test_vae_loss_checker_accepts_the_reference_and_the_package_parts():
    assert exercises.check_vae_loss(vae_loss).passed

    def with_distributions(x, logits, mean, std):
        q = Independent(Normal(mean, std), 1)
        prior = Independent(Normal(torch.zeros_like(mean), torch.ones_like(std)), 1)
        log_px_z = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
        return kl_divergence(q, prior) - log_px_z

    assert exercises.check_vae_loss(with_distributions).passed


@pytest.mark.parametrize("mistake", LOSS_MISTAKES.keys())
def test_vae_loss_checker_names_each_mistake(mistake):
    function, hint = LOSS_MISTAKES[mistake]
    result = exercises.check_vae_loss(_rename(function))
    assert not result.passed
    assert hint in "\n".join(result.details), repr(result)


def test_the_pixel_mean_diagnosis_says_beta_equals_d():
    result = exercises.check_vae_loss(_rename(LOSS_MISTAKES["pixel mean"][0]))
    assert "β = D" in result.details[0] and "D = 784" in result.details[0], repr(result)


@pytest.mark.parametrize(
    "function, hint",
    [
        (lambda x, logits, mean, std: vae_loss(x, logits, mean, std).mean(), "you averaged over the batch"),
        (lambda x, logits, mean, std: vae_loss(x, logits, mean, std).sum(), "you summed over the batch"),
        (
            lambda x, logits, mean, std: (
                F.binary_cross_entropy_with_logits(logits, x) + 0.5 * (std**2 + mean**2 - 1 - torch.log(std**2)).mean()
            ),
            "everything is averaged",
        ),
        (
            lambda x, logits, mean, std: F.binary_cross_entropy_with_logits(logits, x) + _kl(mean, std).mean(),
            "the reconstruction is averaged over the batch and the D = 784 pixels",
        ),
        (lambda x, logits, mean, std: _bce(x, logits) + _kl(mean, std)[:, None], "one value per pixel"),
    ],
)
def test_vae_loss_checker_says_which_reduction_went_wrong(function, hint):
    result = exercises.check_vae_loss(function)
    assert not result.passed and "expected shape" in result.message
    assert hint in result.details[0], repr(result)


def test_vae_loss_checker_reports_a_stub_wrong_types_and_a_non_function():
    assert "not implemented yet" in repr(exercises.check_vae_loss(stub))
    result = exercises.check_vae_loss(lambda x, logits, mean, std: vae_loss(x, logits, mean, std).numpy())
    assert not result.passed and "expected a torch.Tensor, got ndarray" in result.message
    result = exercises.check_vae_loss(lambda x, logits, mean, std: vae_loss(x, logits, mean, std).tolist())
    assert not result.passed and "expected a torch.Tensor, got list" in result.message
    with pytest.raises(TypeError, match="expects your function itself"):
        exercises.check_vae_loss(vae_loss(*exercises._loss_cases([(2, 3, 1)], seed=0)[0].values()))


def test_negative_elbo_is_what_the_vae_computes():
    """The exercise's reference is −(log p(x|z) − KL) of vc.VAE at the same z, per example."""
    torch.manual_seed(0)
    model = vc.VAE(latent_dim=3, data_dim=10, hidden_dims=(8,))
    x = (torch.rand(4, 10) < 0.5).float()
    q = model.encode(x)
    z = q.rsample()
    logits = model.likelihood(z).base_dist.logits
    expected = kl_divergence(q, model.prior) - model.likelihood(z).log_prob(x)
    torch.testing.assert_close(exercises.negative_elbo(x, logits, q.mean, q.stddev), expected)


# Exercise 2: the averaged loss, repaired.


def fixed_loss(x, logits, mean, std):
    reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = -0.5 * torch.sum(1 + torch.log(std**2) - mean**2 - std**2, dim=-1)
    return (reconstruction + kl).mean()


FIXED_MISTAKES = {
    "unchanged": (exercises.buggy_loss, "this is still the loss as found"),
    "kl still averaged": (
        lambda x, logits, mean, std: (
            _bce(x, logits).sum(-1).mean() + 0.5 * (std**2 + mean**2 - 1 - torch.log(std**2)).mean()
        ),
        "the KL is still averaged over the d latent coordinates",
    ),
    "reconstruction still averaged": (
        lambda x, logits, mean, std: F.binary_cross_entropy_with_logits(logits, x) + _kl(mean, std).mean(),
        "the reconstruction is still averaged over the D = 784 pixels",
    ),
    "reduction sum": (
        lambda x, logits, mean, std: (
            F.binary_cross_entropy_with_logits(logits, x, reduction="sum") + _kl(mean, std).mean()
        ),
        "summed over the batch as well as the pixels",
    ),
    "batch sum": (lambda x, logits, mean, std: vae_loss(x, logits, mean, std).sum(), "you summed over the batch"),
    "kl subtracted": (
        lambda x, logits, mean, std: (_bce(x, logits).sum(-1) - _kl(mean, std)).mean(),
        "the KL is added to the loss",
    ),
}


def test_fixed_loss_checker_accepts_the_repair():
    assert exercises.check_fixed_loss(fixed_loss).passed


@pytest.mark.parametrize("mistake", FIXED_MISTAKES.keys())
def test_fixed_loss_checker_names_each_mistake(mistake):
    function, hint = FIXED_MISTAKES[mistake]
    result = exercises.check_fixed_loss(function)
    assert not result.passed
    assert hint in "\n".join(result.details), repr(result)


def test_fixed_loss_checker_reports_a_stub_and_per_example_values():
    assert "not implemented yet" in repr(exercises.check_fixed_loss(stub))
    result = exercises.check_fixed_loss(vae_loss)
    assert not result.passed and "expected shape ()" in result.message
    assert "exercise 1's answer" in result.details[0]
    result = exercises.check_fixed_loss(lambda x, logits, mean, std: float(fixed_loss(x, logits, mean, std)))
    assert not result.passed and "expected a torch.Tensor, got float" in result.message


def test_the_buggy_loss_is_a_beta_vae_loss_with_beta_d_over_d():
    """The loss as found is (1/D)(−log p(x|z) + (D/d)·KL): a β-VAE loss with β = D/d, scaled."""
    case = exercises._loss_cases([(5, 784, 16)], seed=1)[0]
    x, logits, mean, std = case.values()
    data_dim, latent_dim = x.shape[-1], mean.shape[-1]
    beta = data_dim / latent_dim
    scaled = (_bce(x, logits).sum(-1) + beta * _kl(mean, std)).mean() / data_dim
    torch.testing.assert_close(exercises.buggy_loss(x, logits, mean, std), scaled)


# Exercise 3: training_step(model, optimizer, x, eps) -> loss.


def training_step(model, optimizer, x, eps):
    q = model.encoder(x)
    z = q.mean + q.stddev * eps
    loss = (kl_divergence(q, model.prior) - model.likelihood(z).log_prob(x)).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def _step(*, zero_grad=True, step=True, z_of=None, pixel_mean=False, batch_sum=False, kl=True, sign=1.0, value=None):
    def function(model, optimizer, x, eps):
        q = model.encoder(x)
        z = q.mean + q.stddev * eps if z_of is None else z_of(q, eps)
        pixels = model.likelihood(z).base_dist.log_prob(x)
        log_px_z = pixels.mean(-1) if pixel_mean else pixels.sum(-1)
        per_example = (kl_divergence(q, model.prior) if kl else 0) - log_px_z
        loss = per_example.sum() if batch_sum else per_example.mean()
        if zero_grad:
            optimizer.zero_grad()
        (sign * loss).backward()
        if step:
            optimizer.step()
        return loss if value is None else value(loss)

    return function


STEP_MISTAKES = {
    "no zero_grad": (_step(zero_grad=False), "the gradients were not zeroed"),
    "no step": (_step(step=False), "call optimizer.step()"),
    "ascent": (_step(sign=-1.0), "the step went uphill on the loss"),
    "pixel mean": (_step(pixel_mean=True), "averaged over the pixels"),
    "batch sum": (_step(batch_sum=True), "summed over the batch"),
    "variance": (_step(z_of=lambda q, eps: q.mean + q.variance * eps), "not the variance σ²"),
    "no kl": (_step(kl=False), "the KL term is missing"),
    "sample": (_step(z_of=lambda q, eps: q.sample()), "z was cut from the encoder's graph"),
    "detach": (_step(z_of=lambda q, eps: (q.mean + q.stddev * eps).detach()), "z was cut from the encoder's graph"),
    "own noise": (_step(z_of=lambda q, eps: q.rsample()), "your step does not use eps"),
    "returns nothing": (_step(value=lambda loss: None), "it returned None"),
    "returns the elbo": (_step(value=lambda loss: -loss), "instead of the loss"),
}


def test_training_step_checker_accepts_the_reference_and_item():
    assert exercises.check_training_step(training_step).passed
    assert exercises.check_training_step(_step(value=lambda loss: loss.item())).passed


@pytest.mark.parametrize("mistake", STEP_MISTAKES.keys())
def test_training_step_checker_names_each_mistake(mistake):
    function, hint = STEP_MISTAKES[mistake]
    result = exercises.check_training_step(function)
    assert not result.passed
    assert hint in "\n".join([result.message, *result.details]), repr(result)


def test_training_step_checker_reports_a_stub_an_error_and_a_non_function():
    assert "not implemented yet" in repr(exercises.check_training_step(stub))
    result = exercises.check_training_step(lambda model, optimizer, x, eps: model.encoder(eps))
    assert not result.passed and "your function raised" in result.message
    result = exercises.check_training_step(_step(value=lambda loss: "done"))
    assert not result.passed and "got str" in result.message
    with pytest.raises(TypeError, match=r"expects your function itself, e\.g\. check_training_step\(training_step\)"):
        exercises.check_training_step(None)
    with pytest.raises(TypeError, match=r"e\.g\. check_fixed_loss\(fixed_loss\)"):
        exercises.check_fixed_loss(None)


def test_the_checkers_are_exported():
    for name in ("check_vae_loss", "check_fixed_loss", "check_training_step"):
        assert getattr(vc.exercises, name) is getattr(exercises, name)
