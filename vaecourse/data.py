"""The data sets of the course: scikit-learn's 8x8 digits and the statically binarized MNIST.

Chapter "Setting up: device, data and budgets" loads both and explains where they live:

- ``load("digits")`` needs no download: 1797 images of 8x8 grey levels in [0, 1], with labels, split once
  and for all into train / valid / test (1297 / 250 / 250). Every chapter runs on it on a laptop CPU.
- ``load("binarized-mnist")`` is the 28x28 binary MNIST of Larochelle & Murray (2011), the benchmark of the
  VAE literature (50000 / 10000 / 10000 images; only the test split is labelled, see ``MNIST_TEST_COUNTS``). The
  three ``.amat`` text files are read from ``data_dir() / "binarized_mnist"`` and downloaded there when absent; a
  compact binary copy is cached in ``cache_dir()`` so that the second load takes a fraction of a second. The
  transfer itself (deadlines, progress, nothing partial left behind) is :mod:`vaecourse.download`'s.

Nothing is read or downloaded at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import pathlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import download
from .files import atomic_write

DATASETS = ("digits", "binarized-mnist")
SPLITS = ("train", "valid", "test")

DATA_ENV = "VAECOURSE_DATA"
CACHE_ENV = "VAECOURSE_CACHE"
MNIST_URL_ENV = "VAECOURSE_MNIST_URL"

# The digits split: a fixed permutation (numpy default_rng(0)); test and valid take this many, train the rest.
DIGITS_SEED = 0
DIGITS_HELD_OUT = {"test": 250, "valid": 250}

MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
MNIST_FOLDER = "binarized_mnist"
MNIST_SHA256 = {
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
}
ROWS = {"train": 50000, "valid": 10000, "test": 10000}
# The .amat files carry no labels, but the test file is MNIST's test set sorted by digit (the train and valid files
# are shuffled): its rows are 980 zeros, then 1135 ones, …, MNIST's test-set count of each digit. Checked in
# scripts/train_judge.py (a nearest-class-mean classifier agrees with these labels on 81 % of the images, as on
# MNIST, and the class boundaries fall where it switches class).
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MNIST_SHAPE = (28, 28)
PIXELS = MNIST_SHAPE[0] * MNIST_SHAPE[1]
LINE_BYTES = 2 * PIXELS  # 784 digits, each followed by a space, the last by "\n"

_CACHE_WARNED: set[str] = set()  # cache folders already warned about, so that each is warned about once


class DataUnavailableError(RuntimeError):
    """Binarized MNIST is not on disk and could not be downloaded (offline, HTTP error, bad checksum …)."""


class CorruptDataError(ValueError):
    """A binarized MNIST ``.amat`` file does not have the expected layout or values."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a data set: ``x`` is float32 ``[N, D]`` in [0, 1], ``y`` int64 ``[N]`` labels or ``None``.

    Chapter "Setting up: device, data and budgets". ``D = H * W`` with ``image_shape = (H, W)``; ``images``
    gives the same data as ``[N, H, W]`` for plotting.

    >>> test = load("digits", "test")
    >>> test
    Dataset('digits', split='test', x=[250, 64], labelled)
    >>> test.images.shape
    torch.Size([250, 8, 8])
    """

    name: str
    split: str
    x: torch.Tensor
    y: torch.Tensor | None
    image_shape: tuple[int, int]

    def __post_init__(self):
        height, width = self.image_shape
        if self.x.ndim != 2 or self.x.shape[1] != height * width:
            raise ValueError(
                f"Dataset x must be [N, {height * width}] for images of {height}x{width}, "
                f"got shape {list(self.x.shape)}"
            )
        if self.y is not None and self.y.shape != (len(self.x),):
            raise ValueError(
                f"Dataset y must be [{len(self.x)}] (one label per row of x), got {list(self.y.shape)}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def images(self) -> torch.Tensor:
        """``x`` viewed as ``[N, H, W]`` (no copy)."""
        return self.x.view(len(self), *self.image_shape)

    def __repr__(self) -> str:
        labels = "labelled" if self.y is not None else "unlabelled"
        return f"Dataset({self.name!r}, split={self.split!r}, x={list(self.x.shape)}, {labels})"


def load(name: str, split: str = "train") -> Dataset:
    """Load one split (``"train"``, ``"valid"`` or ``"test"``) of ``"digits"`` or ``"binarized-mnist"``.

    Chapter "Setting up: device, data and budgets". Binarized MNIST is downloaded into ``data_dir()`` the
    first time; without a network, ``load("digits")`` runs every chapter on the bundled data set.

    >>> load("digits").x.shape
    torch.Size([1297, 64])
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: expected one of {', '.join(map(repr, DATASETS))}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(map(repr, SPLITS))}")
    if name == "digits":
        return _load_digits(split)
    return _load_binarized_mnist(split)


