"""Saving and loading a trained VAE (chapter 6): the weights (``state_dict``) and the configs, nothing pickled.

A checkpoint is a dict of plain values and tensors, read back with ``torch.load(weights_only=True)``, so loading
a file from someone else cannot run code.
"""

from __future__ import annotations

import pathlib

import torch

from .files import atomic_write
from .priors import PRIORS
from .vae import VAE, VAEConfig

__all__ = ["CheckpointError", "load", "save"]

FORMAT = "vaecourse.VAE"
VERSION = 1


class CheckpointError(ValueError):
    """A file is not a vaecourse checkpoint, or is damaged."""


def save(model: VAE, path, train_config=None, metrics: dict | None = None) -> pathlib.Path:
    """Write ``model`` (its config and weights, on the CPU) to ``path``, with the training config and metrics if
    given. The file appears whole or not at all (written to a temporary file, then renamed)."""
    if not isinstance(model, VAE):
        raise ValueError(f"save expects a vaecourse VAE, got {type(model).__name__}")
    named = PRIORS[model.config.prior]
    if type(model.latent_prior) is not named:
        raise ValueError(
            f"cannot save a model whose prior is a {type(model.latent_prior).__name__} while its config names "
            f"{model.config.prior!r} ({named.__name__}): a checkpoint rebuilds the prior from the config, so only "
            "the priors of vaecourse.priors.PRIORS, built by VAEConfig(prior=...), are saved. An AggregatePrior is "
            "formed again from the loaded model and the data: surgery.AggregatePrior(surgery.aggregate_posterior("
            "model, x))"
        )
    path = pathlib.Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "train_config": train_config.to_dict() if hasattr(train_config, "to_dict") else train_config,
        "metrics": metrics,
    }
    with atomic_write(path) as file:
        torch.save(payload, file)
    return path


def read(path) -> dict:
    """The checkpoint's contents as a dict (``config``, ``state_dict``, ``train_config``, ``metrics``), checked."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip, EOF and runtime errors for damaged files
        if "weights only load failed" in str(error).lower():
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain values (a pickled model?): refused, "
                "since loading them could run code"
            ) from error
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged or not written by torch.save)") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vaecourse VAE checkpoint (it has no format tag {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {payload.get('version')!r}; this vaecourse reads {VERSION}"
        )
    return payload


def load(path, map_location=None) -> VAE:
    """The VAE saved at ``path``, in evaluation mode, ready to ``encode``, ``likelihood`` and ``prior``."""
    payload = read(path)
    try:
        model = VAE(VAEConfig(**payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise CheckpointError(f"{path}: its config or weights do not make a VAE ({error})") from error
    if map_location is not None:
        model.to(map_location)
    return model.eval()
