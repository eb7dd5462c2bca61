"""Complex images <-> real (real, imaginary) channel pairs, the image convention of diffrecon."""

from __future__ import annotations

import torch


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` real -> ``(B, H, W)`` complex."""
    if x.shape[1] != 2:
        raise ValueError(f"complex images need 2 channels (real, imaginary), got {x.shape[1]}")
    return torch.complex(x[:, 0], x[:, 1])


def to_channels(z: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` complex -> ``(B, 2, H, W)`` real."""
    return torch.stack((z.real, z.imag), dim=1)


def complex_dtype(real: torch.dtype) -> torch.dtype:
    """The complex dtype with the precision of a real one (float64 -> complex128)."""
    return torch.complex128 if real == torch.float64 else torch.complex64


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype with the precision of ``dtype`` (complex64 -> float32)."""
    if dtype == torch.complex128:
        return torch.float64
    if dtype == torch.complex64:
        return torch.float32
    return dtype


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """Magnitude ``(B, H, W)`` of a 2-channel complex image ``(B, 2, H, W)``."""
    return torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2)
