"""The measured tables of chapter 10 (``python -m vaecourse experiment iwae|conv --recipe cpu|gpu``).

- ``iwae``: one VAE per K = 1, 5, 50, trained on the IWAE bound with K samples (K = 1 is the ELBO), once for the
  same number of epochs and once for the same wall-clock time; each measured on the test set (NLL by importance
  sampling, the ELBO, the active units) and by the signal-to-noise ratio of its gradients at K = 1, 5, 50 on one
  fixed training mini-batch. Writes ``OUT/iwae-<recipe>.json`` and ``.md``.
- ``conv``: the MLP VAE of the recipe and the convolutional VAE (``VAEConfig(architecture="conv")``), trained for
  the same time (or epochs) and measured alike. Writes ``OUT/conv-<recipe>.json`` and ``.md``.

The ``cpu`` runs are sized for 2 CPU cores with one thread; the ``gpu`` runs are the same tables at the scale of
the papers, for a CUDA GPU.
"""

from __future__ import annotations

import json
import pathlib
import time
from dataclasses import asdict, dataclass

import torch

from . import data, files
from .diagnostics import active_units
from .evaluate import log_likelihood
from .iwae import gradient_snr
from .recipes import recipe
from .train import TrainConfig, fit_new, mean_elbo
from .vae import VAEConfig

__all__ = ["CONV_RUNS", "IWAE_RUNS", "ConvRun", "IwaeRun", "conv_experiment", "iwae_experiment", "load_table"]


@dataclass(frozen=True)
class IwaeRun:
    """The sizes of the IWAE table: K values, the equal-epochs regime (``epochs`` over ``epochs_train_size``
    evenly spaced training images, None: all 50 000) and the equal-time regime (``seconds`` per model over
    ``seconds_train_size``), the test NLL's importance samples and images, and the gradient SNR's repeats and
    mini-batch size."""

    name: str
    recipe: str
    ks: tuple[int, ...]
    epochs: int
    epochs_train_size: int | None
    seconds: float | None  # None: no equal-time regime
    seconds_train_size: int | None
    eval_samples: int
    test_examples: int | None
    snr_repeats: int
    snr_batch: int


IWAE_RUNS = {
    "cpu": IwaeRun("cpu", "cpu", (1, 5, 50), 10, 10_000, 120.0, None, 1000, 1000, 100, 100),
    "gpu": IwaeRun("gpu", "gpu", (1, 5, 50), 200, None, 1800.0, None, 5000, None, 1000, 100),
}


@dataclass(frozen=True)
class ConvRun:
    """The sizes of the conv-against-MLP table: the training time per model (or the recipe's ``epochs``), the
    training images (None: all 50 000), the convolutional model's ``channels`` and ``hidden_dims``, and the test
    NLL's importance samples and images."""

    name: str
    recipe: str
    seconds: float | None
    epochs: int | None
    train_size: int | None
    channels: tuple[int, int]
    hidden_dims: tuple[int, ...]
    eval_samples: int
    test_examples: int | None


CONV_RUNS = {
    "cpu": ConvRun("cpu", "cpu", 120.0, None, None, (32, 64), (), 500, 1000),
    "gpu": ConvRun("gpu", "gpu", None, 500, None, (32, 64), (), 5000, None),
}


def _measure(model, x_test, eval_samples: int, seed: int = 0) -> dict:
    start = time.perf_counter()
    estimate = log_likelihood(model, x_test, num_samples=eval_samples, seed=seed)
    units = active_units(model, x_test)
    return {
        "nll": estimate.nll,
        "nll_se": estimate.standard_error,
        "test_elbo": mean_elbo(model, x_test),
        "active_units": units.count,
        "latent_dim": units.latent_dim,
        "eval_seconds": time.perf_counter() - start,
    }


def _train(model_config: VAEConfig, train_config: TrainConfig, x_train: torch.Tensor, device) -> tuple:
    model, result = fit_new(model_config, x_train.to(device), config=train_config)
    return model, {
        "epochs": result.epochs,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "images_per_second": result.images_per_second,
        "final_train_elbo": result.final_train_elbo,
    }


def _write(out_dir: pathlib.Path, stem: str, table: dict, markdown: str) -> None:
    files.write_text(out_dir / f"{stem}.json", json.dumps(table, indent=2) + "\n")
    files.write_text(out_dir / f"{stem}.md", markdown)


