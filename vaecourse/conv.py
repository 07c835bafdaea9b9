r"""A convolutional encoder and decoder for 28×28 images (chapter 10): ``VAEConfig(architecture="conv")``.

The two networks replace the MLPs of :mod:`vaecourse.vae` and keep their interface: the encoder maps flattened
images ``[..., 784]`` to the 2d numbers (μ, s) of q_φ(z|x), the decoder maps z ``[..., d]`` to one logit per pixel
``[..., 784]``. So ``encode``, ``likelihood`` and ``prior`` are unchanged, and every prior of chapter 8 drops in.

Encoder: x as a 1×28×28 image → conv 4×4, stride 2 (28 → 14) → ReLU → conv 4×4, stride 2 (14 → 7) → ReLU →
flatten → the fully connected layers ``hidden_dims`` → (μ, s). Decoder: the mirror image, with transposed
convolutions (7 → 14 → 28). The channel counts are ``VAEConfig.channels`` (32 and 64 by default).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["IMAGE_SIDE", "ConvDecoderNet", "ConvEncoderNet"]

IMAGE_SIDE = 28  # the networks take 28×28 images (MNIST), flattened to 784 pixels as everywhere in the course
_FEATURE_SIDE = IMAGE_SIDE // 4  # two stride-2 layers: 28 → 14 → 7


class ConvEncoderNet(nn.Module):
    """Flattened 28×28 images ``[..., 784]`` → ``[..., 2·latent_dim]`` (μ and the raw scale s, as the MLP's)."""

    def __init__(self, config):
        super().__init__()
        first, second = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, first, kernel_size=4, stride=2, padding=1),  # 28 → 14
            nn.ReLU(),
            nn.Conv2d(first, second, kernel_size=4, stride=2, padding=1),  # 14 → 7
            nn.ReLU(),
            nn.Flatten(),
        )
        from .vae import _mlp  # the MLP's layers (vae imports this module, so not at the top)

        self.head = _mlp([second * _FEATURE_SIDE**2, *config.hidden_dims, 2 * config.latent_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-1]
        images = x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)  # [B, 1, 28, 28], B = the batch dimensions flattened
        out = self.head(self.features(images))  # [B, 2d]
        return out.reshape(*batch_shape, out.shape[-1])


class ConvDecoderNet(nn.Module):
    """z ``[..., latent_dim]`` → one logit per pixel ``[..., 784]``: the encoder's mirror image."""

    def __init__(self, config):
        super().__init__()
        first, second = config.channels
        self.second = second
        from .vae import _mlp

        head = _mlp([config.latent_dim, *reversed(config.hidden_dims), second * _FEATURE_SIDE**2])
        self.head = nn.Sequential(*head, nn.ReLU())  # the feature maps enter the transposed convolutions rectified
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(second, first, kernel_size=4, stride=2, padding=1),  # 7 → 14
            nn.ReLU(),
            nn.ConvTranspose2d(first, 1, kernel_size=4, stride=2, padding=1),  # 14 → 28
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch_shape = z.shape[:-1]
        features = self.head(z.reshape(-1, z.shape[-1]))  # [B, C·7·7]
        logits = self.upsample(features.reshape(-1, self.second, _FEATURE_SIDE, _FEATURE_SIDE))  # [B, 1, 28, 28]
        return logits.reshape(*batch_shape, IMAGE_SIDE**2)
