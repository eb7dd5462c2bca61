"""The one prior convention: a denoiser ``D(x, sigma) = E[x0 | x]`` for ``x = x0 + sigma n``.

Any callable with that signature works in every sampler. ``sigma`` is passed as a tensor of
shape ``(B,)`` (one level per batch item). Attributes ``sigma_min``, ``sigma_max`` and
``sigma_data`` describe the range a denoiser was trained on; samplers read them with
:func:`denoiser_range`, falling back to generous defaults for plain functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """``D(x, sigma) -> x0_hat``, the minimum-MSE estimate of ``x0`` from ``x0 + sigma n``."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SigmaRange:
    sigma_min: float
    sigma_max: float
    sigma_data: float


def denoiser_range(denoiser: object) -> SigmaRange:
    """The denoiser's ``(sigma_min, sigma_max, sigma_data)``, with defaults for functions."""
    return SigmaRange(
        float(getattr(denoiser, "sigma_min", 0.002)),
        float(getattr(denoiser, "sigma_max", 80.0)),
        float(getattr(denoiser, "sigma_data", 0.5)),
    )


def sigma_batch(sigma: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` as a ``(B,)`` tensor on ``x``'s device, in ``x``'s real precision."""
    dtype = x.real.dtype if x.is_complex() else x.dtype
    s = torch.as_tensor(sigma, dtype=dtype, device=x.device)
    return s.expand(x.shape[0]) if s.ndim == 0 else s.reshape(x.shape[0])
