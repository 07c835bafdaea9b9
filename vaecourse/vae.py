r"""The variational autoencoder of chapter 6: an encoder q_φ(z|x), a decoder p_θ(x|z) and a prior p(z).

Each of the three is a module that returns a ``torch.distributions.Distribution``:

- ``encode(x)``: q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)), a diagonal Gaussian per example (the lecture's encoder);
- ``likelihood(z)`` (alias ``decode``): p_θ(x|z), independent pixels, Bernoulli for binary images and a binomial
  over the grey levels k/16 for the 8×8 digits; for real-valued pixels (chapter 9) a Gaussian or a continuous
  Bernoulli, built by :mod:`vaecourse.likelihoods`;
- ``prior``: p(z), N(0, I) here; the learned priors of chapter 8 drop in.

The loss is the lecture's ELBO, summed over pixels (a log-density of the whole image, in nats):

.. math::  \mathcal L_{φ,θ}(x) = \mathbb E_{q_φ(z|x)}[\log p_θ(x \mid z)] - KL(q_φ(z \mid x) \,\|\, p(z)).

The model has ``.prior`` and ``.likelihood(z)``, so every estimator of :mod:`vaecourse.estimators` evaluates it
as it evaluates the small models of chapters 1-3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Binomial, Distribution, Independent, Normal

from . import collapse, conv, estimators, iwae, likelihoods
from .checks import check_num_samples, check_positive_int
from .priors import PRIORS, check_prior_options, make_prior
from .sparse import SparseInputLinear

__all__ = ["ARCHITECTURES", "BOUNDS", "LIKELIHOODS", "SCALES", "VAE", "GreyLevels", "VAEConfig"]

ARCHITECTURES = ("mlp", "conv")
BOUNDS = ("elbo", "iwae")
LIKELIHOODS = ("bernoulli", "binomial", *likelihoods.CONTINUOUS)
SCALES = ("softplus", "exp")
_NO_SHAPE = torch.Size()


@dataclass
class VAEConfig:
    """The shape of a :class:`VAE`: sizes, the likelihood and how the encoder keeps σ positive.

    ``likelihood="bernoulli"`` is for binary pixels (binarized MNIST); ``"binomial"`` for grey levels
    k/``levels`` (the 8×8 digits have 17 levels, 0..16). ``scale`` is ``"softplus"`` (σ = softplus(s) + floor) or
    ``"exp"`` (σ = exp(s) + floor), with the floor ``min_scale``. ``sparse_input`` computes the first layer from the
    non-zero pixels only (the same numbers, faster on a CPU for sparse images such as MNIST's 13 % ink).

    Real-valued pixels (chapter 9): ``likelihood="gaussian"`` is N(x; μ_θ(z), diag σ²) with σ as
    ``decoder_scale`` says, ``"fixed"`` at ``decoder_sigma``, ``"shared"`` (one learned σ for all pixels) or
    ``"pixel"`` (one learned σ per pixel), a learned σ starting at ``decoder_sigma``; ``"continuous_bernoulli"`` is
    the normalised density on [0, 1] of Loaiza-Ganem & Cunningham (2019).

    ``architecture="conv"`` (chapter 10) puts two convolutional layers of ``channels`` before the fully connected
    ``hidden_dims`` of the encoder, and their mirror image after those of the decoder (28×28 images only,
    :mod:`vaecourse.conv`).
    """

    data_dim: int = 784
    latent_dim: int = 20
    hidden_dims: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    levels: int = 16
    scale: str = "softplus"
    min_scale: float = 1e-4
    prior: str = "standard"
    prior_options: dict = field(default_factory=dict)
    sparse_input: bool = False
    decoder_scale: str = "shared"
    decoder_sigma: float = 0.1
    architecture: str = "mlp"
    channels: tuple[int, ...] = (32, 64)

    def __post_init__(self):
        self.hidden_dims = tuple(self.hidden_dims)
        for name in ("data_dim", "latent_dim", "levels"):
            check_positive_int(getattr(self, name), f"VAEConfig.{name}")
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.hidden_dims):
            raise ValueError(f"VAEConfig.hidden_dims must be positive ints, e.g. (400,), got {self.hidden_dims!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"VAEConfig.likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.scale not in SCALES:
            raise ValueError(f"VAEConfig.scale must be one of {SCALES}, got {self.scale!r}")
        if not (isinstance(self.min_scale, float | int) and self.min_scale >= 0):
            raise ValueError(f"VAEConfig.min_scale must be a number >= 0, got {self.min_scale!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"VAEConfig.prior must be one of {tuple(PRIORS)}, got {self.prior!r}")
        self.prior_options = dict(self.prior_options)
        check_prior_options(self.prior, self.prior_options)
        likelihoods.check_decoder_scale(self.decoder_scale, self.decoder_sigma)
        self._check_architecture()

    def _check_architecture(self) -> None:
        self.channels = tuple(self.channels)
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"VAEConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if len(self.channels) != 2 or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in self.channels
        ):
            raise ValueError(f"VAEConfig.channels must be two positive ints, e.g. (32, 64), got {self.channels!r}")
        if self.architecture == "conv":
            if self.data_dim != conv.IMAGE_SIDE**2:
                raise ValueError(
                    f"VAEConfig(architecture='conv') needs 28×28 images, data_dim = 784, got {self.data_dim}"
                )
            if self.sparse_input:
                raise ValueError("VAEConfig.sparse_input applies to the MLP encoder, not to architecture='conv'")

    def to_dict(self) -> dict:
        """Plain values only (what a checkpoint stores, loadable with ``torch.load(weights_only=True)``)."""
        return asdict(self)


class GreyLevels(Binomial):
    r"""A binomial over the grey levels k/n, k = 0..n: p(x) = C(n, nx) p^{nx} (1 − p)^{n − nx}.

    ``log_prob``, ``sample`` and ``mean`` work with the pixel values x in [0, 1] (the data as loaded), so the
    likelihood of a digit image is a probability of its exact grey levels, in nats. With n = 1 it is the Bernoulli.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return super().log_prob(value * self.total_count)

    def sample(self, sample_shape=_NO_SHAPE) -> torch.Tensor:
        return super().sample(sample_shape) / self.total_count

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    @property
    def mode(self) -> torch.Tensor:
        return super().mode / self.total_count

    @property
    def variance(self) -> torch.Tensor:
        return self.probs * (1 - self.probs) / self.total_count


def _mlp(sizes: list[int], first: nn.Module | None = None) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if index > 0:
            layers.append(nn.ReLU())
        layers.append(first if index == 0 and first is not None else nn.Linear(size_in, size_out))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q_φ(z|x) = N(μ_φ(x), diag σ²_φ(x)): an MLP from x to (μ, s), with σ = softplus(s) or exp(s), plus a floor."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.architecture == "conv":
            self.net = conv.ConvEncoderNet(config)
        else:
            sizes = [config.data_dim, *config.hidden_dims, 2 * config.latent_dim]
            first = SparseInputLinear(sizes[0], sizes[1], sparse=config.sparse_input)
            self.net = _mlp(sizes, first)
        self.scale, self.min_scale = config.scale, config.min_scale

    def forward(self, x: torch.Tensor) -> Distribution:
        loc, raw_scale = self.net(x).chunk(2, dim=-1)  # [..., d] each
        scale = F.softplus(raw_scale) if self.scale == "softplus" else raw_scale.exp()
        return Independent(Normal(loc, scale + self.min_scale, validate_args=False), 1)


class Decoder(nn.Module):
    """p_θ(x|z): an MLP from z to one logit per pixel, and independent pixels given z."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.architecture == "conv":
            self.net = conv.ConvDecoderNet(config)
        else:
            self.net = _mlp([config.latent_dim, *reversed(config.hidden_dims), config.data_dim])
        self.likelihood, self.levels = config.likelihood, config.levels
        if config.likelihood == "gaussian":  # σ of the Gaussian decoder (chapter 9): fixed, shared or per pixel
            self.noise = likelihoods.GaussianScale(config.data_dim, config.decoder_scale, config.decoder_sigma)

    def forward(self, z: torch.Tensor) -> Distribution:
        logits = self.net(z)  # [..., D]
        if self.likelihood in likelihoods.CONTINUOUS:
            return likelihoods.decoder_distribution(self.likelihood, logits, getattr(self, "noise", None))
        if self.likelihood == "bernoulli":
            return Independent(Bernoulli(logits=logits, validate_args=False), 1)
        return Independent(GreyLevels(self.levels, logits=logits, validate_args=False), 1)


class VAE(nn.Module):
    r"""The variational autoencoder (chapter 6): ``VAE(VAEConfig(latent_dim=20, hidden_dims=(400,)))``.

    >>> model = VAE(VAEConfig(data_dim=64, latent_dim=2, hidden_dims=(32,), likelihood="binomial"))
    >>> x = torch.full((5, 64), 0.5)
    >>> model.encode(x).batch_shape, model.encode(x).event_shape
    (torch.Size([5]), torch.Size([2]))
    >>> terms = model.elbo(x, num_samples=3)
    >>> terms.elbo.shape, terms.z.shape
    (torch.Size([5]), torch.Size([3, 5, 2]))
    """

    def __init__(self, config: VAEConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = VAEConfig(**overrides)
        elif overrides:
            config = VAEConfig(**{**config.to_dict(), **overrides})
        if not isinstance(config, VAEConfig):
            raise ValueError(f"config must be a VAEConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.latent_prior = make_prior(
            config.prior, config.latent_dim, data_dim=config.data_dim, **config.prior_options
        )

    # The three distributions -------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Distribution:
        """q_φ(z|x), batch shape ``x.shape[:-1]``, event shape ``[latent_dim]``."""
        self.check_data(x)
        return self.encoder(x)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p_θ(x|z), batch shape ``z.shape[:-1]``, event shape ``[data_dim]``."""
        if not isinstance(z, torch.Tensor) or z.ndim == 0 or z.shape[-1] != self.config.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape [..., {self.config.latent_dim}], got {shape}")
        return self.decoder(z)

    decode = likelihood

    @property
    def prior(self) -> Distribution:
        """p(z), event shape ``[latent_dim]``: the :class:`~vaecourse.priors.Prior` module ``latent_prior``, called
        with the encoder (a VampPrior is built from the encoder's posteriors; the other priors ignore it)."""
        return self.latent_prior(self.encoder)

    # What the chapter computes with them ---------------------------------------------------------------------------
    def elbo(
        self,
        x: torch.Tensor,
        num_samples: int = 1,
        beta: float = 1.0,
        analytic_kl: bool = True,
        eps: torch.Tensor | None = None,
        bound: str = "elbo",
        free_bits: float = 0.0,
    ) -> estimators.ElboTerms:
        r"""Per-example ``log_px_z`` (E_q[log p_θ(x|z)]), ``kl`` (KL(q_φ(z|x) ‖ p(z))), ``elbo = log_px_z − kl``
        and the β-VAE ``objective = log_px_z − β·kl`` (the ELBO at β = 1), estimated with ``num_samples``
        reparameterized samples ``z = μ + σ·ε`` ``[S, ..., d]``, or with the given noise ``eps`` (``[..., d]`` or
        ``[S, ..., d]``). The KL is analytic where the prior allows it.

        ``bound="iwae"`` (chapter 10) makes ``objective`` the importance-weighted bound of Burda et al. (2016) with
        K = ``num_samples`` samples, log (1/K) Σ_k p_θ(x, z_k) / q_φ(z_k|x), which training then climbs
        (:func:`vaecourse.iwae.iwae_terms`); ``elbo`` stays the ELBO of the same samples. Needs β = 1.

        ``free_bits`` λ > 0 (chapter 9) makes the KL part of ``objective`` the free-bits term of the batch,
        β·Σ_j max(λ, batch-mean KL_j) (:func:`vaecourse.collapse.free_bits_kl`), the same for every example, so that
        the batch mean of ``objective`` is the free-bits objective. Needs a diagonal Gaussian prior.
        """
        self.check_data(x)
        return self._elbo(x, num_samples, beta, analytic_kl, eps, bound, free_bits)

    def _elbo(
        self, x, num_samples=1, beta=1.0, analytic_kl=True, eps=None, bound="elbo", free_bits=0.0
    ) -> estimators.ElboTerms:
        """:meth:`elbo` without the input checks (the training loop checks the data set once)."""
        q = self.encoder(x)
        z = None
        if eps is not None:
            z = q.mean + q.stddev * eps  # the reparameterization z = μ + σ·ε (chapter 5)
            z = z.unsqueeze(0) if z.shape == q.batch_shape + q.event_shape else z  # [S, ..., d]
        if bound != "elbo":
            if bound not in BOUNDS:
                raise ValueError(f"bound must be one of {BOUNDS}, got {bound!r}")
            if free_bits:
                raise ValueError("free_bits apply to the ELBO's KL term: use free_bits with bound='elbo'")
            if beta != 1.0:
                raise ValueError(f"bound='iwae' is a bound on log p(x) at β = 1; got beta = {beta!r}")
            return iwae.iwae_terms(self, x, q, check_num_samples(num_samples), analytic_kl=analytic_kl, z=z)
        terms = estimators.elbo(self, x, q, check_num_samples(num_samples), analytic_kl=analytic_kl, z=z)
        if free_bits:  # the same q as the ELBO's: its KL per latent dimension, floored at λ after the batch mean
            kl = collapse.kl_per_dimension(q, self.prior)  # [B, d]
            terms.objective = terms.log_px_z - beta * collapse.free_bits_kl(kl, free_bits)
        else:
            terms.objective = terms.log_px_z - beta * terms.kl if beta != 1.0 else terms.elbo
        return terms

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` images from the model, ``[n, data_dim]``: z ~ p(z), then the decoder's mean (the pixel
        probabilities, as papers show them) or, with ``mean=False``, a draw x ~ p_θ(x|z)."""
        check_positive_int(n, "n")
        decoded = self.likelihood(self.prior.sample((n,)))
        return decoded.mean if mean else decoded.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at the encoder's mean: E[x | z = μ_φ(x)], shaped like ``x``."""
        return self.likelihood(self.encode(x).mean).mean

    # Input checks ----------------------------------------------------------------------------------------------------
    def check_data(self, x: torch.Tensor) -> None:
        """``ValueError`` unless ``x`` is a float tensor ``[..., data_dim]`` with values the likelihood can score."""
        size = self.config.data_dim
        if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[-1] != size:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape [..., {size}] (flattened images of {size} pixels), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if self.config.likelihood in likelihoods.CONTINUOUS:
            likelihoods.check_continuous_data(x, self.config.likelihood)
        elif self.config.likelihood == "bernoulli":
            if not bool(((x == 0) | (x == 1)).all()):
                raise ValueError(
                    "x must be binary (0 or 1) for a Bernoulli decoder; for grey levels in [0, 1] use "
                    "VAEConfig(likelihood='binomial')"
                )
        else:
            counts = x * self.config.levels
            if not bool(((x >= 0) & (x <= 1) & ((counts - counts.round()).abs() < 1e-4)).all()):
                raise ValueError(
                    f"x must hold grey levels k/{self.config.levels} in [0, 1] for a binomial decoder "
                    f"with {self.config.levels} levels"
                )

    def extra_repr(self) -> str:
        return f"latent_dim={self.config.latent_dim}, likelihood={self.config.likelihood!r}"
