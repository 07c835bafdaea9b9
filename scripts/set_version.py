"""Set the course's version X.Y.Z everywhere it is written, before tagging the release vX.Y.Z.

    .venv/bin/python scripts/set_version.py 0.2.0

Writes the version into pyproject.toml, CITATION.cff, ``vaecourse.__version__`` and the README's install lines, and
``RELEASE = "vX.Y.Z"`` into the Colab set-up cell of every chapter (an edit of that line of the stored
notebook, as text: the outputs stay as they are, and the cell does nothing off Colab, so the chapters need not
be executed again). tests/test_book.py and tests/test_packaging.py check that they all agree.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (file or glob, pattern whose group 1 is the version, how many matches each file must have)
PLACES = [
    ("pyproject.toml", r'^version = "([^"]+)"$', 1),
    ("CITATION.cff", r'^version: "([^"]+)"$', 1),
    ("vaecourse/__init__.py", r'^__version__ = "([^"]+)"$', 1),
    ("book/*.ipynb", r'RELEASE = \\"v([^"\\]+)\\"', 1),
    ("README.md", r'(?:RELEASE = "v|/vae-course@v)(\d+\.\d+\.\d+)', 2),  # the Colab cell and the pip line
]


def set_version(version: str, root: Path = ROOT) -> list[Path]:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise SystemExit(f"expected a version X.Y.Z, got {version!r}")
    changed = []
    for pattern, regex, count in PLACES:
        paths = sorted(root.glob(pattern))
        if not paths:
            raise SystemExit(f"nothing matches {pattern}")
        for path in paths:
            text = path.read_text(encoding="utf-8")
            matches = list(re.finditer(regex, text, flags=re.MULTILINE))
            if len(matches) != count:
                raise SystemExit(f"{path.relative_to(root)}: {len(matches)} matches of {regex}, expected {count}")
            new = text
            for match in reversed(matches):
                new = new[: match.start(1)] + version + new[match.end(1) :]
            if new != text:
                path.write_text(new, encoding="utf-8")
                changed.append(path)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="X.Y.Z, without the v of the tag")
    args = parser.parse_args()
    for path in set_version(args.version):
        print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
