"""Tests of the chapter 7 checkers: each accepts the reference, names each typical mistake, and spots a stub."""

from __future__ import annotations

import math

import pytest
import torch
from exercise_helpers import stub
from torch.distributions import Independent, Normal

from vaecourse.exercises import chapter7 as exercises
from vaecourse.surgery import AggregatePosterior


def _components(z, loc, scale):
    return Normal(loc, scale).log_prob(z[:, None, :]).sum(-1)  # [m, n]


# Exercise 1: log_q_avg(z, loc, scale) -> [m].


def log_q_avg(z, loc, scale):
    return torch.logsumexp(_components(z, loc, scale), dim=1) - math.log(len(loc))


LOG_Q_AVG_MISTAKES = {
    "no log n": (lambda z, loc, scale: torch.logsumexp(_components(z, loc, scale), dim=1), "log n = log"),
    "per coordinate": (
        lambda z, loc, scale: (
            torch.logsumexp(Normal(loc, scale).log_prob(z[:, None, :]), dim=1) - math.log(len(loc))
        ).sum(-1),
        "for each coordinate separately, then summed",
    ),
    "per coordinate, no log n": (
        lambda z, loc, scale: torch.logsumexp(Normal(loc, scale).log_prob(z[:, None, :]), dim=1).sum(-1),
        "and −log n is missing",
    ),
    "variance for scale": (lambda z, loc, scale: log_q_avg(z, loc, scale**2), "You passed σ², the variance"),
    "square root": (lambda z, loc, scale: log_q_avg(z, loc, scale.sqrt()), "do not take its square root"),
    "mean of logs": (lambda z, loc, scale: _components(z, loc, scale).mean(-1), "averaged the log-densities"),
    "sum of logs": (lambda z, loc, scale: _components(z, loc, scale).sum(-1), "summed the log-densities"),
}


def test_log_q_avg_checker_accepts_the_reference_and_the_package():
    assert exercises.check_log_q_avg(log_q_avg).passed
    assert exercises.check_log_q_avg(exercises.log_q_avg).passed

    def with_the_package(z, loc, scale):
        return AggregatePosterior(Independent(Normal(loc, scale), 1), chunk_size=2).log_prob(z)

    assert exercises.check_log_q_avg(with_the_package).passed


@pytest.mark.parametrize("mistake", LOG_Q_AVG_MISTAKES.keys())
def test_log_q_avg_checker_names_each_mistake(mistake):
    function, hint = LOG_Q_AVG_MISTAKES[mistake]
    result = exercises.check_log_q_avg(function)
    assert not result.passed
    assert hint in "\n".join(result.details), repr(result)


def test_log_q_avg_checker_spots_underflow_a_stub_and_a_non_function():
    def exponentiated(z, loc, scale):
        return (_components(z, loc, scale) * 1e3).exp().mean(-1).log() / 1e3  # underflows to log 0

    result = exercises.check_log_q_avg(exponentiated)
    assert not result.passed
    assert "not yet" in result.message or "differ" in result.message
    assert "not implemented yet" in repr(exercises.check_log_q_avg(stub))
    result = exercises.check_log_q_avg(lambda z, loc, scale: log_q_avg(z, loc, scale).mean())
    assert not result.passed and "expected shape" in result.message
    with pytest.raises(TypeError, match="expects your function itself"):
        exercises.check_log_q_avg(1.0)


def test_log_q_avg_reference_matches_the_package():
    case = exercises._log_q_avg_cases()[1]
    q_avg = AggregatePosterior(Independent(Normal(case["loc"], case["scale"]), 1))
    torch.testing.assert_close(exercises.log_q_avg(**case), q_avg.log_prob(case["z"]))


# Exercise 2: mutual_information(z, loc, scale) -> a number.


def mutual_information(z, loc, scale):
    own = Normal(loc, scale).log_prob(z).sum(-1)
    return (own - log_q_avg(z, loc, scale)).mean()


def _own(z, loc, scale):
    return Normal(loc, scale).log_prob(z).sum(-1)


def _leave_one_out(z, loc, scale, log_count):
    n = len(loc)
    others = _components(z, loc, scale).masked_fill(torch.eye(n, dtype=torch.bool), -math.inf)
    return (_own(z, loc, scale) - (torch.logsumexp(others, dim=1) - log_count(n))).mean()


MI_MISTAKES = {
    "no log n": (
        lambda z, loc, scale: (_own(z, loc, scale) - torch.logsumexp(_components(z, loc, scale), dim=1)).mean(),
        "log n = log",
    ),
    "sign": (lambda z, loc, scale: -mutual_information(z, loc, scale), "the sign is reversed"),
    "mean of logs inside q_avg": (
        lambda z, loc, scale: (_own(z, loc, scale) - _components(z, loc, scale).mean(-1)).mean(),
        "inside q_avg you averaged the log-densities",
    ),
    "mean of ratios": (
        lambda z, loc, scale: (_own(z, loc, scale) - log_q_avg(z, loc, scale)).exp().mean().log(),
        "you averaged the density ratios",
    ),
    "mean of densities": (
        lambda z, loc, scale: _own(z, loc, scale).exp().mean().log() - log_q_avg(z, loc, scale).exp().mean().log(),
        "you averaged the densities over the examples before taking logs",
    ),
    "own component left out": (
        lambda z, loc, scale: _leave_one_out(z, loc, scale, lambda n: math.log(n - 1)),
        "you left the example's own component out of q_avg",
    ),
    "own component left out, log n": (
        lambda z, loc, scale: _leave_one_out(z, loc, scale, math.log),
        "you left the example's own component out of the sum",
    ),
    "variance for scale": (
        lambda z, loc, scale: mutual_information(z, loc, scale**2),
        "you passed σ², the variance",
    ),
    "sum over examples": (
        lambda z, loc, scale: (_own(z, loc, scale) - log_q_avg(z, loc, scale)).sum(),
        "you summed over the examples",
    ),
}


def test_mutual_information_checker_accepts_the_reference():
    assert exercises.check_mutual_information(mutual_information).passed
    assert exercises.check_mutual_information(exercises.mutual_information).passed


@pytest.mark.parametrize("mistake", MI_MISTAKES.keys())
def test_mutual_information_checker_names_each_mistake(mistake):
    function, hint = MI_MISTAKES[mistake]
    result = exercises.check_mutual_information(function)
    assert not result.passed
    assert hint in "\n".join(result.details), repr(result)


def test_mutual_information_checker_shape_stub_and_non_function():
    result = exercises.check_mutual_information(
        lambda z, loc, scale: _own(z, loc, scale) - log_q_avg(z, loc, scale)  # per example, not averaged
    )
    assert not result.passed and "return one number" in result.details[0], repr(result)
    assert "not implemented yet" in repr(exercises.check_mutual_information(stub))
    with pytest.raises(TypeError, match="expects your function itself"):
        exercises.check_mutual_information(mutual_information(**exercises._mutual_information_cases()[0]))


def test_mutual_information_reference_is_between_zero_and_log_n_on_average():
    """I_q ≤ log n exactly; the one-draw estimate obeys it on average (many draws from the same posteriors)."""
    case = exercises._mutual_information_cases()[1]
    loc, scale = case["loc"], case["scale"]
    torch.manual_seed(0)
    estimates = torch.stack(
        [exercises.mutual_information(loc + scale * torch.randn_like(loc), loc, scale) for _ in range(200)]
    )
    error = estimates.std().item() / math.sqrt(len(estimates))
    assert 0 < estimates.mean().item() <= math.log(len(loc)) + 4 * error
