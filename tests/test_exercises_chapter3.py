"""Tests of the checkers of chapter 3: each accepts a correct answer, names each typical mistake, and says when
the exercise is not done yet."""

from __future__ import annotations

import math

import pytest
import torch
from exercise_helpers import hint_of, stub
from torch.distributions import MultivariateNormal

from vaecourse.exercises import chapter3 as exercises

# --- The Monte Carlo ELBO ------------------------------------------------------------------------------------


def elbo_solution(log_px_z, log_pz, log_qz):
    return (log_px_z + log_pz - log_qz).mean(dim=0)


def test_elbo_checker_accepts_the_mean_of_the_log_weights():
    result = exercises.check_elbo_monte_carlo(elbo_solution)
    assert result.passed and "correct on all 3 cases" in repr(result)


def test_elbo_checker_accepts_an_equivalent_formula_from_the_distributions_terms():
    def by_terms(log_px_z, log_pz, log_qz):  # E_q[log p(x|z)] − E_q[log q(z) − log p(z)]: reconstruction − KL
        return log_px_z.mean(0) - (log_qz - log_pz).mean(0)

    assert exercises.check_elbo_monte_carlo(by_terms).passed


def test_elbo_checker_says_not_implemented_for_the_stub():
    result = exercises.check_elbo_monte_carlo(stub)
    assert not result.passed and "not implemented yet" in result.message


@pytest.mark.parametrize(
    "mistake, expected_hint",
    [
        (lambda log_px_z, log_pz, log_qz: (log_px_z + log_pz + log_qz).mean(0), "entropy"),
        (lambda log_px_z, log_pz, log_qz: (log_px_z + log_pz - log_qz).mean(1), "reduce over the samples"),
        (lambda log_px_z, log_pz, log_qz: (log_px_z + log_pz - log_qz).mean(), "one value per example"),
        (
            lambda log_px_z, log_pz, log_qz: torch.logsumexp(log_px_z + log_pz - log_qz, 0) - math.log(len(log_qz)),
            "IWAE bound",
        ),
        (lambda log_px_z, log_pz, log_qz: torch.logsumexp(log_px_z + log_pz - log_qz, 0), "logsumexp"),
        (lambda log_px_z, log_pz, log_qz: (log_px_z + log_pz - log_qz).sum(0), "their mean"),
        (lambda log_px_z, log_pz, log_qz: (log_px_z - log_qz).mean(0), "log p(z) is missing"),
        (lambda log_px_z, log_pz, log_qz: (log_px_z + log_pz).mean(0), "log q(z) is missing"),
        (lambda log_px_z, log_pz, log_qz: (log_qz - log_px_z - log_pz).mean(0), "opposite sign"),
    ],
    ids=["entropy-sign", "wrong-dim", "mean-of-all", "iwae", "logsumexp", "sum", "no-prior", "no-entropy", "minus"],
)
def test_elbo_checker_names_each_typical_mistake(mistake, expected_hint):
    assert expected_hint in hint_of(exercises.check_elbo_monte_carlo(mistake))


def test_elbo_checker_catches_exponentiating_log_densities_that_underflow():
    """Naive log-mean-exp passes the small cases (where it is the IWAE bound and is diagnosed as such) only if
    they are skipped: here it is caught on the case with log p(x|z) ≈ −10⁴, where exp underflows to 0."""
    case = exercises._elbo_case(num_samples=20, batch_size=2, data_dim=200, noise_std=0.05, seed=3)
    assert case["log_px_z"].max() < -1000  # so that exp(·) is 0 in float64

    calls = []

    def naive_iwae(log_px_z, log_pz, log_qz):
        calls.append(len(log_qz))
        if len(calls) < 3:  # the first two cases: pretend to be right, to reach the third
            return elbo_solution(log_px_z, log_pz, log_qz)
        return (log_px_z + log_pz - log_qz).exp().mean(0).log()

    hint = hint_of(exercises.check_elbo_monte_carlo(naive_iwae))
    assert "case 3 of 3" in hint and "underflows" in hint and "needs no exp" in hint


# --- The entropy of a Gaussian -------------------------------------------------------------------------------


def diagonal(scale_tril):
    return scale_tril.diagonal(dim1=-2, dim2=-1)


def entropy_solution(scale_tril):
    d = scale_tril.shape[-1]
    return 0.5 * d * (1 + math.log(2 * math.pi)) + diagonal(scale_tril).log().sum(-1)


def test_entropy_checker_accepts_the_formula_and_torchs_entropy():
    assert exercises.check_gaussian_entropy(entropy_solution).passed

    def torch_entropy(scale_tril):
        return MultivariateNormal(torch.zeros_like(scale_tril[..., 0]), scale_tril=scale_tril).entropy()

    assert exercises.check_gaussian_entropy(torch_entropy).passed


