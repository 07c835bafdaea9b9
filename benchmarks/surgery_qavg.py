"""log q_avg over the whole training set: the GEMM way of ``vaecourse.surgery`` against the broadcast way it replaces.

Times, in one run, log q_avg(z) over n = 50 000 components for m = 50 000 points in d = 32, computed

- the broadcast way (the course's implementation before the GEMM one, copied below as ``log_q_avg_broadcast``):
  ``Normal(loc, scale).log_prob(z[:, None, :])`` on ``[m, c, d]`` blocks, in float32 and in float64, timed on
  ``--broadcast-points`` of the m points and scaled linearly to m (its work is proportional to the number of points;
  at m = 50 000 its chunks shrink to 2 components, so the linear scaling flatters it);
- the GEMM way (``surgery.log_mixture_density``) in float32 and in float64, on all m points;

then the whole decomposition (``surgery.decompose`` over the n = 50 000 training images, all three terms with
standard errors), and the accuracy of each way against a float64 direct sum on encoder outputs. The posteriors
come from a trained model (``--model``, e.g. the output of ``python -m vaecourse train``) on binarized MNIST.

    python benchmarks/surgery_qavg.py --model /tmp/run/model.pt

Floors: the decomposition under 60 s on a 2-core CPU, and the GEMM way at least 5× faster than the broadcast way.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch.distributions import Independent, Normal

import vaecourse as vc
from vaecourse import surgery

_CHUNK_ELEMENTS = 2**22


def log_q_avg_broadcast(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The replaced ``AggregatePosterior.log_prob``: a logsumexp of ``[m, c]`` log-densities per chunk of c
    components, each from an ``[m, c, d]`` broadcast."""
    n, d = loc.shape
    size = max(1, _CHUNK_ELEMENTS // max(1, len(z) * d))
    total = None
    for start in range(0, n, size):
        chunk_loc, chunk_scale = loc[start : start + size], scale[start : start + size]  # [c, d]
        log_q = Independent(Normal(chunk_loc, chunk_scale, validate_args=False), 1).log_prob(z[:, None, :])  # [m, c]
        chunk = torch.logsumexp(log_q, dim=1)
        total = chunk if total is None else torch.logaddexp(total, chunk)
    return total - math.log(n)


def direct_float64(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The reference: the broadcast way in float64."""
    return log_q_avg_broadcast(z.double(), loc.double(), scale.double())


CPU_SECONDS = []  # (label, CPU seconds of this process, wall seconds) of each timed call


def seconds(function, label=""):
    """Wall-clock seconds of ``function()`` and its result; its CPU seconds (all threads) go to ``CPU_SECONDS``:
    on a machine shared with other work the wall clock stretches, the CPU time much less."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    wall = time.perf_counter() - start
    CPU_SECONDS.append((label, time.process_time() - cpu, wall))
    return wall, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained binarized-MNIST VAE (model.pt)")
    parser.add_argument("--points", type=int, default=50_000, help="points m at which log q_avg is evaluated")
    parser.add_argument("--broadcast-points", type=int, default=1000, help="points timed the broadcast way")
    parser.add_argument("--accuracy-points", type=int, default=500, help="points checked against float64")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = vc.load(args.model, map_location="cpu").eval()
    x = vc.data.load("binarized-mnist", "train").x
    with torch.no_grad():
        posteriors = model.encode(x)
    loc, scale = posteriors.base_dist.loc, posteriors.base_dist.scale  # [n, d] float32
    n, d = loc.shape
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(n, (args.points,), generator=generator)
    z = loc[index] + scale[index] * torch.randn(args.points, d, generator=generator)  # draws of q_avg, [m, d]
    load = os.getloadavg()[0]
    print(f"n = {n} components, m = {args.points} points, d = {d}; {torch.get_num_threads()} threads, "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"posterior scales: median {scale.median().item():.3f}, 1% quantile "
          f"{scale.flatten()[::97].quantile(0.01).item():.3f}; |μ| up to {loc.abs().max().item():.2f}")

    # accuracy against a float64 direct sum, on the posteriors as trained and on ten times sharper ones
    few = z[: args.accuracy_points]
    for label, sharp in (("as trained", 1.0), ("σ / 10", 0.1)):
        centre, scaled = loc[index[: len(few)]], sharp * scale  # float32, as an encoder gives them
        points = centre + sharp * (few - centre)  # the same draws, scaled towards their own component's mean
        reference = direct_float64(points, loc, scaled)
        errors = {
            "broadcast float32": log_q_avg_broadcast(points, loc, scaled).double(),
            "GEMM float32": surgery.log_mixture_density(points, loc, scaled).double(),
            "GEMM float64": surgery.log_mixture_density(points.double(), loc.double(), scaled.double()),
        }
        shown = ", ".join(f"{k} {(v - reference).abs().max().item():.1e}" for k, v in errors.items())
        print(f"accuracy, posteriors {label}: largest |error| against float64 direct (nats): {shown}")

    # speed: the broadcast way on a fraction of the points, the GEMM way on all of them
    part = z[: args.broadcast_points]
    with torch.no_grad():
        broadcast_part, _ = seconds(lambda: log_q_avg_broadcast(part, loc, scale), "broadcast, part")
        gemm_part32, _ = seconds(lambda: surgery.log_mixture_density(part, loc, scale), "GEMM float32, part")
        gemm_part64, _ = seconds(
            lambda: surgery.log_mixture_density(part.double(), loc.double(), scale.double()), "GEMM float64, part"
        )
        broadcast_part64, _ = seconds(
            lambda: log_q_avg_broadcast(part.double(), loc.double(), scale.double()), "broadcast float64, part"
        )
        broadcast_full = broadcast_part * args.points / len(part)
        broadcast_full64 = broadcast_part64 * args.points / len(part)
        print(f"on {len(part)} points (same run): broadcast float32 {broadcast_part:.2f} s, GEMM float32 "
              f"{gemm_part32:.2f} s ({broadcast_part / gemm_part32:.1f}x); broadcast float64 {broadcast_part64:.2f} s, "
              f"GEMM float64 {gemm_part64:.2f} s ({broadcast_part64 / gemm_part64:.1f}x)")
        gemm32, _ = seconds(lambda: surgery.log_mixture_density(z, loc, scale), "GEMM float32")
        gemm64, _ = seconds(
            lambda: surgery.log_mixture_density(z.double(), loc.double(), scale.double()), "GEMM float64"
        )
    print(f"broadcast way, {args.points} points: float32 {broadcast_full:.0f} s, float64 {broadcast_full64:.0f} s "
          f"(timed on {len(part)} points, scaled linearly by {args.points / len(part):g})")
    print(f"GEMM float32,  {args.points} points: {gemm32:.1f} s  -> {broadcast_full / gemm32:.1f}x faster than "
          f"the broadcast way in float32")
    print(f"GEMM float64,  {args.points} points: {gemm64:.1f} s  -> {broadcast_full64 / gemm64:.1f}x faster than "
          f"the broadcast way in float64, {broadcast_full / gemm64:.1f}x than in float32")

    torch.manual_seed(0)
    total, terms = seconds(lambda: surgery.decompose(model, x, num_samples=1), "decompose")
    print(f"decompose over the whole training set (n = {terms.num_examples}, log n = {terms.log_n:.2f}, "
          f"1 draw per image, float64): {total:.1f} s")
    print(f"  average KL {terms.average_kl} = marginal KL {terms.marginal_kl} + MI {terms.mutual_information} nats "
          f"(± standard error)")
    print("CPU seconds (all threads) / wall seconds of each timed call: "
          + ", ".join(f"{label} {cpu:.0f}/{wall:.0f}" for label, cpu, wall in CPU_SECONDS))
    floor = "under" if total < 60 else "OVER"
    print(f"floors: decomposition {total:.1f} s ({floor} 60 s); GEMM {broadcast_full / gemm32:.1f}x (float32) and "
          f"{broadcast_full64 / gemm64:.1f}x (float64) the broadcast way in the same dtype (floor 5x)")


if __name__ == "__main__":
    main()
