"""vaecourse: the tested code behind the course "Variational Autoencoders: from the lecture to working code".

Each chapter of the book imports it as ``import vaecourse as vc``. The modules that need matplotlib or hold the
exercise checkers (``plots``, ``exercises``, ``reproduce``, ``results``) are imported on first use, so that
``python -m vaecourse train`` and a script that only trains do not pay for them.
"""

import importlib

from . import (
    amortized,
    checkpoint,
    collapse,
    conv,
    data,
    diagnostics,
    download,
    estimators,
    evaluate,
    files,
    gaps,
    gaussian,
    gradients,
    iwae,
    judge,
    likelihoods,
    models,
    montecarlo,
    priors,
    recipes,
    sparse,
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

_ON_FIRST_USE = ("exercises", "experiments", "plots", "reproduce", "results")


def __getattr__(name: str):
    """``vc.plots``, ``vc.exercises``, ``vc.experiments``, ``vc.reproduce`` and ``vc.results``, imported when first used
    (PEP 562)."""
    if name in _ON_FIRST_USE:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})

__all__ = [
    "VAE",
    "amortized",
    "Budget",
    "TrainConfig",
    "VAEConfig",
    "checkpoint",
    "collapse",
    "conv",
    "evaluate",
    "experiments",
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
    "diagnostics",
    "download",
    "estimators",
    "exercises",
    "files",
    "gaps",
    "gaussian",
    "gradients",
    "iwae",
    "judge",
    "likelihoods",
    "models",
    "montecarlo",
    "plots",
    "seed",
    "sparse",
    "set_budget",
    "vi",
    "widgets",
]
