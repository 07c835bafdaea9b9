"""vaecourse.reproduce: the results table of chapter 8, run here tiny."""

import dataclasses
import json
import math
import pathlib

import pytest
import torch

import vaecourse as vc
from vaecourse import checkpoint, judge, recipes, reproduce


@pytest.fixture(autouse=True)
def tiny_recipe(monkeypatch):
    """The recipe ``tiny``: the CPU recipe with K = 10 pseudo-inputs for the VampPrior."""
    cpu = recipes.recipe("cpu")
    options = {**cpu.prior_options, "vamp": {"num_components": 10}}
    monkeypatch.setitem(recipes.RECIPES, "tiny", dataclasses.replace(cpu, name="tiny", prior_options=options))


def tiny_run(**changes):
    fields = dict(
        name="tiny",
        recipe="tiny",
        regimes=(
            reproduce.Regime("1 s", "", seconds=1.0, why="equal time"),
            reproduce.Regime("1 epoch", "epochs-1", epochs=1, why="equal epochs"),
        ),
        num_samples=5,
        test_examples=40,
        surgery_examples=60,
        judge_samples=50,
        train_examples=300,
    )
    fields.update(changes)
    return reproduce.ReproduceRun(**fields)


def tiny_model(prior="standard", seed=0):
    torch.manual_seed(seed)
    config = vc.VAEConfig(
        latent_dim=3, hidden_dims=(16,), prior=prior, prior_options={"num_components": 4} if prior == "mog" else {}
    )
    return vc.VAE(config).eval()


@pytest.mark.slow
def test_tiny_reproduce_writes_both_regimes_and_loadable_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setitem(reproduce.RUNS, "tiny", tiny_run())
    judge.load_judge.cache_clear()  # the judge is built in here, as on the first call in a fresh process
    state = torch.random.get_rng_state()
    table = reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("standard", "vamp"))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    rows = {(row["regime"], row["prior"]): row for row in table["rows"]}
    assert list(rows) == [("1 s", "standard"), ("1 s", "vamp"), ("1 epoch", "standard"), ("1 epoch", "vamp")]
    assert rows["1 s", "vamp"]["prior_options"] == {"num_components": 10}
    for (regime, _), row in rows.items():
        assert row["nll"] > 0 and row["nll_se"] > 0 and row["epochs"] >= 1 and not row["reused"]
        assert row["train_seconds"] >= 1.0 if regime == "1 s" else row["epochs"] == 1
        assert -row["test_elbo"] >= row["nll"] - 4 * row["nll_se"]  # the ELBO lies below the IWAE estimate
        assert abs(row["rate"] + row["distortion"] + row["test_elbo"]) < 1e-9 and row["distortion"] > 0
        assert row["rate"] >= 0 if row["prior"] == "standard" else True  # analytic KL ≥ 0
        assert 0 <= row["active_units"] <= row["latent_dim"] == 32
        assert row["surgery_examples"] == 60
        assert row["mutual_information"] <= math.log(60) + 4 * row["mutual_information_se"]
        groups = row["samples"]["groups"]
        assert groups["prior"]["count"] == groups["q_avg"]["count"] == 50
        assert groups["prior_in_holes"]["count"] + groups["prior_outside_holes"]["count"] == 50
        assert row["samples"]["hole_fraction"] == groups["prior_in_holes"]["count"] / 50
        for group in groups.values():
            for kind in ("mean", "pixels"):
                entropy = group[kind]["entropy"]
                assert entropy is None if group["count"] == 0 else 0 <= entropy <= math.log(10) + 1e-9
    markdown = (tmp_path / "priors-tiny.md").read_text()
    assert "| 1 s | N(0, I) |" in markdown and "| 1 epoch | VampPrior, K = 10 |" in markdown
    assert "**1 s**: 1 s of wall clock per prior (equal time)" in markdown and "all trained by this command" in markdown
    assert "85.57" in markdown and "tomczak2018vae" in markdown
    assert json.loads((tmp_path / "priors-tiny.json").read_text())["rows"][0]["prior"] == "standard"
    assert vc.load(tmp_path / "priors-tiny" / "vamp.pt").config.prior == "vamp"
    assert checkpoint.read(tmp_path / "priors-tiny" / "epochs-1" / "standard.pt")["train_config"]["epochs"] == 1


