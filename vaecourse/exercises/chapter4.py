r"""Checkers for the exercises of chapter 4, "Amortized inference and EM by gradients".

- :func:`check_amortization_gap`: from per-example log p(x), the best ELBO of the family for each x alone and the
  ELBO of the encoder's q_φ(z|x), the mean approximation gap and the mean amortization gap (Cremer et al., 2018).
- :func:`check_encoder_output`: the map from an encoder's raw output [μ, log σ²] ``[..., 2d]`` to
  q_φ(z|x) = N(μ, diag σ²), a ``torch.distributions`` object with a positive scale and event shape ``[d]``.

Every input is built from a fixed seed, so a correct answer matches the reference to rounding.
"""

from __future__ import annotations

import traceback

import torch
from torch.distributions import Distribution, Independent

from ..amortized import encoder_distribution, inference_gaps
from ..runtime import seeded
from .checking import DEFAULT_DIAGNOSES, NOT_IMPLEMENTED, Result, check_function, close_enough

__all__ = ["check_amortization_gap", "check_encoder_output"]


# --- Exercise 1: the two gaps ---------------------------------------------------------------------------------


def amortization_gap_reference(log_px: torch.Tensor, best_elbo: torch.Tensor, amortized_elbo: torch.Tensor):
    """[mean approximation gap, mean amortization gap] ``[2]``, from per-example values ``[B]``."""
    gaps = inference_gaps(log_px, best_elbo, amortized_elbo)
    return torch.stack([gaps.approximation.mean(), gaps.amortization.mean()])


def _gap_case(batch_size: int, seed: int) -> dict:
    """log p(x) ≥ best ELBO ≥ amortized ELBO per example, with gaps of different sizes (float64)."""
    generator = torch.Generator().manual_seed(seed)
    log_px = -5.0 - 3.0 * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    approximation = 0.1 + 0.4 * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    amortization = 1.0 + 2.0 * torch.rand(batch_size, generator=generator, dtype=torch.float64)
    best_elbo = log_px - approximation
    return {"log_px": log_px, "best_elbo": best_elbo, "amortized_elbo": best_elbo - amortization}


def _gap_mistakes(got, expected, case):
    log_px, best, amortized = case["log_px"], case["best_elbo"], case["amortized_elbo"]
    approximation, amortization, total = log_px - best, best - amortized, log_px - amortized

    def means(first, second):
        return torch.stack([first.mean(), second.mean()])

    variants = [
        (
            means(amortization, approximation),
            "the two gaps are in the wrong order: return [approximation, "
            "amortization], the approximation gap (log p(x) − best ELBO) first",
        ),
        (
            means(approximation, total),
            "the second value is log p(x) − amortized ELBO, the whole gap "
            "KL(q_φ(z|x) ‖ p(z|x)); the amortization gap is only its part best ELBO − amortized ELBO",
        ),
        (
            means(total, amortization),
            "the first value is the whole gap log p(x) − amortized ELBO; the "
            "approximation gap is log p(x) − best ELBO, what even the best q of the family leaves",
        ),
        (
            means(-approximation, -amortization),
            "both gaps have the wrong sign: a gap is the larger value minus "
            "the smaller, log p(x) ≥ best ELBO ≥ amortized ELBO, so both are ≥ 0",
        ),
        (means(-approximation, amortization), "the approximation gap has the wrong sign: log p(x) − best ELBO ≥ 0"),
        (
            means(approximation, -amortization),
            "the amortization gap has the wrong sign: best ELBO − amortized "
            "ELBO ≥ 0, since the encoder's q is one member of the family",
        ),
        (
            torch.stack([approximation.sum(), amortization.sum()]),
            "you summed over the examples: the gaps are averaged (a mean, in nats per example)",
        ),
    ]
    for value, hint in variants:
        if close_enough(got, value):
            return hint
    return None


