"""Tests of vaecourse.exercises.chapter2: each checker accepts correct answers, names each typical bug, and
says "not implemented yet" for the stub."""

from __future__ import annotations

import math

import pytest
import torch

from vaecourse.exercises.chapter2 import (
    check_effective_sample_size,
    check_log_marginal_naive,
    check_log_mean_exp,
)


def verdict(result) -> str:
    """The message and the hints of a checker's result, as one string."""
    return " ".join([result.message, *result.details])


def assert_rejected(result, *phrases):
    assert not result.passed, result
    text = verdict(result)
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in: {text}"


# --- exercise 1: log-mean-exp ------------------------------------------------------------------------------------


def log_mean_exp(log_weights):
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def log_mean_exp_by_max_shift(log_weights):
    largest = log_weights.max(dim=0).values  # [B]
    log_weights -= largest  # in place: the checker must protect its own copy
    return largest + log_weights.exp().mean(dim=0).log()


def test_log_mean_exp_accepts_correct_answers():
    assert check_log_mean_exp(log_mean_exp).passed
    assert check_log_mean_exp(log_mean_exp_by_max_shift).passed


def test_log_mean_exp_reports_a_stub_as_not_implemented():
    def stub(log_weights):
        raise NotImplementedError  # your code here

    assert_rejected(check_log_mean_exp(stub), "not implemented yet")


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (lambda log_weights: log_weights.exp().mean(0).log(), ["inf or nan", "logsumexp"]),
        (lambda log_weights: torch.logsumexp(log_weights, 0), ["log K", "K = 5"]),
        (lambda log_weights: torch.logsumexp(log_weights, 0) + math.log(log_weights.shape[0]), ["+2 log K"]),
        (lambda log_weights: log_weights.mean(0), ["averaged the logs", "Jensen"]),
        (
            lambda log_weights: torch.logsumexp(log_weights, 1) - math.log(log_weights.shape[1]),
            ["expected shape (3,), got (5,)", "reduce over the samples"],
        ),
        (  # subtracting one global maximum still underflows where columns differ by 1000
            lambda log_weights: log_weights.max() + (log_weights - log_weights.max()).exp().mean(0).log(),
            ["inf or nan", "case 4"],
        ),
        (lambda log_weights: -log_mean_exp(log_weights), ["opposite sign"]),
    ],
    ids=["exp-then-log", "no-minus-log-K", "plus-log-K", "mean-of-logs", "wrong-dim", "global-max", "sign"],
)
def test_log_mean_exp_names_each_typical_bug(wrong, phrases):
    assert_rejected(check_log_mean_exp(wrong), *phrases)


# --- exercise 2: the naive estimator from given prior samples -------------------------------------------------------


def log_marginal_naive(model, x, z):
    return log_mean_exp(model.likelihood(z[:, None, :]).log_prob(x))


def test_log_marginal_naive_accepts_the_reference_and_agrees_with_the_package():
    assert check_log_marginal_naive(log_marginal_naive).passed

    def with_the_package_in_the_loop(model, x, z):  # the same average, written with an explicit loop
        terms = torch.stack([model.likelihood(z_k).log_prob(x) for z_k in z])  # [K, B]
        return torch.logsumexp(terms, 0) - math.log(len(z))

    assert check_log_marginal_naive(with_the_package_in_the_loop).passed


def test_log_marginal_naive_reports_a_stub_as_not_implemented():
    def stub(model, x, z):
        raise NotImplementedError  # your code here

    assert_rejected(check_log_marginal_naive(stub), "not implemented yet")


def _log_px_z(model, x, z):
    return model.likelihood(z[:, None, :]).log_prob(x)  # [K, B]


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (lambda model, x, z: _log_px_z(model, x, z).exp().mean(0).log(), ["inf or nan", "case 2"]),
        (lambda model, x, z: _log_px_z(model, x, z).mean(0), ["averaged the logs", "Jensen"]),
        (
            lambda model, x, z: log_mean_exp(_log_px_z(model, x, z) + model.prior.log_prob(z)[:, None]),
            ["multiplied by p(z_k)", "already accounted for"],
        ),
        (lambda model, x, z: torch.logsumexp(_log_px_z(model, x, z), 0), ["log K", "K = 7"]),
        (lambda model, x, z: log_mean_exp(model.likelihood(z).log_prob(x)), ["raised ValueError"]),
        (lambda model, x, z: log_mean_exp(_log_px_z(model, x, z).T), ["expected shape (4,), got (7,)"]),
    ],
    ids=["exp-then-log", "mean-of-logs", "added-prior", "no-minus-log-K", "no-broadcasting", "wrong-dim"],
)
def test_log_marginal_naive_names_each_typical_bug(wrong, phrases):
    assert_rejected(check_log_marginal_naive(wrong), *phrases)


# --- exercise 3: the effective sample size ------------------------------------------------------------------------


def effective_sample_size(log_weights):
    return torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0))


def effective_sample_size_normalised(log_weights):
    return 1 / torch.softmax(log_weights, dim=0).square().sum(0)


def test_effective_sample_size_accepts_correct_answers():
    assert check_effective_sample_size(effective_sample_size).passed
    assert check_effective_sample_size(effective_sample_size_normalised).passed


def test_effective_sample_size_reports_a_stub_as_not_implemented():
    def stub(log_weights):
        raise NotImplementedError  # your code here

    assert_rejected(check_effective_sample_size(stub), "not implemented yet")


@pytest.mark.parametrize(
    "wrong, phrases",
    [
        (lambda log_weights: log_weights.exp().sum(0) ** 2 / (2 * log_weights).exp().sum(0), ["inf or nan"]),
        (lambda log_weights: 1 / effective_sample_size(log_weights), ["reciprocal"]),
        (lambda log_weights: 1 / torch.softmax(log_weights, 0).sum(0), ["every value is 1", "1 / Σ w̃_k²"]),
        (
            lambda log_weights: effective_sample_size(log_weights.T),
            ["expected shape (3,), got (6,)", "reduce over the samples"],
        ),
    ],
    ids=["exp-directly", "reciprocal", "unsquared", "wrong-dim"],
)
def test_effective_sample_size_names_each_typical_bug(wrong, phrases):
    assert_rejected(check_effective_sample_size(wrong), *phrases)


def test_a_bug_no_diagnosis_knows_is_still_rejected():
    assert_rejected(
        check_effective_sample_size(lambda log_weights: effective_sample_size(log_weights) + 0.5),
        "differ from the reference",
    )