@pytest.mark.slow
def test_reuse_measures_existing_checkpoints_without_training_them_again(tmp_path, monkeypatch):
    monkeypatch.setitem(reproduce.RUNS, "tiny", tiny_run())
    first = reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("mog",))["rows"]
    saved = tmp_path / "priors-tiny" / "mog.pt"
    before = saved.read_bytes()
    (tmp_path / "priors-tiny" / "epochs-1" / "mog.pt").unlink()  # one regime's model missing: trained again
    second = reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("mog",), reuse=True)["rows"]
    assert saved.read_bytes() == before  # a reused checkpoint is not rewritten
    assert [row["reused"] for row in second] == [True, False]
    assert second[0]["train_seconds"] == first[0]["train_seconds"] and second[0]["epochs"] == first[0]["epochs"]
    for key in ("nll", "rate", "distortion", "marginal_kl", "mutual_information"):  # the same model, the same seeds
        assert second[0][key] == pytest.approx(first[0][key], abs=1e-9), key
    assert "1 s**" in (tmp_path / "priors-tiny.md").read_text()
    assert (
        "all re-measured from existing checkpoints (`--reuse`), not retrained"
        in (tmp_path / "priors-tiny.md").read_text()
    )
    monkeypatch.setitem(reproduce.RUNS, "tiny", tiny_run(regimes=(reproduce.Regime("2 s", "", seconds=2.0),)))
    with pytest.raises(ValueError, match="was trained with"):  # a checkpoint of another regime is refused
        reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("mog",), reuse=True)


@pytest.mark.slow
def test_a_subset_replaces_its_rows_and_keeps_the_others(tmp_path, monkeypatch):
    monkeypatch.setitem(reproduce.RUNS, "tiny", tiny_run(regimes=(reproduce.Regime("1 s", "", seconds=0.5),)))
    reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("standard", "mog"))
    first = json.loads((tmp_path / "priors-tiny.json").read_text())["rows"]
    reproduce.reproduce("tiny", tmp_path, torch.device("cpu"), priors=("mog",))
    second = json.loads((tmp_path / "priors-tiny.json").read_text())["rows"]
    assert [row["prior"] for row in second] == ["standard", "mog"]
    assert second[0] == first[0] and second[1]["train_seconds"] != first[1]["train_seconds"]


def test_each_prior_is_trained_with_its_recipes_options():
    for run in reproduce.RUNS.values():
        shared = recipes.recipe(run.recipe)
        for regime in run.regimes:
            for prior in vc.priors.PRIORS:
                model_config, _ = reproduce._configs(prior, run, regime, seed=0)
                assert model_config.prior == prior
                assert model_config.prior_options == shared.prior_options.get(prior, {}), (run.name, prior)
    # the values that trained the committed results (results/priors-cpu.json), and the GPU run's
    assert recipes.recipe("cpu").prior_options == {"mog": {"num_components": 50}, "vamp": {"num_components": 100}}
    assert recipes.recipe("gpu").prior_options == {"mog": {"num_components": 50}, "vamp": {"num_components": 500}}
    root = pathlib.Path(__file__).resolve().parents[1]
    run = reproduce.RUNS["cpu"]
    regimes = {regime.name: regime for regime in run.regimes}
    for row in json.loads((root / "results" / "priors-cpu.json").read_text())["rows"]:
        model_config, _ = reproduce._configs(row["prior"], run, regimes[row["regime"]], seed=0)
        assert model_config.prior_options == row["prior_options"], (row["regime"], row["prior"])


