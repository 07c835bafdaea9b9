"""Where the course runs: the device, the seed and the compute budget.

Chapter "Setting up" shows each of these. The device is chosen here, once, and passed to the package's
functions by the notebooks; the rest of the package never names a device.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

DEVICE_ENV = "VAECOURSE_DEVICE"
BUDGET_ENV = "VAECOURSE_BUDGET"


def device(name: str | None = None) -> torch.device:
    """The device the chapters compute on: CUDA, else Apple MPS, else the CPU.

    ``name`` (or the environment variable ``VAECOURSE_DEVICE``) overrides the choice, e.g. ``"cpu"``;
    ``"auto"`` or nothing picks the best one available.

    >>> device("cpu")
    device(type='cpu')
    """
    name = name or os.environ.get(DEVICE_ENV, "auto")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as error:
        raise ValueError(
            f"unknown device {name!r} (from {DEVICE_ENV} or the argument): expected 'auto', 'cpu', 'cuda', "
            "'cuda:N' or 'mps'"
        ) from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} was asked for, but Apple MPS is not available on this machine")
    return chosen


def seed(n: int) -> int:
    """Make Python's ``random``, NumPy's global generator and torch (all devices) reproducible.

    >>> _ = seed(0); a = torch.rand(2)
    >>> _ = seed(0); bool((a == torch.rand(2)).all())
    True
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"seed must be a non-negative int, got {n!r}")
    random.seed(n)
    np.random.seed(n % 2**32)  # noqa: NPY002 -- the legacy global generator is what unseeded code uses
    torch.manual_seed(n)
    return n


@contextlib.contextmanager
def seeded(n: int | None, device: torch.device | str | None = None):
    """Draw from torch's generators seeded with ``n`` inside the block, and leave them as they were after it.

    The package's functions that must be reproducible (``fit``, ``log_likelihood``, ``decompose``, the exercise
    checkers) run their draws inside this block: their numbers depend on ``n`` alone, and the caller's next draw
    is the one it would have been without the call. The CPU generator is forked, and ``device``'s too when it is
    an accelerator. ``None`` does nothing: the draws then come from the caller's generators, which advance.

    >>> _ = seed(0); before = torch.random.get_rng_state()
    >>> with seeded(1):
    ...     a = torch.rand(2)
    >>> with seeded(1):
    ...     b = torch.rand(2)
    >>> bool((a == b).all()), torch.equal(torch.random.get_rng_state(), before)
    (True, True)
    """
    if n is None:
        yield
        return
    device = torch.device(device) if device is not None else torch.device("cpu")
    accelerator = {} if device.type == "cpu" else {"devices": [device], "device_type": device.type}
    with torch.random.fork_rng(**({"devices": []} | accelerator)):
        torch.manual_seed(n)
        yield


@dataclass(frozen=True)
class Budget:
    """How much compute a chapter spends. ``small`` fits a 2-core CPU (Binder, a laptop, CI);
    ``full`` is the scale of the papers, for a GPU.

    Chapters read the common sizes below, and choose their own numbers with :meth:`pick`, so that
    the cell shows both scales side by side.

    >>> budget("small").pick(small=1_000, full=50_000)
    1000
    """

    name: str  # "small" or "full"
    train_size: int | None  # training examples used (None: the whole split)
    eval_size: int | None  # test examples evaluated (None: the whole split)
    epochs: int  # training passes over the data
    num_samples: int  # Monte Carlo samples for an estimate shown in a figure
    eval_samples: int  # importance samples k for a log-likelihood estimate (IWAE)

    @property
    def is_full(self) -> bool:
        return self.name == "full"

    def pick(self, small, full):
        """``small`` under the small budget, ``full`` under the full one."""
        return full if self.is_full else small


BUDGETS = {
    "small": Budget("small", train_size=10_000, eval_size=1_000, epochs=10, num_samples=1_000, eval_samples=100),
    "full": Budget("full", train_size=None, eval_size=None, epochs=500, num_samples=100_000, eval_samples=5_000),
}

_override: str | None = None


def budget(name: str | None = None) -> Budget:
    """The budget in force: ``name`` if given, else the one set by :func:`set_budget`, else the environment
    variable ``VAECOURSE_BUDGET`` (``small``, ``full`` or ``auto``), else ``auto``: ``full`` on a CUDA GPU,
    ``small`` everywhere else.

    >>> budget("small").train_size
    10000
    """
    name = name or _override or os.environ.get(BUDGET_ENV, "auto")
    if name == "auto":
        name = "full" if torch.cuda.is_available() else "small"
    if name not in BUDGETS:
        raise ValueError(
            f"unknown budget {name!r}: expected one of {sorted(BUDGETS)} or 'auto' "
            f"(set it with vaecourse.set_budget(...) or the environment variable {BUDGET_ENV})"
        )
    return BUDGETS[name]


def set_budget(name: str | None) -> Budget:
    """Choose the budget for this session (``None`` goes back to the default) and return it."""
    global _override
    if name is not None:
        budget(name)  # validates
    _override = name
    return budget()


__all__ = ["Budget", "BUDGETS", "budget", "set_budget", "device", "seed", "seeded"]
