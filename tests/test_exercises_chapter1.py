"""Tests of vaecourse.exercises.chapter1: each checker accepts correct answers, names each typical bug, and
says "not implemented yet" for the stub; the references agree with the models' own log p(x)."""

from __future__ import annotations

import math

import pytest
import torch

from vaecourse.exercises import chapter1 as latent_models
from vaecourse.exercises.chapter1 import check_log_joint, check_log_marginal_quadrature
from vaecourse.models import LinearGaussian, NonlinearToy

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def verdict(result) -> str:
    """The message and the hints of a checker's result, as one string."""
    return " ".join([result.message, *result.details])


# --- exercise 1: log p(x, z) --------------------------------------------------------------------------------------


def log_joint(model, x, z):
    return model.likelihood(z).log_prob(x) + model.prior.log_prob(z)


def log_joint_by_hand(model, x, z, likelihood_constant=True, prior_constant=True):
    """The Gaussian log-densities typed out, optionally without their −½ log 2π per coordinate."""
    p_x_given_z = model.likelihood(z)
    mean, std = p_x_given_z.mean, p_x_given_z.stddev
    log_px_z = -0.5 * ((x - mean) / std) ** 2 - std.log() - (HALF_LOG_2PI if likelihood_constant else 0.0)
    log_pz = -0.5 * z**2 - (HALF_LOG_2PI if prior_constant else 0.0)
    return log_px_z.sum(-1) + log_pz.sum(-1)


def test_log_joint_accepts_the_reference_and_a_correct_hand_typed_formula():
    assert check_log_joint(log_joint).passed
    assert check_log_joint(log_joint_by_hand).passed


def test_log_joint_reports_a_stub_as_not_implemented():
    def stub(model, x, z):
        raise NotImplementedError  # your code here

    result = check_log_joint(stub)
    assert not result.passed and "not implemented yet" in result.message


@pytest.mark.parametrize(
    "bug, hint",
    [
        (lambda model, x, z: model.likelihood(z).log_prob(x), "the prior term log p(z)"),
        (lambda model, x, z: model.prior.log_prob(z), "the likelihood term log p(x|z)"),
        (lambda model, x, z: model.likelihood(z).log_prob(x) - model.prior.log_prob(z), "one term is subtracted"),
        (lambda model, x, z: model.likelihood(z).log_prob(x) * model.prior.log_prob(z), "logs are multiplied"),
        (lambda model, x, z: log_joint(model, x, z).exp(), "the density p(x, z) itself"),
        (lambda model, x, z: -log_joint(model, x, z), "opposite sign"),
        (lambda model, x, z: log_joint_by_hand(model, x, z, likelihood_constant=False), "−(D/2) log 2π of p(x|z)"),
        (lambda model, x, z: log_joint_by_hand(model, x, z, prior_constant=False), "−(d/2) log 2π of p(z)"),
        (lambda model, x, z: log_joint_by_hand(model, x, z, False, False), "−((D + d)/2) log 2π"),
        (lambda model, x, z: log_joint(model, x, z) + 1.0, "a missing normalising constant"),
    ],
    ids=[
        "no-prior",
        "no-likelihood",
        "prior-subtracted",
        "logs-multiplied",
        "density-not-log",
        "sign",
        "no-2pi-likelihood",
        "no-2pi-prior",
        "no-2pi-both",
        "other-offset",
    ],
)
def test_log_joint_names_each_typical_bug(bug, hint):
    result = check_log_joint(bug)
    assert not result.passed
    assert hint in verdict(result), verdict(result)


def test_log_joint_missing_constant_is_measured_in_units_of_half_log_2pi():
    # case 1 has D = 4, d = 1: a missing −(D/2) log 2π shifts every value by +4 · ½ log 2π
    result = check_log_joint(lambda model, x, z: log_joint_by_hand(model, x, z, likelihood_constant=False))
    assert f"{4 * HALF_LOG_2PI:+.4g} = +4·½ log 2π" in verdict(result)


def test_log_joint_catches_a_sum_left_undone_with_a_hint_about_coordinates():
    def per_coordinate(model, x, z):
        return model.likelihood(z).base_dist.log_prob(x) + model.prior.log_prob(z)[..., None]

    result = check_log_joint(per_coordinate)
    assert "expected shape (6,), got (6, 4)" in result.message
    assert "sum over the last dimension" in verdict(result)


def test_log_joint_catches_a_bug_that_only_the_broadcast_case_reveals():
    def without_broadcasting(model, x, z):
        return log_joint(model, x, z.reshape(-1, z.shape[-1])[: len(x)])

    result = check_log_joint(without_broadcasting)
    assert not result.passed and "case 3 of 3" in result.message


def test_log_joint_cases_have_distinct_dimensions_so_that_constants_can_be_named():
    first = latent_models._log_joint_cases()[0]
    data_dim, latent_dim = first["x"].shape[-1], first["z"].shape[-1]
    assert len({data_dim, latent_dim, data_dim + latent_dim}) == 3


# --- exercise 2: log p(x) by quadrature ---------------------------------------------------------------------------


def log_marginal_quadrature(log_joint_on_grid, dz):
    return torch.logsumexp(log_joint_on_grid, dim=0) + math.log(dz)


