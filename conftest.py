"""pytest configuration for the whole repository.

The notebook regression tests run nbval with the comparison of ``tests/nbcompare.py`` (words exactly, printed
numbers within a tolerance), switched on by ``--nbcompare`` in pyproject's ``addopts``. They run each chapter in a
headless kernel, which inherits this process's environment: widgets are switched off there, as they are when the
committed outputs are made (scripts/execute_notebooks.py) and when the book is built (make book).
"""

import os

pytest_plugins = ["tests.nbcompare"]

os.environ.setdefault("VAECOURSE_WIDGETS", "off")
