"""Tests of the chapter 8 checkers: each accepts the reference, names each typical mistake, and spots a stub."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from exercise_helpers import stub
from torch.distributions import Normal

import vaecourse as vc
from vaecourse.exercises import chapter8 as exercises

# Exercise 1: mixture_log_prob(z, logits, loc, scale) -> [B].


def _terms(z, loc, scale):
    return Normal(loc, scale).log_prob(z[:, None, :])  # [B, K, d]


def mixture_by_hand(z, logits, loc, scale):
    return torch.logsumexp(F.log_softmax(logits, -1) + _terms(z, loc, scale).sum(-1), dim=-1)


def _mixture(components, weights):
    return torch.logsumexp(weights + components, dim=-1)


MIXTURE_MISTAKES = {
    "per-dimension logsumexp": (
        lambda z, w, m, s: torch.logsumexp(F.log_softmax(w, -1)[:, None] + _terms(z, m, s), dim=1).sum(-1),
        "you took the logsumexp over the components for each coordinate",
    ),
    "variance for scale": (
        lambda z, w, m, s: _mixture(_terms(z, m, s**2).sum(-1), F.log_softmax(w, -1)),
        "you passed σ² (scale**2) where σ belongs",
    ),
    "square root of scale": (
        lambda z, w, m, s: _mixture(_terms(z, m, s.sqrt()).sum(-1), F.log_softmax(w, -1)),
        "you took its square root",
    ),
    "no log-softmax": (
        lambda z, w, m, s: _mixture(_terms(z, m, s).sum(-1), w),
        "the logits are not log-weights",
    ),
    "softmax outside the log": (
        lambda z, w, m, s: _mixture(_terms(z, m, s).sum(-1), F.softmax(w, -1)),
        "the weights enter in log space",
    ),
    "uniform weights": (
        lambda z, w, m, s: _mixture(_terms(z, m, s).sum(-1), torch.full_like(w, -math.log(len(w)))),
        "you gave every component the weight 1/K",
    ),
    "max over components": (
        lambda z, w, m, s: (F.log_softmax(w, -1) + _terms(z, m, s).sum(-1)).max(-1).values,
        "you kept the largest term only",
    ),
    "jensen": (
        lambda z, w, m, s: (F.softmax(w, -1) * _terms(z, m, s).sum(-1)).sum(-1),
        "that is a lower bound (Jensen)",
    ),
    "exp underflows": (
        lambda z, w, m, s: torch.log((F.softmax(w, -1) * _terms(z, m, s).sum(-1).exp()).sum(-1)),
        "stay in log space",
    ),
}


def _rename_mixture(function):
    return lambda z, logits, loc, scale: function(z, logits, loc, scale)


def test_mixture_checker_accepts_the_reference_the_package_prior_and_a_hand_written_version():
    assert exercises.check_mixture_log_prob(exercises.mixture_log_prob).passed
    assert vc.exercises.check_mixture_log_prob(mixture_by_hand).passed

    def with_the_package(z, logits, loc, scale):
        prior = vc.priors.MixtureOfGaussians(loc.shape[-1], num_components=len(logits), min_scale=0.0).double()
        with torch.no_grad():
            prior.logits.copy_(logits)
            prior.loc.copy_(loc)
            prior.raw_scale.copy_(torch.log(torch.expm1(scale)))  # the inverse of the softplus
        return prior().log_prob(z)

    assert exercises.check_mixture_log_prob(with_the_package).passed


@pytest.mark.parametrize("name", MIXTURE_MISTAKES)
def test_mixture_checker_names_each_mistake(name):
    function, expected = MIXTURE_MISTAKES[name]
    result = exercises.check_mixture_log_prob(_rename_mixture(function))
    assert not result.passed
    assert expected in " ".join([result.message, *result.details]), repr(result)


def test_mixture_checker_reports_a_stub_a_wrong_shape_and_a_result_passed_by_mistake():
    assert "not implemented yet" in exercises.check_mixture_log_prob(stub).message
    per_component = exercises.check_mixture_log_prob(
        lambda z, logits, loc, scale: F.log_softmax(logits, -1) + _terms(z, loc, scale).sum(-1)
    )
    assert not per_component.passed and "expected shape" in per_component.message
    with pytest.raises(TypeError, match="your function itself"):
        exercises.check_mixture_log_prob(torch.zeros(3))


def test_the_per_dimension_mixture_is_a_different_density():
    # the slip the checker names is not a rounding matter: it is a product of 1-D mixtures with K^d modes
    case = exercises._mixture_cases()[0]
    wrong = _rename_mixture(MIXTURE_MISTAKES["per-dimension logsumexp"][0])(**case)
    assert (wrong - exercises.mixture_log_prob(**case)).abs().max() > 0.1


# Exercise 2: flow_log_prob(z, transform) -> [B].


def flow_by_hand(z, transform):
    eps, log_abs_det = transform(z)
    return -0.5 * (eps**2).sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi) + log_abs_det


def _base(eps):
    return Normal(0.0, 1.0).log_prob(eps).sum(-1)


FLOW_MISTAKES = {
    "log-det sign": (lambda z, t: _base(t(z)[0]) - t(z)[1], "the log-determinant has the wrong sign"),
    "no base density": (lambda z, t: t(z)[1], "the base density is missing"),
    "no log-det": (lambda z, t: _base(t(z)[0]), "the log-determinant is missing"),
    "base at z": (lambda z, t: _base(z) + t(z)[1], "the base density is evaluated at z"),
    "no 2π": (lambda z, t: -0.5 * (t(z)[0] ** 2).sum(-1) + t(z)[1], "lacks its constant −(d/2) log 2π"),
}


def test_flow_checker_accepts_the_reference_and_a_hand_written_version():
    assert exercises.check_flow_log_prob(exercises.flow_log_prob).passed
    assert vc.exercises.check_flow_log_prob(flow_by_hand).passed


@pytest.mark.parametrize("name", FLOW_MISTAKES)
def test_flow_checker_names_each_mistake(name):
    function, expected = FLOW_MISTAKES[name]
    result = exercises.check_flow_log_prob(lambda z, transform: function(z, transform))
    assert not result.passed
    assert expected in " ".join([result.message, *result.details]), repr(result)


def test_flow_checker_reports_a_stub_and_a_per_coordinate_answer():
    assert "not implemented yet" in exercises.check_flow_log_prob(stub).message
    per_coordinate = exercises.check_flow_log_prob(
        lambda z, transform: Normal(0.0, 1.0).log_prob(transform(z)[0]) + transform(z)[1][..., None]
    )
    assert not per_coordinate.passed and "expected shape" in per_coordinate.message


def test_the_reference_flow_log_prob_is_zuko_log_prob_for_the_package_flow_prior():
    torch.manual_seed(0)
    prior = vc.priors.FlowPrior(3, transforms=2, hidden_dims=(16,))
    distribution = prior()
    z = torch.randn(10, 3)
    by_hand = exercises.flow_log_prob(z, distribution.transform.call_and_ladj)
    assert torch.allclose(by_hand, distribution.log_prob(z), atol=1e-5)


def test_the_flow_cases_are_normalised_densities_in_one_dimension_by_quadrature():
    # the nonlinear map of the cases is a bijection: its density by the change of variables integrates to one
    transform = exercises._tanh_bump(torch.tensor([1.5], dtype=torch.float64))
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64)[:, None]
    density = exercises.flow_log_prob(grid, transform).exp()
    assert abs(torch.trapezoid(density, grid[:, 0]).item() - 1) < 1e-6
