"""Benchmark: vaecourse's VAE training against the PyTorch-examples reference, side by side in one run.

    python benchmarks/train_vae.py                 # the full run: about 7 minutes on a 2-core CPU
    python benchmarks/train_vae.py --quick         # a 1-minute smoke run of the same code
    python benchmarks/train_vae.py --skip-throughput --prior flow   # the quality row with chapter 8's flow prior

Rows printed (and written as JSON with --out):

1. throughput, training images per second, for the identical 784-400-20 model at batch 128: the reference
   (DataLoader over a TensorDataset, sigmoid + BCE, Adam) and vaecourse.fit, alternated for ``--rounds`` rounds so
   that both see the same machine; the medians and their ratio;
2. quality at equal wall clock: each trained for ``--seconds`` (reference: its own recipe; vaecourse: the
   recommended recipe for the device, with its N(0, I) prior or the one ``--prior`` names), then test NLL by IWAE
   with k = ``--num-samples`` on ``--test-examples`` evenly spaced test images, with the standard error;
3. on a CUDA GPU only: the full GPU recipe, test NLL with k = 5000 on the whole test set, training and
   evaluation time.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import reference_vae  # noqa: E402

import vaecourse as vc  # noqa: E402


def throughput(x, rounds: int, seconds: float, sparse: bool) -> dict:
    reference, ours = [], []
    for round_index in range(rounds):
        _, speed = reference_vae.train(x, seconds, seed=round_index)
        reference.append(speed)
        model = vc.VAE(latent_dim=20, hidden_dims=(400,), sparse_input=sparse)
        config = vc.TrainConfig(batch_size=128, lr=1e-3, epochs=None, seconds=seconds, seed=round_index, progress=False)
        ours.append(vc.fit(model, x, config=config).images_per_second)
        print(
            f"  round {round_index + 1}: reference {reference[-1]:.0f}, vaecourse {ours[-1]:.0f} images/s", flush=True
        )
    return {
        "reference": statistics.median(reference),
        "vaecourse": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(reference),
        "rounds": rounds,
        "seconds_per_round": seconds,
    }


def quality(x_train, x_test, seconds: float, num_samples: int, recipe, prior: str = "standard") -> dict:
    start = time.perf_counter()
    reference, _ = reference_vae.train(x_train, seconds, seed=0)
    reference_seconds = time.perf_counter() - start
    reference_ll = vc.log_likelihood(reference_vae.Evaluable(reference), x_test, num_samples=num_samples)

    model = vc.VAE(recipe.model, prior=prior)
    config = vc.TrainConfig(**{**recipe.train.to_dict(), "epochs": None, "seconds": seconds, "progress": False})
    result = vc.fit(model, x_train, config=config)
    ours_ll = vc.log_likelihood(model, x_test, num_samples=num_samples)
    return {
        "reference": {"nll": reference_ll.nll, "se": reference_ll.standard_error, "train_seconds": reference_seconds},
        "vaecourse": {
            "nll": ours_ll.nll,
            "se": ours_ll.standard_error,
            "train_seconds": result.train_seconds,
            "epochs": result.epochs,
            "recipe": recipe.name,
            "prior": prior,
        },
        "difference": reference_ll.nll - ours_ll.nll,
        "num_samples": num_samples,
        "test_examples": len(x_test),
    }


def gpu_run(recipe) -> dict:
    device = torch.device("cuda")
    x_train = vc.data.load("binarized-mnist", "train").x.to(device)
    x_valid = vc.data.load("binarized-mnist", "valid").x.to(device)
    x_test = vc.data.load("binarized-mnist", "test").x.to(device)
    model = vc.VAE(recipe.model).to(device)
    config = vc.TrainConfig(**{**recipe.train.to_dict(), "progress": False})
    result = vc.fit(model, x_train, x_valid, config=config)
    start = time.perf_counter()
    ll = vc.log_likelihood(model, x_test, num_samples=5000, batch_size=500)
    return {
        "nll": ll.nll,
        "se": ll.standard_error,
        "train_seconds": result.train_seconds,
        "eval_seconds": time.perf_counter() - start,
        "epochs": result.epochs,
        "device": torch.cuda.get_device_name(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (1 round of 5 s, 10 s training)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-seconds", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=120.0, help="training time for the quality rows")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--test-examples", type=int, default=2000)
    parser.add_argument(
        "--prior",
        choices=tuple(vc.priors.PRIORS),
        default="standard",
        help="the prior of vaecourse's model in the quality row (default: the recipe's N(0, I); chapter 8's learned "
        "priors drop in)",
    )
    parser.add_argument("--skip-throughput", action="store_true", help="only the quality rows")
    parser.add_argument("--out", type=pathlib.Path)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.round_seconds, args.seconds, args.num_samples, args.test_examples = 1, 5.0, 10.0, 100, 500

    x_train = vc.data.load("binarized-mnist", "train").x
    x_test_all = vc.data.load("binarized-mnist", "test").x
    x_test = vc.data.evenly_spaced(x_test_all, args.test_examples)
    cpu_recipe = vc.recipes.recipe("cpu")
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )

    print("throughput (identical 784-400-20 model, batch 128):", flush=True)
    speed = (
        {"reference": float("nan"), "vaecourse": float("nan"), "ratio": float("nan"), "rounds": 0}
        if args.skip_throughput
        else throughput(x_train, args.rounds, args.round_seconds, sparse=cpu_recipe.model.sparse_input)
    )
    print(f"quality at {args.seconds:.0f} s of training:", flush=True)
    score = quality(x_train, x_test, args.seconds, args.num_samples, cpu_recipe, prior=args.prior)
    gpu = gpu_run(vc.recipes.recipe("gpu")) if torch.cuda.is_available() else None

    k, n = score["num_samples"], score["test_examples"]
    print()
    print("| | reference (PyTorch examples) | vaecourse |")
    print("|---|---|---|")
    if args.skip_throughput:
        print("| training images/s, 784-400-20, batch 128 | skipped (--skip-throughput) | |")
    else:
        print(
            f"| training images/s, 784-400-20, batch 128 (median of {speed['rounds']}) | "
            f"{speed['reference']:.0f} | {speed['vaecourse']:.0f} ({speed['ratio']:.2f}×) |"
        )
    print(
        f"| test NLL after {args.seconds:.0f} s of training (k = {k}, {n} test images) | "
        f"{score['reference']['nll']:.2f} ± {score['reference']['se']:.2f} | "
        f"{score['vaecourse']['nll']:.2f} ± {score['vaecourse']['se']:.2f} "
        f"({score['difference']:.2f} nats lower; {score['vaecourse']['epochs']} epochs"
        + ("" if args.prior == "standard" else f"; {args.prior} prior")
        + ") |"
    )
    if gpu is None:
        print("| GPU recipe, test NLL (k = 5000, 10 000 test images) | | no CUDA GPU here: not measured |")
    else:
        print(
            f"| GPU recipe on {gpu['device']}, test NLL (k = 5000, 10 000 test images) | | "
            f"{gpu['nll']:.2f} ± {gpu['se']:.2f} (training {gpu['train_seconds']:.0f} s, "
            f"{gpu['epochs']} epochs; evaluation {gpu['eval_seconds']:.0f} s) |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"throughput": speed, "quality": score, "gpu": gpu}, indent=2) + "\n")


if __name__ == "__main__":
    main()
