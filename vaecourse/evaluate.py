r"""How good is a trained VAE? Its test log-likelihood in nats, the number papers report (chapter 6).

log p(x) is estimated by importance sampling with the encoder as the proposal (the IWAE bound of
Burda et al., 2016):

.. math::  \log p_θ(x) \ge \mathbb E\Big[\log \frac1k \sum_{i=1}^{k}
           \frac{p_θ(x \mid z_i)\, p(z_i)}{q_φ(z_i \mid x)}\Big], \qquad z_i \sim q_φ(z \mid x),

a bound that tightens as K grows (K = 1 is the ELBO) and reaches log p(x) as K → ∞. Papers use K = 5000.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from . import estimators
from .checks import check_num_samples, check_positive_int
from .estimators import AmortizedModel
from .runtime import seeded

__all__ = ["LogLikelihood", "log_likelihood"]


@dataclass
class LogLikelihood:
    """The estimate of log p(x) averaged over the examples (``mean``, nats), its ``standard_error`` over the
    examples, the ``per_example`` values and the ``num_samples`` k. ``nll`` = −``mean``, the number in papers."""

    mean: float
    standard_error: float
    per_example: torch.Tensor
    num_samples: int

    @property
    def nll(self) -> float:
        return -self.mean

    def __str__(self) -> str:
        return (
            f"NLL = {self.nll:.2f} ± {self.standard_error:.2f} nats "
            f"(IWAE, K = {self.num_samples}, {len(self.per_example)} examples)"
        )


@contextlib.contextmanager
def _evaluation_mode(model):
    """A module in evaluation mode inside the block, and back in its own mode after it; anything else as it is."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def log_likelihood(
    model: AmortizedModel,
    x: torch.Tensor,
    num_samples: int = 1000,
    batch_size: int = 100,
    chunk_size: int | None = None,
    seed: int | None = 0,
) -> LogLikelihood:
    r"""The importance-sampled estimate of log p(x) of each row of ``x`` with ``num_samples`` samples of
    q_φ(z|x) each, and their mean with its standard error (chapter 6).

    Examples are processed ``batch_size`` at a time and samples in chunks (``chunk_size``, chosen to keep each
    intermediate tensor near 16 MB), so memory stays bounded at K = 5000 over the 10 000 test images. With a
    ``seed`` the draws come from that seed (the number is reproducible) and the caller's generator is left as it
    was; ``None`` draws from the caller's generator.
    """
    check_num_samples(num_samples)
    check_positive_int(batch_size, "batch_size")
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a batch of examples [N, D], got {getattr(x, 'shape', type(x).__name__)}")
    values = []
    with _evaluation_mode(model), seeded(seed, x.device):
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            proposal = model.encode(batch)  # q_φ(z|x), which checks the batch
            values.append(estimators.log_marginal_is(model, batch, proposal, num_samples, chunk_size=chunk_size))
    per_example = torch.cat(values).double().cpu()
    estimate = estimators.Estimate.of(per_example)
    return LogLikelihood(
        mean=estimate.value,
        standard_error=estimate.standard_error,
        per_example=per_example,
        num_samples=num_samples,
    )