def check_amortization_gap(function) -> Result:
    """Check ``function(log_px, best_elbo, amortized_elbo) -> gaps``: the inputs are per-example values ``[B]``
    (log p(x), the ELBO of the best q of the family for each x alone, the ELBO of the encoder's q_φ(z|x)); the
    answer is ``torch.stack([approximation_gap, amortization_gap])`` ``[2]``, each averaged over the examples."""
    cases = [_gap_case(5, seed=1), _gap_case(3, seed=2), _gap_case(8, seed=3)]
    result = check_function(
        "amortization gap",
        function,
        amortization_gap_reference,
        cases,
        diagnoses=(_gap_mistakes, *DEFAULT_DIAGNOSES),
    )
    if result.kind == "shape":
        result.details = [
            "return the two mean gaps as one tensor of shape [2]: torch.stack([approximation.mean(), "
            "amortization.mean()]), not one value per example"
        ]
    if result.kind == "type":
        result.details = ["return one tensor: torch.stack([approximation_gap, amortization_gap])"]
    return result


# --- Exercise 2: from the encoder's raw output to q_φ(z|x) -----------------------------------------------------


def _output_case(shape: tuple[int, ...], seed: int) -> dict:
    """A raw encoder output [μ, log σ²] with log-variances between −3 and 2: some negative, none near 0."""
    generator = torch.Generator().manual_seed(seed)
    *batch, width = shape
    latent_dim = width // 2
    mean = 2.0 * torch.randn(*batch, latent_dim, generator=generator, dtype=torch.float64)
    sign = torch.where(torch.rand(*batch, latent_dim, generator=generator) < 0.5, -1.0, 1.0).double()
    magnitude = 0.5 + 1.5 * torch.rand(*batch, latent_dim, generator=generator, dtype=torch.float64)
    log_variance = sign * magnitude
    log_variance.view(-1)[0] = -magnitude.view(-1)[0]  # at least one negative log-variance
    return {"output": torch.cat([mean, log_variance], dim=-1)}


def _encoder_cases() -> list[dict]:
    return [_output_case((4, 4), seed=1), _output_case((3, 2), seed=2), _output_case((2, 3, 6), seed=3)]


def _scale_hint(got_mean, got_std, output) -> str | None:
    """Name the mistake when the mean or the scale is not the reference's (None: both are right, or unknown)."""
    d = output.shape[-1] // 2
    mean, log_variance = output[..., :d], output[..., d:]
    if not close_enough(got_mean, mean):
        if close_enough(got_mean, log_variance) and close_enough(got_std, torch.exp(0.5 * mean)):
            return "the halves are swapped: the first d numbers of the output are μ, the last d are log σ²"
        if d > 1 and close_enough(got_mean, output[..., 0::2]):
            return (
                "μ is taken from every other number: the output is two halves, [μ (first d), log σ² (last d)]; "
                "split it with output.chunk(2, dim=-1)"
            )
        return "the mean should be the first half of the output, output[..., :d]"
    if close_enough(got_std, torch.exp(0.5 * log_variance)):
        return None
    candidates = [
        (
            torch.exp(log_variance),
            "this scale is the variance σ² = exp(log σ²); Normal's scale is the standard deviation σ = exp(½ log σ²)",
        ),
        (log_variance, "the log-variance is used as the scale: it can be negative; σ = exp(½ log σ²)"),
        (log_variance.abs(), "|log σ²| is positive, but it is not σ: σ = exp(½ log σ²)"),
        (
            torch.nn.functional.softplus(log_variance),
            "softplus makes the scale positive, but in this exercise "
            "the raw numbers are log σ² (the encoder's convention): σ = exp(½ log σ²)",
        ),
        (torch.exp(-0.5 * log_variance), "the sign of the exponent is flipped: σ = exp(+½ log σ²)"),
        (
            0.5 * torch.exp(log_variance),
            "σ = exp(½ log σ²) is the exponential of half the log-variance, not half of its exponential",
        ),
        (torch.exp(0.25 * log_variance), "this is σ^(1/2): σ = exp(½ log σ²) = sqrt(exp(log σ²))"),
    ]
    for value, hint in candidates:
        if close_enough(got_std, value):
            return hint
    return "the scale should be σ = exp(½ log σ²), from the last half of the output"


