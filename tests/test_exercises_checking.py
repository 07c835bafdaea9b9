"""vaecourse.exercises.checking: the verdict's kind, which checkers act on instead of matching message text."""

import pytest
import torch

from vaecourse.exercises.checking import KINDS, Result, check_function


def reference(x):
    return 2 * x


CASES = [{"x": torch.arange(3.0)}]


@pytest.mark.parametrize(
    "function, kind",
    [
        (reference, "correct"),
        (lambda x: (_ for _ in ()).throw(NotImplementedError), "not_implemented"),
        (lambda x: x.undefined_method(), "raised"),
        (lambda x: [1.0, 2.0, 3.0], "type"),
        (lambda x: (2 * x).sum(), "shape"),
        (lambda x: 2 * x + 1, "value"),
    ],
)
def test_check_function_gives_each_verdict_its_kind(function, kind):
    result = check_function("double", function, reference, CASES)
    assert result.kind == kind and result.passed == (kind == "correct")


def test_a_result_defaults_to_correct_or_value_and_refuses_unknown_kinds():
    assert Result("e", True, "fine").kind == "correct" and Result("e", False, "wrong").kind == "value"
    assert set(KINDS) >= {"correct", "value"}
    with pytest.raises(ValueError, match="kind"):
        Result("e", False, "wrong", kind="mystery")
