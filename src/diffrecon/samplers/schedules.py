"""Noise schedules as data: decreasing ``sigmas`` tensors built by small pure functions."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

import torch

from diffrecon.priors.base import SigmaRange
from diffrecon.samplers.paths import uniform_time_sigmas


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


SPACINGS = ("karras", "vp", "rf")


@dataclass(frozen=True)
class Schedule:
    """A sampler's noise levels as a value: how many, over which range, spaced how.

    ``spacing``: ``"karras"`` (EDM's rho-spacing, final 0 appended) or a path name (``"vp"``,
    ``"rf"``: uniform in that path's own time, no final 0, as the conjugate integrators use).
    ``sigma_min``/``sigma_max`` of ``None`` take the denoiser's trained range; levels are
    always clamped into it. ``sigma_min_data`` (overrides ``sigma_min``) sets the final level
    as a fraction of the denoiser's ``sigma_data``, so that it scales with the images;
    ``sigma_max_data`` (overrides ``sigma_max``) likewise sets the first level.
    """

    steps: int = 100
    sigma_min: float | None = None
    sigma_max: float | None = None
    rho: float = 7.0
    spacing: str = "karras"
    sigma_min_data: float | None = None
    sigma_max_data: float | None = None

    def __post_init__(self) -> None:
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        for name in ("sigma_min", "sigma_max", "sigma_min_data", "sigma_max_data"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, numbers.Real) and 0 < v < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        lo, hi = self.sigma_min, self.sigma_max
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"sigma_min must be below sigma_max, got {lo} and {hi}")
        if not self.rho > 0:
            raise ValueError(f"rho must be > 0, got {self.rho}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {self.spacing!r}")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The setting names that belong to the schedule (the rest are the sampler's)."""
        return tuple(f.name for f in fields(cls))

    def replace(self, **changes: Any) -> Schedule:
        return dataclasses.replace(self, **changes)

    def sigmas(self, prior_range: SigmaRange) -> torch.Tensor:
        """The levels for a denoiser trained on ``prior_range`` (float64, decreasing)."""
        lo = prior_range.sigma_min if self.sigma_min is None else self.sigma_min
        if self.sigma_min_data is not None:
            lo = self.sigma_min_data * prior_range.sigma_data
        hi = prior_range.sigma_max if self.sigma_max is None else self.sigma_max
        if self.sigma_max_data is not None:
            hi = self.sigma_max_data * prior_range.sigma_data
        if lo > hi:
            raise ValueError(
                f"the schedule's first level {hi:.3g} must not lie below its last {lo:.3g} "
                f"(sigma_data {prior_range.sigma_data:.3g})"
            )
        if self.spacing == "karras":
            levels = karras_sigmas(self.steps, lo, hi, self.rho)
        else:
            levels = uniform_time_sigmas(self.spacing, self.steps, lo, hi)
        return clamp_sigmas(levels, prior_range.sigma_min, prior_range.sigma_max)

    def tail(self, below_data: float) -> Schedule:
        """The same levels from the first one at or below ``below_data`` times ``sigma_data``
        on (a Karras schedule's tail is the Karras schedule from that level with fewer
        steps); itself when it already starts there. Needs a Karras schedule whose ends are
        set relative to ``sigma_data`` (``sigma_min_data``, ``sigma_max_data``), so that the
        tail does not depend on the prior."""
        lo, hi = self.sigma_min_data, self.sigma_max_data
        if self.spacing != "karras" or lo is None or hi is None:
            raise ValueError(
                "only a Karras schedule with sigma_min_data and sigma_max_data has a tail in "
                f"units of sigma_data, got {self}"
            )
        if not below_data > 0:
            raise ValueError(f"below_data must be > 0, got {below_data}")
        levels = karras_sigmas(self.steps, lo, hi, self.rho, append_zero=False).tolist()
        first = next((i for i, s in enumerate(levels) if s <= below_data), len(levels) - 1)
        if first == 0:
            return self
        return self.replace(steps=self.steps - first, sigma_max_data=levels[first])

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
