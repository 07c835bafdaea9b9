"""Where students run the course: the Binder environment, the GitHub workflows, the licences and the citation.

The package installed from its wheel, outside the checkout, is tested in tests/test_installed.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
WORKFLOWS = ROOT / ".github" / "workflows"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BIN = Path(sys.executable).parent


def requirement_groups(path: Path) -> dict[str, list[Requirement]]:
    """The requirements of a file by group: a comment line alone (``# the book``) opens a group."""
    groups: dict[str, list[Requirement]] = {"runtime": []}
    group = "runtime"
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if re.fullmatch(r"# the [\w ]+", line):
            group = line[len("# the ") :]
            groups.setdefault(group, [])
        line = line.split(" #")[0].strip()
        if not line or line.startswith(("#", "-", ".")):
            continue
        groups[group].append(Requirement(line))
    return groups


def pinned(requirements: list[Requirement]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        (specifier,) = requirement.specifier  # one exact pin each
        assert specifier.operator == "==", f"{requirement} is not pinned with =="
        pins[requirement.name.lower()] = specifier.version
    return pins


ROOT_GROUPS = requirement_groups(ROOT / "requirements.txt")
BINDER_LINES = (BINDER / "requirements.txt").read_text().splitlines()
BINDER_PINS = pinned([r for group in requirement_groups(BINDER / "requirements.txt").values() for r in group])


def test_the_root_requirements_have_a_runtime_a_book_and_a_test_group():
    assert set(ROOT_GROUPS) == {"runtime", "book", "tests"}
    assert "torch" in pinned(ROOT_GROUPS["runtime"]) and "pytest" in pinned(ROOT_GROUPS["tests"])


def test_binder_pins_the_same_versions_as_the_root_requirements():
    root = {name: version for group in ROOT_GROUPS.values() for name, version in pinned(group).items()}
    for name, version in BINDER_PINS.items():
        assert name in root, f"binder/requirements.txt pins {name}, which requirements.txt does not"
        assert version == root[name], f"{name}: {version} in binder/, {root[name]} in requirements.txt"


def test_binder_has_what_the_chapters_run_on_and_no_test_lint_or_book_tools():
    runtime = set(pinned(ROOT_GROUPS["runtime"]))
    # repo2docker brings the Jupyter server and the kernel (ipykernel) itself.
    assert set(BINDER_PINS) == runtime - {"ipykernel"}
    tools = set(pinned(ROOT_GROUPS["book"])) | set(pinned(ROOT_GROUPS["tests"]))
    assert tools and not tools & set(BINDER_PINS)
    for name in ("jupyter-book", "sphinx", "pytest", "nbval", "ruff", "playwright"):
        assert not any(line.strip().lower().startswith(name) for line in BINDER_LINES), name
    assert "." in [line.strip() for line in BINDER_LINES], "Binder must install the course package (.)"


def test_binder_takes_torch_from_the_cpu_index_without_a_local_suffix():
    assert f"--extra-index-url {CPU_INDEX}" in [line.strip() for line in BINDER_LINES]
    assert "+" not in BINDER_PINS["torch"], "a +cpu version exists on x86-64 Linux only"


def test_binder_and_ci_run_python_3_11():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"
    for workflow in ("ci.yml", "book.yml"):
        text = (WORKFLOWS / workflow).read_text()
        assert 'python-version: "3.11"' in text, workflow


def test_ci_runs_what_ci_run_runs():
    run = (ROOT / ".ci" / "run").read_text()
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    steps = " ".join(step.get("run", "") for job in ci["jobs"].values() for step in job["steps"])
    for target in re.findall(r"^make ([\w-]+)", run, flags=re.MULTILINE):
        assert f"make {target}" in steps, f".ci/run runs make {target}, .github/workflows/ci.yml does not"
    assert ci["env"]["PIP_EXTRA_INDEX_URL"] == CPU_INDEX, "CI takes torch's CPU build"


def test_the_book_workflow_deploys_to_pages_with_the_permissions_it_needs():
    book = yaml.safe_load((WORKFLOWS / "book.yml").read_text())
    # PyYAML reads the key `on` as True.
    assert book[True]["push"]["branches"] == ["main"]
    build, deploy = book["jobs"]["build"], book["jobs"]["deploy"]
    uses = [step.get("uses", "").split("@")[0] for step in build["steps"] + deploy["steps"]]
    assert "actions/upload-pages-artifact" in uses and "actions/deploy-pages" in uses
    assert any("make book" in step.get("run", "") for step in build["steps"])
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    """actionlint with the ShellCheck of the environment (the same on every machine) and no pyflakes."""
    executable = shutil.which("actionlint", path=str(BIN)) or shutil.which("actionlint")
    if executable is None:
        pytest.fail("actionlint is not installed: `make test` installs it from requirements.txt")
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck") or ""
    command = [executable, "-no-color", f"-shellcheck={shellcheck}", "-pyflakes=", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_actionlint_finds_nothing_in_the_workflows():
    workflows = sorted(WORKFLOWS.glob("*.yml"))
    assert [path.name for path in workflows] == ["book.yml", "ci.yml"]
    result = actionlint(*workflows)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_fails_on_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.event.nope.title }}\n      - uses: actions/checkout@v7\n        with:\n"
        "          no-such-input: 1\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no-such-input" in result.stdout


def test_the_licences_are_stated_in_the_files_pyproject_the_readme_and_the_book():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "CC BY 4.0" in (ROOT / "LICENSE-CONTENT").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    readme = (ROOT / "README.md").read_text()
    assert "## Licence" in readme and "MIT" in readme and "CC BY 4.0" in readme
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert "CC BY 4.0" in footer and "MIT" in footer


def test_the_package_knows_its_version_and_repository():
    import vaecourse

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert vaecourse.__version__ == project["version"]
    assert vaecourse.results.REPOSITORY == project["urls"]["Repository"]


def test_the_citation_agrees_with_pyproject():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert citation["cff-version"] == "1.2.0"
    assert citation["version"] == project["version"]
    assert citation["repository-code"] == project["urls"]["Repository"]
    assert citation["url"] == project["urls"]["Documentation"]
    assert citation["license"] == ["MIT", "CC-BY-4.0"]
    assert citation["authors"] and citation["title"]


def test_the_book_is_built_from_the_committed_outputs_and_stays_on_jupyter_book_1():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    makefile = (ROOT / "Makefile").read_text()
    assert "book-execute:" in makefile and "execute_notebooks'] = 'force'" in makefile
    assert re.search(r"^jupyter-book==1\.", (ROOT / "requirements.txt").read_text(), flags=re.MULTILINE)
    assert not (ROOT / "myst.yml").exists(), "myst.yml is Jupyter Book 2's configuration: this book is 1.x"


def test_the_readme_says_how_to_cut_a_release():
    readme = (ROOT / "README.md").read_text()
    assert "## Releases" in readme and "git tag" in readme


def test_set_version_writes_the_version_everywhere_it_is_checked(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from set_version import set_version
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    (tmp_path / "book").mkdir()
    (tmp_path / "vaecourse").mkdir()
    names = ["pyproject.toml", "CITATION.cff", "vaecourse/__init__.py", "README.md"]
    for name in names + ["book/setup.ipynb", "book/01_latent_variable_models.ipynb"]:
        shutil.copy(ROOT / name, tmp_path / name)
    changed = set_version("9.8.7", root=tmp_path)
    assert len(changed) == 6
    readme = (tmp_path / "README.md").read_text()
    assert 'RELEASE = "v9.8.7"' in readme and "/vae-course@v9.8.7" in readme
    assert '__version__ = "9.8.7"' in (tmp_path / "vaecourse" / "__init__.py").read_text()
    assert tomllib.loads((tmp_path / "pyproject.toml").read_text())["project"]["version"] == "9.8.7"
    assert yaml.safe_load((tmp_path / "CITATION.cff").read_text())["version"] == "9.8.7"
    import nbformat

    for name in ("setup.ipynb", "01_latent_variable_models.ipynb"):
        before = nbformat.read(ROOT / "book" / name, as_version=4)
        after = nbformat.read(tmp_path / "book" / name, as_version=4)
        assert 'RELEASE = "v9.8.7"' in after.cells[1].source
        for notebook in (before, after):
            notebook.cells[1].source = re.sub(r'RELEASE = "v[^"]+"', "RELEASE", notebook.cells[1].source)
        assert after == before, "only the RELEASE line may change"


def test_the_readme_installs_the_release_of_pyproject():
    """The README's Colab and pip lines name the tag of pyproject's version (scripts/set_version.py writes them)."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    named = re.findall(r'(?:RELEASE = "v|/vae-course@v)(\d+\.\d+\.\d+)', (ROOT / "README.md").read_text())
    assert named == [version, version]


def test_the_readme_lists_every_environment_variable_the_package_reads():
    sources = {path: path.read_text() for path in (ROOT / "vaecourse").rglob("*.py")}
    constants = {
        name for text in sources.values() for name in re.findall(r'^\w+_ENV = "(\w+)"', text, flags=re.MULTILINE)
    }
    assert "VAECOURSE_BUDGET" in constants and len(constants) >= 8  # runtime, data, widgets, results
    mentioned = {name for text in sources.values() for name in re.findall(r"\bVAECOURSE_[A-Z_]+\b", text)}
    assert mentioned <= constants, f"read without a *_ENV constant: {sorted(mentioned - constants)}"
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(VAECOURSE_\w+)` \|", readme, flags=re.MULTILINE))
    assert table == constants, (
        f"README.md's table of settings lacks {sorted(constants - table)} and lists {sorted(table - constants)}"
    )
