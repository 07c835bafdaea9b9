r"""Checkers for the exercises of chapter 8, "Learned priors".

- :func:`check_mixture_log_prob`: ``mixture_log_prob(z, logits, loc, scale)``, the log-density of the mixture prior
  p_λ(z) = Σ_k π_k N(z; μ_k, diag σ_k²) with π = softmax(logits), one value per point:
  log p_λ(z) = logsumexp_k [log π_k + Σ_j log N(z_j; μ_kj, σ_kj²)];
- :func:`check_flow_log_prob`: ``flow_log_prob(z, transform)``, the lecture's flow prior by the change of variables,
  log p_λ(z) = log N(f_λ(z); 0, I) + log |det J_f(z)|, where ``transform(z)`` returns (f_λ(z), log |det J_f(z)|),
  as zuko's ``call_and_ladj`` does.

Every input is built from a fixed seed, so a correct answer matches the reference to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from ..priors import import_zuko
from ..runtime import seeded
from .checking import DEFAULT_DIAGNOSES, Result, check_function, close_enough, require_function

__all__ = ["check_flow_log_prob", "check_mixture_log_prob", "flow_log_prob", "mixture_log_prob"]

_DTYPE = torch.float64


def _first_hint(got: torch.Tensor, variants) -> str | None:
    return next((hint for candidate, hint in variants if close_enough(got, candidate)), None)


# --- Exercise 1: the mixture prior's log-density ----------------------------------------------------------------


def mixture_log_prob(z: torch.Tensor, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r"""log p_λ(z) of the mixture Σ_k softmax(logits)_k N(z; loc_k, diag scale_k²) for z ``[B, d]`` → ``[B]``;
    ``logits`` ``[K]``, ``loc`` and ``scale`` ``[K, d]`` (``scale`` is σ, the standard deviation). The reference, from
    ``torch.distributions``, as :class:`vaecourse.priors.MixtureOfGaussians` builds it (chapter 8)."""
    components = Independent(Normal(loc, scale), 1)  # batch [K], event [d]
    return MixtureSameFamily(Categorical(logits=logits), components).log_prob(z)


def _component_terms(z, loc, scale):
    """log N(z_j; μ_kj, σ_kj²) for each point, component and coordinate: ``[B, K, d]``."""
    return Normal(loc, scale).log_prob(z[:, None, :])


def _mixture_mistakes(got, expected, case):
    z, logits, loc, scale = case["z"], case["logits"], case["loc"], case["scale"]
    log_weights = F.log_softmax(logits, dim=-1)  # [K]
    per_coordinate = _component_terms(z, loc, scale)  # [B, K, d]
    per_component = per_coordinate.sum(-1)  # log N(z; μ_k, diag σ_k²), [B, K]

    def mixture(components, weights=log_weights):
        return torch.logsumexp(weights + components, dim=-1)

    per_dimension = (
        "you took the logsumexp over the components for each coordinate and then summed over the coordinates: that "
        "is a product of d one-dimensional mixtures, Π_j Σ_k π_k N(z_j; μ_kj, σ_kj²), with K^d modes, not the mixture "
        "of K Gaussians Σ_k π_k Π_j N(z_j; μ_kj, σ_kj²). Sum the log-densities over the coordinates first, "
        "[B, K, d] → [B, K], then take the logsumexp over the K components"
    )
    variants = [
        (torch.logsumexp(log_weights[:, None] + per_coordinate, dim=1).sum(-1), per_dimension),
        (torch.logsumexp(logits[:, None] + per_coordinate, dim=1).sum(-1), per_dimension),
        (
            mixture(Normal(loc, scale**2).log_prob(z[:, None, :]).sum(-1)),
            "scale is σ, the standard deviation: Normal(loc, scale) takes it as it is; you passed σ² (scale**2) where "
            "σ belongs",
        ),
        (
            mixture(Normal(loc, scale.sqrt()).log_prob(z[:, None, :]).sum(-1)),
            "scale is already σ, the standard deviation: you took its square root, as if it were the variance σ²",
        ),
        (
            mixture(per_component, logits),
            "the logits are not log-weights: log π_k = log_softmax(logits)_k, i.e. logits_k − logsumexp(logits). "
            "Without it the weights do not sum to one, and every value is off by logsumexp(logits)",
        ),
        (
            mixture(per_component, F.softmax(logits, dim=-1)),
            "the weights enter in log space: logsumexp_k [log π_k + log N_k], with log π = log_softmax(logits), "
            "not softmax(logits)",
        ),
        (
            mixture(per_component, torch.full_like(logits, -math.log(len(logits)))),
            "the weights π = softmax(logits) are missing: you gave every component the weight 1/K",
        ),
        (
            mixture(per_component, torch.zeros_like(logits)),
            "the weights π = softmax(logits) are missing: logsumexp_k [log π_k + log N(z; μ_k, diag σ_k²)]",
        ),
        (
            (log_weights + per_component).max(-1).values,
            "you kept the largest term only (a max over the components): the mixture sums them, torch.logsumexp",
        ),
        (
            (log_weights.exp() * per_component).sum(-1),
            "you averaged the log-densities with the weights, Σ_k π_k log N_k: that is a lower bound (Jensen), "
            "not log Σ_k π_k N_k; use torch.logsumexp over log π_k + log N_k",
        ),
    ]
    return _first_hint(got, variants)


def _mixture_cases() -> list[dict]:
    """Points z ``[B, d]`` and a mixture with unequal weights, scales far from 1 (σ, σ² and √σ differ), and a
    last case with points far from every component (exp of their log-densities underflows to 0)."""
    generator = torch.Generator().manual_seed(8)
    cases = []
    for batch_size, num_components, latent_dim, spread in ((6, 4, 3, 2.0), (5, 7, 2, 2.0), (4, 3, 5, 40.0)):
        cases.append(
            {
                "z": spread * torch.randn(batch_size, latent_dim, generator=generator, dtype=_DTYPE),
                "logits": 1.5 * torch.randn(num_components, generator=generator, dtype=_DTYPE),
                "loc": 2.0 * torch.randn(num_components, latent_dim, generator=generator, dtype=_DTYPE),
                "scale": 0.3 + 2.2 * torch.rand(num_components, latent_dim, generator=generator, dtype=_DTYPE),
            }
        )
    return cases


def check_mixture_log_prob(function: Callable) -> Result:
    """Check ``function(z, logits, loc, scale) -> [B]``: log p_λ(z) of the mixture-of-Gaussians prior (chapter 8).

    ``z`` ``[B, d]``; ``logits`` ``[K]`` (π = softmax(logits)); ``loc`` and ``scale`` ``[K, d]``, the means and the
    standard deviations of the K diagonal Gaussians. Diagnoses a logsumexp taken per coordinate (before the sum over
    the coordinates), σ² or √σ where σ belongs, logits used as log-weights, softmax weights outside the log, missing
    weights, a max or a weighted mean of log-densities in place of the logsumexp, and exp that underflows.
    """
    require_function(function, "check_mixture_log_prob")
    return check_function(
        "mixture_log_prob",
        function,
        mixture_log_prob,
        _mixture_cases(),
        diagnoses=(_mixture_mistakes, *DEFAULT_DIAGNOSES),
    )


# --- Exercise 2: the flow prior by the change of variables ------------------------------------------------------


def _standard_normal_log_prob(eps: torch.Tensor) -> torch.Tensor:
    """log N(ε; 0, I), summed over the last dimension."""
    return Normal(torch.zeros_like(eps), torch.ones_like(eps)).log_prob(eps).sum(-1)


def flow_log_prob(z: torch.Tensor, transform: Callable) -> torch.Tensor:
    r"""log p_λ(z) = log N(f_λ(z); 0, I) + log |det J_f(z)| for z ``[B, d]`` → ``[B]``, where ``transform(z)`` returns
    (f_λ(z) ``[B, d]``, log |det J_f(z)| ``[B]``), as zuko's ``transform.call_and_ladj`` does (chapter 8)."""
    eps, log_abs_det = transform(z)
    return _standard_normal_log_prob(eps) + log_abs_det