def test_the_command_line_mixture_takes_the_recipes_components():
    for name in ("cpu", "gpu"):  # python -m vaecourse train --prior mog: the same K as reproduce trains
        chosen = recipes.recipe(name).with_prior("mog")
        assert chosen.model.prior_options == {"num_components": 50}
        assert chosen.with_prior("mog", num_components=7).model.prior_options == {"num_components": 7}


def test_rate_and_distortion_are_the_two_terms_of_mean_elbo():
    model = tiny_model("mog")
    x = (torch.rand(30, 784, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    terms = reproduce.rate_distortion(model, x, batch_size=7, seed=3)
    assert abs(terms["elbo"] - vc.train.mean_elbo(model, x, batch_size=7, seed=3)) < 1e-4  # the same draws
    assert terms["rate"] + terms["distortion"] == pytest.approx(-terms["elbo"], abs=1e-12)
    again = reproduce.rate_distortion(model, x, batch_size=7, seed=3)
    assert again == terms  # seeded: the same draws at every call


def test_sample_quality_splits_the_prior_draws_at_the_holes_of_q_avg():
    model = tiny_model("standard")
    x = (torch.rand(40, 784, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    judge.load_judge.cache_clear()  # the judge is built in here, as on the first call in a fresh process
    state = torch.random.get_rng_state()
    strict = reproduce.sample_quality(model, x, num_samples=200, ratio=10.0, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left alone
    loose = reproduce.sample_quality(model, x, num_samples=200, ratio=1e300, seed=1)  # q_avg < p · 1e-300: none
    groups = strict["groups"]
    assert groups["prior_in_holes"]["count"] + groups["prior_outside_holes"]["count"] == 200
    assert strict["hole_fraction"] == groups["prior_in_holes"]["count"] / 200
    assert loose["hole_fraction"] == 0 and loose["groups"]["prior_in_holes"]["mean"]["entropy"] is None
    assert loose["groups"]["prior"] == groups["prior"]  # the same draws, whatever the ratio
    assert reproduce.sample_quality(model, x, num_samples=200, ratio=10.0, seed=1) == strict
    with pytest.raises(ValueError, match="ratio"):
        reproduce.sample_quality(model, x, ratio=0.5)
    with pytest.raises(ValueError, match="num_samples"):
        reproduce.sample_quality(model, x, num_samples=1)


def test_a_regime_takes_seconds_or_epochs_and_unknown_priors_are_refused(tmp_path):
    with pytest.raises(ValueError, match="seconds or epochs"):
        reproduce.Regime("both", seconds=1.0, epochs=1)
    with pytest.raises(ValueError, match="subset"):
        reproduce.reproduce("cpu", tmp_path, torch.device("cpu"), priors=("gaussian",))


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
    regimes = [regime.name for regime in reproduce.RUNS["cpu"].regimes]
    expected = [(regime, prior) for regime in regimes for prior in ("standard", "mog", "vamp", "flow")]
    assert [(row["regime"], row["prior"]) for row in table["rows"]] == expected


def test_missing_results_fail_clearly_offline_and_leave_nothing_behind(monkeypatch, tmp_path):
    from vaecourse import data, results

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAECOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    monkeypatch.setenv(results.URL_ENV, "http://127.0.0.1:9/results")  # the discard port: connection refused
    try:
        results.results_dir("cpu", download=False)
    except FileNotFoundError as error:
        assert "python -m vaecourse reproduce --recipe cpu" in str(error)  # the command that exists
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


def test_the_readme_shows_the_committed_results_table():
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    lines = (root / "results" / "priors-cpu.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| regime | prior | epochs |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    committed = lines[start:end]  # the header, its rule and one row per regime and prior
    assert len(committed) == 2 + 8
    readme = (root / "README.md").read_text()
    assert "\n".join(committed) in readme, "README.md's results table differs from results/priors-cpu.md"
