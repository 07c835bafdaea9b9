"""Tests of the chapter 5 checkers: each accepts the reference, names each typical mistake, and spots a stub."""

from __future__ import annotations

import pytest
import torch
from exercise_helpers import stub
from torch.distributions import Normal

from vaecourse import gradients
from vaecourse.exercises import chapter5 as exercises

# Exercise 1: rsample(mean, std, eps).


def rsample(mean, std, eps):
    return mean + std * eps


RSAMPLE_MISTAKES = {
    "variance": (lambda mean, std, eps: mean + std**2 * eps, "scaled ε by σ² (the variance)"),
    "square root": (lambda mean, std, eps: mean + std.sqrt() * eps, "you took √σ"),
    "no mean": (lambda mean, std, eps: std * eps, "the mean μ is missing"),
    "swapped": (lambda mean, std, eps: mean * eps + std, "μ and σ are swapped"),
    "unscaled": (lambda mean, std, eps: mean + eps, "ε is not scaled by σ"),
    "no noise": (lambda mean, std, eps: mean + 0 * eps, "the noise is missing"),
    "own noise": (lambda mean, std, eps: mean + std * torch.randn_like(eps), "use the noise eps that is passed in"),
    "sign": (lambda mean, std, eps: -(mean + std * eps), "opposite sign"),
}


def test_rsample_checker_accepts_the_reference_and_the_package():
    assert exercises.check_rsample(rsample).passed
    assert exercises.check_rsample(lambda mean, std, eps: Normal(mean, std).rsample() * 0 + mean + std * eps)


@pytest.mark.parametrize("mistake", RSAMPLE_MISTAKES.keys())
def test_rsample_checker_names_each_mistake(mistake):
    function, hint = RSAMPLE_MISTAKES[mistake]
    result = exercises.check_rsample(function)
    assert not result.passed
    assert hint in "\n".join(result.details), repr(result)


def test_rsample_checker_reports_a_stub_and_a_wrong_shape():
    assert "not implemented yet" in repr(exercises.check_rsample(stub))
    result = exercises.check_rsample(lambda mean, std, eps: (mean + std * eps).sum(0))
    assert not result.passed and "expected shape" in result.message
    assert "broadcast shape" in result.details[0]


def test_rsample_matches_torch_rsample_with_the_same_noise():
    mean, std = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.3])
    torch.manual_seed(0)
    expected = Normal(mean, std).rsample((4,))
    torch.manual_seed(0)
    torch.testing.assert_close(rsample(mean, std, torch.randn(4, 2)), expected)


# Exercise 2: gaussian_kl(mean, std).


def gaussian_kl(mean, std):
    return 0.5 * (std**2 + mean**2 - 1 - torch.log(std**2)).sum(-1)


KL_MISTAKES = {
    "no half": (lambda mean, std: (std**2 + mean**2 - 1 - torch.log(std**2)).sum(-1), "factor ½ is missing"),
    "log sigma": (lambda mean, std: 0.5 * (std**2 + mean**2 - 1 - torch.log(std)).sum(-1), "you wrote log σ"),
    "sigma as variance": (
        lambda mean, std: 0.5 * (std + mean**2 - 1 - torch.log(std)).sum(-1),
        "needs the variance σ² = std**2",
    ),
    "mean over d": (lambda mean, std: 0.5 * (std**2 + mean**2 - 1 - torch.log(std**2)).mean(-1), "not the mean"),
    "wrong dim": (
        lambda mean, std: 0.5 * (std**2 + mean**2 - 1 - torch.log(std**2)).sum(0),
        "summed over the examples",
    ),
    "no minus one": (lambda mean, std: 0.5 * (std**2 + mean**2 - torch.log(std**2)).sum(-1), "the −1 inside the sum"),
    "sign": (lambda mean, std: -gaussian_kl(mean, std), "opposite sign"),
}


