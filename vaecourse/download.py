"""Downloading one file, for the data (:mod:`vaecourse.data`) and chapter 8's results (:mod:`vaecourse.results`).

A file appears whole or not at all: the body is streamed into a temporary file next to the target, checked, and
only then renamed to it. Opening the connection has a deadline (name lookup included), each read a timeout, and a
progress bar shows the transfer.
"""

from __future__ import annotations

import hashlib
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .files import atomic_write

__all__ = ["TransferFailed", "fetch", "stream"]

SOCKET_TIMEOUT = 10.0  # seconds one connection attempt or one read may block
DOWNLOAD_DEADLINE = 30.0  # seconds that opening the connection (name lookup included) may take in all
CHUNK_BYTES = 1 << 16

Checked = TypeVar("Checked")


class TransferFailed(Exception):
    """A download went wrong in a way that urllib does not report itself (short body, wrong checksum)."""


def fetch(url: str, target: Path, verify: Callable[[Path, str], Checked] | None = None) -> Checked | None:
    """Download ``url`` to ``target`` (its folder created if needed). ``verify(temporary, sha256)`` may inspect the
    complete download before it takes the target's name, and raise to refuse it; its result is returned. On any
    failure the temporary file is removed and the error raised."""
    target = Path(target)
    with atomic_write(target) as handle:
        digest = stream(url, handle, target.name)
        handle.flush()
        return verify(Path(handle.name), digest) if verify is not None else None


def stream(url: str, handle, label: str) -> str:
    """Copy the body of ``url`` into ``handle`` with a progress bar; returns its SHA-256 in hex."""
    from tqdm.auto import tqdm

    digest, received = hashlib.sha256(), 0
    with open_url(url) as response:
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.isdigit() else None
        with tqdm(
            total=expected, desc=label, unit="B", unit_scale=True, unit_divisor=1024, disable=None
        ) as bar:
            while chunk := response.read(CHUNK_BYTES):  # each read blocks at most SOCKET_TIMEOUT seconds
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if expected is not None and received != expected:
        raise TransferFailed(f"the connection closed after {received} of {expected} bytes")
    return digest.hexdigest()


def open_url(url: str):
    """``urlopen(url)``, given up after ``DOWNLOAD_DEADLINE`` seconds in all.

    urllib's timeout bounds each socket operation, but not a slow name lookup nor a host with several
    unreachable addresses; so the opening runs in a helper thread, which is abandoned when it takes too long.
    """
    outcome: dict = {}
    lock, done = threading.Lock(), threading.Event()

    def open_in_thread():
        try:
            response = urllib.request.urlopen(url, timeout=min(SOCKET_TIMEOUT, DOWNLOAD_DEADLINE))
        except Exception as error:  # handed over to the waiting thread
            outcome["error"] = error
        else:
            with lock:
                if outcome.get("abandoned"):
                    response.close()
                else:
                    outcome["response"] = response
        done.set()

    threading.Thread(target=open_in_thread, name="vaecourse-download", daemon=True).start()
    done.wait(DOWNLOAD_DEADLINE)
    with lock:
        if "response" in outcome:
            return outcome["response"]
        if "error" in outcome:
            raise outcome["error"]
        outcome["abandoned"] = True
    raise TimeoutError(f"no answer from {url} within {DOWNLOAD_DEADLINE:g} s")
