"""The command line, ``python -m vaecourse train | evaluate``, run as a user runs it."""

import json
import subprocess
import sys

import pytest
import torch

from vaecourse.cli import main


def run(*args, check=True):
    completed = subprocess.run([sys.executable, "-m", "vaecourse", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert completed.returncode == 0, completed.stderr
    return completed


@pytest.mark.slow
def test_help_documents_every_flag():
    text = run("train", "--help").stdout
    for flag in (
        "--dataset",
        "--prior",
        "--latent-dim",
        "--hidden-dims",
        "--batch-size",
        "--lr",
        "--epochs",
        "--seconds",
        "--seed",
        "--out",
        "--architecture",
        "--free-bits",
        "--bound",
        "--num-samples",
    ):
        assert flag in text, flag
    text = run("evaluate", "--help").stdout
    for flag in ("--dataset", "--split", "--num-samples", "--max-examples"):
        assert flag in text, flag


@pytest.mark.slow
def test_train_then_evaluate_on_digits(tmp_path):
    out = tmp_path / "run"
    completed = run(
        "train",
        "--dataset",
        "digits",
        "--latent-dim",
        "2",
        "--hidden-dims",
        "32,16",
        "--batch-size",
        "64",
        "--lr",
        "0.003",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--out",
        str(out),
        "--quiet",
    )
    assert "2 epochs" in completed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("images_per_second", "train_seconds", "epochs", "final_train_elbo", "final_valid_elbo"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["model"]["hidden_dims"] == [32, 16]
    assert metrics["model"]["likelihood"] == "binomial" and metrics["train"]["seed"] == 1
    completed = run(
        "evaluate",
        str(out / "model.pt"),
        "--dataset",
        "digits",
        "--split",
        "test",
        "--num-samples",
        "20",
        "--max-examples",
        "50",
    )
    assert "NLL = " in completed.stdout and "K = 20, 50 examples" in completed.stdout
    result = json.loads((out / "eval-digits-test-k20.json").read_text())
    assert result["examples"] == 50 and result["nll"] > 0 and result["standard_error"] > 0
    assert 0 <= result["active_units"] <= result["latent_dim"] == 2
    assert f"{result['active_units']} of 2 latent dimensions active" in completed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--out", "x", "--latent-dim", "0"], "--latent-dim: expected a positive integer, got '0'"),
        (["train", "--out", "x", "--hidden-dims", "400,abc"], "--hidden-dims: expected comma-separated"),
        (["train", "--out", "x", "--lr", "-1"], "--lr: expected a positive number"),
        (["train", "--out", "x", "--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["train", "--out", "x", "--epochs", "3", "--seconds", "5"], "not allowed with argument"),
        (["train"], "the following arguments are required: --out"),
        (["evaluate", "missing.pt"], "no checkpoint at missing.pt"),
        (["train", "--out", "x", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_flag_values_are_one_line_errors(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_evaluate_refuses_a_model_for_other_data(tmp_path):
    out = tmp_path / "run"
    run(
        "train",
        "--dataset",
        "digits",
        "--latent-dim",
        "2",
        "--hidden-dims",
        "8",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--quiet",
        "--no-valid",
    )
    completed = run("evaluate", str(out / "model.pt"), "--dataset", "binarized-mnist", check=False)
    assert completed.returncode == 2 and "trained on 64-pixel images" in completed.stderr


@pytest.mark.slow
def test_learned_priors_from_the_command_line(tmp_path):
    out = tmp_path / "vamp"
    run("train", "--dataset", "digits", "--prior", "vamp", "--num-components", "20", "--latent-dim", "2",
        "--hidden-dims", "16", "--epochs", "1", "--out", str(out), "--quiet")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["prior"] == "vamp" and metrics["model"]["prior_options"] == {"num_components": 20}
    assert main(["train", "--dataset", "digits", "--prior", "flow", "--num-components", "3", "--out", str(out)]) == 2


class _Stop(Exception):
    """Raised by the stand-in for fit: the test has seen what train would train on."""


@pytest.fixture
def captured_fit(monkeypatch):
    """Replace ``fit`` in the command line by a stand-in that records the model and the data, then stops."""
    import vaecourse.cli as cli

    seen = {}

    def fake_fit(model, train, valid=None, *, config=None):
        seen.update(model=model, train=train, config=config)
        raise _Stop

    monkeypatch.setattr(cli, "fit", fake_fit)
    return seen


def test_train_size_takes_evenly_spaced_examples(tmp_path, captured_fit):
    import vaecourse as vc

    with pytest.raises(_Stop):
        main(["train", "--dataset", "digits", "--train-size", "50", "--device", "cpu", "--out", str(tmp_path)])
    everything = vc.data.load("digits", "train").x
    assert torch.equal(captured_fit["train"], vc.data.evenly_spaced(everything, 50))
    assert not torch.equal(captured_fit["train"], everything[:50])


def test_left_out_flags_give_the_devices_recipe_for_the_chosen_prior(tmp_path, captured_fit):
    with pytest.raises(_Stop):
        main(["train", "--dataset", "digits", "--prior", "vamp", "--device", "cpu", "--out", str(tmp_path)])
    assert captured_fit["model"].config.prior_options == {"num_components": 100}  # the CPU recipe's K
    with pytest.raises(_Stop):
        main(["train", "--dataset", "digits", "--prior", "mog", "--device", "cpu", "--out", str(tmp_path)])
    assert captured_fit["model"].config.prior_options == {"num_components": 50}  # the K that reproduce trains


def test_unwritable_out_fails_before_training(tmp_path, captured_fit, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the output folder should be")
    assert main(["train", "--dataset", "digits", "--device", "cpu", "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write there" in err and str(blocker / "run") in err
    assert captured_fit == {}  # nothing was trained


def test_recipe_flag_names_a_recipe_and_reproduce_takes_the_same_word(tmp_path, captured_fit):
    import vaecourse as vc
    from vaecourse.cli import build_parser

    with pytest.raises(_Stop):
        main(["train", "--dataset", "digits", "--recipe", "gpu", "--device", "cpu", "--out", str(tmp_path)])
    assert captured_fit["model"].config.hidden_dims == vc.recipes.recipe("gpu").model.hidden_dims
    assert build_parser().parse_args(["reproduce", "--recipe", "cpu"]).recipe == "cpu"
    assert build_parser().parse_args(["reproduce", "--budget", "cpu"]).recipe == "cpu"  # the former name
    assert main(["reproduce", "--recipe", "small"]) == 2  # a budget is not a recipe
    with pytest.raises(ValueError, match="for_device"):
        vc.recipes.recipe("cuda")
    assert vc.recipes.for_device(torch.device("cuda", 0)).name == "gpu" and vc.recipes.for_device("mps").name == "cpu"


def test_reproduce_passes_reuse_and_regimes_on_and_refuses_unknown_regimes(monkeypatch, tmp_path, capsys):
    from vaecourse import reproduce

    calls = []
    monkeypatch.setattr(reproduce, "reproduce", lambda *args, **kwargs: calls.append((args, kwargs)) or {})
    out = str(tmp_path)
    assert main(["reproduce", "--recipe", "cpu", "--device", "cpu", "--out", out]) == 0
    assert calls[-1][1] == {"reuse": False, "regimes": None} and calls[-1][0][3] == ("standard", "mog", "vamp", "flow")
    command = ["reproduce", "--recipe", "cpu", "--reuse", "--regimes", "20 epochs", "--priors", "flow"]
    assert main([*command, "--device", "cpu", "--out", out]) == 0
    assert calls[-1][1] == {"reuse": True, "regimes": ("20 epochs",)} and calls[-1][0][3] == ("flow",)
    assert main(["reproduce", "--recipe", "cpu", "--regimes", "30 epochs", "--device", "cpu", "--out", out]) == 2
    assert "--regimes: expected names among ['150 s', '20 epochs'], got '30 epochs'" in capsys.readouterr().err
    assert len(calls) == 2  # nothing run for the refused regime


def test_the_objectives_and_architecture_of_chapters_9_and_10_are_flags(tmp_path, captured_fit, monkeypatch):
    from vaecourse import cli

    with pytest.raises(_Stop):
        main(["train", "--dataset", "digits", "--free-bits", "0.25", "--device", "cpu", "--out", str(tmp_path)])
    assert captured_fit["config"].free_bits == 0.25 and captured_fit["config"].bound == "elbo"
    with pytest.raises(_Stop):
        main(
            ["train", "--dataset", "digits", "--bound", "iwae", "--num-samples", "5", "--device", "cpu"]
            + ["--out", str(tmp_path)]
        )
    assert (captured_fit["config"].bound, captured_fit["config"].num_samples) == ("iwae", 5)
    monkeypatch.setattr(cli, "_load_split", lambda *args: torch.zeros(8, 784))  # 28×28 images, no download
    with pytest.raises(_Stop):
        main(["train", "--architecture", "conv", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)])
    model = captured_fit["model"]
    assert model.config.architecture == "conv" and not model.config.sparse_input  # the CPU recipe's sparse layer off


@pytest.mark.parametrize(
    "args, message",
    [
        (["--architecture", "conv"], "28×28"),  # the 8×8 digits have 64 pixels
        (["--bound", "iwae", "--beta", "0.5"], "needs beta = 1"),
        (["--bound", "iwae", "--free-bits", "0.5"], "use it with bound='elbo'"),
        (["--free-bits", "-1"], "expected a number >= 0"),
    ],
)
def test_conflicting_objective_flags_are_one_line_errors(args, message, tmp_path, captured_fit, capsys):
    assert main(["train", "--dataset", "digits", *args, "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert captured_fit == {}  # refused before training
