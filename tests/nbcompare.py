"""Notebook regression tests that hold on any processor: words compared exactly, printed numbers within a tolerance.

nbval runs each chapter top to bottom in one fresh kernel and compares every cell's fresh outputs with the stored
ones. Its own comparison is exact, character for character; but the results of training differ in their last digits
from one processor, BLAS build or library version to another, so an exact comparison fails on a correct notebook.
This plugin keeps nbval's kernel, execution and reporting and replaces only the comparison of two outputs:

- **Text** (words, punctuation, line breaks) must be equal. Runs of spaces count as one space, because a table
  re-aligns when a number gains a digit (9.99 becomes 10.01).
- **Integers** (counts, sizes, shapes, seeds, epochs: a number printed without a decimal point or exponent) are
  equal.
- **Decimal numbers** match when they differ by no more than the tolerance: by default ``DEFAULT.ulps`` units in the
  last printed digit (of the coarser of the two) or ``DEFAULT.rel`` of their size, whichever is larger. A cell may
  declare a looser tolerance in its metadata, always with the reason, e.g. for a quantity after stochastic training::

      "metadata": {"nbcompare": {"rel": 0.01, "why": "test NLL after 30 s of training"}}

  (keys: ``ulps``, ``rel``, ``abs``; each replaces the default's value, ``why`` is required).
- **Figures** are not compared pixel by pixel, but each cell must show as many of them as it stored; their text
  form (``<Figure size 640x480 with 2 Axes>``) is compared as text.
- **A stored error** fails: a notebook must be committed without one.

The plugin is switched on by ``--nbcompare`` (in pyproject's ``addopts``, in place of ``--nbval``); the usual nbval
options (``--nbval-current-env``, ``--nbval-sanitize-with``, cell tags such as ``nbval-ignore-output``) still apply.
At the end of a run it prints the largest difference it accepted, so that an author sees how close to its
tolerance each notebook runs.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import nbformat
import pytest
from nbval.plugin import IPyNbCell, IPyNbFile, transform_streams_for_comparison


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far a printed decimal may move: ``ulps`` units in its last digit, or ``rel`` of its size, or ``abs``."""

    ulps: int = 2
    rel: float = 1e-3
    abs: float = 0.0
    why: str = ""

    def allowed(self, stored: Decimal, fresh: Decimal) -> Decimal:
        last_digit = Decimal(1).scaleb(max(_exponent(stored), _exponent(fresh)))
        size = max(abs(stored), abs(fresh))
        return max(self.ulps * last_digit, Decimal(repr(self.rel)) * size, Decimal(repr(self.abs)))


DEFAULT = Tolerance()
METADATA_KEY = "nbcompare"

# A number as Python prints it: an optional sign, digits with an optional fraction, an optional exponent. Not part of
# a word or identifier (x2, 640x480 are text), and not a version (1.2.3 is text). "3." at the end of a sentence is
# the integer 3 and a full stop.
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d+\.\d+|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w]|\.\d)",
)
_SPACES = re.compile(r"[ \t]+")
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
# Output keys that carry no content to compare (as in nbval).
_SKIPPED_KEYS = {
    "metadata",
    "traceback",
    "prompt_number",
    "output_type",
    "name",
    "execution_count",
    "application/vnd.jupyter.widget-view+json",
    "transient",
}


def _exponent(number: Decimal) -> int:
    return number.as_tuple().exponent


def _is_integer(token: str) -> bool:
    return not any(mark in token for mark in ".eE")


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A pair of printed numbers that differ but within the tolerance: how far apart, relative to the allowance."""

    stored: str
    fresh: str
    relative: float  # |fresh - stored| / max(|stored|, |fresh|)
    used: float  # |fresh - stored| / allowed: 1.0 means exactly at the tolerance


@dataclasses.dataclass
class Comparison:
    """The result of comparing one cell's outputs: the first difference found (``None`` if they match)."""

    difference: str | None = None
    accepted: list[Accepted] = dataclasses.field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.difference is None


