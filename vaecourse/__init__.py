"""vaecourse: the tested code behind the course "Variational Autoencoders: from the lecture to working code".

Each chapter of the book imports it as ``import vaecourse as vc``.
"""

from . import data, estimators, exercises, gaussian, gradients, models, montecarlo, plots, vi, widgets
from .runtime import Budget, budget, device, seed, set_budget

__version__ = "0.1.0"

__all__ = [
    "Budget",
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