def evenly_spaced(x: torch.Tensor, count: int | None) -> torch.Tensor:
    """``count`` rows of ``x`` at equal strides, first and last included (all of ``x`` if ``count`` is ``None`` or
    not smaller). The binarized MNIST test file is sorted by digit (the train and valid files are shuffled), so a
    subset of it must be spread, never ``x[:count]``.

    >>> evenly_spaced(torch.arange(10), 4)
    tensor([0, 3, 6, 9])
    """
    if count is None or count >= len(x):
        return x
    return x[torch.linspace(0, len(x) - 1, count).round().long()]


def cache_dir() -> pathlib.Path:
    """Where the course caches what it computed: ``$VAECOURSE_CACHE``, else ``$XDG_CACHE_HOME/vaecourse``,
    else ``~/.cache/vaecourse``. Chapter "Setting up: device, data and budgets"."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "vaecourse"
    return Path.home() / ".cache" / "vaecourse"


def data_dir() -> pathlib.Path:
    """Where the data sets live: ``$VAECOURSE_DATA``, else ``cache_dir() / "data"``.

    Chapter "Setting up: device, data and budgets". Binarized MNIST is read from its ``binarized_mnist``
    folder; the directory may be read-only once the files are there.
    """
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_dir() / "data"


# ---------------------------------------------------------------------------------------------- digits


def _digits_split_indices(count: int) -> dict[str, np.ndarray]:
    """Row indices of each split: one fixed permutation, cut into test, valid and the rest for train."""
    order = np.random.default_rng(DIGITS_SEED).permutation(count)
    test_end = DIGITS_HELD_OUT["test"]
    valid_end = test_end + DIGITS_HELD_OUT["valid"]
    return {"test": order[:test_end], "valid": order[test_end:valid_end], "train": order[valid_end:]}


def _load_digits(split: str) -> Dataset:
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    pixels, labels = load_digits(return_X_y=True)  # [1797, 64] grey levels 0..16, [1797] digits 0..9
    rows = _digits_split_indices(len(pixels))[split]
    x = torch.from_numpy((pixels[rows] / 16.0).astype(np.float32))
    y = torch.from_numpy(labels[rows].astype(np.int64))
    return Dataset("digits", split, x, y, (8, 8))


# ------------------------------------------------------------------------------------ binarized MNIST


def _mnist_file_names() -> list[str]:
    return [f"binarized_mnist_{split}.amat" for split in SPLITS]


def _load_binarized_mnist(split: str) -> Dataset:
    source = data_dir() / MNIST_FOLDER / f"binarized_mnist_{split}.amat"
    bits = _read_amat(source, split) if source.exists() else _download(source, split)  # uint8 [N, 784]
    x = torch.from_numpy(bits).to(torch.float32)
    y = None
    if split == "test" and len(x) == sum(MNIST_TEST_COUNTS):
        y = torch.repeat_interleave(torch.arange(10), torch.tensor(MNIST_TEST_COUNTS))
    return Dataset("binarized-mnist", split, x, y, MNIST_SHAPE)


def _read_amat(source: Path, split: str) -> np.ndarray:
    """The 0/1 pixels of a local ``.amat`` file, from the binary cache when it matches the file."""
    cached = _cache_path(source)
    bits = _read_cache(cached, split)
    if bits is None:
        bits = _parse_amat(source, split)
        _write_cache(cached, bits)
    return bits


def _parse_amat(path: Path, split: str) -> np.ndarray:
    """Parse and validate an ``.amat`` file: uint8 ``[ROWS[split], 784]`` of zeros and ones."""
    raw = np.fromfile(path, dtype=np.uint8)
    bits = _parse_canonical(raw, ROWS[split])
    if bits is None:
        bits = _parse_any_layout(raw.tobytes(), path, split)
    return bits


def _parse_canonical(raw: np.ndarray, rows: int) -> np.ndarray | None:
    """Vectorised fast path for the canonical layout ("0 1 … 0\\n", 1568 bytes a line); None otherwise."""
    if raw.size != rows * LINE_BYTES:
        return None
    lines = raw.reshape(rows, LINE_BYTES)
    values, separators = lines[:, 0::2], lines[:, 1::2]  # [N, 784] each
    if not ((separators[:, :-1] == ord(" ")).all() and (separators[:, -1] == ord("\n")).all()):
        return None
    bits = values - np.uint8(ord("0"))  # anything but "0" or "1" wraps around to a value above 1
    if (bits > 1).any():
        return None
    return bits


def _parse_any_layout(raw: bytes, path: Path, split: str) -> np.ndarray:
    """Slow path for any whitespace layout (CRLF, tabs …); it also finds the first problem in a bad file."""
    lines = raw.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    bits = np.empty((len(lines), PIXELS), dtype=np.uint8)
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if len(tokens) != PIXELS:
            truncated = " (the file looks truncated)" if number == len(lines) and len(tokens) < PIXELS else ""
            raise _corrupt(path, split, f"line {number} has {len(tokens)} values{truncated}")
        row = np.frombuffer(b"".join(tokens), dtype=np.uint8) - np.uint8(ord("0"))
        if row.size != PIXELS or (row > 1).any():
            position, token = next((i, t) for i, t in enumerate(tokens, start=1) if t not in (b"0", b"1"))
            shown = token.decode("utf-8", errors="replace")[:20]
            raise _corrupt(path, split, f"found value {shown!r} at line {number} (value {position})")
        bits[number - 1] = row
    if len(lines) != ROWS[split]:
        raise _corrupt(path, split, f"{len(lines)} rows, expected {ROWS[split]}")
    return bits


def _corrupt(path: Path, split: str, found: str) -> CorruptDataError:
    return CorruptDataError(
        f"{path} is not a valid binarized MNIST {split} file: expected {ROWS[split]} lines of {PIXELS} "
        f"values '0' or '1' separated by spaces, but {found}. Delete the file so that the next "
        f"vaecourse.data.load('binarized-mnist', {split!r}) downloads it again."
    )


# ------------------------------------------------------------------------------------------- download


def _download(target: Path, split: str) -> np.ndarray:
    """Download one ``.amat`` file to ``target``, check it, and return its pixels; nothing partial is left."""
    base = os.environ.get(MNIST_URL_ENV) or MNIST_URL
    url = base if base.endswith("/") else base + "/"
    url += target.name

    def verify(temporary: Path, digest: str) -> np.ndarray:  # before the file takes its name
        if digest != MNIST_SHA256[split]:
            raise download.TransferFailed(f"SHA-256 {digest} of the download, expected {MNIST_SHA256[split]}")
        return _parse_amat(temporary, split)

    try:
        bits = download.fetch(url, target, verify)
    except (OSError, http.client.HTTPException, download.TransferFailed, CorruptDataError) as error:
        raise DataUnavailableError(_unavailable_message(target.parent, url, error)) from error
    _write_cache(_cache_path(target), bits)
    return bits


def _unavailable_message(folder: Path, url: str, error: BaseException) -> str:
    names = ", ".join(_mnist_file_names())
    return (
        f"binarized MNIST is not available: downloading {url} failed ({type(error).__name__}: {error}). "
        f"The data directory {folder} should hold the files {names}. Download them by hand into it, or "
        f"set the environment variable {DATA_ENV} to a directory whose '{MNIST_FOLDER}' folder holds them "
        f"(or {MNIST_URL_ENV} to another copy of {MNIST_URL}). Offline, every chapter also runs on the "
        'bundled digits: vaecourse.data.load("digits").'
    )


# ---------------------------------------------------------------------------------------------- cache


def _cache_path(source: Path) -> Path:
    """The cached copy of ``source``: named by its resolved path, size and modification time."""
    stat = source.stat()
    place = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / MNIST_FOLDER / f"{source.stem}-{place}-{stat.st_size}-{stat.st_mtime_ns}.npy"


def _read_cache(cached: Path, split: str) -> np.ndarray | None:
    """Pixels from a cache file written by ``_write_cache``; None when absent or not as expected."""
    try:
        packed = np.load(cached, allow_pickle=False)  # uint8 [N, 98]: 8 pixels a byte
    except (OSError, ValueError):
        return None
    if packed.dtype != np.uint8 or packed.shape != (ROWS[split], (PIXELS + 7) // 8):
        return None
    return np.unpackbits(packed, axis=1, count=PIXELS)


def _write_cache(cached: Path, bits: np.ndarray) -> None:
    """Save ``bits`` packed 8 to a byte, atomically, and drop older copies of the same source file."""
    folder = cached.parent
    try:
        with atomic_write(cached) as handle:
            np.save(handle, np.packbits(bits, axis=1))
    except OSError as error:
        _warn_cache_once(folder, error)
        return
    stem_and_place = cached.name.rsplit("-", 2)[0]
    for stale in folder.glob(f"{stem_and_place}-*.npy"):
        if stale != cached:
            with contextlib.suppress(OSError):
                stale.unlink()


def _warn_cache_once(folder: Path, error: OSError) -> None:
    if str(folder) in _CACHE_WARNED:
        return
    _CACHE_WARNED.add(str(folder))
    warnings.warn(
        f"cannot write the data cache in {folder} ({error}); binarized MNIST will be parsed from the text "
        f"files at every load. Set {CACHE_ENV} to a writable directory to cache it.",
        RuntimeWarning,
        stacklevel=4,
    )