def _subset(size: int | None) -> str:
    return "all 50 000 training images" if size is None else f"{size} evenly spaced training images"


def iwae_experiment(run_name: str, out_dir: pathlib.Path, device: torch.device, seed: int = 0) -> dict:
    """Train and measure one VAE per K of the run ``run_name`` of :data:`IWAE_RUNS`, in both regimes, and write
    ``out_dir/iwae-<run>.json`` and ``.md``."""
    if run_name not in IWAE_RUNS:
        raise ValueError(f"unknown recipe {run_name!r}: expected one of {sorted(IWAE_RUNS)}")
    run = IWAE_RUNS[run_name]
    shared = recipe(run.recipe)
    train_all = data.load("binarized-mnist", "train").x
    x_test = data.evenly_spaced(data.load("binarized-mnist", "test").x, run.test_examples).to(device)
    x_snr = data.evenly_spaced(train_all, run.snr_batch).to(device)
    regimes = [("epochs", run.epochs_train_size, {"epochs": run.epochs, "seconds": None})]
    if run.seconds is not None:
        regimes.append(("seconds", run.seconds_train_size, {"epochs": None, "seconds": run.seconds}))
    rows = []
    for regime, size, length in regimes:
        x_train = data.evenly_spaced(train_all, size).to(device)
        for k in run.ks:
            fields = {**shared.train.to_dict(), **length, "seed": seed, "progress": False, "warmup_epochs": 0.0}
            fields.update(num_samples=k, bound="iwae" if k > 1 else "elbo")
            model, trained = _train(shared.model, TrainConfig(**fields), x_train, device)
            row = {"regime": regime, "k": k, "train_size": len(x_train), **trained}
            row.update(_measure(model, x_test, run.eval_samples, seed))
            for snr_k in run.ks:
                snr = gradient_snr(model, x_snr, snr_k, repeats=run.snr_repeats, seed=seed)
                row[f"snr_encoder_k{snr_k}"] = snr.encoder
                row[f"snr_decoder_k{snr_k}"] = snr.decoder
            rows.append(row)
            print(
                f"{regime}, K = {k}: {trained['epochs']} epochs in {trained['train_seconds']:.0f} s, "
                f"NLL {row['nll']:.2f} ± {row['nll_se']:.2f}, {row['active_units']} active units",
                flush=True,
            )
    table = {"recipe": run.name, "device": str(device), "run": asdict(run), "rows": rows}
    _write(pathlib.Path(out_dir), f"iwae-{run.name}", table, _iwae_markdown(run, rows, str(device)))
    return table


def _iwae_markdown(run: IwaeRun, rows: list[dict], device: str) -> str:
    test = "all 10 000" if run.test_examples is None else f"{run.test_examples} evenly spaced"
    lines = [
        f"# The IWAE objective on binarized MNIST ({run.name} run)",
        "",
        f"Written by `python -m vaecourse experiment iwae --recipe {run.name}` on {device}. The {run.recipe} "
        f"recipe's network (`vaecourse.recipes`), trained on the IWAE bound with K samples (K = 1: the ELBO). "
        f"Equal epochs: {run.epochs} epochs over {_subset(run.epochs_train_size)}. "
        + (
            f"Equal time: {run.seconds:.0f} s of wall clock over {_subset(run.seconds_train_size)}. "
            if run.seconds
            else ""
        )
        + f"Test NLL: importance sampling with {run.eval_samples} samples on {test} test images, ± one standard "
        f"error. Active units: Cov_x E[z_j|x] > 0.01 over the same test images. Gradient SNR: mean over each "
        f"network's parameters of |E g| / std g, {run.snr_repeats} estimates on one batch of {run.snr_batch} "
        "training images, at the K of the column.",
        "",
        "| regime | K | epochs | training (s) | test NLL (nats) | test ELBO | active units | "
        + " | ".join(f"SNR enc. K={k} | SNR dec. K={k}" for k in run.ks)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|---|" * len(run.ks),
    ]
    for row in rows:
        snr = " | ".join(f"{row[f'snr_encoder_k{k}']:.3f} | {row[f'snr_decoder_k{k}']:.3f}" for k in run.ks)
        lines.append(
            f"| {'equal epochs' if row['regime'] == 'epochs' else 'equal time'} | {row['k']} | {row['epochs']} | "
            f"{row['train_seconds']:.0f} | {row['nll']:.2f} ± {row['nll_se']:.2f} | {row['test_elbo']:.2f} | "
            f"{row['active_units']} of {row['latent_dim']} | {snr} |"
        )
    return "\n".join(lines) + "\n"


