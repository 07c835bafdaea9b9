# Two commands do everything on a fresh machine: `make test` and `make book`.
# Each creates .venv (if absent) and installs requirements.txt first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test book browser-check notebooks lint clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

## the package's tests, the notebook regression tests (nbval) and the doctests, after the linter
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

## the HTML book in _build/html, every notebook executed on the CPU; Sphinx warnings are errors
book: $(STAMP)
	rm -rf _build/html _build/jupyter_execute
	VAECOURSE_WIDGETS=off $(BIN)/jupyter-book build . --all --warningiserror --nitpick --keep-going

## every page of the built book opened in headless Chromium; screenshots in _build/screenshots
browser-check: $(STAMP)
	$(BIN)/python scripts/check_book.py _build/html --screenshots _build/screenshots

## re-execute the chapter notebooks in place (CPU, small budget), as they are committed; prints each one's time
notebooks: $(STAMP)
	VAECOURSE_DEVICE=cpu VAECOURSE_BUDGET=small $(BIN)/python scripts/execute_notebooks.py $(NOTEBOOKS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf _build .pytest_cache