def test_gaussian_kl_checker_accepts_the_reference_and_torch():
    assert exercises.check_gaussian_kl(gaussian_kl).passed

    def with_torch(mean, std):
        from torch.distributions import Independent, kl_divergence

        q = Independent(Normal(mean, std), 1)
        return kl_divergence(q, Independent(Normal(torch.zeros_like(mean), torch.ones_like(std)), 1))

    assert exercises.check_gaussian_kl(with_torch).passed


@pytest.mark.parametrize("mistake", KL_MISTAKES.keys())
def test_gaussian_kl_checker_names_each_mistake(mistake):
    function, hint = KL_MISTAKES[mistake]
    result = exercises.check_gaussian_kl(function)
    assert not result.passed
    assert hint in "\n".join(result.details), repr(result)


def test_gaussian_kl_checker_reports_a_stub_and_a_sum_over_everything():
    assert "not implemented yet" in repr(exercises.check_gaussian_kl(stub))
    result = exercises.check_gaussian_kl(lambda mean, std: gaussian_kl(mean, std).sum())
    assert not result.passed and "expected shape" in result.message
    assert "one KL per example" in result.details[0]


# Exercise 3: score_function(f_values, z, mean, std).


def score_function(f_values, z, mean, std):
    centred = z - mean
    return f_values[:, None] * torch.cat([centred / std**2, (centred**2 - std**2) / std**3], dim=-1)


def _halves(first, second):
    return lambda f_values, z, mean, std: (
        f_values[:, None] * torch.cat([first(z - mean, std), second(z - mean, std)], dim=-1)
    )


SCORE_MISTAKES = {
    "no f": (
        lambda f_values, z, mean, std: score_function(f_values, z, mean, std) / f_values[:, None],
        "multiply it by f(z)",
    ),
    "variance derivative": (
        _halves(lambda c, s: c / s**2, lambda c, s: (c**2 - s**2) / (2 * s**4)),
        "derivative with respect to the variance",
    ),
    "lost normaliser": (_halves(lambda c, s: c / s**2, lambda c, s: c**2 / s**3), "normaliser 1/σ"),
    "mu over sigma": (_halves(lambda c, s: c / s, lambda c, s: (c**2 - s**2) / s**3), "divide by the variance"),
    "swapped halves": (_halves(lambda c, s: (c**2 - s**2) / s**3, lambda c, s: c / s**2), "halves are swapped"),
    "sign": (lambda f_values, z, mean, std: -score_function(f_values, z, mean, std), "opposite sign"),
}


def test_score_function_checker_accepts_the_reference():
    assert exercises.check_score_function(score_function).passed


@pytest.mark.parametrize("mistake", SCORE_MISTAKES.keys())
def test_score_function_checker_names_each_mistake(mistake):
    function, hint = SCORE_MISTAKES[mistake]
    result = exercises.check_score_function(function)
    assert not result.passed
    assert hint in "\n".join(result.details), repr(result)


def test_score_function_checker_reports_a_stub_and_an_average_over_samples():
    assert "not implemented yet" in repr(exercises.check_score_function(stub))
    result = exercises.check_score_function(
        lambda f_values, z, mean, std: score_function(f_values, z, mean, std).mean(0)
    )
    assert not result.passed and "expected shape" in result.message
    assert "one estimate per sample" in result.details[0]


def test_the_exercise_is_what_the_package_computes():
    """The closed-form scores of the exercise give the rows of vc.gradients.score_function, sample by sample."""
    mean = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
    std = torch.tensor([0.9, 1.6], dtype=torch.float64, requires_grad=True)
    f = lambda z: (z**3).sum(-1)  # noqa: E731
    torch.manual_seed(0)
    grads = gradients.score_function(lambda z, q: f(z), lambda m, s: Normal(m, s), [mean, std], 6)
    torch.manual_seed(0)
    z = Normal(mean.detach().expand(6, 2), std.detach().expand(6, 2)).sample()
    torch.testing.assert_close(grads.samples, score_function(f(z), z, mean.detach(), std.detach()))
