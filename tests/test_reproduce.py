"""vaecourse.reproduce: the results table of chapter 8, run here tiny."""

import json

import pytest
import torch

import vaecourse as vc
from vaecourse import reproduce


@pytest.mark.slow
def test_tiny_reproduce_writes_the_table_and_loadable_checkpoints(tmp_path, monkeypatch):
    tiny = reproduce.ReproduceRun("tiny", "cpu", seconds_per_prior=1.0, num_samples=5, test_examples=40,
                                     surgery_examples=30, vamp_components=10)
    monkeypatch.setitem(reproduce.RUNS, "tiny", tiny)
    table = reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("standard", "vamp"))
    rows = {row["prior"]: row for row in table["rows"]}
    assert set(rows) == {"standard", "vamp"} and rows["vamp"]["prior_options"] == {"num_components": 10}
    for row in rows.values():
        assert row["nll"] > 0 and row["nll_se"] > 0 and row["train_seconds"] >= 1.0 and row["epochs"] >= 1
        assert row["mutual_information"] <= 3.4012 + 4 * row["mutual_information_se"]  # log 30
        assert -row["test_elbo"] >= row["nll"] - 4 * row["nll_se"]  # ELBO below the IWAE estimate
    markdown = (tmp_path / "priors-tiny.md").read_text()
    assert "| N(0, I) |" in markdown and "| VampPrior, K = 10 |" in markdown
    assert "85.57" in markdown and "tomczak2018vae" in markdown
    assert json.loads((tmp_path / "priors-tiny.json").read_text())["rows"][0]["prior"] == "standard"
    model = vc.load(tmp_path / "priors-tiny" / "vamp.pt")
    assert model.config.prior == "vamp"


@pytest.mark.slow
def test_a_subset_replaces_its_rows_and_keeps_the_others(tmp_path, monkeypatch):
    tiny = reproduce.ReproduceRun("tiny", "cpu", seconds_per_prior=0.5, num_samples=3, test_examples=20,
                                     surgery_examples=10, vamp_components=5)
    monkeypatch.setitem(reproduce.RUNS, "tiny", tiny)
    reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("standard", "mog"))
    first = json.loads((tmp_path / "priors-tiny.json").read_text())["rows"]
    reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("mog",))
    second = json.loads((tmp_path / "priors-tiny.json").read_text())["rows"]
    assert [row["prior"] for row in second] == ["standard", "mog"]
    assert second[0] == first[0] and second[1]["train_seconds"] != first[1]["train_seconds"]


def test_results_are_found_in_the_repository_and_their_address_is_the_repository(monkeypatch, tmp_path):
    import pathlib
    import tomllib

    from vaecourse import results

    root = pathlib.Path(__file__).resolve().parents[1]
    assert tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"] == results.REPOSITORY
    monkeypatch.chdir(root / "book")  # where a chapter runs
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    assert results.results_dir("cpu", download=False) == root / "results"
    table = json.loads((results.results_dir("cpu") / "priors-cpu.json").read_text())
    assert [row["prior"] for row in table["rows"]] == ["standard", "mog", "vamp", "flow"]


def test_missing_results_fail_clearly_offline_and_leave_nothing_behind(monkeypatch, tmp_path):
    from vaecourse import data, results

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAECOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    monkeypatch.setenv(results.URL_ENV, "http://127.0.0.1:9/results")  # the discard port: connection refused
    try:
        results.results_dir("cpu", download=False)
    except FileNotFoundError as error:
        assert "python -m vaecourse reproduce --budget cpu" in str(error)
    else:
        raise AssertionError("expected FileNotFoundError")
    try:
        results.results_dir("cpu")
    except data.DataUnavailableError as error:
        assert "could not download http://127.0.0.1:9/results/priors-cpu.json" in str(error)
        assert "ConnectionRefusedError" in str(error) or "URLError" in str(error)  # the network's error, no other
    else:
        raise AssertionError("expected DataUnavailableError")
    leftovers = list((tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else []
    assert all(path.is_dir() for path in leftovers), leftovers


def test_missing_results_are_downloaded_whole_into_the_cache(monkeypatch, tmp_path):
    import functools
    import pathlib
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from vaecourse import results

    committed = pathlib.Path(__file__).resolve().parents[1] / "results"
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(committed))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("VAECOURSE_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv(results.RESULTS_ENV, raising=False)
        monkeypatch.setenv(results.URL_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        folder = results.results_dir("cpu")
    finally:
        server.shutdown()
    assert folder == tmp_path / "cache" / "results"
    for name in ("priors-cpu.json", "priors-cpu.md", "priors-cpu/vamp.pt"):
        assert (folder / name).read_bytes() == (committed / name).read_bytes()
    assert not [path for path in folder.rglob("*.part")]