def by_max_shift(log_joint_on_grid, dz):
    top = log_joint_on_grid.max(dim=0).values
    return top + (log_joint_on_grid - top).exp().sum(0).log() + math.log(dz)


def test_quadrature_accepts_the_reference_and_a_hand_written_max_shift():
    assert check_log_marginal_quadrature(log_marginal_quadrature).passed
    assert check_log_marginal_quadrature(by_max_shift).passed


def test_quadrature_reports_a_stub_as_not_implemented():
    def stub(log_joint_on_grid, dz):
        raise NotImplementedError  # your code here

    result = check_log_marginal_quadrature(stub)
    assert not result.passed and "not implemented yet" in result.message


def log_of_sum(log_joint_on_grid, dz):
    return (log_joint_on_grid.exp().sum(0) * dz).log()


@pytest.mark.parametrize(
    "bug, hint",
    [
        (lambda log_joint_on_grid, dz: log_joint_on_grid.logsumexp(0), "add log Δz"),
        (
            lambda log_joint_on_grid, dz: log_joint_on_grid.logsumexp(0) - math.log(len(log_joint_on_grid))
            + math.log(dz),
            "a mean over the G = 601 grid points instead of a sum",
        ),
        (
            lambda log_joint_on_grid, dz: log_joint_on_grid.logsumexp(0) - math.log(len(log_joint_on_grid)),
            "a mean over the G = 601 grid points and no cell width",
        ),
        (lambda log_joint_on_grid, dz: log_joint_on_grid.logsumexp(0) - math.log(dz), "Δz divides"),
        (log_of_sum, "underflows to 0 (and log 0 = -inf); stay in log space"),
        (lambda log_joint_on_grid, dz: -log_marginal_quadrature(log_joint_on_grid, dz), "opposite sign"),
        (lambda log_joint_on_grid, dz: log_marginal_quadrature(log_joint_on_grid, dz) + 1.0, "every value is off"),
    ],
    ids=["no-dz", "mean", "mean-no-dz", "divided-by-dz", "underflow", "sign", "other-offset"],
)
def test_quadrature_names_each_typical_bug(bug, hint):
    result = check_log_marginal_quadrature(bug)
    assert not result.passed
    assert hint in verdict(result), verdict(result)


def test_quadrature_catches_a_sum_over_the_wrong_dimension():
    result = check_log_marginal_quadrature(lambda log_joint_on_grid, dz: log_joint_on_grid.logsumexp(1))
    assert "expected shape (5,), got (601,)" in result.message
    assert "reduce over the grid points" in verdict(result)


def test_the_underflow_cases_really_underflow_when_exponentiated():
    cases = latent_models._quadrature_cases()
    assert torch.isfinite(log_of_sum(**cases[0])).all()  # mild values: exp-then-log still works here
    for case in cases[1:]:
        assert case["log_joint_on_grid"].dtype in (torch.float32, torch.float64)
        assert not torch.isfinite(log_of_sum(**case)).all()
        assert torch.isfinite(log_marginal_quadrature(**case)).all()
    assert cases[1]["log_joint_on_grid"].dtype == torch.float32


# --- the references compute what the chapter says -----------------------------------------------------------------


def test_reference_quadrature_equals_the_toy_models_log_marginal():
    toy = NonlinearToy(latent_dim=1).double()
    z, log_cell = toy.quadrature_grid()
    x = torch.tensor([[0.5, -0.8], [0.0, 0.3], [3.0, 3.5]], dtype=torch.float64)
    log_joint_on_grid = toy.likelihood(z[:, None, :]).log_prob(x) + toy.prior.log_prob(z)[:, None]
    got = latent_models._reference_log_marginal_quadrature(log_joint_on_grid, math.exp(log_cell))
    torch.testing.assert_close(got, toy.log_marginal(x), rtol=0, atol=1e-12)


def test_reference_quadrature_equals_the_closed_form_of_the_linear_gaussian_model():
    model = LinearGaussian(torch.tensor([[1.5], [0.8]], dtype=torch.float64), torch.zeros(2), 0.4)
    z = torch.linspace(-8, 8, 1601, dtype=torch.float64)[:, None]
    x = torch.tensor([[0.0, 0.0], [2.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    with torch.no_grad():
        log_joint_on_grid = log_joint(model, x, z[:, None, :])  # [G, B]
        got = latent_models._reference_log_marginal_quadrature(log_joint_on_grid, float(z[1, 0] - z[0, 0]))
        torch.testing.assert_close(got, model.log_marginal(x), rtol=0, atol=1e-10)


def test_reference_log_joint_is_the_sum_of_the_two_log_densities():
    toy = NonlinearToy(latent_dim=1, noise_std=0.5).double()
    x, z = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[1.0]], dtype=torch.float64)
    # x = f(z) + (0, 0.5): log N(0.5; 0, 0.25) + log N(0; 0, 0.25) + log N(1; 0, 1)
    expected = -3 * HALF_LOG_2PI - 2 * math.log(0.5) - 0.5 * 1.0**2 - 0.5
    got = latent_models._reference_log_joint(toy, x, z)
    assert got.item() == pytest.approx(expected, abs=1e-12)