def test_entropy_reference_agrees_with_torch():
    L = exercises._entropy_case(4, 3, seed=0)["scale_tril"]
    expected = MultivariateNormal(torch.zeros(4, 3, dtype=L.dtype), scale_tril=L).entropy()
    torch.testing.assert_close(exercises.gaussian_entropy_reference(L), expected)


def test_entropy_checker_says_not_implemented_for_the_stub():
    assert "not implemented yet" in exercises.check_gaussian_entropy(stub).message


def _constant(d):
    return 0.5 * d * (1 + math.log(2 * math.pi))


@pytest.mark.parametrize(
    "mistake, expected_hint",
    [
        (lambda scale_tril: diagonal(scale_tril).log().sum(-1), "(d/2)(1 + log 2π) is missing"),
        (
            lambda scale_tril: 0.5 * scale_tril.shape[-1] * math.log(2 * math.pi) + diagonal(scale_tril).log().sum(-1),
            "the +d/2 is missing",
        ),
        (lambda scale_tril: _constant(scale_tril.shape[-1]) + 2 * diagonal(scale_tril).log().sum(-1), "doubled"),
        (lambda scale_tril: _constant(scale_tril.shape[-1]) - diagonal(scale_tril).log().sum(-1), "with a plus"),
        (lambda scale_tril: _constant(1) + diagonal(scale_tril).log().sum(-1), "for each of the d dimensions"),
        (lambda scale_tril: _constant(scale_tril.shape[-1]) + scale_tril.log().sum((-2, -1)), "zeros above"),
        (lambda scale_tril: -entropy_solution(scale_tril), "opposite sign"),
    ],
    ids=["no-constant", "no-half-d", "log-det-sigma", "minus-log-det", "constant-once", "log-of-zeros", "negated"],
)
def test_entropy_checker_names_each_typical_mistake(mistake, expected_hint):
    assert expected_hint in hint_of(exercises.check_gaussian_entropy(mistake))


# --- The best mean-field q -----------------------------------------------------------------------------------


def precision_diagonal(posterior_covariance):
    return torch.linalg.inv(posterior_covariance).diagonal(dim1=-2, dim2=-1)


def test_mean_field_checker_accepts_the_precision_formula():
    def solution(posterior_covariance):
        return precision_diagonal(posterior_covariance).rsqrt()

    assert exercises.check_mean_field_scale(solution).passed


def test_mean_field_reference_is_the_minimiser_of_the_kl():
    """The reference σ beats nearby diagonal q's (same mean) in KL(q ‖ p), which it minimises."""
    covariance = exercises._covariance_case(1, 3, seed=0)["posterior_covariance"]
    posterior = MultivariateNormal(torch.zeros(1, 3, dtype=covariance.dtype), covariance_matrix=covariance)
    best = exercises.mean_field_scale_reference(covariance)

    def kl_of(scale):
        q = MultivariateNormal(torch.zeros_like(scale), scale_tril=torch.diag_embed(scale))
        return torch.distributions.kl_divergence(q, posterior).item()

    for j in range(3):
        for factor in (0.95, 1.05):
            moved = best.clone()
            moved[0, j] *= factor
            assert kl_of(moved) > kl_of(best)


def test_mean_field_checker_says_not_implemented_for_the_stub():
    assert "not implemented yet" in exercises.check_mean_field_scale(stub).message


@pytest.mark.parametrize(
    "mistake, expected_hint",
    [
        (lambda posterior_covariance: diagonal(posterior_covariance).sqrt(), "marginal standard deviations"),
        (lambda posterior_covariance: 1 / precision_diagonal(posterior_covariance), "take the square root"),
        (lambda posterior_covariance: diagonal(posterior_covariance), "marginal variances"),
        (lambda posterior_covariance: precision_diagonal(posterior_covariance).sqrt(), "invert them"),
        (lambda posterior_covariance: precision_diagonal(posterior_covariance).rsqrt()[..., 0], "expected shape"),
    ],
    ids=["marginal-std", "variance", "marginal-variance", "precision-sqrt", "shape"],
)
def test_mean_field_checker_names_each_typical_mistake(mistake, expected_hint):
    assert expected_hint in hint_of(exercises.check_mean_field_scale(mistake))


def test_mean_field_checker_does_not_accept_marginal_deviations_although_a_diagonal_case_agrees():
    """On a diagonal posterior both answers coincide; the checker's correlated cases tell them apart."""
    covariance = exercises._covariance_case(2, 3, seed=3, correlated=False)["posterior_covariance"]
    torch.testing.assert_close(exercises.mean_field_scale_reference(covariance), diagonal(covariance).sqrt())
    assert not exercises.check_mean_field_scale(lambda posterior_covariance: diagonal(posterior_covariance).sqrt())
