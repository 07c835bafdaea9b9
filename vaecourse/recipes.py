"""The recommended training recipes (chapter 6): ``cpu`` for a CPU (a laptop, Binder, 2 cores) and ``gpu`` for a
CUDA GPU.

A recipe is the pair of configs that the command line starts from; every flag of ``python -m vaecourse train``
overrides one field. The measured results of each recipe are in the README and in chapter 6. The words of the
course: a *recipe* is ``cpu`` or ``gpu`` (what to train, for which device: ``train --recipe``, ``reproduce
--recipe``); a *budget* is ``small`` or ``full`` (how much the chapters compute: ``VAECOURSE_BUDGET``,
:func:`vaecourse.budget`). Left to themselves, both follow the device: ``gpu`` and ``full`` on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .train import TrainConfig
from .vae import VAEConfig

__all__ = ["RECIPES", "Recipe", "for_device", "recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    model: VAEConfig
    train: TrainConfig
    note: str
    prior_options: dict[str, dict] = field(default_factory=dict)  # per prior: the mixture's and the VampPrior's K

    def with_data(self, data_dim: int, likelihood: str) -> Recipe:
        """The same recipe for another data set (the 8×8 digits: 64 pixels, grey levels)."""
        return replace(
            self, model=VAEConfig(**{**self.model.to_dict(), "data_dim": data_dim, "likelihood": likelihood})
        )

    def with_prior(self, prior: str, **options) -> Recipe:
        """The same recipe with the prior ``prior``: the recipe's options for it (e.g. fewer VampPrior
        pseudo-inputs on a CPU), updated by ``options``."""
        chosen = {**self.prior_options.get(prior, {}), **options}
        return replace(self, model=VAEConfig(**{**self.model.to_dict(), "prior": prior, "prior_options": chosen}))


RECIPES = {
    "cpu": Recipe(
        name="cpu",
        model=VAEConfig(latent_dim=32, hidden_dims=(400,), sparse_input=True),
        train=TrainConfig(batch_size=128, lr=2e-3, schedule="cosine", epochs=30),
        note="a one-hidden-layer VAE trained briefly with a decaying step size; sized for 2 CPU cores",
        prior_options={
            "mog": {"num_components": 50},
            "vamp": {"num_components": 100},  # K = 500 pseudo-inputs cost 5x the encoder passes
        },
    ),
    "gpu": Recipe(
        name="gpu",
        model=VAEConfig(latent_dim=32, hidden_dims=(512, 512)),
        train=TrainConfig(batch_size=128, lr=1e-3, schedule="cosine", epochs=1000, warmup_epochs=10),
        note="two hidden layers, long training with KL warm-up and a cosine schedule",
        prior_options={"mog": {"num_components": 50}, "vamp": {"num_components": 500}},  # the VampPrior: the paper's K
    ),
}


def recipe(name: str) -> Recipe:
    """The recipe called ``name``: ``"cpu"`` or ``"gpu"``."""
    if name not in RECIPES:
        raise ValueError(
            f"unknown recipe {name!r}: expected one of {sorted(RECIPES)} (recipes.for_device(device) picks the one "
            "for a device)"
        )
    return RECIPES[name]


def for_device(device) -> Recipe:
    """The recommended recipe for ``device`` (a ``torch.device`` or its name): ``gpu`` on CUDA, ``cpu`` on a CPU
    or Apple's MPS.

    >>> for_device("cpu").name, for_device("cuda:1").name
    ('cpu', 'gpu')
    """
    return RECIPES["gpu" if torch.device(device).type == "cuda" else "cpu"]
