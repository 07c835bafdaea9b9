"""``python -m vaecourse train | evaluate``: see :mod:`vaecourse.cli`."""

from .cli import main

raise SystemExit(main())
