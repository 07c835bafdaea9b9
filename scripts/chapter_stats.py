"""Per chapter: words of markdown, figures, exercises and predict-then-run questions, from the committed notebooks.

    .venv/bin/python scripts/chapter_stats.py            # every notebook in book/
    .venv/bin/python scripts/chapter_stats.py book/06_vae.ipynb

``markdown`` counts every whitespace-separated token of the markdown cells, as typed (formulas, the folded
solutions' code and HTML tags included): the measure a chapter keeps under 2 500. ``prose`` leaves out fenced code
and HTML tags. Figures are the images stored in the code cells' outputs. An exercise is a markdown heading that
starts with "Exercise"; a predict-then-run question is a markdown cell that contains "Predict, then run".
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
        "markdown": sum(len(text.split()) for text in markdown),
        "prose": sum(len(_HTML_TAG.sub(" ", _FENCED_CODE.sub("", text)).split()) for text in markdown),
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
    keys = ("markdown", "prose", "figures", "exercises", "predict")
    print(f"{'chapter':<{width}} " + " ".join(f"{key:>9}" for key in keys))
    total = {key: sum(stats[key] for _, stats in rows) for key in keys}
    for name, stats in [*rows, ("total", total)]:
        print(f"{name:<{width}} " + " ".join(f"{stats[key]:9d}" for key in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
