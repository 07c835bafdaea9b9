"""The book's frame: one repository URL everywhere, a toc that matches the files, trustworthy notebooks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from notebook_hygiene import notebook_problems, shows_output

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
COLAB_GUARD = '"google.colab" in sys.modules'


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def repository_url_in_config() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def first_code_cell(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    return next(cell.source for cell in notebook.cells if cell.cell_type == "code")


def test_there_are_chapter_notebooks():
    assert NOTEBOOKS, "book/ holds no notebook"


def test_repository_url_is_the_same_in_config_pyproject_and_every_setup_cell():
    url = repository_url_in_config()
    assert url.startswith("https://github.com/")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["urls"]["Repository"] == url
    for path in NOTEBOOKS:
        match = re.search(r'REPOSITORY = "([^"]+)"', first_code_cell(path))
        assert match, f"{path.name}: the first code cell does not set REPOSITORY"
        assert match.group(1) == url, f"{path.name}: {match.group(1)} != {url} (_config.yml)"


def test_every_setup_cell_pins_the_release_of_pyproject():
    """Colab installs the package from the tag vX.Y.Z of pyproject's version, never from the moving main."""
    release = "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for path in NOTEBOOKS:
        source = first_code_cell(path)
        match = re.search(r'RELEASE = "([^"]+)"', source)
        assert match, f"{path.name}: the first code cell does not set RELEASE"
        assert match.group(1) == release, f"{path.name}: RELEASE = {match.group(1)}, pyproject.toml says {release}"
        assert 'f"vaecourse @ git+{REPOSITORY}@{RELEASE}"' in source, f"{path.name}: the install is not pinned"


# What Colab's image brings; the set-up cell installs the package with --no-deps and adds the rest.
COLAB_PROVIDES = {"torch", "numpy", "matplotlib", "scikit-learn", "tqdm", "ipywidgets"}


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s#]+)", line.split("#")[0].strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_every_setup_cell_installs_only_what_colab_lacks_and_keeps_its_torch():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {re.split(r"[<>=!~ \[;]", dep, maxsplit=1)[0].lower() for dep in pyproject["project"]["dependencies"]}
    pinned = _pins((ROOT / "requirements.txt").read_text().splitlines())
    lacking = {name: pinned[name] for name in needed - COLAB_PROVIDES}
    for path in NOTEBOOKS:
        source = first_code_cell(path)
        assert '"--no-deps"' in source, f"{path.name}: without --no-deps pip may replace Colab's torch"
        installs = _pins(re.findall(r'"([A-Za-z0-9_.-]+==[^"]+)"', source))
        assert installs == lacking, f"{path.name}: installs {installs}, Colab lacks {lacking} (requirements.txt)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_each_notebook_opens_with_the_colab_only_setup_cell(path):
    source = first_code_cell(path)
    assert COLAB_GUARD in source, f"{path.name}: the first code cell must be the Colab-only set-up cell"
    guarded = source.split(f"if {COLAB_GUARD}:", 1)
    assert len(guarded) == 2 and "pip" not in guarded[0], "the install must run only under the Colab guard"


def test_toc_lists_every_page_and_every_listed_page_exists():
    listed = toc_files()
    assert len(listed) == len(set(listed)), "a page is listed twice in _toc.yml"
    for entry in listed:
        assert list(ROOT.glob(entry + ".*")), f"_toc.yml lists {entry}, which does not exist"
    pages = {str(p.relative_to(ROOT).with_suffix("")) for p in BOOK.glob("*") if p.suffix in {".md", ".ipynb"}}
    assert pages == set(listed), f"pages in book/ but not in _toc.yml: {sorted(pages - set(listed))}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_executed_in_order_with_outputs_and_no_errors(path):
    problems = notebook_problems(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


# The hygiene check itself must be able to fail.


def _notebook(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def _cell(source, count, outputs=()):
    cell = nbformat.v4.new_code_cell(source, execution_count=count)
    cell.outputs = list(outputs)
    return cell


STREAM = nbformat.v4.new_output("stream", name="stdout", text="1\n")


def test_hygiene_accepts_a_well_executed_notebook():
    notebook = _notebook(_cell("x = 1", 1), _cell("print(x)", 2, [STREAM]))
    assert notebook_problems(notebook) == []


def test_hygiene_catches_missing_outputs_order_and_errors():
    error = nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[])
    notebook = _notebook(_cell("print(1)", 2), _cell("x = 1", None), _cell("1 / 0", 3, [error]))
    problems = "\n".join(notebook_problems(notebook))
    assert "execution counts are [2, None, 3]" in problems
    assert "code cell 1 prints or plots but has no stored output" in problems
    assert "code cell 3 has a stored error: ValueError" in problems


@pytest.mark.parametrize(
    "source, expected",
    [
        ("x = 1", False),
        ("print(1)", True),
        ("plt.show()", True),
        ("vc.plots.image_grid(x)", True),
        ("plt.close('all')", False),
        ("budget", True),
        ("budget;", False),
        ("%matplotlib inline\nx", True),
        ("for i in range(3):\n    print(i)", True),
        ("f(x)", False),
    ],
)
def test_hygiene_knows_which_cells_show_output(source, expected):
    assert shows_output(source) is expected


def _chapter_stats():
    import importlib.util

    spec = importlib.util.spec_from_file_location("chapter_stats", ROOT / "scripts" / "chapter_stats.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.chapter_stats


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[0].isdigit()], ids=lambda p: p.stem)
def test_each_chapter_is_a_lesson_of_at_most_2500_words_with_exercises_and_questions(path):
    """The shape every chapter keeps (scripts/chapter_stats.py counts it): markdown short enough to read in one
    sitting (every word counted, the folded solutions' code too), at least two exercises and two predict-then-run
    questions, and figures."""
    stats = _chapter_stats()(path)
    words = stats["markdown"]
    assert words <= 2500, f"{path.name}: {words} words of markdown; move digressions to an appendix"
    assert stats["exercises"] >= 2 and stats["predict"] >= 2 and stats["figures"] >= 1, stats
