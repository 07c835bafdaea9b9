"""pytest configuration for the whole repository.

The notebook regression tests (nbval) run each chapter in a headless kernel, which inherits this process's
environment: widgets are switched off there, as they are when the committed outputs are made
(scripts/execute_notebooks.py) and when the book is built (make book).
"""

import os

os.environ.setdefault("VAECOURSE_WIDGETS", "off")
