"""Calibration: do central credible intervals from the draws cover a known truth as often as
they claim? A calibrated sampler's 90% intervals contain the truth in about 90% of pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffrecon.uncertainty.ensemble import quantiles


def coverage(
    draws: torch.Tensor, truth: torch.Tensor, levels: Sequence[float] = (0.5, 0.8, 0.9, 0.95)
) -> dict[float, float]:
    """Empirical coverage of pixelwise central intervals at each credible ``level``.

    ``draws``: ``(n, ...)``; ``truth``: ``(...)``. Returns ``{level: fraction covered}``.
    """
    if tuple(draws.shape[1:]) != tuple(truth.shape):
        raise ValueError(f"truth {tuple(truth.shape)} must match a draw {tuple(draws.shape[1:])}")
    out = {}
    t = truth.to(torch.float64)
    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"levels must lie in (0, 1), got {level}")
        lo, hi = quantiles(draws, [(1 - level) / 2, (1 + level) / 2])
        out[float(level)] = float(((t >= lo) & (t <= hi)).double().mean())
    return out


def z_scores(mean: torch.Tensor, std: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``(mean - truth) / std`` pixelwise, e.g. for the RMS z-score of a sampler's mean."""
    return (mean.to(torch.float64) - truth.to(torch.float64)) / std.to(torch.float64)
