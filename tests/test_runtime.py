import random

import numpy as np
import pytest
import torch

import vaecourse as vc
from vaecourse import runtime


def test_device_auto_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert vc.device() == torch.device("cpu")


def test_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.delenv(runtime.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert vc.device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vc.device().type == "mps"


def test_device_environment_override(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert vc.device() == torch.device("cpu")


def test_device_rejects_unknown_or_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="expected 'auto', 'cpu'"):
        vc.device("gpu-please")
    with pytest.raises(ValueError, match="CUDA is not available"):
        vc.device("cuda")


def test_seed_makes_python_numpy_and_torch_repeat():
    def draw():
        return random.random(), np.random.rand()  # noqa: NPY002 -- the global generator is what vc.seed must fix, torch.rand(()).item()

    vc.seed(123)
    first = draw()
    vc.seed(123)
    assert draw() == first
    vc.seed(124)
    assert draw() != first


@pytest.mark.parametrize("bad", [-1, 1.5, "0", True])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        vc.seed(bad)


def test_budget_default_small_on_cpu_full_on_cuda(monkeypatch):
    monkeypatch.delenv(runtime.BUDGET_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vc.budget().name == "small"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert vc.budget().name == "full"


def test_budget_switch_by_environment_and_call(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(runtime.BUDGET_ENV, "full")
    assert vc.budget().is_full
    try:
        assert vc.set_budget("small").name == "small"
        assert vc.budget().name == "small"
    finally:
        vc.set_budget(None)
    assert vc.budget().name == "full"


def test_budget_small_is_smaller_than_full():
    small, full = vc.budget("small"), vc.budget("full")
    assert small.pick(small=1, full=2) == 1 and full.pick(small=1, full=2) == 2
    assert small.epochs < full.epochs
    assert small.num_samples < full.num_samples
    assert small.eval_samples < full.eval_samples == 5000
    assert full.train_size is None and full.eval_size is None


def test_budget_rejects_unknown_name(monkeypatch):
    with pytest.raises(ValueError, match="unknown budget 'huge'.*'full', 'small'"):
        vc.budget("huge")
    with pytest.raises(ValueError, match="unknown budget"):
        vc.set_budget("huge")
    monkeypatch.setenv(runtime.BUDGET_ENV, "medium")
    with pytest.raises(ValueError, match="VAECOURSE_BUDGET"):
        vc.budget()
