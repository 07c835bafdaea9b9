r"""The first layer of the VAE's encoder from the non-zero pixels only (chapter 6): a CPU kernel for sparse inputs.

Binarized MNIST digits are 87 % background, so on a CPU x W + b is faster as a sum, for each image, of the rows of W
at its non-zero pixels (``embedding_bag``) than as a dense matrix product; the backward pass does the same by pixel.
The numbers are those of ``torch.addmm`` up to rounding. It is an optimisation, not part of the lecture: the model
is the same with ``VAEConfig(sparse_input=False)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SparseInputLinear"]


def _bags(x: torch.Tensor):
    """The non-zero entries of ``x`` ``[B, D]`` grouped by row: their column indices, each row's offset into them,
    and their values."""
    rows, cols = x.nonzero(as_tuple=True)  # sorted by row
    offsets = torch.searchsorted(rows, torch.arange(x.shape[0], device=x.device))
    return cols, offsets, x[rows, cols]


class _SparseInputMatmul(torch.autograd.Function):
    """x W + b from the non-zero entries of x: for each row of x, the sum of the rows of W at its non-zero pixels,
    weighted by their values (``embedding_bag``); and the weight gradient xᵀ g the same way, by pixel. The same
    numbers as ``torch.addmm(b, x, W)`` and its gradient; x gets no gradient (it is data)."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # x [B, D], weight [D, H], bias [H]
        cols, offsets, values = _bags(x)
        ctx.save_for_backward(x)
        return F.embedding_bag(cols, weight, offsets, mode="sum", per_sample_weights=values) + bias

    @staticmethod
    def backward(ctx, grad):  # grad [B, H]
        (x,) = ctx.saved_tensors
        rows, offsets, values = _bags(x.t())  # the batch rows at each pixel
        grad_weight = F.embedding_bag(rows, grad, offsets, mode="sum", per_sample_weights=values)  # [D, H]
        return None, grad_weight, grad.sum(0)


class SparseInputLinear(nn.Module):
    """The data layer, x ↦ x W + b with ``weight`` W ``[in_features, out_features]``.

    With ``sparse=True`` it multiplies by the non-zero pixels only, which on a CPU is faster for sparse images
    (binarized MNIST digits are 87 % background); the result is the same up to rounding, for any input values
    (the VampPrior feeds it grey pseudo-inputs). Initialised as ``nn.Linear`` is.
    """

    def __init__(self, in_features: int, out_features: int, sparse: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.sparse = in_features, out_features, sparse
        reference = nn.Linear(in_features, out_features)  # the same initialisation as nn.Linear
        self.weight = nn.Parameter(reference.weight.detach().t().contiguous())
        self.bias = nn.Parameter(reference.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sparse or x.requires_grad or x.ndim < 1 or x.numel() == 0:
            if x.ndim == 2:
                return torch.addmm(self.bias, x, self.weight)
            return torch.matmul(x, self.weight) + self.bias
        flat = x.reshape(-1, x.shape[-1])
        return _SparseInputMatmul.apply(flat, self.weight, self.bias).view(
            *x.shape[:-1], self.out_features
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sparse={self.sparse}"
