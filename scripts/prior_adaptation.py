"""The prior adapts to the encoder (chapter 8, slide *Обучаемый Prior*): d = 2 VAEs on binarized MNIST with the
prior fixed at N(0, I) and with two learned priors (a mixture of 10 Gaussians and a flow), measured after every
epoch.

    python scripts/prior_adaptation.py            # writes results/prior-adaptation.json and -frames.pt

Each model is the CPU recipe's network with d = 2, trained by Adam (constant step 2e-3, mini-batches of 128, seed 0)
on 10 000 evenly spaced training images for 10 epochs; φ, θ and the prior's λ share the optimizer. After each epoch
t (and at the start, t = 0), with q_t the aggregate posterior over 2000 of those images and p_t the prior, the
marginal KL(q_t ‖ p_t) is estimated from M = 4000 draws z ~ q_t, and its change over the epoch is split exactly in
two, with the same draws:

    KL(q_t ‖ p_t) − KL(q_{t−1} ‖ p_{t−1})
        = [KL(q_t ‖ p_t) − KL(q_t ‖ p_{t−1})]          the prior's step (E_{q_t}[log p_{t−1} − log p_t])
        + [KL(q_t ‖ p_{t−1}) − KL(q_{t−1} ‖ p_{t−1})]  the encoder's step, against the prior it had

(zero prior's step for N(0, I), which has no parameters). The densities of q_t and p_t on an 81 × 81 grid over
[−4, 4]² are kept at a few epochs (float16) for the chapter's figure. After the last epoch, the judge scores 2000
prior samples of each model inside and outside the holes of q_avg (``vaecourse.reproduce.sample_quality``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import pathlib
import time

import torch

import vaecourse as vc
from vaecourse import reproduce
from vaecourse.files import atomic_write, write_text
from vaecourse.surgery import aggregate_posterior

OPTIONS = {"standard": {}, "mog": {"num_components": 10}, "flow": {"transforms": 3, "hidden_dims": (64, 64)}}


def kl_terms(q_avg, prior, previous_prior, draws: int, generator: torch.Generator) -> dict:
    """KL(q ‖ p) and KL(q ‖ p_previous) with their standard errors, from the same ``draws`` samples of q."""
    index = torch.randint(q_avg.num_components, (draws,), generator=generator)
    z = q_avg.loc[index] + q_avg.scale[index] * torch.randn(draws, q_avg.loc.shape[1], generator=generator)
    log_q = q_avg.log_prob(z).double()
    now = log_q - prior.log_prob(z).double()
    before = log_q - previous_prior.log_prob(z).double()
    prior_step = now - before  # log p_{t−1}(z) − log p_t(z): KL(q ‖ p_t) − KL(q ‖ p_{t−1}) draw by draw
    root = math.sqrt(draws)
    return {
        "kl": now.mean().item(),
        "kl_se": now.std().item() / root,
        "kl_previous_prior": before.mean().item(),
        "prior_step": prior_step.mean().item(),
        "prior_step_se": prior_step.std().item() / root,
    }


def run(prior: str, x: torch.Tensor, x_codes: torch.Tensor, epochs: int, snapshots, draws: int, grid) -> dict:
    vc.seed(0)
    shared = vc.recipes.recipe("cpu").model
    config = dataclasses.replace(shared, latent_dim=2, prior=prior, prior_options=OPTIONS[prior])
    model = vc.VAE(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)  # φ, θ and λ in one optimizer
    batches = torch.Generator().manual_seed(0)
    draws_generator = torch.Generator().manual_seed(1)
    rows, frames = [], {}
    previous_prior, previous_kl = None, None
    for epoch in range(epochs + 1):
        if epoch > 0:
            model.train()
            for batch in torch.randperm(len(x), generator=batches).split(128):
                vc.train.step(model, optimizer, x[batch])
        model.eval()
        with torch.no_grad():
            q_avg, p = aggregate_posterior(model, x_codes), model.prior
            terms = kl_terms(q_avg, p, previous_prior or p, draws, draws_generator)
            row = {"epoch": epoch, "marginal_kl": terms["kl"], "marginal_kl_se": terms["kl_se"]}
            if previous_kl is not None:
                row["prior_step"] = terms["prior_step"]
                row["prior_step_se"] = terms["prior_step_se"]
                row["encoder_step"] = terms["kl_previous_prior"] - previous_kl
            rows.append(row)
            previous_prior = copy.deepcopy(model.latent_prior)(model.encoder)
            previous_kl = terms["kl"]
            if epoch in snapshots:
                side = int(math.isqrt(len(grid)))
                frames[epoch] = {
                    "q_avg": q_avg.log_prob(grid).exp().reshape(side, side).half(),
                    "prior": p.log_prob(grid).exp().reshape(side, side).half(),
                }
        print(f"{prior} epoch {epoch}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "epoch"))
    samples = reproduce.sample_quality(model, x_codes, num_samples=2000, seed=0)  # the judge, in and out of holes
    return {"rows": rows, "frames": frames, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="training images (evenly spaced)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--draws", type=int, default=4000, help="samples of q_avg per estimate")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    x = vc.data.evenly_spaced(vc.data.load("binarized-mnist", "train").x, args.examples)
    x_codes = vc.data.evenly_spaced(x, 2000)
    axis = torch.linspace(-4, 4, 81)
    z1, z2 = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([z1, z2], dim=-1).reshape(-1, 2)
    snapshots = (0, 1, 3, args.epochs)
    results = {prior: run(prior, x, x_codes, args.epochs, snapshots, args.draws, grid) for prior in OPTIONS}
    summary = {
        "command": "python scripts/prior_adaptation.py",
        "examples": args.examples,
        "codes": len(x_codes),
        "epochs": args.epochs,
        "draws": args.draws,
        "prior_options": OPTIONS,
        "seconds": time.perf_counter() - start,
        "rows": {prior: result["rows"] for prior, result in results.items()},
        "samples": {prior: result["samples"] for prior, result in results.items()},
    }
    write_text(args.out / "prior-adaptation.json", json.dumps(summary, indent=1) + "\n")
    frames = {"extent": [-4.0, 4.0], "epochs": list(snapshots)}
    frames.update(
        {
            f"{prior}/{epoch}/{kind}": tensor
            for prior, result in results.items()
            for epoch, pair in result["frames"].items()
            for kind, tensor in pair.items()
        }
    )
    with atomic_write(args.out / "prior-adaptation-frames.pt") as handle:
        torch.save(frames, handle)
    print(f"wrote {args.out}/prior-adaptation.json and -frames.pt in {summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
