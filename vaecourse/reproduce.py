"""The results table of chapter 8: the four priors trained with one shared recipe, side by side
(``python -m vaecourse reproduce --recipe cpu|gpu``).

Each prior gets the same network, optimiser, schedule and training time (``cpu``: the CPU recipe for a fixed
wall-clock time per prior; ``gpu``: the GPU recipe's epochs). Each is then measured on the test set: the negative
log-likelihood by IWAE with its standard error, the ELBO, and the ELBO-surgery terms (marginal KL and mutual
information). The table is written as Markdown and JSON, next to the published numbers.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from dataclasses import dataclass

import torch

from . import checkpoint, data, surgery
from .evaluate import log_likelihood
from .recipes import recipe
from .train import TrainConfig, fit, mean_elbo
from .vae import VAE, VAEConfig

__all__ = ["RUNS", "ReproduceRun", "reproduce"]

PRIOR_OPTIONS = {"standard": {}, "mog": {"num_components": 50}, "vamp": {"num_components": 500}, "flow": {}}

PUBLISHED = [
    (
        "VAE, N(0, I) prior, one stochastic layer (fixed-binarization appendix, not the dynamic Table 1)",
        "88.71",
        "burda2016importance",
    ),
    ("VAE, N(0, I) prior, two hidden layers of 300 units", "88.56", "tomczak2018vae"),
    ("VAE, mixture-of-Gaussians prior (K = 500)", "86.55", "tomczak2018vae"),
    ("VAE, VampPrior (K = 500 pseudo-inputs)", "85.57", "tomczak2018vae"),
]


@dataclass(frozen=True)
class ReproduceRun:
    """How the table is made with one recipe: its ``name`` (the files' ``priors-<name>``), the ``recipe`` (``cpu``
    or ``gpu``) that the shared network and optimiser come from, and the training and measuring sizes."""

    name: str
    recipe: str  # "cpu" or "gpu" (vaecourse.recipes)
    seconds_per_prior: float | None  # wall-clock training time per prior, or None for the recipe's epochs
    num_samples: int  # k of the IWAE estimate
    test_examples: int | None  # evenly spaced test images (None: all 10 000)
    surgery_examples: int  # test images over which q_avg is formed
    vamp_components: int


RUNS = {
    "cpu": ReproduceRun("cpu", "cpu", 150.0, 1000, 2000, 2000, 100),
    "gpu": ReproduceRun("gpu", "gpu", None, 5000, None, 10_000, 500),
}


def train_and_measure(prior: str, run: ReproduceRun, device: torch.device, out: pathlib.Path, seed: int = 0):
    """Train one VAE with ``prior`` as ``run`` says and measure it; returns a dict of numbers."""
    shared = recipe(run.recipe)
    options = dict(PRIOR_OPTIONS[prior])
    if prior == "vamp":
        options["num_components"] = run.vamp_components
    model_config = VAEConfig(**{**shared.model.to_dict(), "prior": prior, "prior_options": options})
    fields = {**shared.train.to_dict(), "seed": seed, "progress": False}
    if run.seconds_per_prior is not None:
        fields.update(epochs=None, seconds=run.seconds_per_prior)
    train_config = TrainConfig(**fields)

    x_train = data.load("binarized-mnist", "train").x.to(device)
    x_test = data.evenly_spaced(data.load("binarized-mnist", "test").x, run.test_examples).to(device)
    torch.manual_seed(seed)
    model = VAE(model_config).to(device)
    result = fit(model, x_train, config=train_config)
    start = time.perf_counter()
    estimate = log_likelihood(model, x_test, num_samples=run.num_samples, seed=seed)
    terms = surgery.decompose(model, data.evenly_spaced(x_test, run.surgery_examples), num_samples=1, seed=seed)
    row = {
        "prior": prior,
        "prior_options": options,
        "nll": estimate.nll,
        "nll_se": estimate.standard_error,
        "test_elbo": mean_elbo(model, x_test),
        "marginal_kl": terms.marginal_kl.value,
        "marginal_kl_se": terms.marginal_kl.standard_error,
        "mutual_information": terms.mutual_information.value,
        "mutual_information_se": terms.mutual_information.standard_error,
        "average_kl": terms.average_kl.value,
        "train_seconds": result.train_seconds,
        "epochs": result.epochs,
        "eval_seconds": time.perf_counter() - start,
    }
    checkpoint.save(model, out / f"{prior}.pt", train_config=train_config, metrics=row)
    return row


def _label(row: dict) -> str:
    names = {"standard": "N(0, I)", "mog": "mixture of Gaussians", "vamp": "VampPrior", "flow": "flow (MAF)"}
    components = row["prior_options"].get("num_components")
    return names[row["prior"]] + (f", K = {components}" if components else "")


def _markdown(run: ReproduceRun, rows: list[dict], device: str) -> str:
    test = "all 10 000" if run.test_examples is None else f"{run.test_examples} evenly spaced"
    lines = [
        f"# Learned priors on binarized MNIST ({run.name} recipe)",
        "",
        f"Written by `python -m vaecourse reproduce --recipe {run.name}` on {device}. One shared recipe "
        f"(`vaecourse.recipes`, {run.recipe}); "
        + (
            f"each prior trained for {run.seconds_per_prior:.0f} s of wall clock. "
            if run.seconds_per_prior
            else "each prior trained for the recipe's epochs. "
        )
        + f"Test NLL: IWAE with k = {run.num_samples} on {test} test images, ± one standard error. "
        f"Marginal KL and mutual information (ELBO surgery) over {run.surgery_examples} test images "
        f"(MI ≤ log n = {math.log(run.surgery_examples):.2f}).",
        "",
        "| prior | test NLL (nats) | test ELBO | marginal KL | MI | epochs | training (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {_label(row)} | {row['nll']:.2f} ± {row['nll_se']:.2f} | "
            f"{row['test_elbo']:.2f} | {row['marginal_kl']:.2f} ± {row['marginal_kl_se']:.2f} | "
            f"{row['mutual_information']:.2f} ± {row['mutual_information_se']:.2f} | {row['epochs']} | "
            f"{row['train_seconds']:.0f} |"
        )
    lines += [
        "",
        "Published numbers (test NLL, nats, k = 5000, trained to convergence; statically binarized MNIST;"
        " not checked against the papers' text):",
        "",
    ]
    lines += [f"- {label}: {value} ({source})" for label, value, source in PUBLISHED]
    return "\n".join(lines) + "\n"


def reproduce(run_name: str, out_dir: pathlib.Path, device: torch.device, priors=tuple(PRIOR_OPTIONS)) -> dict:
    """Train and measure each prior with the run ``run_name`` of :data:`RUNS` (``cpu`` or ``gpu``, the recipe), and
    write ``out_dir/priors-<run>.md`` and ``.json`` and the checkpoints.

    Run with a subset of ``priors``, it replaces those rows of an existing table and keeps the others."""
    if run_name not in RUNS:
        raise ValueError(f"unknown recipe {run_name!r}: expected one of {sorted(RUNS)}")
    run = RUNS[run_name]
    out_dir = pathlib.Path(out_dir)
    checkpoints = out_dir / f"priors-{run.name}"
    checkpoints.mkdir(parents=True, exist_ok=True)
    rows = []
    for prior in priors:
        rows.append(train_and_measure(prior, run, device, checkpoints))
        print(f"{prior}: NLL {rows[-1]['nll']:.2f} ± {rows[-1]['nll_se']:.2f} nats", flush=True)
    existing = out_dir / f"priors-{run.name}.json"
    if existing.is_file():
        kept = [row for row in json.loads(existing.read_text())["rows"] if row["prior"] not in priors]
        rows = sorted(kept + rows, key=lambda row: list(PRIOR_OPTIONS).index(row["prior"]))
    table = {"recipe": run.name, "device": str(device), "rows": rows}
    (out_dir / f"priors-{run.name}.json").write_text(json.dumps(table, indent=2) + "\n")
    (out_dir / f"priors-{run.name}.md").write_text(_markdown(run, rows, str(device)))
    return table
