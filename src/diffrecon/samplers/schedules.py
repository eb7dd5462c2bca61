"""Noise schedules as data: decreasing ``sigmas`` tensors built by small pure functions."""

from __future__ import annotations

import torch


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, append_zero: bool = True
) -> torch.Tensor:
    """EDM's schedule (DAPS's "poly-7"): ``n`` levels from ``sigma_max`` to ``sigma_min``.

    ``sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``, float64, with
    a final 0 appended unless ``append_zero=False``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    ramp = (
        torch.linspace(0, 1, n, dtype=torch.float64)
        if n > 1
        else torch.zeros(1, dtype=torch.float64)
    )
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if append_zero else sigmas


def geometric_sigmas(
    n: int, sigma_min: float, sigma_max: float, append_zero: bool = True
) -> torch.Tensor:
    """Log-uniform levels from ``sigma_max`` to ``sigma_min`` (plus a final 0)."""
    if n < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError("need n >= 1 and 0 < sigma_min <= sigma_max")
    sigmas = torch.logspace(
        torch.log10(torch.tensor(sigma_max)),
        torch.log10(torch.tensor(sigma_min)),
        n,
        dtype=torch.float64,
    )
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if append_zero else sigmas


def clamp_sigmas(sigmas: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Clamp non-zero levels into a denoiser's trained range (a final 0 stays 0)."""
    return torch.where(sigmas > 0, sigmas.clamp(sigma_min, sigma_max), sigmas)
