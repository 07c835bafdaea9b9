"""Tests of the chapter 9 checkers: each accepts the reference, names each typical mistake, and spots a stub."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from exercise_helpers import hint_of, stub

import vaecourse as vc
from vaecourse.exercises import chapter9 as exercises

# Exercise 1: gaussian_log_likelihood(x, loc, sigma) -> [B].


def _sigma(sigma, loc):
    return torch.as_tensor(sigma, dtype=loc.dtype).expand_as(loc)


def gaussian_by_hand(x, loc, sigma):
    sigma = _sigma(sigma, loc)
    return (-((x - loc) ** 2) / (2 * sigma**2) - sigma.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_from_mse(x, loc, sigma):
    # the chapter's identity, with one σ per pixel: MSE weighted by 1/(2σ_j²), plus the normalising constant
    sigma = _sigma(sigma, loc)
    weighted = (F.mse_loss(loc, x, reduction="none") / (2 * sigma**2)).sum(-1)
    return -weighted - sigma.log().sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


def _part(x, loc, sigma, divide, log_term=True, constant=True, reduce="sum"):
    sigma = _sigma(sigma, loc)
    values = -((x - loc) ** 2) / divide(sigma)
    values = values - (sigma.log() if log_term else 0) - (0.5 * math.log(2 * math.pi) if constant else 0)
    return values.sum(-1) if reduce == "sum" else values.mean(-1)


GAUSSIAN_MISTAKES = {
    "variance for sigma": (
        lambda x, m, s: gaussian_by_hand(x, m, _sigma(s, m) ** 2),
        "you used σ² where σ belongs",
    ),
    "sqrt of sigma": (lambda x, m, s: gaussian_by_hand(x, m, _sigma(s, m).sqrt()), "you took it for the variance σ²"),
    "mean over pixels": (
        lambda x, m, s: _part(x, m, s, lambda sigma: 2 * sigma**2, reduce="mean"),
        "you averaged over the pixels",
    ),
    "squared error only": (lambda x, m, s: -((x - m) ** 2).sum(-1), "that is the summed squared error alone"),
    "no factor 2": (lambda x, m, s: _part(x, m, s, lambda sigma: sigma**2), "divided by σ², not by 2σ²"),
    "no log sigma": (
        lambda x, m, s: _part(x, m, s, lambda sigma: 2 * sigma**2, log_term=False),
        "the term −Σ_j log σ_j is missing",
    ),
    "no 2π": (lambda x, m, s: _part(x, m, s, lambda sigma: 2 * sigma**2, constant=False), "off by the same constant"),
}


def test_gaussian_checker_accepts_the_reference_a_hand_written_version_and_the_mse_identity():
    assert exercises.check_gaussian_log_likelihood(exercises.gaussian_log_likelihood).passed
    assert vc.exercises.check_gaussian_log_likelihood(gaussian_by_hand).passed
    assert vc.exercises.check_gaussian_log_likelihood(gaussian_from_mse).passed


@pytest.mark.parametrize("name", GAUSSIAN_MISTAKES)
def test_gaussian_checker_names_each_mistake(name):
    function, expected = GAUSSIAN_MISTAKES[name]
    result = exercises.check_gaussian_log_likelihood(lambda x, loc, sigma: function(x, loc, sigma))
    assert expected in hint_of(result), repr(result)


def test_gaussian_checker_reports_a_stub_a_wrong_shape_and_a_result_passed_by_mistake():
    assert "not implemented yet" in exercises.check_gaussian_log_likelihood(stub).message
    per_pixel = exercises.check_gaussian_log_likelihood(
        lambda x, loc, sigma: torch.distributions.Normal(loc, _sigma(sigma, loc)).log_prob(x)
    )
    assert not per_pixel.passed and "expected shape" in per_pixel.message
    with pytest.raises(TypeError, match="your function itself"):
        exercises.check_gaussian_log_likelihood(torch.zeros(3))


def test_the_gaussian_cases_tell_sigma_from_its_square_and_root():
    for case in exercises._gaussian_cases():
        sigma = _sigma(case["sigma"], case["loc"])
        assert bool(((sigma - sigma**2).abs() > 0.01).all()) and bool(((sigma - sigma.sqrt()).abs() > 0.01).all())


# Exercise 2: free_bits_kl(kl, free_bits) -> [].

FREE_BITS_MISTAKES = {
    "floor per example": (lambda kl, f: kl.clamp(min=f).mean(0).sum(), "before the mean over the batch"),
    "floor per example, summed first": (lambda kl, f: kl.clamp(min=f).sum(-1).mean(), "before the mean over the batch"),
    "floor on the total": (lambda kl, f: kl.sum(-1).mean().clamp(min=f), "a floor on the total KL binds only"),
    "floor d·λ on the total": (
        lambda kl, f: kl.sum(-1).mean().clamp(min=f * kl.shape[-1]),
        "a floor on the total KL binds only",
    ),
    "minimum": (lambda kl, f: kl.mean(0).clamp(max=f).sum(), "the floor is a maximum"),
    "hinge": (lambda kl, f: (kl.mean(0) - f).clamp(min=0).sum(), "you subtracted λ"),
    "no floor": (lambda kl, f: kl.mean(0).sum(), "the floor λ is missing or never binds"),
}


def free_bits_by_hand(kl, free_bits):
    return torch.maximum(kl.mean(0), torch.full_like(kl[0], free_bits)).sum()


def test_free_bits_checker_accepts_the_reference_and_a_hand_written_version():
    assert exercises.check_free_bits_kl(exercises.free_bits_kl).passed
    assert vc.exercises.check_free_bits_kl(free_bits_by_hand).passed


@pytest.mark.parametrize("name", FREE_BITS_MISTAKES)
def test_free_bits_checker_names_each_mistake(name):
    function, expected = FREE_BITS_MISTAKES[name]
    result = exercises.check_free_bits_kl(lambda kl, free_bits: function(kl, free_bits))
    assert expected in hint_of(result), repr(result)


def test_free_bits_checker_reports_a_stub_and_a_per_dimension_answer():
    assert "not implemented yet" in exercises.check_free_bits_kl(stub).message
    per_dimension = exercises.check_free_bits_kl(lambda kl, free_bits: kl.mean(0).clamp(min=free_bits))
    assert not per_dimension.passed and "expected shape" in per_dimension.message


def test_the_free_bits_cases_have_dimensions_below_the_floor_only_on_average():
    # so that flooring each example differs from flooring the batch mean
    case = exercises._free_bits_cases()[0]
    kl, floor = case["kl"], case["free_bits"]
    below_on_average = kl.mean(0) < floor
    assert below_on_average.any() and (~below_on_average).any()
    assert bool(((kl < floor) & ~below_on_average).any())
