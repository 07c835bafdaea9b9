r"""Checkers for the exercises of chapter 1, "Latent variable models".

- :func:`check_log_joint`: the learner writes ``log_joint(model, x, z)``, the log of the joint density
  log p(x, z | θ) = log p(x | z, θ) + log p(z | θ), from the model's ``likelihood(z)`` and ``prior``.
- :func:`check_log_marginal_quadrature`: the learner writes ``log_marginal_quadrature(log_joint_on_grid, dz)``,
  the Riemann sum log p(x | θ) ≈ log Σ_g p(x, z_g | θ) Δz over a grid of z, taken in log space:
  ``logsumexp`` over the grid plus log Δz.

Each checker runs the learner's function on a few deterministic cases, compares it with the reference, and names
the typical mistakes: a forgotten prior term, a minus in place of a plus, a missing −(D/2) log 2π, a forgotten
log Δz, a mean over the grid instead of a sum, and probabilities that underflow when they leave log space.
"""

from __future__ import annotations

import math

import torch

from ..models import LinearGaussian, NonlinearToy
from .checking import Result, check_function, close_enough, constant_offset, not_finite, sign_flipped

__all__ = ["check_log_joint", "check_log_marginal_quadrature"]

_RTOL, _ATOL = 1e-5, 1e-6


def _offset(got: torch.Tensor, expected: torch.Tensor) -> float | None:
    """The constant c with got = expected + c for every value, or None (the test of ``constant_offset``)."""
    difference = (got - expected).double()
    if difference.numel() < 2 or not bool(torch.isfinite(difference).all()):
        return None
    offset = float(difference.mean())
    if float(difference.std()) <= 1e-6 * max(1.0, abs(offset)) and abs(offset) > 1e-6:
        return offset
    return None


def _shape_hint(result: Result, hint: str) -> Result:
    """Replace the generic advice after a wrong shape with one that fits the exercise."""
    if result.kind == "shape":
        result.details = [hint]
    return result


# ---------------------------------------------------------------------------------------------------------------
# Exercise 1: log p(x, z | θ) = log p(x | z, θ) + log p(z | θ)


