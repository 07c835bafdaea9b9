"""What makes a committed chapter notebook trustworthy for the regression tests (nbval).

nbval compares each cell's fresh outputs with the stored ones; a cell stored without outputs, or a notebook
stored half-run or with an error, would let it pass while comparing nothing.
"""

from __future__ import annotations

import ast
import re

# Calls that print or draw: their cell must have stored outputs.
_OUTPUT_FUNCTIONS = {"print", "display", "interact", "interactive"}
_OUTPUT_MODULES = {"plt", "plots"}  # matplotlib.pyplot, vaecourse.plots (vc.plots.*)
_SILENT_PLT = {"close", "rcParams", "rc", "style", "ioff", "ion", "switch_backend"}


def _python_source(source: str) -> str:
    """The cell's source with IPython magics and shell escapes blanked out, so that ``ast`` can read it."""
    return "\n".join("" if re.match(r"\s*[%!]", line) else line for line in source.splitlines())


def _call_shows_something(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in _OUTPUT_FUNCTIONS
    if isinstance(func, ast.Attribute):
        owner = func.value
        while isinstance(owner, ast.Attribute):
            if owner.attr in _OUTPUT_MODULES:
                return True
            owner = owner.value
        if isinstance(owner, ast.Name) and owner.id in _OUTPUT_MODULES:
            return func.attr not in _SILENT_PLT
    return False


def shows_output(source: str) -> bool:
    """Whether a code cell prints, plots, or ends with an expression whose value Jupyter displays."""
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError:
        return True  # a cell that does not parse must at least have stored its error
    if any(isinstance(node, ast.Call) and _call_shows_something(node) for node in ast.walk(tree)):
        return True
    last = tree.body[-1] if tree.body else None
    ends_silenced = source.rstrip().endswith(";")
    return (
        isinstance(last, ast.Expr)
        and not isinstance(last.value, ast.Call | ast.Constant | ast.Await)
        and not ends_silenced
    )


def notebook_problems(notebook: dict) -> list[str]:
    """Problems that would make nbval compare nothing: unexecuted or out-of-order cells, missing outputs, errors."""
    problems = []
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    code_cells = [cell for cell in code_cells if "".join(cell["source"]).strip()]
    counts = [cell.get("execution_count") for cell in code_cells]
    if counts != list(range(1, len(code_cells) + 1)):
        problems.append(
            f"execution counts are {counts}, expected 1, 2, 3, ... in order: "
            "re-run the notebook top to bottom in one fresh kernel"
        )
    for number, cell in enumerate(code_cells, start=1):
        source = "".join(cell["source"])
        outputs = cell.get("outputs", [])
        errors = [output for output in outputs if output.get("output_type") == "error"]
        if errors:
            problems.append(f"code cell {number} has a stored error: {errors[0].get('ename')}")
        if not outputs and shows_output(source):
            first_line = source.strip().splitlines()[0]
            problems.append(f"code cell {number} prints or plots but has no stored output: {first_line!r}")
    return problems
