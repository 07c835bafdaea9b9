"""The inference gaps of a trained binarized-MNIST VAE on evenly spaced test images (chapter 6).

    python -m vaecourse train --dataset binarized-mnist --seconds 120 --out /tmp/run
    python scripts/measure_inference_gaps.py /tmp/run/model.pt --examples 200

Prints log p̂(x) (IWAE, k = 5000, q* as proposal), the ELBO with q* and with the encoder's q, and the approximation
and amortization gaps in nats with standard errors, beside Cremer, Li & Duvenaud's (2018) MNIST row.
"""

from __future__ import annotations

import argparse
import time

import torch

import vaecourse as vc
from vaecourse import gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--elbo-samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    model = vc.load(args.model, map_location="cpu").eval()
    x = vc.data.evenly_spaced(vc.data.load("binarized-mnist", "test").x, args.examples)
    start = time.perf_counter()
    result = gaps.inference_gaps(
        model, x, num_samples=args.num_samples, elbo_samples=args.elbo_samples, steps=args.steps, lr=args.lr,
        generator=torch.Generator().manual_seed(0),
    )
    iwae_encoder = result.per_example["iwae_encoder"].mean().item()
    print(f"{len(x)} evenly spaced test images, k = {args.num_samples}, q* after {args.steps} Adam steps "
          f"(lr {args.lr}), ELBOs from {args.elbo_samples} draws; {time.perf_counter() - start:.0f} s")
    print(f"log p̂(x) {result.log_likelihood}  (IWAE with the encoder's q as proposal: {iwae_encoder:.2f})")
    print(f"ELBO(q*) {result.elbo_optimal}   ELBO(q) {result.elbo_encoder}")
    print(f"approximation gap {result.approximation_gap}   amortization gap {result.amortization_gap}   "
          f"inference gap {result.inference_gap} nats")


if __name__ == "__main__":
    main()