def _reference_log_joint(model, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x, z | θ) = log p(x | z, θ) + log p(z | θ), one value per pair (x, z)."""
    return model.likelihood(z).log_prob(x) + model.prior.log_prob(z)


def _log_joint_terms(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    model, x, z = case["model"], case["x"], case["z"]
    with torch.no_grad():
        return model.likelihood(z).log_prob(x), model.prior.log_prob(z)


def _forgotten_term(got, expected, case):
    log_px_z, log_pz = _log_joint_terms(case)
    if close_enough(got, log_px_z):
        return "this is log p(x|z) alone: the prior term log p(z) = model.prior.log_prob(z) is missing"
    if close_enough(got, log_pz):
        return "this is log p(z) alone: the likelihood term log p(x|z) = model.likelihood(z).log_prob(x) is missing"
    return None


def _terms_combined_wrongly(got, expected, case):
    log_px_z, log_pz = _log_joint_terms(case)
    if close_enough(got, log_px_z - log_pz) or close_enough(got, log_pz - log_px_z):
        return "one term is subtracted: p(x, z) = p(x|z) · p(z), and the log of a product is a sum of logs"
    if close_enough(got, log_px_z * log_pz):
        return "the two logs are multiplied: the log of the product p(x|z) · p(z) is the sum log p(x|z) + log p(z)"
    if close_enough(got, expected.exp()):
        return "this is the density p(x, z) itself: return its logarithm, log p(x|z) + log p(z)"
    return None


def _normalising_constants(got, expected, case):
    offset = _offset(got, expected)
    if offset is None:
        return None
    data_dim, latent_dim = case["x"].shape[-1], case["z"].shape[-1]
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    names = {
        data_dim: "the constant −(D/2) log 2π of p(x|z) is missing or counted twice",
        latent_dim: "the constant −(d/2) log 2π of p(z) is missing or counted twice",
        data_dim + latent_dim: "the constants of p(x|z) and p(z), −((D + d)/2) log 2π, are missing or counted twice",
    }
    if data_dim == latent_dim:
        names[data_dim] = (
            "the constant −(D/2) log 2π of p(x|z), or −(d/2) log 2π of p(z), is missing or counted twice"
        )
    for count, name in names.items():
        if math.isclose(abs(offset), count * half_log_2pi, rel_tol=1e-4):
            return (
                f"every value is off by {offset:+.4g} = {'+' if offset > 0 else '−'}{count}·½ log 2π: {name} "
                "(a Gaussian log-density has −½ log 2πσ² per coordinate; `log_prob` includes it)"
            )
    return constant_offset(got, expected, case)


_LOG_JOINT_DIAGNOSES = (
    not_finite,
    sign_flipped,
    _forgotten_term,
    _terms_combined_wrongly,
    _normalising_constants,
)


def _log_joint_cases() -> list[dict]:
    generator = torch.Generator().manual_seed(1)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    linear = LinearGaussian(normal(4, 1), normal(4), 0.3 + normal(4).abs())  # D = 4, d = 1, σ per coordinate
    linear.requires_grad_(False)  # the answers are compared, not differentiated
    toy_1d = NonlinearToy(latent_dim=1, noise_std=0.3).double()  # D = 2, d = 1
    toy_2d = NonlinearToy(latent_dim=2, noise_std=0.5).double()  # D = 2, d = 2
    return [
        {"model": linear, "x": normal(6, 4), "z": normal(6, 1)},
        {"model": toy_1d, "x": normal(5, 2), "z": normal(5, 1)},
        # K = 3 values of z for each of B = 4 objects: z [K, B, d], x [B, D], the answer [K, B]
        {"model": toy_2d, "x": normal(4, 2), "z": normal(3, 4, 2)},
    ]


def check_log_joint(log_joint) -> Result:
    r"""Check ``log_joint(model, x, z)`` = log p(x, z | θ) = log p(x | z, θ) + log p(z | θ) (chapter 1).

    ``model`` has ``.prior`` (p(z)) and ``.likelihood(z)`` (p(x|z, θ)); ``x`` is ``[..., D]`` and ``z``
    ``[..., d]`` (batch shapes that broadcast); the answer has one value per pair, the broadcast batch shape.
    Cases: a linear-Gaussian model (D = 4, d = 1), the nonlinear toy (d = 1), and the toy with d = 2 and
    z ``[K, B, d]``. Diagnoses: a forgotten prior or likelihood term, a term subtracted, logs multiplied, the
    density instead of its log, a missing −(D/2) log 2π or −(d/2) log 2π, a sign.

    >>> check_log_joint(lambda model, x, z: model.likelihood(z).log_prob(x) + model.prior.log_prob(z)).passed
    True
    """
    result = check_function(
        "log p(x, z | θ)",
        log_joint,
        _reference_log_joint,
        _log_joint_cases(),
        rtol=_RTOL,
        atol=_ATOL,
        diagnoses=_LOG_JOINT_DIAGNOSES,
    )
    return _shape_hint(
        result,
        "one value per pair (x, z): a Normal's log_prob has one value per coordinate, so sum over the last "
        "dimension, or use the distributions the model gives, whose log_prob already sums (Independent(…, 1))",
    )


# ---------------------------------------------------------------------------------------------------------------
# Exercise 2: log p(x) ≈ log Σ_g p(x, z_g) Δz, in log space


def _reference_log_marginal_quadrature(log_joint_on_grid: torch.Tensor, dz: float) -> torch.Tensor:
    """log Σ_g exp(log p(x, z_g)) Δz = logsumexp over the grid (dim 0) + log Δz: ``[G, B]`` to ``[B]``."""
    return torch.logsumexp(log_joint_on_grid, dim=0) + math.log(dz)


def _quadrature_offsets(got, expected, case):
    offset = _offset(got, expected)
    if offset is None:
        return None
    grid_size, dz = case["log_joint_on_grid"].shape[0], case["dz"]
    log_g, log_dz = math.log(grid_size), math.log(dz)
    named = [
        (-log_dz, f"the cell width is missing: a Riemann sum is Σ_g p(x, z_g) · Δz, so add log Δz = {log_dz:.4g}"),
        (-log_g, f"a mean over the G = {grid_size} grid points instead of a sum: (1/G) Σ is −log G in log space"),
        (
            -log_g - log_dz,
            f"a mean over the G = {grid_size} grid points and no cell width: use the sum Σ_g (not the mean) "
            "and add log Δz",
        ),
        (-2 * log_dz, "Δz divides instead of multiplying: add log Δz, do not subtract it"),
    ]
    for value, hint in named:
        if math.isclose(offset, value, rel_tol=1e-4, abs_tol=1e-6):
            return f"every value is off by {offset:+.4g}: {hint}"
    return constant_offset(got, expected, case)


_QUADRATURE_DIAGNOSES = (not_finite, sign_flipped, _quadrature_offsets)


def _quadrature_cases() -> list[dict]:
    """Log-joints on grids over z, ``[G, B]``, of the nonlinear toy (d = 1) and a linear-Gaussian model."""

    def on_grid(model, x, limit, grid_size, dtype):
        model = model.to(dtype)
        z = torch.linspace(-limit, limit, grid_size, dtype=dtype)[:, None]  # [G, 1]
        x = torch.as_tensor(x, dtype=dtype)
        with torch.no_grad():
            log_joint = model.likelihood(z[:, None, :]).log_prob(x) + model.prior.log_prob(z)[:, None]  # [G, B]
        return {"log_joint_on_grid": log_joint, "dz": float(z[1, 0] - z[0, 0])}

    toy = NonlinearToy(latent_dim=1, noise_std=0.3)
    near = [[0.5, -0.8], [0.0, 0.3], [2.0, 1.0], [-1.2, -0.3], [3.0, 3.5]]
    linear = LinearGaussian(torch.tensor([[1.0], [0.5], [-0.5]]), torch.zeros(3), 0.5).requires_grad_(False)  # D = 3
    # the last point lies 8 away from the line W z: its p(x, z) is below 1e-50, zero in float32
    mixed = [[1.0, 0.5, -0.5], [0.0, 0.2, 0.1], [-2.0, -1.0, 1.2], [0.0, 5.66, 5.66]]
    far = [[0.0, -14.0], [6.0, -12.0]]  # p(x, z) below 1e-320: zero even in float64
    return [
        on_grid(toy, near, 6.0, 601, torch.float64),
        on_grid(linear, mixed, 5.0, 401, torch.float32),
        on_grid(toy, far, 6.0, 241, torch.float64),
    ]


def check_log_marginal_quadrature(log_marginal_quadrature) -> Result:
    r"""Check ``log_marginal_quadrature(log_joint_on_grid, dz)`` = log Σ_g p(x, z_g) Δz (chapter 1).

    ``log_joint_on_grid`` is ``[G, B]``: log p(x_b, z_g | θ) at G equally spaced points z_g (spacing ``dz``, a
    float) for B objects; the answer is ``[B]``, the Riemann sum of p(x|θ) = ∫ p(x|z, θ) p(z) dz in log space:
    ``logsumexp`` over the grid plus log Δz. One case is in float32 and one has p(x, z) below 1e-320, so that
    exponentiating first underflows. Diagnoses: the missing log Δz, a mean over the grid instead of a sum (−log G),
    the underflow, a sign.

    >>> import math
    >>> check_log_marginal_quadrature(lambda log_joint_on_grid, dz: (
    ...     log_joint_on_grid.logsumexp(0) + math.log(dz))).passed
    True
    """
    result = check_function(
        "log p(x) by quadrature",
        log_marginal_quadrature,
        _reference_log_marginal_quadrature,
        _quadrature_cases(),
        rtol=_RTOL,
        atol=_ATOL,
        diagnoses=_QUADRATURE_DIAGNOSES,
    )
    return _shape_hint(
        result, "one value per object x: reduce over the grid points z_g (dim 0 of the [G, B] input), keep B"
    )
