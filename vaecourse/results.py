"""Where chapter 8 finds the results table of ``python -m vaecourse reproduce`` and its checkpoints.

In a clone of the repository (a laptop, Binder, CI) they are the committed files in ``results/``. Elsewhere
(Colab installs only the package) they are downloaded once into the package's cache from the repository as it
was at this package's release (the tag ``v<version>``), each file written to a temporary name and renamed when
complete.
"""

from __future__ import annotations

import os
import pathlib

from . import data
from .download import fetch

__all__ = ["REPOSITORY", "find", "results_dir"]

REPOSITORY = "https://github.com/vaecourse/vae-course"  # the same address as _config.yml and pyproject.toml
RESULTS_ENV = "VAECOURSE_RESULTS"  # a folder holding priors-<recipe>.json and priors-<recipe>/
URL_ENV = "VAECOURSE_RESULTS_URL"  # where to download them from (default: results/ at the release's tag)
PRIORS = ("standard", "mog", "vamp", "flow")
# chapter 8's prior-adaptation experiment (scripts/prior_adaptation.py), the same for either recipe
ADAPTATION = ("prior-adaptation.json", "prior-adaptation-frames.pt")


def _needed(recipe: str) -> list[str]:
    checkpoints = [f"priors-{recipe}/{name}.pt" for name in PRIORS]
    return [f"priors-{recipe}.json", f"priors-{recipe}.md", *checkpoints, *ADAPTATION]


def results_dir(recipe: str = "cpu", download: bool = True) -> pathlib.Path:
    """The folder with ``priors-<recipe>.json``, ``.md`` and the checkpoints ``priors-<recipe>/<prior>.pt``, the
    results of ``python -m vaecourse reproduce --recipe <recipe>`` (``cpu`` or ``gpu``), and the files of chapter
    8's prior-adaptation experiment (``scripts/prior_adaptation.py``).

    Looked for in ``$VAECOURSE_RESULTS``, ``./results``, ``../results`` (a chapter runs in ``book/``) and the
    cache; otherwise downloaded from the repository into the cache (``download=False`` raises instead).
    """
    if recipe not in ("cpu", "gpu"):
        raise ValueError(f"recipe must be 'cpu' or 'gpu', got {recipe!r}")
    advice = (
        f"run `python -m vaecourse reproduce --recipe {recipe} --out DIR` and `python scripts/prior_adaptation.py "
        f"--out DIR` from a clone of the repository, and set {RESULTS_ENV}=DIR"
    )
    return find(_needed(recipe), advice, download)


def find(names: list[str], advice: str, download: bool = True) -> pathlib.Path:
    """The first folder of ``$VAECOURSE_RESULTS``, ``./results``, ``../results`` and the cache that holds every
    file of ``names`` (paths relative to it); otherwise the cache, after downloading the missing ones from the
    repository at this package's release (``$VAECOURSE_RESULTS_URL``). ``advice`` says how to make the files
    when they cannot be found (``download=False``) or downloaded."""
    candidates = [pathlib.Path(os.environ[RESULTS_ENV])] if os.environ.get(RESULTS_ENV) else []
    cache = data.cache_dir() / "results"
    candidates += [pathlib.Path.cwd() / "results", pathlib.Path.cwd().parent / "results", cache]
    for folder in candidates:
        if all((folder / name).is_file() for name in names):
            return folder
    if not download:
        raise FileNotFoundError(f"{', '.join(names)} not in {', '.join(map(str, candidates))}: {advice}")
    from . import __version__  # the tag of the release, whose results match this package

    base = os.environ.get(URL_ENV, f"{REPOSITORY}/raw/v{__version__}/results").rstrip("/")
    for name in names:
        target = cache / name
        if target.is_file():
            continue
        try:
            fetch(f"{base}/{name}", target)
        except Exception as error:
            raise data.DataUnavailableError(
                f"could not download {base}/{name} ({type(error).__name__}: {error}); {advice}"
            ) from error
    return cache
