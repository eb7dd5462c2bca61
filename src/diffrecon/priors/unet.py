"""MONAI ``DiffusionModelUNet`` as a raw network ``F(x, c_noise)`` for EDM preconditioning.

MONAI's sinusoidal time embedding expects DDPM-like timesteps in [0, 1000]; EDM's
``c_noise = log(sigma) / 4`` spans about [-2, 1.2], so it is scaled by ``noise_scale``
(1000 by default) to use the embedding's full frequency range.
"""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_ARCH: dict[str, Any] = {
    "spatial_dims": 2,
    "in_channels": 2,
    "out_channels": 2,
    "num_res_blocks": 1,
    "channels": [32, 64, 64],
    "attention_levels": [False, False, False],
    "norm_num_groups": 32,
}


class MonaiUNet(torch.nn.Module):
    """``F(x, c_noise) = unet(x, timesteps=noise_scale * c_noise)``."""

    def __init__(self, arch: dict[str, Any] | None = None, noise_scale: float = 1000.0) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        self.arch = {**DEFAULT_ARCH, **(arch or {})}
        kwargs = dict(self.arch)
        kwargs["channels"] = tuple(kwargs["channels"])
        kwargs["attention_levels"] = tuple(kwargs["attention_levels"])
        self.unet = DiffusionModelUNet(**kwargs)
        self.noise_scale = float(noise_scale)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        t = (self.noise_scale * c_noise).to(x.dtype).reshape(x.shape[0])
        return self.unet(x, timesteps=t)