def _learners_line(error: Exception) -> int:
    """The line of the learner's code where the error arose: the last frame outside torch and this module."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [frame for frame in frames if "torch" not in frame.filename and frame.filename != __file__]
    return (own or frames)[-1].lineno


def _raw_scale(q: Distribution) -> torch.Tensor:
    """The scale parameter as given (torch's ``stddev`` is sqrt(variance), positive even for a negative scale)."""
    base = q.base_dist if isinstance(q, Independent) else q
    scale = getattr(base, "scale", None)
    return (q.stddev if not isinstance(scale, torch.Tensor) else scale).detach()


def _check_encoder_case(function, exercise: str, output: torch.Tensor, where: str) -> Result | None:
    """One case of :func:`check_encoder_output`: the failing verdict, or ``None`` when the case passes."""
    try:
        got = function(output.clone())
    except NotImplementedError:
        return NOT_IMPLEMENTED.result(exercise)
    except ValueError as error:
        if "scale" in str(error) and "GreaterThan" in str(error):
            return Result(
                exercise,
                False,
                f"your function raised ValueError: Normal refused a scale that is not positive "
                f"(line {_learners_line(error)}, {where})",
                [
                    "the last d numbers are log σ², which can be negative; the scale is the standard deviation "
                    "σ = exp(½ log σ²)"
                ],
                kind="raised",
            )
        first_line = str(error).splitlines()[0] if str(error) else ""
        return Result(
            exercise,
            False,
            f"your function raised ValueError: {first_line} (line {_learners_line(error)}, {where})",
            kind="raised",
        )
    except Exception as error:  # the learner's bug, reported rather than raised
        first_line = str(error).splitlines()[0] if str(error) else ""
        return Result(
            exercise,
            False,
            f"your function raised {type(error).__name__}: {first_line} (line {_learners_line(error)}, {where})",
            kind="raised",
        )
    expected = encoder_distribution(output)
    if not isinstance(got, Distribution):
        return Result(
            exercise,
            False,
            f"expected a torch.distributions object, got {type(got).__name__} ({where})",
            ["return q itself, e.g. Independent(Normal(mean, std), 1), not its parameters"],
        )
    batch, d = output.shape[:-1], output.shape[-1] // 2
    if got.event_shape != expected.event_shape or got.batch_shape != expected.batch_shape:
        details = []
        if got.event_shape == () and got.batch_shape == (*batch, d):
            details = [
                "wrap the Normal in Independent(..., 1): the d latent coordinates form one event, so that "
                "log_prob gives one value per example"
            ]
        elif got.batch_shape + got.event_shape != (*batch, d):
            details = ["split the output along its last dimension, into two halves: output.chunk(2, dim=-1)"]
        return Result(
            exercise,
            False,
            f"expected batch shape {tuple(batch)} and event shape ({d},), got {tuple(got.batch_shape)} and "
            f"{tuple(got.event_shape)} ({where})",
            details,
        )
    with torch.no_grad():
        got_mean, got_std = got.mean.detach().double(), got.stddev.detach().double()
        if not bool((_raw_scale(got) > 0).all()):
            return Result(
                exercise,
                False,
                f"the scale of q is not positive everywhere ({where})",
                ["σ = exp(½ log σ²) is positive for any raw output; the log-variance itself is not a scale"],
            )
        hint = _scale_hint(got_mean, got_std, output)
        if hint:
            return Result(exercise, False, f"not yet ({where})", [hint])
        z = expected.sample((3,))
        if not close_enough(got.log_prob(z).double(), expected.log_prob(z)):
            return Result(exercise, False, f"q.log_prob differs from that of N(μ, diag σ²) ({where})")
    return None


def check_encoder_output(function) -> Result:
    """Check ``function(output) -> q``: the raw output of a Gaussian encoder, ``[..., 2d]`` = [μ, log σ²], turned
    into q_φ(z|x) = N(μ, diag σ²) with σ = exp(½ log σ²): a ``torch.distributions`` object (e.g.
    ``Independent(Normal(μ, σ), 1)``) with batch shape ``[...]``, event shape ``[d]`` and a positive scale."""
    exercise = "encoder output"
    cases = _encoder_cases()
    for number, case in enumerate(cases, start=1):
        where = f"case {number} of {len(cases)}"
        with seeded(number):  # the same draws for every learner; their generator is left as it was
            verdict = _check_encoder_case(function, exercise, case["output"], where)
        if verdict is not None:
            return verdict
    return Result(exercise, True, f"correct on all {len(cases)} cases")
