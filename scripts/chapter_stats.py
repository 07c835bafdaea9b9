"""Per chapter: words of markdown, figures, exercises and predict-then-run questions, from the committed notebooks.

    .venv/bin/python scripts/chapter_stats.py            # every notebook in book/
    .venv/bin/python scripts/chapter_stats.py book/06_vae.ipynb

Words are whitespace-separated tokens of the markdown cells' prose (formulas count as they are typed; fenced code,
such as the folded solutions of the exercises, and HTML tags do not). Figures are the
images stored in the code cells' outputs. An exercise is a markdown heading that starts with "Exercise"; a
predict-then-run question is a markdown cell that contains "Predict, then run".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

_EXERCISE = re.compile(r"^#+\s+Exercise\b", re.MULTILINE)
_PREDICT = re.compile(r"Predict, then run", re.IGNORECASE)
_IMAGES = ("image/png", "image/jpeg", "image/svg+xml")
_FENCED_CODE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_HTML_TAG = re.compile(r"</?[a-z]+>")


def chapter_stats(path: Path) -> dict[str, int]:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    markdown = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "markdown"]
    outputs = [output for cell in notebook["cells"] if cell["cell_type"] == "code" for output in cell["outputs"]]
    return {
        "words": sum(len(_HTML_TAG.sub(" ", _FENCED_CODE.sub("", text)).split()) for text in markdown),
        "figures": sum(1 for output in outputs for key in output.get("data", {}) if key in _IMAGES),
        "exercises": sum(len(_EXERCISE.findall(text)) for text in markdown),
        "predict": sum(1 for text in markdown if _PREDICT.search(text)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: book/*.ipynb)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(Path("book").glob("*.ipynb"))
    rows = [(path.name, chapter_stats(path)) for path in paths]
    width = max(len("chapter"), *(len(name) for name, _ in rows))
    print(f"{'chapter':<{width}} {'words':>6} {'figures':>8} {'exercises':>10} {'predict':>8}")
    total = {key: sum(stats[key] for _, stats in rows) for key in ("words", "figures", "exercises", "predict")}
    for name, stats in [*rows, ("total", total)]:
        counts = f"{stats['words']:6d} {stats['figures']:8d} {stats['exercises']:10d} {stats['predict']:8d}"
        print(f"{name:<{width}} {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
