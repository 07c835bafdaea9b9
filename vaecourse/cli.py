"""The command line: ``python -m vaecourse train | evaluate | reproduce | experiment`` (chapters 6, 8 and 10).

A thin layer that builds the configs.

    python -m vaecourse train --dataset binarized-mnist --seconds 120 --out runs/cpu
    python -m vaecourse evaluate runs/cpu/model.pt --dataset binarized-mnist --split test --num-samples 1000

``train`` writes ``DIR/model.pt`` and ``DIR/metrics.json``; ``evaluate`` prints the test NLL with its standard
error and the active units (chapter 9), and writes them to a JSON file next to the model. Bad flag values are
one-line errors.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import tempfile
import time

import torch

from . import checkpoint, data, files, runtime
from .diagnostics import active_units
from .evaluate import log_likelihood
from .priors import PRIORS
from .recipes import RECIPES, for_device, recipe
from .train import TrainConfig, fit
from .vae import ARCHITECTURES, VAEConfig

__all__ = ["main"]

LIKELIHOOD_OF = {"binarized-mnist": "bernoulli", "digits": "binomial"}


class UsageError(Exception):
    """A flag value that cannot be used; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _number(convert, accept, expected: str):
    """An argparse type: ``convert(text)`` if ``accept`` holds for it, else a one-line error naming ``expected``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda value: value >= 1, "a positive integer")
_non_negative_int = _number(int, lambda value: value >= 0, "an integer >= 0")
_positive_float = _number(float, lambda value: value > 0 and math.isfinite(value), "a positive number")
_non_negative_float = _number(float, lambda value: value >= 0 and math.isfinite(value), "a number >= 0")


def _hidden_dims(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 400 or 512,512, got {text!r}"
        )
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m vaecourse",
        description="Train and evaluate the VAEs of the course 'Variational Autoencoders: from the lecture to "
        "working code'.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a VAE and write DIR/model.pt and DIR/metrics.json",
        description="Train a VAE. Every flag left out takes the value of the recipe (see vaecourse.recipes): by "
        "default the recommended one for the device, cpu on a CPU and gpu on CUDA.",
    )
    train.add_argument(
        "--recipe", choices=sorted(RECIPES), help="the recipe the other flags start from (default: the device's)"
    )
    train.add_argument(
        "--dataset", choices=sorted(LIKELIHOOD_OF), default="binarized-mnist", help="the data (default: %(default)s)"
    )
    train.add_argument(
        "--prior", choices=sorted(PRIORS), default="standard", help="the prior p(z) (default: %(default)s)"
    )
    train.add_argument(
        "--num-components",
        type=_positive_int,
        help="components K of the mog and vamp priors (default: the recipe's, 50 for mog; for vamp 100 on a CPU "
        "and 500 on a GPU)",
    )
    train.add_argument("--latent-dim", type=_positive_int, help="dimension d of z")
    train.add_argument(
        "--architecture",
        choices=ARCHITECTURES,
        help="mlp (fully connected), or conv: two convolutional layers before the fully connected ones, for 28×28 "
        "images (chapter 10)",
    )
    train.add_argument(
        "--hidden-dims",
        type=_hidden_dims,
        help="hidden layer widths of the encoder, e.g. 400 or 512,512 (the decoder mirrors them)",
    )
    train.add_argument("--batch-size", type=_positive_int, help="mini-batch size")
    train.add_argument("--lr", type=_positive_float, help="Adam's learning rate (the peak, with a cosine schedule)")
    train.add_argument("--schedule", choices=("constant", "cosine"), help="learning-rate schedule")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, help="passes over the training set")
    length.add_argument("--seconds", type=_positive_float, help="wall-clock training time instead of epochs")
    train.add_argument(
        "--warmup-epochs", type=_non_negative_float, help="KL warm-up: β rises from 0 to 1 over this many epochs"
    )
    train.add_argument(
        "--beta", type=_non_negative_float, default=1.0, help="weight of the KL term (default: %(default)s, the ELBO)"
    )
    train.add_argument(
        "--free-bits",
        type=_non_negative_float,
        help="free bits: the floor λ, in nats per latent dimension, under each dimension's KL in the objective "
        "(chapter 9; default 0, the ELBO)",
    )
    train.add_argument(
        "--bound",
        choices=("elbo", "iwae"),
        help="the objective: the ELBO, or the IWAE bound with --num-samples K samples (chapter 10; default elbo)",
    )
    train.add_argument(
        "--num-samples", type=_positive_int, help="samples K of z per example in the objective (default 1)"
    )
    train.add_argument("--patience", type=_positive_int, help="early stopping: epochs without a better validation ELBO")
    train.add_argument(
        "--train-size", type=_positive_int, help="use N evenly spaced training examples (every digit, not the first)"
    )
    train.add_argument("--no-valid", action="store_true", help="skip the validation ELBO after each epoch")
    train.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    train.add_argument("--out", type=pathlib.Path, required=True, help="directory for model.pt and metrics.json")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser(
        "evaluate",
        help="estimate the test NLL (IWAE) of a saved model",
        description="Estimate -log p(x) in nats by importance sampling with K samples of the encoder per example, "
        "and its standard error over the examples. Prints it and writes it to a JSON file.",
    )
    evaluate.add_argument("model", type=pathlib.Path, help="a model.pt written by 'train'")
    evaluate.add_argument(
        "--dataset", choices=sorted(LIKELIHOOD_OF), default="binarized-mnist", help="the data (default: %(default)s)"
    )
    evaluate.add_argument(
        "--split", choices=("train", "valid", "test"), default="test", help="the split (default: %(default)s)"
    )
    evaluate.add_argument(
        "--num-samples",
        type=_positive_int,
        default=1000,
        help="importance samples k per example (default: %(default)s; papers use 5000)",
    )
    evaluate.add_argument("--max-examples", type=_positive_int, help="evaluate N evenly spaced examples of the split")
    evaluate.add_argument(
        "--batch-size", type=_positive_int, default=100, help="examples per batch (default: %(default)s)"
    )
    evaluate.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: %(default)s)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    evaluate.add_argument("--out", type=pathlib.Path, help="the JSON file to write (default: next to the model)")
    reproduce = commands.add_parser(
        "reproduce",
        help="train the four priors with one recipe and write the results table",
        description="Train a VAE with each prior (standard, mog, vamp, flow) with one shared recipe, in each of the "
        "recipe's regimes (cpu: the same 150 s per prior, and the same 20 epochs per prior), measure test NLL "
        "(IWAE), ELBO, rate, distortion, active units, the marginal KL and mutual information over the training "
        "set, and the judge's verdict on samples inside and outside the holes of q_avg, and write "
        "OUT/priors-<recipe>.md and .json (and the checkpoints in OUT/priors-<recipe>/).",
    )
    chosen_recipe = reproduce.add_mutually_exclusive_group(required=True)
    chosen_recipe.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="cpu: the CPU recipe, 150 s and 20 epochs per prior, about an hour on 2 cores (training and measuring)",
    )
    # the former name of --recipe, still accepted
    chosen_recipe.add_argument("--budget", dest="recipe", choices=sorted(RECIPES), help=argparse.SUPPRESS)
    reproduce.add_argument("--priors", default="standard,mog,vamp,flow", help="comma-separated subset to run")
    reproduce.add_argument(
        "--regimes",
        help="comma-separated subset of the recipe's regimes to run, by name (cpu: '150 s', '20 epochs'); default: all",
    )
    reproduce.add_argument(
        "--reuse",
        action="store_true",
        help="load and measure the models whose checkpoints exist in OUT instead of training them again (a "
        "wall-clock regime cannot be re-timed fairly on a busy machine); train only the missing ones",
    )
    reproduce.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    reproduce.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"), help="default: %(default)s")
    experiment = commands.add_parser(
        "experiment",
        help="the measured tables of chapter 10: the IWAE objective, or a convolutional VAE against the MLP",
        description="iwae: train a VAE on the IWAE bound with K = 1, 5, 50 samples, at equal epochs and at equal "
        "time, and measure test NLL, active units and the gradients' signal-to-noise ratio (OUT/iwae-<recipe>.md "
        "and .json). conv: train the MLP VAE and the convolutional VAE for the same time and measure both "
        "(OUT/conv-<recipe>.md and .json).",
    )
    experiment.add_argument("name", choices=("iwae", "conv"), help="which table")
    experiment.add_argument(
        "--recipe", choices=sorted(RECIPES), required=True, help="cpu: sized for 2 CPU cores; gpu: for a CUDA GPU"
    )
    experiment.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    experiment.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"), help="default: %(default)s")
    return parser


def _experiment(args) -> dict:
    from . import experiments

    _check_writable(args.out)
    run = experiments.iwae_experiment if args.name == "iwae" else experiments.conv_experiment
    return run(args.recipe, args.out, runtime.device(args.device))


def _reproduce(args) -> dict:
    from .reproduce import RUNS, reproduce

    priors = tuple(name.strip() for name in args.priors.split(",") if name.strip())
    unknown = sorted(set(priors) - set(PRIORS))
    if unknown or not priors:
        raise UsageError(f"--priors: expected names among {sorted(PRIORS)}, got {args.priors!r}")
    regimes = None
    if args.regimes is not None:
        regimes = tuple(name.strip() for name in args.regimes.split(",") if name.strip())
        names = [regime.name for regime in RUNS[args.recipe].regimes]
        if not regimes or set(regimes) - set(names):
            raise UsageError(f"--regimes: expected names among {names}, got {args.regimes!r}")
    return reproduce(args.recipe, args.out, runtime.device(args.device), priors, reuse=args.reuse, regimes=regimes)


def _load_split(name: str, split: str, device: torch.device, max_examples: int | None = None):
    return data.evenly_spaced(data.load(name, split).x, max_examples).to(device)


def _check_writable(folder: pathlib.Path, flag: str = "--out") -> None:
    """``UsageError`` unless files can be written in ``folder`` (created if absent): checked before the work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {folder}: cannot write there ({error.strerror or error})") from None


