"""vaecourse: the tested code behind the course "Variational Autoencoders: from the lecture to working code".

Each chapter of the book imports it as ``import vaecourse as vc``.
"""

from . import (
    checkpoint,
    data,
    estimators,
    evaluate,
    exercises,
    gaussian,
    gradients,
    models,
    montecarlo,
    plots,
    priors,
    recipes,
    reproduce,
    results,
    surgery,
    train,
    vae,
    vi,
    widgets,
)
from .checkpoint import load, save
from .evaluate import log_likelihood
from .runtime import Budget, budget, device, seed, set_budget
from .train import TrainConfig, fit
from .vae import VAE, VAEConfig

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "Budget",
    "TrainConfig",
    "VAEConfig",
    "checkpoint",
    "evaluate",
    "fit",
    "load",
    "log_likelihood",
    "priors",
    "recipes",
    "reproduce",
    "results",
    "save",
    "surgery",
    "train",
    "vae",
    "budget",
    "data",
    "device",
    "estimators",
    "exercises",
    "gaussian",
    "gradients",
    "models",
    "montecarlo",
    "plots",
    "seed",
    "set_budget",
    "vi",
    "widgets",
]
