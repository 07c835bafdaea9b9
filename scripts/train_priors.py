"""Train the models of one regime of ``python -m vaecourse reproduce`` without measuring them, so that the training
can take its turn on a shared machine apart from the (long) measuring.

    flock /tmp/vaecourse-heavy.lock python scripts/train_priors.py --regime "20 epochs" --priors mog,vamp,flow
    python -m vaecourse reproduce --recipe cpu --reuse      # measures them, trains nothing that exists

The models are trained by ``vaecourse.reproduce.train``, as ``reproduce`` trains them, and saved where it looks for
them, with their epochs and training seconds; a model whose checkpoint exists is skipped.
"""

from __future__ import annotations

import argparse
import pathlib

import torch

from vaecourse import checkpoint, data, reproduce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu", choices=sorted(reproduce.RUNS))
    parser.add_argument("--regime", required=True, help="a regime's name, e.g. '20 epochs'")
    parser.add_argument("--priors", default="standard,mog,vamp,flow")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = reproduce.RUNS[args.recipe]
    regime = {regime.name: regime for regime in run.regimes}.get(args.regime)
    if regime is None:
        parser.error(f"--regime: expected one of {[r.name for r in run.regimes]}, got {args.regime!r}")
    x_train = data.evenly_spaced(data.load("binarized-mnist", "train").x, run.train_examples)
    for prior in args.priors.split(","):
        path = args.out / f"priors-{run.name}" / regime.folder / f"{prior}.pt"
        if path.is_file():
            print(f"{prior}: {path} exists, skipped")
            continue
        model, trained = reproduce.train(prior, run, regime, x_train)
        _, train_config = reproduce._configs(prior, run, regime, 0)
        checkpoint.save(model, path, train_config=train_config, metrics=trained)
        print(f"{prior}: {trained['epochs']} epochs in {trained['train_seconds']:.0f} s, saved to {path}", flush=True)


if __name__ == "__main__":
    main()
