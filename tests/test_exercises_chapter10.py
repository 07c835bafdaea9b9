"""Tests of the chapter 10 checkers: each accepts the reference, names each typical mistake, and spots a stub."""

from __future__ import annotations

import math

import pytest
import torch
from exercise_helpers import hint_of, stub

import vaecourse as vc
from vaecourse.exercises import chapter10 as exercises

# Exercise 1: iwae_loss(model, x, num_samples) -> loss.


def _parts(model, x, num_samples, draw="rsample"):
    q = model.encode(x)
    z = getattr(q, draw)((num_samples,))
    return model.likelihood(z).log_prob(x), model.prior.log_prob(z), q.log_prob(z)


def iwae_loss_by_hand(model, x, num_samples):
    log_px_z, log_pz, log_qz = _parts(model, x, num_samples)
    return -(torch.logsumexp(log_px_z + log_pz - log_qz, dim=0) - math.log(num_samples)).mean()


def _loss(weights, num_samples):
    return -(torch.logsumexp(weights, dim=0) - math.log(num_samples)).mean()


def _mistake(combine, draw="rsample"):
    def function(model, x, num_samples):
        log_px_z, log_pz, log_qz = _parts(model, x, num_samples, draw)
        return combine(log_px_z, log_pz, log_qz, num_samples)

    return function


IWAE_MISTAKES = {
    "the ELBO": (_mistake(lambda a, b, c, k: -(a + b - c).mean()), "that is the ELBO of the K samples"),
    "no log K": (_mistake(lambda a, b, c, k: -torch.logsumexp(a + b - c, dim=0).mean()), "the −log K is missing"),
    "p(x|z) alone": (_mistake(lambda a, b, c, k: _loss(a, k)), "the weights are p(x|z) alone"),
    "+log q": (_mistake(lambda a, b, c, k: _loss(a + b + c, k)), "enters with a minus sign"),
    "no prior": (_mistake(lambda a, b, c, k: _loss(a - c, k)), "the prior's density at the sample"),
    "sum over the batch": (
        _mistake(lambda a, b, c, k: -(torch.logsumexp(a + b - c, dim=0) - math.log(k)).sum()),
        "averages over the batch",
    ),
    "pooled images": (
        _mistake(lambda a, b, c, k: -torch.logsumexp((a + b - c).reshape(-1), 0) + math.log((a + b - c).numel())),
        "you pooled the weights of all the images",
    ),
    "sample, not rsample": (_mistake(lambda a, b, c, k: _loss(a + b - c, k), draw="sample"), "q.rsample((K,))"),
    "sign": (_mistake(lambda a, b, c, k: -_loss(a + b - c, k)), "opposite sign"),
}


def test_iwae_checker_accepts_the_reference_a_hand_written_version_and_the_package():
    assert exercises.check_iwae_loss(exercises.iwae_loss).passed
    assert vc.exercises.check_iwae_loss(iwae_loss_by_hand).passed

    def with_the_package(model, x, num_samples):
        q = model.encode(x)
        z = q.rsample((num_samples,))
        return -vc.iwae.iwae_terms(model, x, q, num_samples, z=z).objective.mean()

    assert vc.exercises.check_iwae_loss(with_the_package).passed


@pytest.mark.parametrize("name", sorted(IWAE_MISTAKES))
def test_iwae_checker_names_each_mistake(name):
    function, expected = IWAE_MISTAKES[name]
    assert expected in hint_of(vc.exercises.check_iwae_loss(function))


def test_iwae_checker_refuses_right_values_without_a_gradient_for_the_encoder():
    def detached(model, x, num_samples):
        return iwae_loss_by_hand(model, x, num_samples).detach()

    hint = hint_of(vc.exercises.check_iwae_loss(detached))
    assert "no gradient reaches the encoder" in hint


def test_iwae_checker_spots_the_stub_and_a_non_function():
    result = vc.exercises.check_iwae_loss(stub)
    assert not result.passed and result.kind == "not_implemented"
    with pytest.raises(TypeError, match="expects your function itself"):
        vc.exercises.check_iwae_loss(1.0)


# Exercise 2: signal_to_noise(grads) -> [P].

SNR_MISTAKES = {
    "no absolute value": (lambda g: g.mean(0) / g.std(0), "take the absolute value of the mean"),
    "mean of |g|": (lambda g: g.abs().mean(0) / g.std(0), "not the mean of the absolute values"),
    "variance": (lambda g: g.mean(0).abs() / g.var(0), "not by the variance"),
    "standard error": (
        lambda g: g.mean(0).abs() / (g.std(0) / math.sqrt(len(g))),
        "not by the standard error of their mean",
    ),
    "biased std": (lambda g: g.mean(0).abs() / g.std(0, correction=0), "unbiased standard deviation"),
    "wrong dimension": (lambda g: g.mean(1).abs() / g.std(1), "expected shape"),
}


def test_snr_checker_accepts_the_reference_and_the_package():
    assert vc.exercises.check_signal_to_noise(exercises.signal_to_noise).passed
    assert vc.exercises.check_signal_to_noise(vc.iwae.signal_to_noise).passed


@pytest.mark.parametrize("name", sorted(SNR_MISTAKES))
def test_snr_checker_names_each_mistake(name):
    function, expected = SNR_MISTAKES[name]
    assert expected in hint_of(vc.exercises.check_signal_to_noise(function))


def test_snr_checker_spots_the_stub():
    result = vc.exercises.check_signal_to_noise(stub)
    assert not result.passed and result.kind == "not_implemented"
