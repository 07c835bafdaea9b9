"""The judge's verdict on samples of a VAE inside and outside the holes of q_avg (chapter 7, section 5).

    python scripts/measure_sample_quality.py

Trains a VAE of chapter 7 (the CPU recipe with latent_dim = 2 by default, p(z) = N(0, I), on the small budget's
10 000 evenly spaced training images for 6 epochs, seed 0), forms q_avg over all of its training images, as the
chapter does, and marks as holes the codes where q_avg(z) < p(z) / 10. Then decodes prior samples inside and
outside the holes and samples of q_avg, each as the decoder's mean and as a pixel sample x ~ p(x|z), and prints the
judge's mean entropy and top-class probability with standard errors for each group, beside real test images.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

import vaecourse as vc
from vaecourse import judge, surgery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000, help="prior samples (and as many q_avg samples)")
    parser.add_argument("--ratio", type=float, default=10.0, help="a hole is where q_avg < p / ratio")
    parser.add_argument("--latent-dim", type=int, default=2, help="latent dimension d of the VAE")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as chapter 7
    recipe = vc.recipes.recipe("cpu")
    mnist = {split: vc.data.load("binarized-mnist", split) for split in ("train", "test")}
    x_train = vc.data.evenly_spaced(mnist["train"].x, 10_000)
    start = time.perf_counter()
    vc.seed(0)
    model = vc.VAE(dataclasses.replace(recipe.model, latent_dim=args.latent_dim))
    vc.fit(model, x_train, config=dataclasses.replace(recipe.train, epochs=6, progress=False))
    model.eval()
    print(f"trained d = {args.latent_dim} VAE in {time.perf_counter() - start:.0f} s")

    q_avg = surgery.aggregate_posterior(model, x_train)  # over the whole training set
    prior = model.prior
    generator = torch.Generator().manual_seed(0)
    z_prior = torch.randn(args.samples, args.latent_dim, generator=generator)
    index = torch.randint(q_avg.num_components, (args.samples,), generator=generator)
    z_q_avg = q_avg.loc[index] + q_avg.scale[index] * torch.randn(args.samples, args.latent_dim, generator=generator)
    with torch.no_grad():
        in_hole = q_avg.log_prob(z_prior) < prior.log_prob(z_prior) - math.log(args.ratio)
    print(f"prior samples in a hole (q_avg < p / {args.ratio:g}): {in_hole.double().mean().item():.1%} "
          f"of {args.samples}")

    groups = {"prior, in a hole": z_prior[in_hole], "prior, outside holes": z_prior[~in_hole], "q_avg": z_q_avg}
    print(f"{'group':>22} {'n':>5} | {'decoder mean: entropy':>22} {'top-class p':>12} | "
          f"{'pixel sample: entropy':>22} {'top-class p':>12}")
    for name, z in groups.items():
        with torch.no_grad():
            decoded = model.likelihood(z)
            mean = decoded.mean
            sample = torch.bernoulli(mean, generator=generator)
        a, b = judge.judge(mean), judge.judge(sample)
        print(f"{name:>22} {len(z):5d} | {str(a.mean_entropy):>22} {str(a.mean_top_probability):>12} | "
              f"{str(b.mean_entropy):>22} {str(b.mean_top_probability):>12}")
    test = judge.judge(mnist["test"].x[judge.held_out()])
    print(f"{'test images (held out)':>22} {2000:5d} | {'':>22} {'':>12} | {str(test.mean_entropy):>22} "
          f"{str(test.mean_top_probability):>12}")
    with torch.no_grad():
        reconstruction = model.reconstruct(vc.data.evenly_spaced(mnist["test"].x, 2000))
    r = judge.judge(reconstruction)
    print(f"{'reconstructions':>22} {2000:5d} | {str(r.mean_entropy):>22} {str(r.mean_top_probability):>12} |")


if __name__ == "__main__":
    main()
