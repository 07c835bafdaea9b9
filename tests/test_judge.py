"""vaecourse.judge: the sample-quality judge (a small MNIST classifier) and its entropy and top-class probability."""

import math

import pytest
import torch

import vaecourse as vc
from vaecourse import judge


@pytest.fixture(scope="module")
def mnist_test():
    try:
        return vc.data.load("binarized-mnist", "test")
    except vc.data.DataUnavailableError:
        pytest.skip("binarized MNIST is not available")


@pytest.mark.slow
def test_held_out_accuracy_of_the_shipped_judge(mnist_test):
    held = judge.held_out(len(mnist_test))
    assert held.sum() == judge.HELD_OUT == 2000
    result = judge.judge(mnist_test.x[held])
    accuracy = (result.predicted == mnist_test.y[held]).double().mean().item()
    assert accuracy >= 0.97, accuracy


def test_a_blank_or_uniform_image_is_less_certain_than_a_real_digit():
    digits = torch.zeros(2, 28, 28)
    digits[0, 4:24, 13:16] = 1  # a "1": a vertical bar
    digits[1, 5:23, 8:11] = digits[1, 5:23, 17:20] = digits[1, 5:8, 8:20] = digits[1, 20:23, 8:20] = 1  # a "0"
    real = judge.judge(digits)
    assert real.predicted.tolist() == [1, 0]
    blank, grey = judge.judge(torch.zeros(1, 784)), judge.judge(torch.full((1, 784), 0.5))
    for unclear in (blank, grey):
        assert unclear.entropy.item() > real.entropy.max().item()
        assert unclear.top_probability.item() < real.top_probability.min().item()


def test_shapes_summaries_and_entropy_bounds():
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(7, 784, generator=generator) < 0.15).float()
    result = judge.judge(images)
    assert result.probabilities.shape == (7, 10) and result.predicted.shape == (7,)
    assert torch.allclose(result.probabilities.sum(-1), torch.ones(7, dtype=torch.float64))
    assert ((result.entropy >= 0) & (result.entropy <= math.log(10) + 1e-9)).all()
    assert ((result.top_probability >= 0.1) & (result.top_probability <= 1)).all()
    assert result.mean_entropy.value == pytest.approx(result.entropy.mean().item())
    assert result.mean_entropy.standard_error == pytest.approx(result.entropy.std().item() / math.sqrt(7))
    assert torch.equal(judge.judge(images.view(7, 28, 28)).entropy, result.entropy)
    assert "7 images" in str(result)


def test_bad_input():
    with pytest.raises(ValueError, match="floating-point"):
        judge.judge(torch.zeros(2, 784, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N, 784\]"):
        judge.judge(torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"\[N, 784\]"):
        judge.judge(torch.zeros(0, 784))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        judge.judge(torch.full((1, 784), 2.0))


def test_the_checkpoint_is_small_and_float16():
    from importlib import resources

    path = resources.files("vaecourse").joinpath(judge.CHECKPOINT)
    assert path.stat().st_size < 300_000
    state = torch.load(path, weights_only=True)
    assert all(value.dtype == torch.float16 for value in state.values())


def test_loading_the_judge_leaves_the_global_random_state_alone():
    judge.load_judge.cache_clear()  # build the network again, as on the first call in a fresh kernel
    before = torch.random.get_rng_state()
    judge.load_judge()
    assert torch.equal(torch.random.get_rng_state(), before)
