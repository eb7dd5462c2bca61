"""Nonlinear forward models of the DAPS benchmarks: phase retrieval and HDR."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from diffrecon.operators.base import Operator
from diffrecon.operators.fft import fft2c


class PhaseRetrieval(Operator):
    """Fourier amplitude ``|F(pad(x))|`` of the centered orthonormal FFT, per channel.

    Each side is zero-padded by ``int(oversample / 8 * size)`` pixels, the DPS/DAPS
    definition (``oversample=2`` pads a 256-pixel image by 64 per side). DAPS first maps its
    [-1, 1] images to [0, 1]; here the operator acts on images as the prior produces them.
    """

    def __init__(self, oversample: float = 2.0) -> None:
        if not oversample >= 0:
            raise ValueError(f"oversample must be non-negative, got {oversample}")
        self.oversample = float(oversample)
        super().__init__((None, None, None), (None, None, None))

    def pads(self, height: int, width: int) -> tuple[int, int]:
        """Padding per side (rows, columns) for an image of this size."""
        return int(self.oversample / 8.0 * height), int(self.oversample / 8.0 * width)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.pads(x.shape[-2], x.shape[-1])
        padded = F.pad(x, (pw, pw, ph, ph))
        if not padded.is_complex():
            padded = torch.complex(padded, torch.zeros_like(padded))
        return fft2c(padded).abs()

    def _repr_args(self) -> str:
        return f"oversample={self.oversample}"


class HDR(Operator):
    """High dynamic range: ``clip(alpha * x, -1, 1)`` (DAPS uses ``alpha=2``)."""

    def __init__(self, alpha: float = 2.0) -> None:
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = float(alpha)
        super().__init__(None, None)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.alpha * x, -1.0, 1.0)

    def _repr_args(self) -> str:
        return f"alpha={self.alpha}"
