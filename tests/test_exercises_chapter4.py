"""Tests of the checkers of chapter 4: each accepts a correct answer, names each typical mistake, and says when
the exercise is not done yet."""

from __future__ import annotations

import pytest
import torch
from exercise_helpers import hint_of, stub
from torch.distributions import Independent, MultivariateNormal, Normal

from vaecourse import amortized
from vaecourse.exercises import chapter4 as exercises

# --- The approximation and the amortization gap ---------------------------------------------------------------


def gap_solution(log_px, best_elbo, amortized_elbo):
    return torch.stack([(log_px - best_elbo).mean(), (best_elbo - amortized_elbo).mean()])


def test_gap_checker_accepts_the_solution_and_the_package_function():
    assert exercises.check_amortization_gap(gap_solution).passed

    def with_the_package(log_px, best_elbo, amortized_elbo):
        gaps = amortized.inference_gaps(log_px, best_elbo, amortized_elbo)
        return torch.stack([gaps.approximation.mean(), gaps.amortization.mean()])

    assert exercises.check_amortization_gap(with_the_package).passed


def test_gap_checker_says_not_implemented_for_the_stub():
    result = exercises.check_amortization_gap(stub)
    assert not result.passed and "not implemented yet" in result.message


def test_gap_cases_are_ordered_like_real_gaps():
    """log p(x) ≥ best ELBO ≥ amortized ELBO, and the two gaps differ in size, so that a swap is visible."""
    for seed in (1, 2, 3):
        case = exercises._gap_case(4, seed)
        approximation = case["log_px"] - case["best_elbo"]
        amortization = case["best_elbo"] - case["amortized_elbo"]
        assert bool((approximation > 0).all()) and bool((amortization > approximation).all())


def _means(first, second):
    return torch.stack([first.mean(), second.mean()])


@pytest.mark.parametrize(
    "mistake, expected_hint",
    [
        (lambda log_px, best_elbo, amortized_elbo: _means(best_elbo - amortized_elbo, log_px - best_elbo), "order"),
        (lambda log_px, best_elbo, amortized_elbo: _means(log_px - best_elbo, log_px - amortized_elbo), "whole gap"),
        (
            lambda log_px, best_elbo, amortized_elbo: _means(log_px - amortized_elbo, best_elbo - amortized_elbo),
            "the approximation gap is log p(x) − best ELBO",
        ),
        (
            lambda log_px, best_elbo, amortized_elbo: _means(best_elbo - log_px, amortized_elbo - best_elbo),
            "both gaps have the wrong sign",
        ),
        (
            lambda log_px, best_elbo, amortized_elbo: _means(best_elbo - log_px, best_elbo - amortized_elbo),
            "approximation gap has the wrong sign",
        ),
        (
            lambda log_px, best_elbo, amortized_elbo: _means(log_px - best_elbo, amortized_elbo - best_elbo),
            "amortization gap has the wrong sign",
        ),
        (
            lambda log_px, best_elbo, amortized_elbo: torch.stack(
                [(log_px - best_elbo).sum(), (best_elbo - amortized_elbo).sum()]
            ),
            "summed",
        ),
        (
            lambda log_px, best_elbo, amortized_elbo: torch.stack([log_px - best_elbo, best_elbo - amortized_elbo]),
            "not one value per example",
        ),
        (
            lambda log_px, best_elbo, amortized_elbo: (
                (log_px - best_elbo).mean(),
                (best_elbo - amortized_elbo).mean(),
            ),
            "torch.stack",
        ),
        (
            lambda log_px, best_elbo, amortized_elbo: _means(log_px - best_elbo, best_elbo - amortized_elbo) + 0.5,
            "same constant",
        ),
    ],
    ids=["order", "total", "total-first", "signs", "sign-1", "sign-2", "sum", "per-example", "tuple", "offset"],
)
def test_gap_checker_names_each_typical_mistake(mistake, expected_hint):
    assert expected_hint in hint_of(exercises.check_amortization_gap(mistake))


# --- From the encoder's raw output to q ---------------------------------------------------------------------------


