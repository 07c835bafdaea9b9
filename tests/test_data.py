"""Tests of vaecourse.data: the digits split, binarized MNIST parsing, download, cache and every failure."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from vaecourse import data, download

FILE_NAMES = [f"binarized_mnist_{split}.amat" for split in data.SPLITS]
SMALL_ROWS = {"train": 5, "valid": 3, "test": 4}


def real_data_dir() -> Path:
    """Where the real binarized MNIST lives: $VAECOURSE_DATA, else ../shared/data next to the repository."""
    if os.environ.get("VAECOURSE_DATA"):
        return Path(os.environ["VAECOURSE_DATA"])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


REAL = real_data_dir()
needs_real_data = pytest.mark.skipif(
    not all((REAL / "binarized_mnist" / name).is_file() for name in FILE_NAMES),
    reason=f"the real binarized MNIST files are not in {REAL / 'binarized_mnist'} (set VAECOURSE_DATA)",
)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own empty data and cache directories; the user's real cache is never touched."""
    monkeypatch.setenv("VAECOURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VAECOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VAECOURSE_MNIST_URL", raising=False)
    monkeypatch.setattr(data, "_CACHE_WARNED", set())
    return tmp_path


@pytest.fixture
def small_rows(monkeypatch):
    monkeypatch.setattr(data, "ROWS", dict(SMALL_ROWS))
    return SMALL_ROWS


def amat_bytes(bits: np.ndarray, newline: str = "\n") -> bytes:
    return "".join(" ".join(map(str, row)) + newline for row in bits).encode()


def random_bits(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(rows, data.PIXELS), dtype=np.uint8)


def write_amat(tmp_path: Path, split: str, content: bytes) -> Path:
    folder = tmp_path / "data" / "binarized_mnist"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"binarized_mnist_{split}.amat"
    path.write_bytes(content)
    return path


def files_in(folder: Path) -> list[str]:
    """Every file below ``folder`` (hidden temporary files included), relative to it."""
    return (
        sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if folder.exists()
        else []
    )


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def serve(monkeypatch):
    """``serve(body, declared_length=None, stall=False)`` serves ``body`` for every path on 127.0.0.1 and
    points VAECOURSE_MNIST_URL at it; ``stall`` sends half the body, then hangs until the test ends."""
    release = threading.Event()
    servers = []

    def start(body: bytes, declared_length: int | None = None, stall: bool = False) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header(
                    "Content-Length", str(len(body) if declared_length is None else declared_length)
                )
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if stall else body)
                self.wfile.flush()
                if stall:
                    release.wait(30)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.setenv("VAECOURSE_MNIST_URL", url)
        return url

    yield start
    release.set()
    for server in servers:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------ arguments


def test_unknown_name_lists_the_data_sets():
    with pytest.raises(ValueError, match="unknown data set 'mnist'") as caught:
        data.load("mnist")
    assert "'digits'" in str(caught.value) and "'binarized-mnist'" in str(caught.value)


def test_unknown_split_is_refused_before_any_download(isolated_dirs, monkeypatch):
    monkeypatch.setenv("VAECOURSE_MNIST_URL", closed_port_url())
    with pytest.raises(ValueError, match="unknown split 'validation'") as caught:
        data.load("binarized-mnist", "validation")
    assert all(f"'{split}'" in str(caught.value) for split in data.SPLITS)
    assert not (isolated_dirs / "data").exists()


def test_directories_follow_the_environment(tmp_path, monkeypatch):
    assert data.data_dir() == tmp_path / "data"
    assert data.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("VAECOURSE_DATA")
    assert data.data_dir() == tmp_path / "cache" / "data"
    monkeypatch.delenv("VAECOURSE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "vaecourse"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "vaecourse"


def test_dataset_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match=r"x must be \[N, 64\]"):
        data.Dataset("digits", "train", torch.zeros(3, 63), None, (8, 8))
    with pytest.raises(ValueError, match=r"y must be \[3\]"):
        data.Dataset("digits", "train", torch.zeros(3, 64), torch.zeros(4, dtype=torch.int64), (8, 8))


# --------------------------------------------------------------------------------------------- digits


