"""The reference trainer: a VAE trained the way the PyTorch examples train it (pytorch/examples, vae/main.py).

784-400-20 MLP with two heads (μ, log σ²), a sigmoid output, ``DataLoader`` over a ``TensorDataset``, batch 128,
Adam 1e-3, loss = summed binary cross-entropy + analytic KL. Kept as written there, so the benchmark compares
``vaecourse`` with the code most tutorials start from.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal
from torch.utils.data import DataLoader, TensorDataset


class ReferenceVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def train(x: torch.Tensor, seconds: float, seed: int = 0, batch_size: int = 128, lr: float = 1e-3):
    """Train for ``seconds`` of wall clock (checked after each step); returns the model and images per second."""
    torch.manual_seed(seed)
    model = ReferenceVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=batch_size, shuffle=True)
    model.train()
    images, start = 0, time.perf_counter()
    while True:
        for data, _ in loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            loss.item()  # the examples accumulate it for their log
            optimizer.step()
            images += len(data)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return model.eval(), images / elapsed


class Evaluable:
    """The reference model seen through vaecourse's model protocol (:class:`vaecourse.estimators.AmortizedModel`:
    ``encode``, ``likelihood``, ``prior``), so that :func:`vaecourse.log_likelihood` evaluates both models with the
    same code."""

    def __init__(self, model: ReferenceVAE):
        self.model = model
        self.prior = Independent(Normal(torch.zeros(20), torch.ones(20)), 1)

    def encode(self, x):
        if x.shape[-1] != 784:
            raise ValueError("the reference model takes 784-pixel images")
        mu, logvar = self.model.encode(x)
        return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)

    def likelihood(self, z):
        logits = self.model.fc4(F.relu(self.model.fc3(z)))  # the decoder before its sigmoid
        return Independent(Bernoulli(logits=logits), 1)
