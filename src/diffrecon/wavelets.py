"""An orthogonal, differentiable 2-D wavelet transform in torch (periodic boundaries).

Filters come from PyWavelets (``db4`` by default) and the coefficients equal PyWavelets'
``wavedec2(..., mode="periodization")`` packed by ``coeffs_to_array``; with periodic
extension the multi-level separable transform is an orthogonal matrix, so its inverse is
its adjoint and norms are preserved. Coefficients are packed into an image-shaped tensor
(the pyramid layout, coarsest approximation top-left), so a diagonal in the wavelet basis
is just a tensor of the image's shape. Runs on any device and dtype, under autograd.
"""

from __future__ import annotations

import pywt
import torch
import torch.nn.functional as F


class DWT2:
    """``levels``-level 2-D DWT over the last two axes; sizes must divide by ``2**levels``."""

    def __init__(self, wavelet: str = "db4", levels: int = 3) -> None:
        w = pywt.Wavelet(wavelet)
        if not w.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal")
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.wavelet, self.levels = wavelet, levels
        # analysis as a correlation with the reconstruction filters: orthonormal even shifts
        self._lo = torch.tensor(w.rec_lo, dtype=torch.float64)
        self._hi = torch.tensor(w.rec_hi, dtype=torch.float64)

    def _filters(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._lo, self._hi])[:, None].to(device=x.device, dtype=x.dtype)

    def _taps_index(self, n: int, taps: int, device: torch.device) -> torch.Tensor:
        # periodic extension, shifted by taps/2 - 1 so coefficients equal PyWavelets'
        # mode="periodization" (wavedec2 / coeffs_to_array layout)
        return (torch.arange(n + taps - 1, device=device) - (taps // 2 - 1)) % n

    def _analysis_1d(self, x: torch.Tensor) -> torch.Tensor:
        """Last axis of ``(M, N)`` -> ``(M, N)`` as ``[approximation | detail]``."""
        k = self._filters(x)
        idx = self._taps_index(x.shape[-1], k.shape[-1], x.device)
        out = F.conv1d(x[:, idx][:, None], k, stride=2)  # (M, 2, N/2)
        return out.reshape(x.shape[0], -1)

    def _synthesis_1d(self, c: torch.Tensor) -> torch.Tensor:
        """Adjoint (= inverse) of :meth:`_analysis_1d`."""
        k = self._filters(c)
        n, taps = c.shape[-1], k.shape[-1]
        z = F.conv_transpose1d(c.reshape(c.shape[0], 2, n // 2), k, stride=2)[:, 0]
        idx = self._taps_index(n, taps, c.device)[: z.shape[-1]]
        return torch.zeros_like(c).index_add(1, idx, z)

    def _check(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        m = 2**self.levels
        if h % m or w % m:
            raise ValueError(
                f"DWT2 with {self.levels} levels needs sizes divisible by {m}, got {h}x{w}"
            )

    def _apply(self, x: torch.Tensor, fn) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows = fn(x.reshape(-1, w)).reshape(x.shape)
        return (
            fn(rows.transpose(-1, -2).reshape(-1, h)).reshape(*x.shape[:-2], w, h).transpose(-1, -2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Wavelet coefficients of ``x`` (``(..., H, W)``), packed in the pyramid layout."""
        self._check(x)
        out = x.clone()
        h, w = x.shape[-2:]
        for _ in range(self.levels):
            level = self._apply(out[..., :h, :w], self._analysis_1d)
            out = out.clone()  # the level just read may be saved for autograd: write a copy
            out[..., :h, :w] = level
            h, w = h // 2, w // 2
        return out

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        """The image whose coefficients are ``c`` (adjoint = inverse)."""
        self._check(c)
        out = c.clone()
        sizes = [(c.shape[-2] >> k, c.shape[-1] >> k) for k in range(self.levels)]
        for h, w in reversed(sizes):
            level = self._inverse_level(out[..., :h, :w])
            out = out.clone()
            out[..., :h, :w] = level
        return out

    def _inverse_level(self, c: torch.Tensor) -> torch.Tensor:
        h, w = c.shape[-2:]
        cols = self._synthesis_1d(c.transpose(-1, -2).reshape(-1, h))
        cols = cols.reshape(*c.shape[:-2], w, h).transpose(-1, -2)
        return self._synthesis_1d(cols.reshape(-1, w)).reshape(c.shape)

    __call__ = forward
