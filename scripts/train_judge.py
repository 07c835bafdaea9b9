"""Train the sample-quality judge of ``vaecourse.judge`` and write its checkpoint ``vaecourse/judge_mnist.pt``.

    VAECOURSE_DATA=... .venv/bin/python scripts/train_judge.py

1. Checks the labels that ``vaecourse.data`` gives the binarized MNIST test file (sorted by digit, labelled from
   MNIST's test-set digit counts): a nearest-class-mean classifier built from them must agree with them on about
   82 % of the images (as on MNIST), and each boundary between two digits must sit where that classifier's split
   of the neighbourhood is best (within a few images).
2. Trains ``judge.JudgeNet`` on the 8000 test images that ``judge.held_out()`` leaves, with random shifts of up to
   2 pixels, seeded (a torch.Generator for the order and the shifts; one thread), and reports its accuracy on the
   2000 held-out images, which must be at least 97 %; and the share of each digit it predicts on the unlabelled,
   shuffled validation file, which should be near 10 % each.
3. Saves the weights in float16 (about 230 kB) and checks that the rounded weights keep the accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vaecourse as vc
from vaecourse import judge

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "vaecourse" / judge.CHECKPOINT


def check_labels(x: torch.Tensor, y: torch.Tensor) -> None:
    means = torch.stack([x[y == k].mean(0) for k in range(10)])  # [10, 784]
    nearest = torch.cdist(x, means).argmin(1)
    agreement = (nearest == y).double().mean().item()
    print(f"nearest class mean agrees with the count labels on {agreement:.1%} of the test images")
    assert 0.78 < agreement < 0.86, agreement
    boundaries = torch.tensor(vc.data.MNIST_TEST_COUNTS).cumsum(0)[:-1].tolist()
    for digit, boundary in enumerate(boundaries):
        def agreement_if_split_at(split, digit=digit):
            rows = torch.arange(split - 200, split + 200)
            return (nearest[rows] == torch.where(rows < split, digit, digit + 1)).double().mean().item()

        best = max(range(boundary - 50, boundary + 51), key=agreement_if_split_at)
        print(f"  {digit} -> {digit + 1}: boundary from the counts {boundary}, best split of the classifier {best}")
        assert abs(best - boundary) <= 5, (digit, boundary, best)


def shifted(images: torch.Tensor, generator: torch.Generator, most: int = 2) -> torch.Tensor:
    """Each image ``[B, 784]`` moved by a random whole number of pixels (up to ``most``) along each axis."""
    batch = images.view(-1, 1, 28, 28)
    padded = F.pad(batch, (most,) * 4)
    offsets = torch.randint(0, 2 * most + 1, (len(batch), 2), generator=generator)
    out = torch.stack([padded[i, :, r : r + 28, c : c + 28] for i, (r, c) in enumerate(offsets.tolist())])
    return out.view(len(images), -1)


def accuracy(network, x, y) -> float:
    with torch.no_grad():
        return (network(x).argmax(1) == y).double().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the network's initialisation
    generator = torch.Generator().manual_seed(0)

    test = vc.data.load("binarized-mnist", "test")
    check_labels(test.x, test.y)
    held = judge.held_out(len(test))
    x_train, y_train, x_held, y_held = test.x[~held], test.y[~held], test.x[held], test.y[held]

    network = judge.JudgeNet()
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    steps = args.epochs * ((len(x_train) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        network.train()
        for rows in torch.randperm(len(x_train), generator=generator).split(64):
            loss = F.cross_entropy(network(shifted(x_train[rows], generator)), y_train[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        network.eval()
        print(f"epoch {epoch + 1}: held-out accuracy {accuracy(network, x_held, y_held):.2%} "
              f"({time.perf_counter() - start:.0f} s)")

    state = {name: value.half() for name, value in network.state_dict().items()}
    rounded = judge.JudgeNet()
    rounded.load_state_dict({name: value.float() for name, value in state.items()})
    rounded.eval()
    held_accuracy = accuracy(rounded, x_held, y_held)
    print(f"held-out accuracy with float16 weights: {held_accuracy:.2%} on {len(x_held)} images")
    assert held_accuracy >= 0.97, held_accuracy
    with torch.no_grad():
        shares = rounded(vc.data.load("binarized-mnist", "valid").x).argmax(1).bincount(minlength=10) / 10_000
    print("share of each digit predicted on the validation file:", " ".join(f"{s:.3f}" for s in shares.tolist()))
    torch.save(state, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")


if __name__ == "__main__":
    main()
