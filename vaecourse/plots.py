"""Figures shared by the chapters: image grids and the like.

Every function draws into a Matplotlib ``Axes`` (a new figure when none is given) and returns it, so that
a chapter can place several panels side by side.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch


def image_grid(images, *, ncols: int = 10, ax=None, title: str | None = None, cmap: str = "gray_r"):
    """Tile ``images`` (``[N, H, W]``, or ``[N, H*W]`` for square images) into one picture, ``ncols`` a row.

    Used from the chapter "Setting up: device, data and budgets" on for data, reconstructions and samples.
    Values are shown on the scale [0, 1], black for 1 (ink) with the default colour map.

    >>> ax = image_grid(torch.zeros(6, 4, 4), ncols=3)
    >>> ax.images[0].get_array().shape
    (11, 16)
    """
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim == 2:
        side = math.isqrt(array.shape[1])
        if side * side != array.shape[1]:
            raise ValueError(
                f"image_grid got flat images of {array.shape[1]} values, which is not a square; "
                "pass them as [N, H, W]"
            )
        array = array.reshape(len(array), side, side)
    if array.ndim != 3 or len(array) == 0:
        raise ValueError(f"image_grid expects images shaped [N, H, W] with N > 0, got shape {array.shape}")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    count, height, width = array.shape
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    pad = 1
    canvas = np.full((nrows * (height + pad) + pad, ncols * (width + pad) + pad), np.nan)
    for index, image in enumerate(array):
        row, col = divmod(index, ncols)
        top, left = pad + row * (height + pad), pad + col * (width + pad)
        canvas[top : top + height, left : left + width] = image
    if ax is None:
        _, ax = plt.subplots(figsize=(0.6 * ncols + 0.4, 0.6 * nrows + 0.4))
    colormap = plt.get_cmap(cmap).with_extremes(bad="white")  # the padding between tiles is NaN
    ax.imshow(canvas, cmap=colormap, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