def split_numbers(text: str) -> tuple[list[str], list[str]]:
    """The text around the numbers (runs of spaces as one space) and the numbers, as printed."""
    words, numbers, start = [], [], 0
    for match in _NUMBER.finditer(text):
        words.append(_SPACES.sub(" ", text[start : match.start()]))
        numbers.append(match.group())
        start = match.end()
    words.append(_SPACES.sub(" ", text[start:]))
    return words, numbers


def compare_text(stored: str, fresh: str, tolerance: Tolerance = DEFAULT) -> Comparison:
    """Compare two printed texts: the words exactly, integers exactly, decimal numbers within ``tolerance``."""
    result = Comparison()
    stored_lines, fresh_lines = stored.splitlines(), fresh.splitlines()
    if len(stored_lines) != len(fresh_lines):
        result.difference = f"{len(stored_lines)} lines stored, {len(fresh_lines)} printed now"
        return result
    for number, (stored_line, fresh_line) in enumerate(zip(stored_lines, fresh_lines, strict=True), start=1):
        problem = _compare_line(stored_line, fresh_line, tolerance, result.accepted)
        if problem is not None:
            result.difference = f"line {number}: {problem}\n  stored: {stored_line}\n  now:    {fresh_line}"
            return result
    return result


def _compare_line(stored: str, fresh: str, tolerance: Tolerance, accepted: list[Accepted]) -> str | None:
    stored_words, stored_numbers = split_numbers(stored)
    fresh_words, fresh_numbers = split_numbers(fresh)
    if stored_words != fresh_words:
        return "the words differ"
    for old, new in zip(stored_numbers, fresh_numbers, strict=True):
        if old == new:
            continue
        if _is_integer(old) and _is_integer(new):
            if int(old) != int(new):
                return f"the integer {old} is now {new} (integers are compared exactly)"
            continue
        old_value, new_value = Decimal(old), Decimal(new)
        distance = abs(new_value - old_value)
        allowed = tolerance.allowed(old_value, new_value)
        if distance > allowed:
            return f"{old} is now {new}: they differ by {distance}, more than the tolerance {allowed}"
        if distance:
            size = max(abs(old_value), abs(new_value))
            accepted.append(Accepted(old, new, float(distance / size), float(distance / allowed)))
    return None


def _group(outputs: list[dict]) -> dict[str, list]:
    """Outputs by content key, in order (as nbval groups them): ``stdout``, ``text/plain``, ``image/png`` …"""
    grouped: dict[str, list] = defaultdict(list)
    for output in transform_streams_for_comparison([nbformat.from_dict(output) for output in outputs]):
        for key, value in output.items():
            if key == "data":
                for mime, content in value.items():
                    if mime not in _SKIPPED_KEYS:
                        grouped[mime].append(content)
            elif key not in _SKIPPED_KEYS:
                grouped[key].append(value)
    return grouped


def _brief(values: list) -> str:
    return repr([value[:200] if isinstance(value, str) else value for value in values])


def compare_outputs(stored: list[dict], fresh: list[dict], tolerance: Tolerance = DEFAULT) -> Comparison:
    """Compare a cell's stored outputs with its fresh ones (both lists of nbformat output dicts)."""
    errors = [output for output in stored if output.get("output_type") == "error"]
    if errors:
        return Comparison(f"the notebook stores an error ({errors[0].get('ename')}): re-execute it and commit it clean")
    stored_groups, fresh_groups = _group(stored), _group(fresh)
    for key in sorted(stored_groups.keys() | fresh_groups.keys()):
        old, new = stored_groups.get(key, []), fresh_groups.get(key, [])
        kind = "figure" if key in _IMAGE_TYPES else f"{key} output"
        if len(old) != len(new):
            shown = "" if key in _IMAGE_TYPES else f"\n  stored: {_brief(old)}\n  now:    {_brief(new)}"
            return Comparison(f"{len(old)} {kind}(s) stored, {len(new)} now{shown}")
    result = Comparison()
    for key in sorted(stored_groups):
        if key in _IMAGE_TYPES:
            continue  # a figure's pixels depend on fonts and libraries; their number is checked above
        for old, new in zip(stored_groups[key], fresh_groups[key], strict=True):
            if not isinstance(old, str) or not isinstance(new, str):
                if old != new:
                    return Comparison(f"the {key} output differs")
                continue
            comparison = compare_text(old, new, tolerance)
            result.accepted.extend(comparison.accepted)
            if not comparison.matches:
                result.difference = f"{key}: {comparison.difference}"
                return result
    return result