def test_digits_splits_have_the_documented_shapes_and_values():
    sizes = {"train": 1297, "valid": 250, "test": 250}
    for split, size in sizes.items():
        digits = data.load("digits", split)
        assert digits.x.shape == (size, 64) and digits.x.dtype == torch.float32
        assert digits.y.shape == (size,) and digits.y.dtype == torch.int64
        assert digits.images.shape == (size, 8, 8) and digits.image_shape == (8, 8)
        assert digits.x.min() == 0.0 and digits.x.max() == 1.0
        assert set(digits.y.tolist()) == set(range(10))
        assert repr(digits) == f"Dataset('digits', split='{split}', x=[{size}, 64], labelled)"


def test_digits_split_is_deterministic():
    first, second = data.load("digits", "valid"), data.load("digits", "valid")
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)


def test_digits_splits_are_disjoint_and_cover_every_image():
    indices = data._digits_split_indices(1797)
    together = np.concatenate([indices[split] for split in data.SPLITS])
    assert len(together) == 1797 and set(together.tolist()) == set(range(1797))
    # the same seen through the public API: the three splits are the whole data set, each image once
    from sklearn.datasets import load_digits

    pixels, labels = load_digits(return_X_y=True)
    whole = np.column_stack([pixels / 16.0, labels]).astype(np.float32)
    parts = [data.load("digits", split) for split in data.SPLITS]
    stacked = np.concatenate([np.column_stack([p.x.numpy(), p.y.numpy()]) for p in parts])

    def sort_rows(array):
        return array[np.lexsort(array.T[::-1])]

    np.testing.assert_array_equal(sort_rows(stacked), sort_rows(whole))


# ---------------------------------------------------------------------------- parsing local .amat files


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_small_file_parses_in_either_layout(isolated_dirs, small_rows, newline):
    bits = random_bits(small_rows["valid"])
    write_amat(isolated_dirs, "valid", amat_bytes(bits, newline))
    loaded = data.load("binarized-mnist", "valid")
    assert loaded.x.dtype == torch.float32 and loaded.y is None and loaded.image_shape == (28, 28)
    np.testing.assert_array_equal(loaded.x.numpy(), bits)
    assert loaded.images.shape == (small_rows["valid"], 28, 28)
    assert repr(loaded) == "Dataset('binarized-mnist', split='valid', x=[3, 784], unlabelled)"


