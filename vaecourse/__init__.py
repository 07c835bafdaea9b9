"""vaecourse: the tested code behind the course "Variational Autoencoders: from the lecture to working code".

Each chapter of the book imports it as ``import vaecourse as vc``. Six modules are imported on first use (when
``vc.plots`` is first read, say): those that need matplotlib (``diagrams``, ``plots``), hold the exercise checkers
(``exercises``) or run the experiments and find their results (``experiments``, ``reproduce``, ``results``), so
that ``python -m vaecourse train`` and a script that only trains do not pay for them; ``from vaecourse import *``
leaves them out too.
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

_ON_FIRST_USE = ("diagrams", "exercises", "experiments", "plots", "reproduce", "results")


def __getattr__(name: str):
    """The modules of ``_ON_FIRST_USE`` (``vc.plots``, ``vc.diagrams``, ``vc.exercises``, …), imported when first
    used (PEP 562)."""
    if name in _ON_FIRST_USE:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})


__all__ = [  # without the modules of _ON_FIRST_USE: ``import *`` would import them all
    "VAE",
    "amortized",
    "Budget",
    "TrainConfig",
    "VAEConfig",
    "checkpoint",
    "collapse",
    "conv",
    "evaluate",
    "fit",
    "load",
    "log_likelihood",
    "priors",
    "recipes",
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
    "files",
    "gaps",
    "gaussian",
    "gradients",
    "iwae",
    "judge",
    "likelihoods",
    "models",
    "montecarlo",
    "seed",
    "sparse",
    "set_budget",
    "vi",
    "widgets",
]
