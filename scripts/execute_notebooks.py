"""Execute chapter notebooks in place, each top to bottom in one fresh kernel, and print the wall time of each.

The notebooks are committed executed so that the regression tests (nbval) compare real outputs. Run this
after editing a chapter, with the small budget on the CPU, as the committed outputs come from that setting:

    VAECOURSE_DEVICE=cpu VAECOURSE_BUDGET=small .venv/bin/python scripts/execute_notebooks.py book/setup.ipynb
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TIMEOUT_PER_CELL = 600
# No one moves sliders here: the widget cells print a pointer instead (vaecourse.widgets), as in the tests.
os.environ.setdefault("VAECOURSE_WIDGETS", "off")


def merge_streams(cell) -> None:
    """Join consecutive outputs of the same stream, as Jupyter shows them, so that stored outputs are stable."""
    merged = []
    for output in cell.get("outputs", []):
        previous = merged[-1] if merged else None
        if output.output_type == "stream" and previous is not None and previous.output_type == "stream" and (
            previous.name == output.name
        ):
            previous.text += output.text
        else:
            merged.append(output)
    cell.outputs = merged


def execute(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    # Widget state is not kept: the book shows a static figure beside every widget.
    notebook.metadata.pop("widgets", None)
    client = NotebookClient(
        notebook, timeout=TIMEOUT_PER_CELL, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            merge_streams(cell)
    nbformat.write(notebook, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to execute (default: book/*.ipynb)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(Path("book").glob("*.ipynb"))
    for path in paths:
        seconds = execute(path)
        print(f"{path}: executed in {seconds:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