def corrupt_truncated(bits):
    return amat_bytes(bits)[: -data.LINE_BYTES // 2], r"line 4 has \d+ values \(the file looks truncated\)"


def corrupt_value(bits):
    text = bytearray(amat_bytes(bits))
    text[2 * data.LINE_BYTES + 2 * 16] = ord("2")  # line 3, value 17: same size as a good file
    return bytes(text), r"found value '2' at line 3 \(value 17\)"


def corrupt_short_row(bits):
    lines = amat_bytes(bits).split(b"\n")
    lines[1] = lines[1][2:]  # line 2 loses its first value
    return b"\n".join(lines), "line 2 has 783 values"


def corrupt_row_count(bits):
    return amat_bytes(bits[:-1]), "3 rows, expected 4"


@pytest.mark.parametrize("corrupt", [corrupt_truncated, corrupt_value, corrupt_short_row, corrupt_row_count])
def test_corrupt_file_is_reported_and_kept(isolated_dirs, small_rows, corrupt):
    content, found = corrupt(random_bits(small_rows["test"]))
    path = write_amat(isolated_dirs, "test", content)
    with pytest.raises(data.CorruptDataError, match=found) as caught:
        data.load("binarized-mnist", "test")
    message = str(caught.value)
    assert (
        str(path) in message and "expected 4 lines of 784 values" in message and "Delete the file" in message
    )
    assert isinstance(caught.value, ValueError)
    assert path.read_bytes() == content  # the user's file is not deleted nor changed
    assert files_in(isolated_dirs / "cache") == []


# ---------------------------------------------------------------------------------------------- cache


def test_second_load_comes_from_the_cache(isolated_dirs, small_rows, monkeypatch):
    bits = random_bits(small_rows["train"])
    write_amat(isolated_dirs, "train", amat_bytes(bits))
    first = data.load("binarized-mnist", "train")
    assert len(files_in(isolated_dirs / "cache" / "binarized_mnist")) == 1

    def no_parsing(*args):
        raise AssertionError("the cached copy should have been used")

    monkeypatch.setattr(data, "_parse_amat", no_parsing)
    assert torch.equal(data.load("binarized-mnist", "train").x, first.x)


def test_changed_source_is_parsed_again(isolated_dirs, small_rows):
    path = write_amat(isolated_dirs, "train", amat_bytes(random_bits(small_rows["train"], seed=1)))
    data.load("binarized-mnist", "train")
    new_bits = random_bits(small_rows["train"], seed=2)
    path.write_bytes(amat_bytes(new_bits))  # same size: only the modification time tells
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    np.testing.assert_array_equal(data.load("binarized-mnist", "train").x.numpy(), new_bits)
    assert len(files_in(isolated_dirs / "cache" / "binarized_mnist")) == 1  # the stale copy is gone


def test_unwritable_cache_warns_once_and_still_loads(isolated_dirs, small_rows, monkeypatch):
    blocker = isolated_dirs / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("VAECOURSE_CACHE", str(blocker))
    bits = random_bits(small_rows["valid"])
    write_amat(isolated_dirs, "valid", amat_bytes(bits))
    with pytest.warns(RuntimeWarning, match="cannot write the data cache"):
        first = data.load("binarized-mnist", "valid")
    np.testing.assert_array_equal(first.x.numpy(), bits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would now fail the test
        np.testing.assert_array_equal(data.load("binarized-mnist", "valid").x.numpy(), bits)


# ------------------------------------------------------------------------------------------- download


def assert_unavailable_message(message: str, folder: Path, url: str):
    assert str(folder) in message and url in message
    assert all(name in message for name in FILE_NAMES)
    assert "VAECOURSE_DATA" in message and 'vaecourse.data.load("digits")' in message


def test_offline_without_files_fails_fast_and_leaves_nothing(isolated_dirs, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("VAECOURSE_MNIST_URL", url)
    with pytest.raises(data.DataUnavailableError) as caught:
        data.load("binarized-mnist", "test")
    assert isinstance(caught.value, RuntimeError)
    folder = isolated_dirs / "data" / "binarized_mnist"
    assert_unavailable_message(str(caught.value), folder, url + "binarized_mnist_test.amat")
    assert files_in(isolated_dirs / "data") == []


def test_unwritable_data_dir_is_reported(isolated_dirs, monkeypatch, serve):
    blocker = isolated_dirs / "data-file"
    blocker.write_text("a file where the data directory should be")
    monkeypatch.setenv("VAECOURSE_DATA", str(blocker))
    url = serve(b"never sent")
    with pytest.raises(data.DataUnavailableError) as caught:
        data.load("binarized-mnist", "valid")
    assert_unavailable_message(str(caught.value), blocker / "binarized_mnist", url)


def test_hanging_connection_is_abandoned_at_the_deadline(isolated_dirs, monkeypatch):
    released = threading.Event()

    def hanging_urlopen(url, timeout):
        released.wait(60)  # a name lookup that does not answer until the test lets it
        raise OSError("too late")

    monkeypatch.setattr(download, "DOWNLOAD_DEADLINE", 0.3)
    monkeypatch.setattr(download.urllib.request, "urlopen", hanging_urlopen)
    monkeypatch.setenv("VAECOURSE_MNIST_URL", "http://unreachable.invalid/")
    try:
        with pytest.raises(data.DataUnavailableError, match="no answer from .* within 0.3 s"):
            data.load("binarized-mnist", "valid")
        assert not released.is_set()  # load gave up while the opening was still blocked
    finally:
        released.set()
    assert files_in(isolated_dirs / "data") == []


@needs_real_data
def test_download_of_the_real_valid_file(isolated_dirs, serve, monkeypatch):
    real_file = REAL / "binarized_mnist" / "binarized_mnist_valid.amat"
    serve(real_file.read_bytes())
    downloaded = data.load("binarized-mnist", "valid")
    target = isolated_dirs / "data" / "binarized_mnist" / "binarized_mnist_valid.amat"
    assert files_in(isolated_dirs / "data") == ["binarized_mnist/binarized_mnist_valid.amat"]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == data.MNIST_SHA256["valid"]
    assert len(files_in(isolated_dirs / "cache" / "binarized_mnist")) == 1
    monkeypatch.setenv("VAECOURSE_DATA", str(REAL))
    assert torch.equal(downloaded.x, data.load("binarized-mnist", "valid").x)


@pytest.mark.parametrize("declared", ["honest", "full"], ids=["short-file", "connection-cut"])
def test_truncated_download_fails_and_leaves_nothing(isolated_dirs, small_rows, serve, declared):
    body = amat_bytes(random_bits(small_rows["valid"]))
    truncated = body[: len(body) // 2]
    url = serve(truncated, declared_length=len(body) if declared == "full" else None)
    expected = "closed after" if declared == "full" else "SHA-256"
    with pytest.raises(data.DataUnavailableError, match=expected) as caught:
        data.load("binarized-mnist", "valid")
    assert_unavailable_message(str(caught.value), isolated_dirs / "data" / "binarized_mnist", url)
    assert files_in(isolated_dirs / "data") == []


def test_download_with_right_checksum_but_bad_content_leaves_nothing(
    isolated_dirs, small_rows, serve, monkeypatch
):
    body = amat_bytes(random_bits(small_rows["valid"] + 1))  # one row too many
    monkeypatch.setitem(data.MNIST_SHA256, "valid", hashlib.sha256(body).hexdigest())
    serve(body)
    with pytest.raises(data.DataUnavailableError, match="4 rows, expected 3"):
        data.load("binarized-mnist", "valid")
    assert files_in(isolated_dirs / "data") == []


def test_download_of_a_small_file_with_matching_checksum(isolated_dirs, small_rows, serve, monkeypatch):
    bits = random_bits(small_rows["test"])
    body = amat_bytes(bits)
    monkeypatch.setitem(data.MNIST_SHA256, "test", hashlib.sha256(body).hexdigest())
    serve(body)
    np.testing.assert_array_equal(data.load("binarized-mnist", "test").x.numpy(), bits)
    target = isolated_dirs / "data" / "binarized_mnist" / "binarized_mnist_test.amat"
    assert target.read_bytes() == body and target.stat().st_mode & 0o444 == 0o444


def test_stalled_download_fails_at_the_deadline_and_leaves_nothing(
    isolated_dirs, small_rows, serve, monkeypatch
):
    monkeypatch.setattr(download, "SOCKET_TIMEOUT", 0.5)  # bounds each read; the stalled one fails after 0.5 s
    # The opening's deadline is out of reach, however busy the machine: at 2 s a slow opening could beat the socket
    # timeout with its own error ("no answer … within 2 s"). Without the socket timeout the read would block until
    # the server gives up after 30 s and closes the connection ("closed after …"): the match below would fail.
    monkeypatch.setattr(download, "DOWNLOAD_DEADLINE", 300.0)
    serve(amat_bytes(random_bits(small_rows["valid"])), stall=True)
    with pytest.raises(data.DataUnavailableError, match="timed out"):  # the socket timeout fired, not a hang
        data.load("binarized-mnist", "valid")
    assert files_in(isolated_dirs / "data") == []


# ----------------------------------------------------------------------------------------- real data


@needs_real_data
def test_real_binarized_mnist(isolated_dirs, monkeypatch):
    monkeypatch.setenv("VAECOURSE_DATA", str(REAL))
    for split, rows in {"valid": 10000, "test": 10000, "train": 50000}.items():
        loaded = data.load("binarized-mnist", split)
        assert loaded.x.shape == (rows, 784) and loaded.x.dtype == torch.float32
        assert (loaded.y is None) == (split != "test")
        assert ((loaded.x == 0) | (loaded.x == 1)).all() and loaded.x.min() == 0 and loaded.x.max() == 1
        assert loaded.images.shape == (rows, 28, 28)
    # the test file is sorted by digit: its labels come from MNIST's test-set counts of each digit
    labels = data.load("binarized-mnist", "test").y
    assert labels.dtype == torch.int64 and torch.equal(labels.bincount(), torch.tensor(data.MNIST_TEST_COUNTS))
    assert (labels.diff() >= 0).all() and labels[0] == 0 and labels[-1] == 9
    cached = files_in(isolated_dirs / "cache" / "binarized_mnist")
    assert len(cached) == 3 and any(name.startswith("binarized_mnist_train-") for name in cached)

    def no_parsing(*args):
        raise AssertionError("the second load should come from the cache")

    monkeypatch.setattr(data, "_parse_amat", no_parsing)
    again = data.load("binarized-mnist", "train")
    assert torch.equal(again.x, loaded.x)