class _Transform:
    """A named invertible map z → ε with its log |det J| (what the learner's function is given)."""

    def __init__(self, name: str, call: Callable):
        self.name = name
        self._call = call

    def __call__(self, z: torch.Tensor):
        return self._call(z)

    def __repr__(self) -> str:
        return f"<transform {self.name}>"


def _affine(shift: torch.Tensor, log_scale: torch.Tensor) -> _Transform:
    """ε = (z − shift)·exp(−log_scale), coordinate by coordinate: log |det J| = −Σ_j log_scale_j."""

    def call(z):
        eps = (z - shift) * torch.exp(-log_scale)
        return eps, (-log_scale).sum(-1).expand(z.shape[:-1])

    return _Transform("affine", call)


def _tanh_bump(strength: torch.Tensor) -> _Transform:
    """ε_j = z_j + a_j·tanh(z_j) with a_j > −1 (monotone): log |det J| = Σ_j log(1 + a_j(1 − tanh² z_j))."""

    def call(z):
        t = torch.tanh(z)
        return z + strength * t, torch.log1p(strength * (1 - t**2)).sum(-1)

    return _Transform("z + a·tanh(z)", call)


def _maf(latent_dim: int, seed: int) -> _Transform:
    """A small masked autoregressive flow from zuko with random weights (the flow prior's kind of map)."""
    zuko = import_zuko()

    with seeded(seed), torch.no_grad():  # random, not near-identity, weights: a visibly nonlinear map
        flow = zuko.flows.MAF(features=latent_dim, transforms=2, hidden_features=(16,)).to(_DTYPE)
        for parameter in flow.parameters():
            parameter.normal_(0.0, 0.3)
    transform = flow().transform

    def call(z):
        with torch.no_grad():
            return transform.call_and_ladj(z)

    return _Transform("MAF", call)


