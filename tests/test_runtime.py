import math
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


def test_seeded_repeats_the_draws_and_restores_the_callers_generator():
    vc.seed(3)
    before = torch.random.get_rng_state()
    with runtime.seeded(7):
        first = torch.rand(4)
    with runtime.seeded(7):
        second = torch.rand(4)
    assert torch.equal(first, second)
    assert torch.equal(torch.random.get_rng_state(), before)
    with runtime.seeded(None):  # no seed: the caller's generator, which advances
        torch.rand(1)
    assert not torch.equal(torch.random.get_rng_state(), before)


def _learner_who_draws(*args, **kwargs):
    torch.rand(3)  # a learner's function may draw from the global generator
    raise NotImplementedError


@pytest.mark.parametrize("name", [name for name in vc.exercises.__all__ if name.startswith("check_")])
def test_a_checker_leaves_the_global_generator_as_it_was(name):
    checker = getattr(vc.exercises, name)
    vc.seed(11)
    before = torch.random.get_rng_state()
    validate = torch.distributions.Distribution._validate_args  # the flow checker's zuko leaves it as it was too
    if name == "check_function":
        result = checker("drawing", _learner_who_draws, lambda: torch.rand(3), [{}])
    else:
        result = checker(_learner_who_draws)
    assert not result.passed and result.kind == "not_implemented"  # the stub, recognised by every checker
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.distributions.Distribution._validate_args == validate


def test_a_passing_checker_leaves_the_global_generator_as_it_was():
    def log_mean_exp(log_weights):
        return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])

    vc.seed(12)
    before = torch.random.get_rng_state()
    assert vc.exercises.check_log_mean_exp(log_mean_exp).passed
    assert torch.equal(torch.random.get_rng_state(), before)


def test_training_and_evaluation_leave_the_global_generator_as_it_was():
    x = (torch.rand(40, 12, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    model = vc.VAE(data_dim=12, latent_dim=2, hidden_dims=(8,))
    vc.seed(13)
    before = torch.random.get_rng_state()
    vc.fit(model, x, x, config=vc.TrainConfig(batch_size=10, epochs=2, progress=False))
    assert torch.equal(torch.random.get_rng_state(), before)
    first = vc.log_likelihood(model, x, num_samples=5, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    vc.surgery.decompose(model, x, num_samples=2, seed=4)
    vc.train.mean_elbo(model, x, seed=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(vc.log_likelihood(model, x, num_samples=5, seed=4).per_example, first.per_example)


def test_importing_the_package_leaves_matplotlib_and_the_checkers_for_later():
    import subprocess
    import sys

    code = (
        "import sys, vaecourse as vc; "
        "print([name for name in ('matplotlib', 'vaecourse.exercises', 'vaecourse.plots') if name in sys.modules]); "
        "vc.exercises, vc.plots; print('vaecourse.exercises' in sys.modules and 'vaecourse.plots' in sys.modules)"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert lines == ["[]", "True"]


def test_import_star_leaves_matplotlib_for_later_and_the_diagrams_are_imported_on_first_use():
    import subprocess
    import sys

    code = (
        "import sys; from vaecourse import *; print('matplotlib' in sys.modules); "
        "import vaecourse as vc; print(callable(vc.diagrams.vae), 'matplotlib' in sys.modules, 'diagrams' in dir(vc))"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert lines == ["False", "True", "True", "True"]
    assert set(vc._ON_FIRST_USE).isdisjoint(vc.__all__)
