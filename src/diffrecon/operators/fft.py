"""Centered orthonormal 2-D FFTs, exactly fastMRI's ``fft2c``/``ifft2c`` on complex tensors."""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """``fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two axes."""
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (it is also its adjoint: the transform is unitary)."""
    k = torch.fft.ifftshift(k, dim=_DIMS)
    k = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_DIMS)


def centering_phases(
    n: int, dtype: torch.dtype = torch.complex128
) -> tuple[torch.Tensor, torch.Tensor]:
    """Phases ``(p_in, p_out)`` with ``fftshift(fft(ifftshift(x))) = p_out * fft(p_in * x)``.

    With ``c = n // 2``: ``p_in[m] = exp(2 pi i m c / n)`` and
    ``p_out[k] = exp(2 pi i (k - c) c / n)`` (both are +-1 for even ``n``). Folding them into
    coil maps and the sampling mask once saves the four shifted copies of every centered FFT.
    """
    c = n // 2
    idx = torch.arange(n, dtype=torch.float64)
    p_in = torch.polar(torch.ones(n, dtype=torch.float64), 2 * torch.pi * idx * c / n)
    p_out = torch.polar(torch.ones(n, dtype=torch.float64), 2 * torch.pi * (idx - c) * c / n)
    return p_in.to(dtype), p_out.to(dtype)
