"""The machinery shared by all exercise checkers: run the learner's function, compare, diagnose."""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..runtime import seeded

KINDS = ("correct", "not_implemented", "raised", "type", "shape", "value")


@dataclass
class Result:
    """The verdict of a checker: ``passed``, a message that says what is wrong and how to look for it, and its
    ``kind``, for code that acts on the verdict (one of :data:`KINDS`): ``correct``, ``not_implemented`` (the
    stub), ``raised`` (the learner's function raised), ``type`` or ``shape`` (the answer is not a tensor of the
    right shape), or ``value`` (the numbers are wrong)."""

    exercise: str
    passed: bool
    message: str
    details: list[str] = field(default_factory=list)
    kind: str = ""

    def __post_init__(self):
        self.kind = self.kind or ("correct" if self.passed else "value")
        if self.kind not in KINDS:
            raise ValueError(f"a result's kind is one of {KINDS}, got {self.kind!r}")

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        mark = "✓" if self.passed else "✗"
        lines = [f"{mark} {self.exercise}: {self.message}", *(f"  - {line}" for line in self.details)]
        return "\n".join(lines)


# A diagnosis looks at the learner's output and the reference for one case and returns a hint, or None.
Diagnosis = Callable[[torch.Tensor, torch.Tensor, dict], "str | None"]


def _constant_offset(got: torch.Tensor, expected: torch.Tensor) -> float | None:
    difference = (got - expected).double()
    if difference.numel() < 2 or not bool(torch.isfinite(difference).all()):
        return None
    spread = float(difference.std())
    offset = float(difference.mean())
    if spread <= 1e-6 * max(1.0, abs(offset)) and abs(offset) > 1e-6:
        return offset
    return None


def sign_flipped(got, expected, case):
    if close_enough(got, -expected) and bool(expected.abs().max() > 1e-6):
        return "the values have the opposite sign: check the direction of a difference or a missing minus"
    return None


def constant_offset(got, expected, case):
    offset = _constant_offset(got, expected)
    if offset is None:
        return None
    hint = f"every value is off by the same constant {offset:+.4g}"
    num_samples = case.get("num_samples")
    if num_samples and math.isclose(abs(offset), math.log(num_samples), rel_tol=1e-4):
        return hint + f" = ±log K (K = {num_samples}): a mean over the K samples is Σ/K, i.e. −log K in log space"
    return hint + ": a missing normalising constant (such as −(D/2) log 2π) or a stray term"


def not_finite(got, expected, case):
    if bool(torch.isfinite(expected).all()) and not bool(torch.isfinite(got).all()):
        return (
            "some values are inf or nan where the answer is finite: exp of a large negative log-probability "
            "underflows to 0 (and log 0 = -inf); stay in log space (torch.logsumexp) instead of exponentiating"
        )
    return None


DEFAULT_DIAGNOSES: tuple[Diagnosis, ...] = (not_finite, sign_flipped, constant_offset)


def require_function(function, name: str, example: str = "my_function") -> None:
    """``TypeError`` unless the learner passed a function (a common slip: passing its result)."""
    if not callable(function):
        raise TypeError(
            f"{name} expects your function itself, e.g. {name}({example}), not its result: "
            f"got {type(function).__name__}"
        )


def close_enough(got: torch.Tensor, candidate: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Same shape, a finite candidate, and equal to float precision (the checkers compare in float64); the one
    comparison of the checkers with a candidate answer or a known mistake."""
    return (
        got.shape == candidate.shape
        and bool(torch.isfinite(candidate).all())
        and bool(torch.allclose(got, candidate.to(got.dtype), rtol=rtol, atol=atol))
    )


@dataclass(frozen=True)
class Problem:
    """Why the learner's function gave no answer: its ``kind`` (``not_implemented`` or ``raised``) and a message."""

    kind: str
    message: str

    def result(self, exercise: str) -> Result:
        return Result(exercise, False, self.message, kind=self.kind)


NOT_IMPLEMENTED = Problem("not_implemented", "not implemented yet: replace `raise NotImplementedError` with your code")


def _call(function, case) -> tuple[object, Problem | None]:
    try:
        return function(**case), None
    except NotImplementedError:
        return None, NOT_IMPLEMENTED
    except Exception as error:  # the learner's bug, reported rather than raised
        frames = traceback.extract_tb(error.__traceback__)
        code = getattr(function, "__code__", None)
        own = [frame for frame in frames if code is not None and frame.filename == code.co_filename]
        where = f" (line {own[-1].lineno} of your function)" if own else ""
        return None, Problem("raised", f"your function raised {type(error).__name__}: {error}{where}")


def check_function(
    exercise: str,
    function: Callable,
    reference: Callable,
    cases: Sequence[dict],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
    diagnoses: Sequence[Diagnosis] = DEFAULT_DIAGNOSES,
) -> Result:
    """Run ``function(**case)`` and ``reference(**case)`` on each case (from the same seed) and compare.

    The first case that disagrees is diagnosed: wrong type, wrong shape, then ``diagnoses`` in order (put an
    exercise's own before the general :data:`DEFAULT_DIAGNOSES`), and the first hint found is reported; if none
    recognises the mistake, the largest difference is.
    """
    for number, case in enumerate(cases, start=1):
        with seeded(seed + number):  # the same draws for both, and the learner's generator left as it was
            got, problem = _call(function, case)
        if problem:
            return problem.result(exercise)
        with seeded(seed + number):
            expected = reference(**case)
        where = f"case {number} of {len(cases)}"
        if not isinstance(got, torch.Tensor):
            return Result(exercise, False, f"expected a torch.Tensor, got {type(got).__name__} ({where})", kind="type")
        if got.shape != expected.shape:
            return Result(
                exercise,
                False,
                f"expected shape {tuple(expected.shape)}, got {tuple(got.shape)} ({where})",
                ["one value per example: reduce over the samples, not over the batch"]
                if got.numel() != expected.numel()
                else [],
                kind="shape",
            )
        got = got.detach().to(expected.dtype)
        if close_enough(got, expected, rtol=rtol, atol=atol):
            continue
        hint = next((hint for diagnose in diagnoses if (hint := diagnose(got, expected, case))), None)
        if hint:  # the first diagnosis that recognises the mistake: exercise-specific ones come first
            return Result(exercise, False, f"not yet ({where})", [hint])
        gap = (got - expected).abs().max().item()
        return Result(exercise, False, f"values differ from the reference by up to {gap:.3g} ({where})")
    return Result(exercise, True, f"correct on all {len(cases)} cases")