def _flow_cases() -> list[dict]:
    generator = torch.Generator().manual_seed(18)
    cases = []
    z = 1.5 * torch.randn(6, 3, generator=generator, dtype=_DTYPE)
    shift = torch.randn(3, generator=generator, dtype=_DTYPE)
    log_scale = torch.tensor([0.8, -0.5, 1.2], dtype=_DTYPE)
    cases.append({"z": z, "transform": _affine(shift, log_scale)})
    z = 1.5 * torch.randn(5, 4, generator=generator, dtype=_DTYPE)
    strength = torch.tensor([1.5, -0.6, 3.0, 0.7], dtype=_DTYPE)
    cases.append({"z": z, "transform": _tanh_bump(strength)})
    z = torch.randn(7, 2, generator=generator, dtype=_DTYPE)
    cases.append({"z": z, "transform": _maf(2, seed=28)})
    return cases


def _flow_mistakes(got, expected, case):
    z, transform = case["z"], case["transform"]
    eps, log_abs_det = transform(z)
    base_at_eps = _standard_normal_log_prob(eps)
    half_log_two_pi = 0.5 * math.log(2 * math.pi) * z.shape[-1]
    variants = [
        (
            base_at_eps - log_abs_det,
            "the log-determinant has the wrong sign: f_λ maps z to ε, and log p_λ(z) = log N(f_λ(z); 0, I) "
            "+ log |det J_f(z)|. A minus belongs to the other direction, the decoder-like map g = f⁻¹ from ε to z: "
            "log p_λ(z) = log N(ε; 0, I) − log |det J_g(ε)|",
        ),
        (
            log_abs_det,
            "the base density is missing: log p_λ(z) = log N(f_λ(z); 0, I) + log |det J_f(z)|, and the log-determinant "
            "alone only says how f_λ stretches the volume around z",
        ),
        (
            base_at_eps,
            "the log-determinant is missing: log N(f_λ(z); 0, I) alone is not a density in z; add log |det J_f(z)|, "
            "the change of volume (the second value transform(z) returns)",
        ),
        (
            _standard_normal_log_prob(z) + log_abs_det,
            "the base density is evaluated at z: it belongs at ε = f_λ(z), the first value that transform(z) returns",
        ),
        (
            base_at_eps + half_log_two_pi + log_abs_det,
            "log N(ε; 0, I) lacks its constant −(d/2) log 2π: use Normal(0, 1).log_prob(eps).sum(-1)",
        ),
        (
            -0.5 * (eps**2).sum(-1) + log_abs_det,
            "log N(ε; 0, I) lacks its constant −(d/2) log 2π: use Normal(0, 1).log_prob(eps).sum(-1)",
        ),
    ]
    return _first_hint(got, variants)


def check_flow_log_prob(function: Callable) -> Result:
    """Check ``function(z, transform) -> [B]``: log p_λ(z) of a flow prior by the change of variables (chapter 8),
    log N(f_λ(z); 0, I) + log |det J_f(z)|, where ``transform(z)`` returns (f_λ(z) ``[B, d]``, log |det J_f(z)| ``[B]``)
    like zuko's ``call_and_ladj``. The cases use an affine map, a nonlinear coordinate-wise map and a small MAF.
    Diagnoses the sign of the log-determinant, a missing base density or log-determinant, the base density at z
    instead of f_λ(z), and a missing −(d/2) log 2π.
    """
    require_function(function, "check_flow_log_prob")
    return check_function(
        "flow_log_prob",
        function,
        flow_log_prob,
        _flow_cases(),
        diagnoses=(_flow_mistakes, *DEFAULT_DIAGNOSES),
    )