def output_solution(output):
    mean, log_variance = output.chunk(2, dim=-1)
    return Independent(Normal(mean, torch.exp(0.5 * log_variance)), 1)


def test_output_checker_accepts_the_solution_the_package_and_an_equivalent_multivariate_normal():
    assert exercises.check_encoder_output(output_solution).passed
    assert exercises.check_encoder_output(amortized.encoder_distribution).passed

    def full(output):
        mean, log_variance = output.chunk(2, dim=-1)
        return MultivariateNormal(mean, scale_tril=torch.diag_embed(torch.exp(0.5 * log_variance)))

    assert exercises.check_encoder_output(full).passed


def test_output_checker_says_not_implemented_for_the_stub():
    result = exercises.check_encoder_output(lambda output: stub())
    assert not result.passed and "not implemented yet" in result.message


def test_output_cases_have_negative_log_variances_and_several_batch_shapes():
    cases = exercises._encoder_cases()
    assert {case["output"].ndim for case in cases} == {2, 3}
    for case in cases:
        log_variance = case["output"].chunk(2, dim=-1)[1]
        assert bool((log_variance < 0).any()) and bool((log_variance.abs() > 0.4).all())


def _gaussian(mean, std):
    return Independent(Normal(mean, std), 1)


def _halves(output):
    return output.chunk(2, dim=-1)


@pytest.mark.parametrize(
    "mistake, expected_hint",
    [
        (lambda output: _gaussian(_halves(output)[0], torch.exp(_halves(output)[1])), "variance σ²"),
        (lambda output: _gaussian(*_halves(output)), "Normal refused a scale"),
        (
            lambda output: Independent(Normal(_halves(output)[0], _halves(output)[1], validate_args=False), 1),
            "not positive",
        ),
        (lambda output: _gaussian(_halves(output)[0], _halves(output)[1].abs()), "|log σ²|"),
        (lambda output: _gaussian(_halves(output)[0], torch.nn.functional.softplus(_halves(output)[1])), "softplus"),
        (lambda output: _gaussian(_halves(output)[0], torch.exp(-0.5 * _halves(output)[1])), "sign of the exponent"),
        (lambda output: _gaussian(_halves(output)[1], torch.exp(0.5 * _halves(output)[0])), "swapped"),
        (lambda output: _gaussian(output[..., 0::2], torch.exp(0.5 * output[..., 1::2])), "every other number"),
        (lambda output: Normal(_halves(output)[0], torch.exp(0.5 * _halves(output)[1])), "Independent"),
        (lambda output: _gaussian(output.chunk(2, dim=0)[0], output.chunk(2, dim=0)[1].exp()), "last dimension"),
        (lambda output: _halves(output), "torch.distributions object"),
        (lambda output: _gaussian(_halves(output)[0] + 1, torch.exp(0.5 * _halves(output)[1])), "first half"),
        (lambda output: _gaussian(_halves(output)[0], 2 * torch.exp(0.5 * _halves(output)[1])), "last half"),
    ],
    ids=[
        "variance",
        "log-variance",
        "unvalidated",
        "abs",
        "softplus",
        "minus",
        "swap",
        "interleaved",
        "no-independent",
        "dim-0",
        "parameters",
        "mean",
        "scale",
    ],
)
def test_output_checker_names_each_typical_mistake(mistake, expected_hint):
    assert expected_hint in hint_of(exercises.check_encoder_output(mistake))


def test_output_checker_reports_the_learners_line_for_an_error():
    def broken(output):
        return output.undefined_method()

    hint = hint_of(exercises.check_encoder_output(broken))
    assert "AttributeError" in hint and "line" in hint and "case 1 of 3" in hint


def test_output_checker_compares_log_densities_too():
    class Shifted(Independent):
        def log_prob(self, value):
            return super().log_prob(value) + 1.0  # right parameters, wrong density

    def shifted(output):
        mean, log_variance = output.chunk(2, dim=-1)
        return Shifted(Normal(mean, torch.exp(0.5 * log_variance)), 1)

    assert "log_prob" in hint_of(exercises.check_encoder_output(shifted))
