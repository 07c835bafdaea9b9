"""Exercises that survive "Run all": the stub is the only runnable definition, and its checker says "not yet".

In Jupyter or Colab, "Run all" executes every code cell. If a solution cell defined the same function as the
stub, it would replace the student's answer before anyone saw the checker's verdict on it. So each solution is
folded in the text (a ``<details>`` block, not executed), and a chapter run top to bottom with every stub left as
shipped ends with each checker reporting "not implemented yet". The committed outputs are that run (the notebook
regression tests re-execute it and compare), so these tests read them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))  # chapters 01-09 and 10 on
STUB = "raise NotImplementedError  # your code here"
CHECKER = re.compile(r"vc\.exercises\.(check_\w+)\(\s*(\w+)\s*\)")


def defined_functions(source: str) -> set[str]:
    try:
        tree = ast.parse("\n".join("" if re.match(r"\s*[%!]", line) else line for line in source.splitlines()))
    except SyntaxError:
        return set()
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def printed(cell) -> str:
    texts = []
    for output in cell.get("outputs", []):
        texts.append(output.get("text", ""))
        texts.append(output.get("data", {}).get("text/plain", ""))
    return "".join(texts)


def stubs(notebook):
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and STUB in cell.source:
            yield index, cell


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_no_other_runnable_cell_defines_an_exercise_function(path):
    # a later definition would replace the student's answer on "Run all"; an earlier one is another function of
    # the same name, which a student would confuse with the exercise
    notebook = nbformat.read(path, as_version=4)
    for index, stub in stubs(notebook):
        names = defined_functions(stub.source)
        assert names, f"{path.name}: the stub in cell {index} defines no function"
        for other in notebook.cells:
            if other.cell_type == "code" and other is not stub:
                clash = names & defined_functions(other.source)
                assert not clash, (
                    f"{path.name}: another code cell also defines {sorted(clash)}; 'Run all' could replace the "
                    "student's answer (fold a solution in a <details> block, and name other functions differently)"
                )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_run_top_to_bottom_with_the_stubs_each_checker_reports_not_implemented(path):
    notebook = nbformat.read(path, as_version=4)
    found = list(stubs(notebook))
    for index, stub in found:
        checks = [name for _, name in CHECKER.findall(stub.source)]
        assert checks, f"{path.name}: the stub in cell {index} calls no checker on the student's function"
        assert set(checks) <= defined_functions(stub.source), "the checker must test the function the stub defines"
        assert "not implemented yet" in printed(stub), (
            f"{path.name}: the stub in cell {index} stores {printed(stub)!r}, not the checker's 'not implemented yet'"
        )
    assert "✓" not in "".join(printed(stub) for _, stub in found)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_every_exercise_has_a_folded_solution_after_its_stub(path):
    notebook = nbformat.read(path, as_version=4)
    for index, stub in stubs(notebook):
        names = defined_functions(stub.source)
        folded = [
            cell
            for cell in notebook.cells[index + 1 :]
            if cell.cell_type == "markdown" and "<details>" in cell.source and "```python" in cell.source
        ]
        assert any(names & defined_functions(_fenced_python(cell.source)) for cell in folded), (
            f"{path.name}: no folded solution defines {sorted(names)}"
        )


def _fenced_python(markdown: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL))


def test_the_chapters_have_exercises():
    assert sum(len(list(stubs(nbformat.read(path, as_version=4)))) for path in CHAPTERS) >= 16
