"""Input validation shared by operators, MRI tools and I/O: errors name the argument."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_tensor(name: str, value: Any, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Return ``value`` as a torch tensor (copying numpy arrays), or raise naming ``name``."""
    if isinstance(value, torch.Tensor):
        return value.to(device) if device is not None else value
    if isinstance(value, np.ndarray | list | tuple):
        return torch.as_tensor(np.asarray(value), device=device)
    raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(value).__name__}")


def check_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``t`` holds NaN or inf (measurements, coil maps, kernels)."""
    if t.is_floating_point() or t.is_complex():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf values")
    return t


def check_bool_mask(name: str, mask: Any) -> torch.Tensor:
    """A sampling mask must be boolean: 0/1 floats are ambiguous (weights or mask?)."""
    t = as_tensor(name, mask)
    if t.dtype != torch.bool:
        raise ValueError(
            f"{name} must be a boolean tensor, got dtype {t.dtype}; pass e.g. `{name} > 0`"
        )
    return t


def check_ndim(name: str, t: torch.Tensor, ndims: tuple[int, ...], meaning: str) -> None:
    """Raise if ``t.ndim`` is not one of ``ndims``; ``meaning`` describes the expected layout."""
    if t.ndim not in ndims:
        raise ValueError(f"{name} must have shape {meaning}, got {tuple(t.shape)}")
