# Two commands do everything on a fresh machine: `make test` and `make book`.
# Each creates .venv (if absent) and installs requirements.txt first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test book book-execute browser-check notebooks lint clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

## the package's tests, the notebook regression tests (nbval) and the doctests, after the linter
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

BOOK_FLAGS := --all --warningiserror --nitpick --keep-going

## the HTML book in _build/html from the notebooks' committed outputs (nothing is executed: _config.yml has
## execute_notebooks "off"; `make test` re-executes every chapter and compares); Sphinx warnings are errors
book: $(STAMP)
	rm -rf _build/html _build/jupyter_execute
	VAECOURSE_WIDGETS=off $(BIN)/jupyter-book build . $(BOOK_FLAGS)

## the same book with every chapter executed again on the CPU while it is built (about 4 minutes), from a
## copy of _config.yml that differs only in execute_notebooks (it stays next to _config.yml, whose relative
## paths it shares, and is removed afterwards)
book-execute: $(STAMP)
	rm -rf _build/html _build/jupyter_execute
	$(BIN)/python -c "import yaml; c = yaml.safe_load(open('_config.yml')); c['execute']['execute_notebooks'] = 'force'; \
	  yaml.safe_dump(c, open('.config-execute.yml', 'w'), sort_keys=False, allow_unicode=True)"
	VAECOURSE_WIDGETS=off $(BIN)/jupyter-book build . --config .config-execute.yml $(BOOK_FLAGS); \
	  status=$$?; rm -f .config-execute.yml; exit $$status

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