def _train(args) -> dict:
    device = runtime.device(args.device)
    chosen = (recipe(args.recipe) if args.recipe else for_device(device)).with_data(
        data_dim=64 if args.dataset == "digits" else 784, likelihood=LIKELIHOOD_OF[args.dataset]
    )
    options = {}
    if args.num_components is not None:
        if args.prior not in ("mog", "vamp"):
            raise UsageError(f"--num-components applies to the mog and vamp priors, not to {args.prior!r}")
        options = {"num_components": args.num_components}
    chosen = chosen.with_prior(args.prior, **options)
    model_fields = {}
    if args.latent_dim is not None:
        model_fields["latent_dim"] = args.latent_dim
    if args.hidden_dims is not None:
        model_fields["hidden_dims"] = args.hidden_dims
    if args.architecture is not None:
        model_fields["architecture"] = args.architecture
        if args.architecture == "conv":
            model_fields["sparse_input"] = False  # the CPU recipe's sparse first layer belongs to the MLP
    model_config = VAEConfig(**{**chosen.model.to_dict(), **model_fields})
    train_fields = {"seed": args.seed, "beta": args.beta, "progress": False if args.quiet else None}
    for flag, name in (
        ("batch_size", "batch_size"),
        ("lr", "lr"),
        ("schedule", "schedule"),
        ("warmup_epochs", "warmup_epochs"),
        ("patience", "patience"),
        ("free_bits", "free_bits"),
        ("bound", "bound"),
        ("num_samples", "num_samples"),
    ):
        if getattr(args, flag) is not None:
            train_fields[name] = getattr(args, flag)
    if args.seconds is not None:
        train_fields.update(seconds=args.seconds, epochs=None)
    elif args.epochs is not None:
        train_fields.update(epochs=args.epochs, seconds=None)
    train_config = TrainConfig(**{**chosen.train.to_dict(), **train_fields})

    _check_writable(args.out)  # before training, not after it
    runtime.seed(args.seed)
    x_train = _load_split(args.dataset, "train", device, args.train_size)
    x_valid = None if args.no_valid else _load_split(args.dataset, "valid", device)
    from .vae import VAE

    model = VAE(model_config).to(device)
    print(f"training on {device} ({chosen.name} recipe): {len(x_train)} examples of {args.dataset}", file=sys.stderr)
    result = fit(model, x_train, x_valid, config=train_config)
    metrics = {
        "dataset": args.dataset,
        "device": str(device),
        "recipe": chosen.name,
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        **result.summary(),
    }
    checkpoint.save(model, args.out / "model.pt", train_config=train_config, metrics=metrics)
    files.write_text(args.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    valid = f", valid ELBO {result.final_valid_elbo:.2f}" if result.final_valid_elbo is not None else ""
    print(
        f"{result.epochs} epochs in {result.train_seconds:.1f} s ({result.images_per_second:.0f} images/s); "
        f"train ELBO {result.final_train_elbo:.2f}{valid} nats; wrote {args.out / 'model.pt'}"
    )
    return metrics


def _evaluate(args) -> dict:
    device = runtime.device(args.device)
    model = checkpoint.load(args.model, map_location=device)
    if model.config.data_dim != (64 if args.dataset == "digits" else 784):
        raise UsageError(f"{args.model} was trained on {model.config.data_dim}-pixel images, not on {args.dataset}")
    out = args.out or args.model.with_name(f"eval-{args.dataset}-{args.split}-k{args.num_samples}.json")
    _check_writable(out.parent)
    x = _load_split(args.dataset, args.split, device, args.max_examples)
    start = time.perf_counter()
    estimate = log_likelihood(model, x, num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed)
    seconds = time.perf_counter() - start
    units = active_units(model, x) if len(x) >= 2 else None  # Burda et al.'s count (chapter 9)
    result = {
        "dataset": args.dataset,
        "split": args.split,
        "examples": len(x),
        "num_samples": args.num_samples,
        "nll": estimate.nll,
        "standard_error": estimate.standard_error,
        "seconds": seconds,
        "device": str(device),
        "active_units": units.count if units is not None else None,
        "latent_dim": model.config.latent_dim,
    }
    files.write_text(out, json.dumps(result, indent=2) + "\n")
    active = f"; {units}" if units is not None else ""
    print(f"{args.split} {estimate}{active} in {seconds:.1f} s; wrote {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        commands = {"train": _train, "evaluate": _evaluate, "reproduce": _reproduce, "experiment": _experiment}
        commands[args.command](args)
    except (UsageError, ValueError, FileNotFoundError, data.DataUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
