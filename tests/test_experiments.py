"""vaecourse.experiments: the tables of chapter 10 (IWAE objective, convolutional VAE), run here tiny."""

import json

import pytest
import torch

from vaecourse import cli, experiments, results


@pytest.mark.slow
def test_tiny_iwae_experiment_writes_both_regimes_and_the_snr(tmp_path, monkeypatch):
    tiny = experiments.IwaeRun("tiny", "cpu", (1, 3), 1, 200, 1.0, 200, 10, 40, 3, 8)
    monkeypatch.setitem(experiments.IWAE_RUNS, "tiny", tiny)
    table = experiments.iwae_experiment("tiny", tmp_path, torch.device("cpu"))
    rows = table["rows"]
    assert [(row["regime"], row["k"]) for row in rows] == [("epochs", 1), ("epochs", 3), ("seconds", 1), ("seconds", 3)]
    for row in rows:
        assert row["nll"] > 0 and row["nll_se"] > 0 and 0 <= row["active_units"] <= row["latent_dim"] == 32
        assert -row["test_elbo"] >= row["nll"] - 4 * row["nll_se"]  # the ELBO is below the IWAE estimate
        assert all(row[f"snr_{net}_k{k}"] > 0 for net in ("encoder", "decoder") for k in (1, 3))
        assert row["train_size"] == 200
    assert rows[0]["epochs"] == 1 and rows[2]["train_seconds"] >= 1.0
    markdown = (tmp_path / "iwae-tiny.md").read_text()
    assert "| equal epochs | 3 |" in markdown and "| equal time | 1 |" in markdown
    assert json.loads((tmp_path / "iwae-tiny.json").read_text())["run"]["ks"] == [1, 3]


@pytest.mark.slow
def test_tiny_conv_experiment_compares_the_two_architectures(tmp_path, monkeypatch):
    tiny = experiments.ConvRun("tiny", "cpu", 1.0, None, 200, (4, 8), (), 5, 30)
    monkeypatch.setitem(experiments.CONV_RUNS, "tiny", tiny)
    table = experiments.conv_experiment("tiny", tmp_path, torch.device("cpu"))
    rows = {row["model"]: row for row in table["rows"]}
    assert rows["conv"]["config"]["architecture"] == "conv" and rows["mlp"]["config"]["architecture"] == "mlp"
    assert rows["conv"]["parameters"] < rows["mlp"]["parameters"]
    assert "| conv |" in (tmp_path / "conv-tiny.md").read_text()


def test_conv_config_follows_the_run():
    config = experiments.conv_config(experiments.CONV_RUNS["cpu"])
    assert config.architecture == "conv" and config.channels == experiments.CONV_RUNS["cpu"].channels


def test_load_table_finds_the_results_folder_and_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    (tmp_path / "iwae-cpu.json").write_text(json.dumps({"rows": [{"k": 1}]}))
    assert experiments.load_table("iwae", "cpu")["rows"] == [{"k": 1}]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAECOURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="experiment conv --recipe cpu"):
        experiments.load_table("conv", "cpu", download=False)
    with pytest.raises(ValueError, match="expected name"):
        experiments.load_table("priors", "cpu")


def test_the_committed_tables_are_found_from_the_book_folder(monkeypatch):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root / "book")
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    for name in ("iwae", "conv"):
        table = experiments.load_table(name, "cpu", download=False)
        assert table["recipe"] == "cpu" and table["rows"]


def test_cli_experiment_flags(capsys):
    assert cli.main(["experiment", "vimco", "--recipe", "cpu"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert cli.main(["experiment", "iwae"]) == 2
    assert "--recipe" in capsys.readouterr().err
