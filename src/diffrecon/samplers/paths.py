"""Probability paths ``x_t = a(t) x0 + s(t) eps`` (data at ``t = 0``) as data.

Every path maps to the package's one noise convention by ``x / a = x0 + sigma eps`` with
``sigma = s / a``, so any ``D(x, sigma)`` serves any path. Samplers that integrate in a path's
own time (the conjugate integrators) need ``a``, ``s``, the diffusion rate
``g2 = 2 s s' - 2 (a' / a) s^2`` of its probability-flow ODE
``dx/dt = (a'/a) x - g2 / 2 * score`` and the integral of ``g2`` from 0.

- ``vp``: the VP-SDE of Song et al. with linear ``beta(t) = 0.1 + 19.9 t``:
  ``a = exp(-b/2)``, ``s = sqrt(1 - a^2)``, ``b(t) = int_0^t beta``, ``g2 = beta``.
- ``rf``: rectified flow / flow matching with straight paths ``a = 1 - t``, ``s = t``
  (``g2 = 2 t / (1 - t)``); the usual "data at 1" time is ``1 - t`` here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BETA_MIN, BETA_MAX = 0.1, 20.0


@dataclass(frozen=True)
class Path:
    """One path; all functions take and return Python floats (schedules are tiny)."""

    name: str

    def a(self, t: float) -> float:
        if self.name == "vp":
            return math.exp(-0.5 * _b(t))
        return 1.0 - t

    def s(self, t: float) -> float:
        if self.name == "vp":
            return math.sqrt(-math.expm1(-_b(t)))
        return t

    def g2(self, t: float) -> float:
        if self.name == "vp":
            return BETA_MIN + (BETA_MAX - BETA_MIN) * t
        return 2.0 * t / (1.0 - t)

    def int_g2(self, t: float) -> float:
        """``int_0^t g2``."""
        if self.name == "vp":
            return _b(t)
        return -2.0 * t - 2.0 * math.log1p(-t)

    def sigma(self, t: float) -> float:
        """VE noise level ``s / a`` at time ``t``."""
        if self.name == "vp":
            return math.sqrt(math.expm1(_b(t)))
        return t / (1.0 - t)

    def time(self, sigma: float) -> float:
        """Inverse of :meth:`sigma`."""
        if self.name == "vp":
            b = math.log1p(sigma * sigma)
            k = BETA_MAX - BETA_MIN
            return (-BETA_MIN + math.sqrt(BETA_MIN**2 + 2 * k * b)) / k
        return sigma / (1.0 + sigma)


def _b(t: float) -> float:
    return BETA_MIN * t + 0.5 * (BETA_MAX - BETA_MIN) * t * t


PATHS = {"vp": Path("vp"), "rf": Path("rf")}


def get_path(name: str) -> Path:
    """The path called ``name`` (``"vp"`` or ``"rf"``)."""
    if name not in PATHS:
        raise ValueError(f"unknown path {name!r}; choose one of {', '.join(PATHS)}")
    return PATHS[name]


def uniform_time_sigmas(path: str, n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``n + 1`` VE levels equally spaced in ``path``'s time from ``sigma_max`` down to
    ``sigma_min`` (the conjugate-integrator papers' "uniform stride"); no final 0."""
    if n < 1 or not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"need n >= 1 and 0 < sigma_min < sigma_max, got {n}, {sigma_min}, {sigma_max}"
        )
    p = get_path(path)
    ts = torch.linspace(p.time(sigma_max), p.time(sigma_min), n + 1, dtype=torch.float64)
    return torch.tensor([p.sigma(float(t)) for t in ts], dtype=torch.float64)