def conv_config(run: ConvRun) -> VAEConfig:
    """The convolutional VAE of ``run``: the recipe's latent dimension, two convolutional layers of ``channels``
    and the fully connected ``hidden_dims``."""
    shared = recipe(run.recipe).model
    return VAEConfig(
        latent_dim=shared.latent_dim, hidden_dims=run.hidden_dims, architecture="conv", channels=run.channels
    )


def conv_experiment(run_name: str, out_dir: pathlib.Path, device: torch.device, seed: int = 0) -> dict:
    """Train and measure the recipe's MLP VAE and the convolutional VAE of the run ``run_name`` of
    :data:`CONV_RUNS` with the same budget, and write ``out_dir/conv-<run>.json`` and ``.md``."""
    if run_name not in CONV_RUNS:
        raise ValueError(f"unknown recipe {run_name!r}: expected one of {sorted(CONV_RUNS)}")
    run = CONV_RUNS[run_name]
    shared = recipe(run.recipe)
    x_train = data.evenly_spaced(data.load("binarized-mnist", "train").x, run.train_size).to(device)
    x_test = data.evenly_spaced(data.load("binarized-mnist", "test").x, run.test_examples).to(device)
    length = {"epochs": None, "seconds": run.seconds} if run.seconds else {"epochs": run.epochs, "seconds": None}
    fields = {**shared.train.to_dict(), **length, "seed": seed, "progress": False}
    rows = []
    for name, model_config in (("mlp", shared.model), ("conv", conv_config(run))):
        model, trained = _train(model_config, TrainConfig(**fields), x_train, device)
        row = {
            "model": name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": model_config.to_dict(),
            **trained,
        }
        row.update(_measure(model, x_test, run.eval_samples, seed))
        rows.append(row)
        print(f"{name}: {trained['epochs']} epochs, NLL {row['nll']:.2f} ± {row['nll_se']:.2f}", flush=True)
    table = {"recipe": run.name, "device": str(device), "run": asdict(run), "rows": rows}
    _write(pathlib.Path(out_dir), f"conv-{run.name}", table, _conv_markdown(run, rows, str(device)))
    return table


def _conv_markdown(run: ConvRun, rows: list[dict], device: str) -> str:
    test = "all 10 000" if run.test_examples is None else f"{run.test_examples} evenly spaced"
    budget = f"{run.seconds:.0f} s of wall clock each" if run.seconds else f"{run.epochs} epochs each"
    lines = [
        f"# A convolutional VAE against the MLP on binarized MNIST ({run.name} run)",
        "",
        f"Written by `python -m vaecourse experiment conv --recipe {run.name}` on {device}. Both trained with the "
        f"{run.recipe} recipe's optimiser and schedule for {budget}, over {_subset(run.train_size)}. Test NLL: "
        f"importance sampling with {run.eval_samples} samples on {test} test images, ± one standard error.",
        "",
        "| model | parameters | epochs | images/s | test NLL (nats) | test ELBO | active units |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['parameters']} | {row['epochs']} | {row['images_per_second']:.0f} | "
            f"{row['nll']:.2f} ± {row['nll_se']:.2f} | {row['test_elbo']:.2f} | "
            f"{row['active_units']} of {row['latent_dim']} |"
        )
    return "\n".join(lines) + "\n"


def load_table(name: str, recipe_name: str = "cpu", download: bool = True) -> dict:
    """The table ``<name>-<recipe>.json`` (``name`` is ``iwae`` or ``conv``) written by ``python -m vaecourse
    experiment``: found where chapter 8 finds its results, or downloaded once into the cache from the repository at
    this package's release (:func:`vaecourse.results.find`)."""
    from . import results

    if name not in ("iwae", "conv") or recipe_name not in ("cpu", "gpu"):
        raise ValueError(f"expected name 'iwae' or 'conv' and recipe 'cpu' or 'gpu', got {name!r}, {recipe_name!r}")
    filename = f"{name}-{recipe_name}.json"
    advice = f"run `python -m vaecourse experiment {name} --recipe {recipe_name} --out DIR`, then VAECOURSE_RESULTS=DIR"
    return json.loads((results.find([filename], advice, download) / filename).read_text())
