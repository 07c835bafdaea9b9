"""The results table of chapter 8: the four priors trained with one shared recipe, side by side
(``python -m vaecourse reproduce --recipe cpu|gpu [--reuse]``).

Each prior gets the same network and optimiser, trained in each of the run's **regimes**: the same wall-clock time
per prior, or the same number of epochs (``cpu`` has both; a learned prior costs more per epoch, so equal time gives
it fewer epochs). Each model is then measured:

- on evenly spaced test images: the negative log-likelihood by IWAE with its standard error, the ELBO and its two
  terms, the **rate** (the KL term, E_x KL(q(z|x) ‖ p(z))) and the **distortion** (−E_x E_q log p(x|z)), and the
  **active units** (Burda et al.'s A_u, :func:`vaecourse.diagnostics.active_units`);
- on the whole training set (n = 50 000): the ELBO-surgery terms, marginal KL and mutual information
  (:func:`vaecourse.surgery.decompose`; the mutual information is bounded by log n, so n must be large for it to
  separate the models);
- on samples: z ~ p(z) decoded, judged by :mod:`vaecourse.judge` (entropy and top-class probability of a digit
  classifier), split into the samples that fall in a *hole* of the aggregate posterior of the training set,
  q_avg(z) < p(z) / 10, and those outside, beside samples of q_avg itself; each as the decoder's mean and as a pixel
  sample x ~ p(x|z).

With ``reuse`` (``--reuse``), a model whose checkpoint already exists is loaded and measured, not retrained: a
wall-clock regime cannot be re-run fairly on a busy machine, and its checkpoints are kept. The table is written as
Markdown and JSON, next to the published numbers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import pathlib
import tempfile
import time
from dataclasses import dataclass

import torch

from . import checkpoint, data, judge, surgery
from .diagnostics import active_units
from .evaluate import log_likelihood
from .files import write_text
from .priors import PRIORS
from .recipes import recipe
from .runtime import seeded
from .train import TrainConfig, fit_new
from .vae import VAE, VAEConfig

__all__ = [
    "RUNS",
    "Regime",
    "ReproduceRun",
    "measure",
    "rate_distortion",
    "reproduce",
    "sample_quality",
    "train",
]

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

HOLE_RATIO = 10.0  # a hole of q_avg: where q_avg(z) < p(z) / HOLE_RATIO
SAMPLE_GROUPS = ("prior", "prior_in_holes", "prior_outside_holes", "q_avg")


@dataclass(frozen=True)
class Regime:
    """How long each prior trains: ``seconds`` of wall clock, or ``epochs`` (both ``None``: the recipe's epochs).
    ``name`` labels its rows (``"150 s"``, ``"20 epochs"``); its checkpoints go to ``priors-<run>/<folder>``
    (``""``: that folder itself); ``why`` says in the table's caption why this length was chosen."""

    name: str
    folder: str = ""
    seconds: float | None = None
    epochs: int | None = None
    why: str = ""

    def __post_init__(self):
        if self.seconds is not None and self.epochs is not None:
            raise ValueError(f"regime {self.name!r}: give seconds or epochs, not both")


@dataclass(frozen=True)
class ReproduceRun:
    """How the table is made with one recipe: its ``name`` (the files' ``priors-<name>``), the ``recipe`` (``cpu``
    or ``gpu``) that the shared network and optimiser and each prior's options (the mixture's and the VampPrior's
    K) come from, the training ``regimes``, and the measuring sizes
    (``surgery_examples`` and ``judge_samples``: training images over which q_avg is formed, None for all of them,
    and prior samples shown to the judge)."""

    name: str
    recipe: str  # "cpu" or "gpu" (vaecourse.recipes)
    regimes: tuple[Regime, ...]
    num_samples: int  # k of the IWAE estimate
    test_examples: int | None  # evenly spaced test images (None: all 10 000)
    surgery_examples: int | None  # evenly spaced training images for q_avg (None: all 50 000)
    judge_samples: int = 2000
    train_examples: int | None = None  # evenly spaced training images to train on (None: all 50 000)


RUNS = {
    "cpu": ReproduceRun(
        "cpu",
        "cpu",
        (
            Regime(
                "150 s",
                "",
                seconds=150.0,
                why="the same wall-clock time, so a prior that costs more per step gets fewer epochs; a run's "
                "seconds depend on the machine's load, so the committed checkpoints of this regime, trained one "
                "after another on an otherwise idle 2-core machine, are re-measured with --reuse, not re-timed",
            ),
            Regime(
                "20 epochs",
                "epochs-20",
                epochs=20,
                why="the same number of passes over the data; 20 is about what the flow (20) and the VampPrior (18) "
                "reached in 150 s, so the standard and mixture priors train for fewer epochs than in 150 s and "
                "the learned priors for about as many",
            ),
        ),
        num_samples=1000,
        test_examples=2000,
        surgery_examples=None,
    ),
    "gpu": ReproduceRun(
        "gpu",
        "gpu",
        (Regime("recipe's epochs", "", why="the GPU recipe's epochs, the papers' protocol"),),
        num_samples=5000,
        test_examples=None,
        surgery_examples=None,
    ),
}


def _configs(prior: str, run: ReproduceRun, regime: Regime, seed: int) -> tuple[VAEConfig, TrainConfig]:
    shared = recipe(run.recipe).with_prior(prior)  # the recipe's options for the prior, e.g. the VampPrior's K
    model_config = shared.model
    fields = {**shared.train.to_dict(), "seed": seed, "progress": False}
    if regime.seconds is not None:
        fields.update(epochs=None, seconds=regime.seconds)
    elif regime.epochs is not None:
        fields.update(epochs=regime.epochs, seconds=None)
    return model_config, TrainConfig(**fields)


def train(prior: str, run: ReproduceRun, regime: Regime, x_train: torch.Tensor, seed: int = 0) -> tuple[VAE, dict]:
    """One model of the table: ``prior`` trained on ``x_train`` (on its device) as ``regime`` of ``run`` says;
    returns the model and ``{"epochs", "train_seconds"}``."""
    model_config, train_config = _configs(prior, run, regime, seed)  # train_config.seed is ``seed``
    model, result = fit_new(model_config, x_train, config=train_config)
    return model, {"epochs": result.epochs, "train_seconds": result.train_seconds}


def _reused(path: pathlib.Path, model_config: VAEConfig, train_config: TrainConfig, device) -> tuple[VAE, dict]:
    """The model saved at ``path`` and its training record, after checking that it was trained as the regime says."""
    payload = checkpoint.read(path)
    saved_train = payload.get("train_config") or {}
    expected = {"prior": model_config.prior, "prior_options": model_config.prior_options}
    found = {key: payload["config"].get(key) for key in expected}
    lengths = {key: saved_train.get(key) for key in ("epochs", "seconds")}
    wanted = {"epochs": train_config.epochs, "seconds": train_config.seconds}
    if found != expected or lengths != wanted:
        raise ValueError(
            f"{path} was trained with {found}, {lengths}, not {expected}, {wanted}: delete it to retrain, or run "
            "without --reuse"
        )
    metrics = payload.get("metrics") or {}
    model = checkpoint.load(path, map_location=device)
    return model, {"epochs": metrics["epochs"], "train_seconds": metrics["train_seconds"]}


@torch.no_grad()
def rate_distortion(model: VAE, x: torch.Tensor, batch_size: int = 1000, seed: int | None = 0) -> dict:
    """The two terms of −ELBO averaged over the examples ``x``, one sample z ~ q(z|x) each (the draws of
    :func:`vaecourse.train.mean_elbo` with the same ``seed``): ``rate`` = E_x KL(q(z|x) ‖ p(z)) (analytic for
    N(0, I), Monte Carlo for a learned prior), ``distortion`` = −E_x E_q log p(x|z), and ``elbo`` = −(rate +
    distortion), in nats."""
    rate, distortion = 0.0, 0.0
    with seeded(seed, x.device):
        for batch in x.split(batch_size):
            terms = model.elbo(batch)
            rate += terms.kl.double().sum().item()
            distortion -= terms.log_px_z.double().sum().item()
    rate, distortion = rate / len(x), distortion / len(x)
    return {"rate": rate, "distortion": distortion, "elbo": -(rate + distortion)}


def _judged(images: torch.Tensor) -> dict:
    if len(images) == 0:
        return {"entropy": None, "entropy_se": None, "top_probability": None, "top_probability_se": None}
    verdict = judge.judge(images.cpu())  # draws nothing: the generator is left as it was
    return {
        "entropy": verdict.mean_entropy.value,
        "entropy_se": verdict.mean_entropy.standard_error,
        "top_probability": verdict.mean_top_probability.value,
        "top_probability_se": verdict.mean_top_probability.standard_error,
    }


@torch.no_grad()
def sample_quality(
    model: VAE, x: torch.Tensor, num_samples: int = 2000, ratio: float = HOLE_RATIO, seed: int = 0
) -> dict:
    """The judge's verdict on ``num_samples`` draws z ~ p(z) of ``model`` and as many z ~ q_avg(z), q_avg formed
    over the examples ``x``; the prior's draws are also split into those in a hole of q_avg (q_avg(z) < p(z) /
    ``ratio``) and those outside. Returns ``{"hole_fraction": …, "groups": {group: {"count", "mean": {…},
    "pixels": {…}}}}``: for each group of :data:`SAMPLE_GROUPS`, the judge's mean entropy and top-class probability
    (with standard errors) of the decoder's means and of pixel samples x ~ p(x|z)."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples!r}")
    if not ratio > 1:
        raise ValueError(f"ratio must be a number > 1, got {ratio!r}")
    model.eval()
    q_avg = surgery.aggregate_posterior(model, x)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    with seeded(seed, x.device):
        prior = model.prior
        z = prior.sample((num_samples,))
        in_hole = q_avg.log_prob(z) < prior.log_prob(z) - math.log(ratio)
    index = torch.randint(q_avg.num_components, (num_samples,), device=x.device, generator=generator)
    noise = torch.randn(num_samples, z.shape[-1], device=x.device, generator=generator)
    z_q_avg = q_avg.loc[index] + q_avg.scale[index] * noise
    codes = {"prior": z, "prior_in_holes": z[in_hole], "prior_outside_holes": z[~in_hole], "q_avg": z_q_avg}
    groups = {}
    for name, group in codes.items():
        mean = model.likelihood(group).mean if len(group) else group.new_zeros(0, model.config.data_dim)
        pixels = torch.bernoulli(mean, generator=generator)
        groups[name] = {"count": len(group), "mean": _judged(mean), "pixels": _judged(pixels)}
    return {"hole_ratio": ratio, "hole_fraction": in_hole.double().mean().item(), "groups": groups}


def measure(model: VAE, x_train: torch.Tensor, x_test: torch.Tensor, run: ReproduceRun, seed: int = 0) -> dict:
    """The table's numbers for one trained ``model``: on ``x_test`` the IWAE NLL, ELBO, rate, distortion and active
    units; on ``x_train`` (its ``run.surgery_examples`` evenly spaced rows) the surgery terms and the judge's
    verdict on samples inside and outside the holes of q_avg."""
    model.eval()
    start = time.perf_counter()
    estimate = log_likelihood(model, x_test, num_samples=run.num_samples, seed=seed)
    terms = rate_distortion(model, x_test, seed=seed)
    units = active_units(model, x_test)
    x_surgery = data.evenly_spaced(x_train, run.surgery_examples)
    parts = surgery.decompose(model, x_surgery, num_samples=1, seed=seed)
    quality = sample_quality(model, x_surgery, num_samples=run.judge_samples, seed=seed)
    return {
        "nll": estimate.nll,
        "nll_se": estimate.standard_error,
        "test_elbo": terms["elbo"],
        "rate": terms["rate"],
        "distortion": terms["distortion"],
        "active_units": units.count,
        "latent_dim": units.latent_dim,
        "surgery_examples": len(x_surgery),
        "marginal_kl": parts.marginal_kl.value,
        "marginal_kl_se": parts.marginal_kl.standard_error,
        "mutual_information": parts.mutual_information.value,
        "mutual_information_se": parts.mutual_information.standard_error,
        "average_kl": parts.average_kl.value,
        "average_kl_se": parts.average_kl.standard_error,
        "samples": quality,
        "eval_seconds": time.perf_counter() - start,
    }


def _label(row: dict) -> str:
    names = {"standard": "N(0, I)", "mog": "mixture of Gaussians", "vamp": "VampPrior", "flow": "flow (MAF)"}
    components = row["prior_options"].get("num_components")
    return names[row["prior"]] + (f", K = {components}" if components else "")


def _entropy(group: dict, kind: str, count: bool = False) -> str:
    judged = group[kind]
    size = f" ({group['count']})" if count else ""
    if judged["entropy"] is None:
        return "–" + size
    return f"{judged['entropy']:.2f} ± {judged['entropy_se']:.2f}" + size


def _regime_sentence(regime: dict, rows: list[dict]) -> str:
    mine = [row for row in rows if row["regime"] == regime["name"]]
    length = (
        f"{regime['seconds']:.0f} s of wall clock per prior"
        if regime["seconds"] is not None
        else f"{regime['epochs']} epochs per prior"
        if regime["epochs"] is not None
        else "the recipe's epochs"
    )
    reused = [row for row in mine if row.get("reused")]
    how = (
        "all re-measured from existing checkpoints (`--reuse`), not retrained"
        if mine and len(reused) == len(mine)
        else "all trained by this command"
        if not reused
        else f"{len(reused)} of {len(mine)} re-measured from existing checkpoints (`--reuse`)"
    )
    folder = f"priors-<recipe>/{regime['folder']}".rstrip("/")
    return f"**{regime['name']}**: {length} ({regime['why']}); checkpoints in `{folder}/`, {how}."


def _markdown(run: ReproduceRun, table: dict) -> str:
    rows = table["rows"]
    test = "all 10 000" if run.test_examples is None else f"{run.test_examples} evenly spaced"
    surgery_n = rows[0]["surgery_examples"] if rows else 0
    lines = [
        f"# Learned priors on binarized MNIST ({run.name} recipe)",
        "",
        f"Written by `python -m vaecourse reproduce --recipe {run.name}` on {table['device']}. One shared recipe "
        f"(`vaecourse.recipes`, {run.recipe}), trained in {len(table['regimes'])} regime(s):",
        "",
    ]
    lines += [f"- {_regime_sentence(regime, rows)}" for regime in table["regimes"]]
    lines += [
        "",
        f"Test NLL: IWAE with K = {run.num_samples} on {test} test images, ± one standard error; on the same "
        "images the test ELBO = −(rate + distortion), the rate E_x KL(q(z|x) ‖ p(z)) (analytic for N(0, I), one "
        "Monte Carlo sample for a learned prior), the distortion −E log p(x|z) (one sample), and the active units "
        "(Cov_x E[z_j|x] > 0.01, of d). Marginal KL and mutual information (ELBO surgery) over the "
        f"n = {surgery_n} training images (MI ≤ log n = {math.log(max(surgery_n, 1)):.2f}). Training seconds "
        "depend on the machine's load. A model re-measured with `--reuse` was trained earlier by the same code, "
        "`vaecourse.reproduce.train` (called by this command or by `scripts/train_priors.py`).",
        "",
        "| regime | prior | epochs | training (s) | test NLL (nats) | test ELBO | rate | distortion | active units "
        "| marginal KL | MI |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['regime']} | {_label(row)} | {row['epochs']} | {row['train_seconds']:.0f} | "
            f"{row['nll']:.2f} ± {row['nll_se']:.2f} | {row['test_elbo']:.2f} | {row['rate']:.2f} | "
            f"{row['distortion']:.2f} | {row['active_units']} of {row['latent_dim']} | "
            f"{row['marginal_kl']:.2f} ± {row['marginal_kl_se']:.2f} | "
            f"{row['mutual_information']:.2f} ± {row['mutual_information_se']:.2f} |"
        )
    if rows:
        quality = rows[0]["samples"]
        lines += [
            "",
            f"Samples, judged by `vaecourse.judge` (a digit classifier; the mean entropy of its prediction in nats, "
            f"± one standard error: 0 for a confident digit, log 10 = 2.30 for none). {run.judge_samples} draws "
            "z ~ p(z) per model, decoded to the decoder's mean (grey) and to a pixel sample x ~ p(x|z) (binary); "
            f"a draw is *in a hole* where q_avg(z) < p(z) / {quality['hole_ratio']:g}, q_avg formed over the same "
            f"n = {surgery_n} training images; and as many draws of q_avg itself. Real test images (the judge's "
            f"{judge.HELD_OUT} held out): entropy {table['judge_test_entropy']:.2f} ± "
            f"{table['judge_test_entropy_se']:.2f}. In brackets: how many draws fell in the group.",
            "",
            "| regime | prior | in holes | all z ~ p: mean | all z ~ p: pixels | in holes: mean | outside: mean "
            "| z ~ q_avg: mean |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            groups = row["samples"]["groups"]
            lines.append(
                f"| {row['regime']} | {_label(row)} | {row['samples']['hole_fraction']:.1%} | "
                f"{_entropy(groups['prior'], 'mean')} | {_entropy(groups['prior'], 'pixels')} | "
                f"{_entropy(groups['prior_in_holes'], 'mean', True)} | "
                f"{_entropy(groups['prior_outside_holes'], 'mean', True)} | "
                f"{_entropy(groups['q_avg'], 'mean')} |"
            )
    lines += [
        "",
        "Published numbers (test NLL, nats, K = 5000, trained to convergence; statically binarized MNIST;"
        " not checked against the papers' text):",
        "",
    ]
    lines += [f"- {label}: {value} ({source})" for label, value, source in PUBLISHED]
    return "\n".join(lines) + "\n"


def reproduce(
    run_name: str,
    out_dir: pathlib.Path,
    device: torch.device,
    priors=tuple(PRIORS),
    reuse: bool = False,
    seed: int = 0,
    regimes=None,
) -> dict:
    """Train and measure each prior in each regime of the run ``run_name`` of :data:`RUNS` (``cpu`` or ``gpu``,
    the recipe), and write ``out_dir/priors-<run>.md`` and ``.json`` and the checkpoints. With ``reuse``, a model
    whose checkpoint exists is loaded and measured instead of trained.

    Run with a subset of ``priors`` or of ``regimes`` (their names), it replaces those rows of an existing table
    and keeps the others; the table is read and written under a file lock, so runs of different subsets may
    overlap in time."""
    if run_name not in RUNS:
        raise ValueError(f"unknown recipe {run_name!r}: expected one of {sorted(RUNS)}")
    unknown = sorted(set(priors) - set(PRIORS))
    if unknown or not priors:
        raise ValueError(f"priors must be a non-empty subset of {list(PRIORS)}, got {priors!r}")
    run = RUNS[run_name]
    names = [regime.name for regime in run.regimes]
    regimes = tuple(names) if regimes is None else tuple(regimes)
    if not regimes or set(regimes) - set(names):
        raise ValueError(f"regimes must be a non-empty subset of {names} (recipe {run_name}), got {regimes!r}")
    out_dir = pathlib.Path(out_dir)
    x_train = data.evenly_spaced(data.load("binarized-mnist", "train").x, run.train_examples).to(device)
    x_test = data.evenly_spaced(data.load("binarized-mnist", "test").x, run.test_examples).to(device)
    rows = []
    for regime in (regime for regime in run.regimes if regime.name in regimes):
        folder = out_dir / f"priors-{run.name}" / regime.folder
        folder.mkdir(parents=True, exist_ok=True)
        for prior in priors:
            model_config, train_config = _configs(prior, run, regime, seed)
            path = folder / f"{prior}.pt"
            reused = reuse and path.is_file()
            if reused:
                model, trained = _reused(path, model_config, train_config, device)
            else:
                model, trained = train(prior, run, regime, x_train, seed)
            row = {
                "regime": regime.name,
                "prior": prior,
                "prior_options": model_config.prior_options,
                **trained,
                "reused": reused,
                **measure(model, x_train, x_test, run, seed=seed),
            }
            if not reused:
                checkpoint.save(model, path, train_config=train_config, metrics=row)
            rows.append(row)
            print(f"{regime.name}, {prior}: NLL {row['nll']:.2f} ± {row['nll_se']:.2f} nats", flush=True)
    verdict = judge.judge(data.load("binarized-mnist", "test").x[judge.held_out()])
    with _locked(out_dir / f"priors-{run.name}.json"):
        return _merge_and_write(run, out_dir, rows, device, verdict)


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    """An exclusive lock for reading and rewriting ``path`` (a lock file in the temporary folder, named after it)."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    with open(pathlib.Path(tempfile.gettempdir()) / f"vaecourse-table-{digest}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _merge_and_write(run: ReproduceRun, out_dir: pathlib.Path, rows: list[dict], device, verdict) -> dict:
    names = [regime.name for regime in run.regimes]
    existing = out_dir / f"priors-{run.name}.json"
    if existing.is_file():
        done = {(row["regime"], row["prior"]) for row in rows}
        kept = [
            row
            for row in json.loads(existing.read_text())["rows"]
            if row.get("regime") in names and (row["regime"], row["prior"]) not in done
        ]
        order = [(regime, prior) for regime in names for prior in PRIORS]
        rows = sorted(kept + rows, key=lambda row: order.index((row["regime"], row["prior"])))
    table = {
        "recipe": run.name,
        "device": str(device),
        "regimes": [
            {"name": r.name, "folder": r.folder, "seconds": r.seconds, "epochs": r.epochs, "why": r.why}
            for r in run.regimes
        ],
        "judge_test_entropy": verdict.mean_entropy.value,
        "judge_test_entropy_se": verdict.mean_entropy.standard_error,
        "rows": rows,
    }
    write_text(out_dir / f"priors-{run.name}.json", json.dumps(table, indent=2) + "\n")
    write_text(out_dir / f"priors-{run.name}.md", _markdown(run, table))
    return table
