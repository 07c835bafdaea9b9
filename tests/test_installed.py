"""The package as Colab and ``pip install`` users get it: built into a wheel, installed into a fresh virtual
environment with the pinned runtime requirements, and run from a temporary folder, away from the checkout.

Everything the package needs at run time must ship in the wheel or be downloaded by it: the set-up chapter runs
(its printed output is the one committed in ``book/setup.ipynb``), the command line trains and evaluates on the
8x8 digits, and ``vaecourse.results`` fails offline with an error that says what to do, leaving no partial file.

Slow (about two minutes, most of it installing torch): ``pytest -m "not slow"`` leaves it out.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BUILD_FILES = ["pyproject.toml", "README.md", "LICENSE"]
DISCARD = "http://127.0.0.1:9"  # the discard port: the connection is refused at once, as offline


def run(command, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def runtime_pins() -> list[str]:
    """The pinned runtime requirements, as Binder installs them (binder/requirements.txt), less the package."""
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    return [line.split(" #")[0].strip() for line in lines if re.match(r"[A-Za-z0-9_.-]+==", line.strip())]


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without the checkout's virtual environment or Python path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    if "https_proxy" in settings:  # this proxy alone, for every address
        env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}
    env.update(MPLBACKEND="Agg", VAECOURSE_DEVICE="cpu", VAECOURSE_BUDGET="small", VAECOURSE_WIDGETS="off")
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **settings)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The python of a fresh virtual environment holding the wheel, an empty working folder, the wheel, and the
    copy of the package's files it was built from."""
    base = tmp_path_factory.mktemp("installed")
    # Build from a copy of the package's files, so that nothing (build/, *.egg-info) is written into the checkout.
    source = base / "source"
    source.mkdir()
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "vaecourse", source / "vaecourse", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = clean_environment()
    start = time.perf_counter()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", source], base, env)
    (wheel,) = (base / "dist").glob("vaecourse-*.whl")
    run([sys.executable, "-m", "venv", base / "venv"], base, env)
    python = base / "venv" / "bin" / "python"
    # --no-compile: no bytecode for the thousands of modules of torch that the tests never import
    run([python, "-m", "pip", "install", "-q", "--no-compile", *runtime_pins(), wheel], base, env)
    print(f"wheel built and installed with its runtime requirements in {time.perf_counter() - start:.0f} s")
    work = base / "work"
    work.mkdir()
    yield SimpleNamespace(python=python, work=work, wheel=wheel, source=source)
    shutil.rmtree(base, ignore_errors=True)  # about 1.5 GB, most of it torch


def test_the_wheel_holds_every_file_of_the_package_and_the_licence(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    package = {path.relative_to(installed.source).as_posix() for path in (installed.source / "vaecourse").rglob("*")}
    package = {name for name in package if (installed.source / name).is_file()}
    assert "vaecourse/__init__.py" in package
    assert package - names == set(), "files of vaecourse/ missing from the wheel (package data?)"
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_the_package_is_imported_from_the_virtual_environment_not_the_checkout(installed):
    python, work = installed.python, installed.work
    result = run(
        [python, "-c", "import vaecourse, sys; print(vaecourse.__file__); print(sys.prefix)"], work, clean_environment()
    )
    location, prefix = result.stdout.split()
    assert Path(location).is_relative_to(prefix) and not Path(location).is_relative_to(ROOT)


def test_the_setup_chapter_runs_and_prints_what_the_book_shows(installed):
    python, work = installed.python, installed.work
    notebook = nbformat.read(ROOT / "book" / "setup.ipynb", as_version=4)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert not any(line.lstrip().startswith(("%", "!")) for cell in cells for line in cell.source.splitlines())
    script = work / "setup_chapter.py"
    script.write_text("\n\n".join(cell.source for cell in cells) + "\n")
    result = run([python, script], work, clean_environment(), timeout=300)
    shown = "".join(output.text for cell in cells for output in cell.outputs if output.output_type == "stream")
    assert result.stdout == shown


def test_the_command_line_trains_and_evaluates_on_the_digits(installed):
    python, work = installed.python, installed.work
    env = clean_environment()
    out = work / "runs" / "digits"
    run([python, "-m", "vaecourse", "train", "--dataset", "digits", "--epochs", "2", "--out", out], work, env)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["epochs"] == 2
    command = [python, "-m", "vaecourse", "evaluate", out / "model.pt", "--dataset", "digits", "--split", "test"]
    result = run([*command, "--num-samples", "20"], work, env)
    evaluation = json.loads((out / "eval-digits-test-k20.json").read_text())
    assert evaluation["examples"] == 250 and math.isfinite(evaluation["nll"]) and evaluation["nll"] > 0, evaluation
    assert evaluation["standard_error"] > 0, evaluation
    assert "test" in result.stdout


@pytest.mark.parametrize("how", ["results URL unreachable", "no network through a proxy"])
def test_results_fail_offline_with_advice_and_leave_no_partial_file(installed, how, tmp_path):
    python, work = installed.python, installed.work
    cache = tmp_path / "cache"
    if how == "results URL unreachable":
        env = clean_environment(VAECOURSE_CACHE=str(cache), VAECOURSE_RESULTS_URL=f"{DISCARD}/results")
    else:  # the default address, the release's tag on GitHub, reached through a proxy that refuses
        env = clean_environment(VAECOURSE_CACHE=str(cache), https_proxy=DISCARD, HTTPS_PROXY=DISCARD)
        env.pop("VAECOURSE_RESULTS_URL", None)
    env.pop("VAECOURSE_RESULTS", None)
    code = (
        "import vaecourse as vc\n"
        "print(vc.__version__)\n"
        "try:\n"
        "    vc.results.results_dir('cpu')\n"
        "except vc.data.DataUnavailableError as error:\n"
        "    print(error)\n"
        "else:\n"
        "    raise SystemExit('no error offline')\n"
    )
    version, message = run([python, "-c", code], work, env, timeout=120).stdout.split("\n", 1)
    assert "python -m vaecourse reproduce" in message and "VAECOURSE_RESULTS" in message, message
    if how == "no network through a proxy":
        assert f"https://github.com/vaecourse/vae-course/raw/v{version}/results/" in message, message
    left = [path for path in cache.rglob("*") if path.is_file()] if cache.exists() else []
    assert left == [], f"files left behind: {left}"
