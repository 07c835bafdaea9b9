"""Writing a file whole or not at all: the one helper behind checkpoints, downloads, the data cache and the tables."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write", "write_text"]


@contextlib.contextmanager
def atomic_write(target, mode: int = 0o644):
    """A binary file to write the new content of ``target`` into: a temporary file in the same folder (created if
    absent), renamed to ``target`` when the block ends without an error and removed otherwise, so that a reader
    never sees a partial file. ``handle.name`` is the temporary file's path (flush before reading it back).

    >>> import pathlib, tempfile as t
    >>> target = pathlib.Path(t.mkdtemp()) / "note.txt"
    >>> with atomic_write(target) as handle:
    ...     _ = handle.write(b"whole")
    >>> target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
    (b'whole', ['note.txt'])
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False)
    temporary = Path(handle.name)
    try:
        with handle:
            yield handle
        os.chmod(temporary, mode)  # temporary files are private; the file is not
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(target, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` whole or not at all, through :func:`atomic_write`: the tables and
    metrics the command line and ``reproduce`` write."""
    with atomic_write(target) as handle:
        handle.write(text.encode("utf-8"))
