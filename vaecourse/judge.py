r"""A judge of sample quality (chapters 7-8): a small MNIST classifier scores how much a generated image looks like
one digit.

"Samples from the holes of q_avg decode to blurred, ambiguous strokes" is a claim about images; the judge measures
it. For each image it gives the classifier's predictive distribution over the ten digits, and from it

- the **entropy** H = −Σ_k π_k log π_k in nats (0 for a confident digit, log 10 = 2.30 for no idea), and
- the **top-class probability** max_k π_k,

with their means over a group of images and standard errors. The classifier is a two-layer convolutional network
trained by ``scripts/train_judge.py`` on 8000 of the 10 000 labelled binarized MNIST test images (the labels come
from the sorted test file, see :data:`vaecourse.data.MNIST_TEST_COUNTS`) and checked on the other 2000, evenly
spaced; its weights ship with the package (``judge_mnist.pt``, float16).

>>> result = judge(torch.zeros(3, 784))
>>> result.entropy.shape, result.top_probability.shape
(torch.Size([3]), torch.Size([3]))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import torch
from torch import nn

from .estimators import Estimate

__all__ = ["CHECKPOINT", "Judgement", "JudgeNet", "held_out", "judge", "load_judge"]

CHECKPOINT = "judge_mnist.pt"
HELD_OUT = 2000  # evenly spaced test images kept out of the judge's training
IMAGE_SHAPE = (28, 28)


class JudgeNet(nn.Module):
    """28×28 image → 10 logits: two 5×5 convolutions (16 and 32 channels, each followed by ReLU and 2×2
    max-pooling) and a hidden layer of 64 units."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # [B, 16, 14, 14]
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # [B, 32, 7, 7]
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 10]`` for images ``[B, 784]`` with pixel values in [0, 1]."""
        return self.classifier(self.features(x.reshape(-1, 1, *IMAGE_SHAPE)))


def held_out(count: int = 10_000) -> torch.Tensor:
    """A boolean mask ``[count]`` of the test images kept out of the judge's training: ``HELD_OUT`` evenly spaced
    rows (the test file is sorted by digit, so every digit is held out in proportion)."""
    mask = torch.zeros(count, dtype=torch.bool)
    mask[torch.linspace(0, count - 1, HELD_OUT).round().long()] = True
    return mask


@functools.cache
def load_judge() -> JudgeNet:
    """The trained judge, from the checkpoint shipped in the package (loaded once, in float32, in eval mode)."""
    with resources.files(__package__).joinpath(CHECKPOINT).open("rb") as handle:
        state = torch.load(handle, map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):  # the initial weights, replaced below, draw from the CPU generator
        network = JudgeNet()
    network.load_state_dict({name: value.float() for name, value in state.items()})
    return network.eval().requires_grad_(False)


@dataclass
class Judgement:
    """What the judge makes of N images: per image the ``probabilities`` ``[N, 10]``, the ``predicted`` digit,
    the ``entropy`` (nats) and the ``top_probability``; and the means of the last two with standard errors."""

    probabilities: torch.Tensor
    predicted: torch.Tensor
    entropy: torch.Tensor
    top_probability: torch.Tensor
    mean_entropy: Estimate
    mean_top_probability: Estimate

    def __str__(self) -> str:
        return (
            f"entropy {self.mean_entropy} nats, top-class probability {self.mean_top_probability} "
            f"({len(self.entropy)} images)"
        )


@torch.no_grad()
def judge(images: torch.Tensor, network: nn.Module | None = None, batch_size: int = 1000) -> Judgement:
    """Score images ``[N, 784]`` or ``[N, 28, 28]`` with pixel values in [0, 1] (binary samples or the decoder's
    grey means) by the judge ``network`` (default: :func:`load_judge`). Chapters 7-8."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor, got {getattr(images, 'dtype', type(images))}")
    if images.ndim == 3 and tuple(images.shape[1:]) == IMAGE_SHAPE:
        images = images.reshape(len(images), -1)
    if images.ndim != 2 or images.shape[1] != IMAGE_SHAPE[0] * IMAGE_SHAPE[1] or len(images) == 0:
        raise ValueError(f"images must be [N, 784] or [N, 28, 28] with N ≥ 1, got shape {tuple(images.shape)}")
    if not bool(((images >= 0) & (images <= 1)).all()):
        raise ValueError("images must have pixel values in [0, 1]")
    network = load_judge() if network is None else network
    parameter = next(network.parameters())
    logits = torch.cat(
        [network(batch.to(parameter)) for batch in images.split(batch_size)]
    ).double()  # [N, 10]
    log_probabilities = logits.log_softmax(-1)
    probabilities = log_probabilities.exp()
    entropy = -(probabilities * log_probabilities).sum(-1)
    top_probability, predicted = probabilities.max(-1)
    return Judgement(
        probabilities=probabilities.cpu(),
        predicted=predicted.cpu(),
        entropy=entropy.cpu(),
        top_probability=top_probability.cpu(),
        mean_entropy=Estimate.of(entropy.cpu()),
        mean_top_probability=Estimate.of(top_probability.cpu()),
    )