def cell_tolerance(metadata: dict) -> Tolerance:
    """The tolerance a cell declares in its metadata (``nbcompare``), or the default."""
    declared = dict(metadata.get(METADATA_KEY, {}))
    if not declared:
        return DEFAULT
    unknown = declared.keys() - {field.name for field in dataclasses.fields(Tolerance)}
    if unknown:
        raise ValueError(
            f"unknown keys {sorted(unknown)} in the cell's {METADATA_KEY!r} metadata; expected ulps, rel, abs and why"
        )
    if not str(declared.get("why", "")).strip():
        raise ValueError(f"the cell's {METADATA_KEY!r} metadata declares a tolerance without saying why ('why')")
    return dataclasses.replace(DEFAULT, **declared)


# --- the pytest plugin ----------------------------------------------------------------------------------------


def pytest_addoption(parser):
    parser.getgroup("nbval").addoption(
        "--nbcompare",
        action="store_true",
        help="run the notebooks as nbval does, comparing printed numbers within a tolerance (tests/nbcompare.py)",
    )


def pytest_collect_file(file_path: Path, parent):
    option = parent.config.option
    if option.nbcompare and file_path.suffix == ".ipynb":
        return ToleranceNotebook.from_parent(parent, path=file_path)
    return None


class ToleranceNotebook(IPyNbFile):
    """nbval's notebook collector, yielding cells that compare with a tolerance."""

    def collect(self):
        for cell in super().collect():
            item = ToleranceCell.from_parent(
                self, name=cell.name, cell_num=cell.cell_num, cell=cell.cell, options=cell.options
            )
            item.add_marker(pytest.mark.slow)  # a chapter runs for up to two minutes: not in `pytest -m "not slow"`
            yield item


_largest: list[tuple[Accepted, str]] = []


class ToleranceCell(IPyNbCell):
    """nbval's cell, with the comparison of this module."""

    def compare_outputs(self, test, ref, skip_compare=None):
        tolerance = cell_tolerance(self.cell.metadata)
        comparison = compare_outputs(
            self.sanitize_outputs(ref),
            self.sanitize_outputs(test),
            tolerance,
        )
        if comparison.accepted:
            _largest.append((max(comparison.accepted, key=lambda pair: pair.relative), self.nodeid))
        self.comparison_traceback = []
        if not comparison.matches:
            declared = f" (declared: {tolerance.why})" if tolerance.why else ""
            self.comparison_traceback.append(
                f"{comparison.difference}\n"
                f"tolerance: {tolerance.ulps} units in the last printed digit, or {tolerance.rel:g} relative, "
                f"or {tolerance.abs:g}{declared}"
            )
        return comparison.matches


def pytest_terminal_summary(terminalreporter):
    if not _largest:
        return
    pair, where = max(_largest, key=lambda item: item[0].relative)
    used, used_where = max(((item.used, node) for item, node in _largest))
    terminalreporter.write_line(
        f"nbcompare: {len(_largest)} cells printed numbers that moved within tolerance; largest relative difference "
        f"{pair.relative:.2e} ({pair.stored} -> {pair.fresh}, {where}); closest to its tolerance: "
        f"{used:.0%} of it ({used_where})"
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if config.option.nbcompare and (
        getattr(config.option, "nbval", False) or getattr(config.option, "nbval_lax", False)
    ):
        raise pytest.UsageError("--nbcompare replaces --nbval: pass one of them")
