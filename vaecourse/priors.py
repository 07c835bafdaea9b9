r"""Priors p(z) for the VAE: modules whose call returns a ``torch.distributions.Distribution`` (chapters 6 and 8).

A prior is a :class:`Prior`: a module, like the encoder and the decoder, so that a learned prior p_λ(z)
(chapter 8) trains with the rest of the model and drops into :class:`vaecourse.vae.VAE` with no other change. The
VAE calls ``prior(encoder)`` (only the VampPrior, whose components are the encoder's posteriors, uses the encoder;
the others are called with or without it) and uses the distribution's ``log_prob``, ``sample`` and, where it
exists, ``rsample``. This is zuko's ``LazyDistribution``: a module whose call returns a distribution.

- :class:`StandardNormal`: N(0, I), the lecture's prior (chapter 6);
- :class:`MixtureOfGaussians`: Σ_k π_k N(μ_k, diag σ_k²) with learned weights, means and scales;
- :class:`VampPrior`: (1/K) Σ_k q_φ(z | u_k), the aggregate posterior at K learned pseudo-inputs u_k
  (Tomczak & Welling, 2018);
- :class:`FlowPrior`: a masked autoregressive flow f_λ on z, log p_λ(z) = log N(f_λ(z); 0, I) + log |det J_f(z)|
  (the lecture's flow prior), from the zuko library.

No closed-form KL(q ‖ p) exists for the learned ones; the ELBO then estimates it by Monte Carlo
(:func:`vaecourse.estimators.kl`).
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from .checks import check_positive_int

__all__ = [
    "PRIORS",
    "FlowPrior",
    "Prior",
    "MixtureOfGaussians",
    "StandardNormal",
    "VampPrior",
    "check_prior_options",
    "make_prior",
]

_SOFTPLUS_OF_ONE = math.log(math.e - 1)  # softplus(0.5413) = 1


class Prior(nn.Module):
    r"""The base of every prior p(z) in ``latent_dim`` dimensions (chapters 6-8).

    ``prior(encoder=None)`` returns a ``torch.distributions.Distribution`` with event shape ``[latent_dim]``; the
    encoder q_φ(z|x) is passed by the VAE, and a prior built from it (the VampPrior) needs it.
    :meth:`initialise_from_data` is called by :func:`vaecourse.train.fit` before training; it does nothing here.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} must return its distribution p(z) from forward")

    def initialise_from_data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Start from the training data ``x`` ``[N, D]`` (drawing from ``generator``); nothing for most priors."""

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}"


class StandardNormal(Prior):
    r"""p(z) = N(0, I) in ``latent_dim`` dimensions, the lecture's prior (chapter 6). No parameters.

    Its mean and scale are buffers, so the prior follows the model to any device with ``.to(...)``.

    >>> prior = StandardNormal(2)()
    >>> prior.event_shape, round(prior.log_prob(torch.zeros(2)).item(), 4)
    (torch.Size([2]), -1.8379)
    """

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)


class MixtureOfGaussians(Prior):
    r"""p_λ(z) = Σ_k π_k N(z; μ_k, diag σ_k²), K components with learned π (softmax of logits), μ and σ
    (softplus) (chapter 8). The means start as draws from N(0, I) and the scales at 1, so the untrained prior
    is close to N(0, I) but not symmetric.

    >>> prior = MixtureOfGaussians(2, num_components=3)()
    >>> prior.sample((5,)).shape, prior.log_prob(torch.zeros(4, 2)).shape
    (torch.Size([5, 2]), torch.Size([4]))
    """

    def __init__(self, latent_dim: int, num_components: int = 10, min_scale: float = 1e-3):
        super().__init__(latent_dim)
        self.num_components = check_positive_int(num_components, "num_components")
        self.min_scale = min_scale
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))
        self.raw_scale = nn.Parameter(torch.full((num_components, latent_dim), _SOFTPLUS_OF_ONE))

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        components = Independent(
            Normal(self.loc, F.softplus(self.raw_scale) + self.min_scale, validate_args=False), 1
        )  # batch [K], event [d]
        return MixtureSameFamily(Categorical(logits=self.logits, validate_args=False), components, validate_args=False)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, num_components={self.num_components}"


def import_zuko():
    """The zuko library (the flow prior's), imported so that torch.distributions' argument validation stays as it
    was: importing zuko switches it off for the whole process (``Distribution._validate_args = False``), which
    would silence the shape and support errors of every distribution a chapter builds afterwards."""
    validate = Distribution._validate_args
    import zuko

    Distribution.set_default_validate_args(validate)
    return zuko


class VampPrior(Prior):
    r"""p_λ(z) = (1/K) Σ_k q_φ(z | u_k): the encoder's posteriors at K learned pseudo-inputs u_k ∈ [0, 1]^D,
    an approximation of the aggregate posterior q_avg(z) = (1/n) Σ_i q_φ(z | x_i) with K ≪ n components
    (Tomczak & Welling, 2018; chapter 8). Call it with the encoder: ``prior(encoder)``.

    The pseudo-inputs are ``sigmoid(pseudo_logits)``; :meth:`initialise_from_data` sets them to K training images
    (softened to [0.05, 0.95]); before that they are uniform noise around 0.5.
    """

    def __init__(self, latent_dim: int, num_components: int = 500, data_dim: int = 784):
        super().__init__(latent_dim)
        self.num_components = check_positive_int(num_components, "num_components")
        self.data_dim = check_positive_int(data_dim, "data_dim")
        self.pseudo_logits = nn.Parameter(0.1 * torch.randn(num_components, data_dim))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.pseudo_logits)  # [K, D]

    @torch.no_grad()
    def initialise_from_data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Set the pseudo-inputs to K distinct rows of ``x`` ``[N, D]`` (chosen at random), softened to
        [0.05, 0.95] so that their logits are finite; once set (by an earlier call, training or a checkpoint) they
        are kept."""
        if bool(self.initialised):
            return
        if x.ndim != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x must be [N, {self.data_dim}], got {tuple(x.shape)}")
        if len(x) < self.num_components:
            raise ValueError(f"{self.num_components} pseudo-inputs need at least as many examples, got {len(x)}")
        rows = torch.randperm(len(x), generator=generator, device=generator.device if generator else "cpu")
        chosen = x[rows[: self.num_components].to(x.device)].to(self.pseudo_logits)
        self.pseudo_logits.copy_(torch.logit(0.05 + 0.9 * chosen))
        self.initialised.fill_(True)

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        if encoder is None:
            raise ValueError("the VampPrior is built from the encoder: call it as prior(encoder)")
        components = encoder(self.pseudo_inputs)  # q(z | u_k): batch [K], event [d]
        weights = torch.zeros(self.num_components, device=self.pseudo_logits.device, dtype=self.pseudo_logits.dtype)
        return MixtureSameFamily(Categorical(logits=weights, validate_args=False), components, validate_args=False)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, num_components={self.num_components}"


class FlowPrior(Prior):
    r"""p_λ(z) through a normalizing flow f_λ from z to ε ~ N(0, I) (the lecture's flow prior, chapter 8):

    .. math::  \log p_λ(z) = \log \mathcal N(f_λ(z); 0, I) + \log \big|\det J_{f_λ}(z)\big|.

    f_λ is a masked autoregressive flow (MAF) of ``transforms`` affine layers from the zuko library: its
    ``log_prob`` is one network pass; ``sample`` inverts f_λ one coordinate at a time, and ``rsample`` exists.
    """

    def __init__(self, latent_dim: int, transforms: int = 3, hidden_dims: tuple[int, ...] = (128, 128)):
        super().__init__(latent_dim)
        zuko = import_zuko()
        self.transforms = check_positive_int(transforms, "transforms")
        self.hidden_dims = tuple(hidden_dims)
        self.flow = zuko.flows.MAF(features=latent_dim, transforms=transforms, hidden_features=self.hidden_dims)

    def forward(self, encoder: nn.Module | None = None) -> Distribution:
        return self.flow()

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, transforms={self.transforms}, hidden_dims={self.hidden_dims}"


PRIORS = {
    "standard": StandardNormal,
    "mog": MixtureOfGaussians,
    "vamp": VampPrior,
    "flow": FlowPrior,
}


def check_prior_options(name: str, options: dict) -> None:
    """``ValueError`` unless ``name`` is a prior and ``options`` are arguments it takes (e.g. ``num_components``)."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}: expected one of {', '.join(map(repr, PRIORS))}")
    parameters = inspect.signature(PRIORS[name]).parameters
    unknown = sorted(set(options) - set(parameters) - {"latent_dim", "data_dim"})
    if unknown:
        accepted = sorted(set(parameters) - {"latent_dim", "data_dim"})
        raise ValueError(f"prior {name!r} does not take {unknown}; it takes {accepted}")


def make_prior(name: str, latent_dim: int, data_dim: int | None = None, **options) -> Prior:
    """The prior called ``name`` (``"standard"``, ``"mog"``, ``"vamp"`` or ``"flow"``) in ``latent_dim``
    dimensions; ``options`` go to its constructor (e.g. ``num_components``). The VampPrior also needs the data
    dimension ``data_dim`` of its pseudo-inputs."""
    check_prior_options(name, options)
    if name == "vamp":
        if data_dim is None:
            raise ValueError("the VampPrior needs data_dim, the size of its pseudo-inputs")
        options = {"data_dim": data_dim, **options}
    return PRIORS[name](latent_dim, **options)
