"""Streaming summaries of posterior draws: Welford mean/variance, quantiles.

Thousands of draws need memory for one running mean and one running sum of squares only;
quantiles need the draws themselves, so they are computed when the draws are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Welford:
    """Running pixelwise mean and variance (Welford's update, batched, float64)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch of draws ``(k, ...)`` (Chan et al.'s parallel combination)."""
        b = batch.detach().to(torch.float64)
        k = b.shape[0]
        if k == 0:
            return
        b_mean = b.mean(0)
        b_m2 = ((b - b_mean) ** 2).sum(0)
        if self.mean is None:
            self.count, self.mean, self._m2 = k, b_mean, b_m2
            return
        total = self.count + k
        delta = b_mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self._m2 = self._m2 + b_m2 + delta**2 * (self.count * k / total)
        self.count = total

    @property
    def var(self) -> torch.Tensor:
        """Unbiased sample variance (needs two draws or more)."""
        if self._m2 is None or self.count < 2:
            raise ValueError("the variance needs at least two draws")
        return self._m2 / (self.count - 1)

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()


def quantiles(draws: torch.Tensor, qs: Sequence[float]) -> torch.Tensor:
    """Pixelwise quantiles ``(len(qs), ...)`` of draws ``(n, ...)`` (linear interpolation)."""
    q = torch.as_tensor(list(qs), dtype=torch.float64, device=draws.device)
    if ((q < 0) | (q > 1)).any():
        raise ValueError(f"quantiles must lie in [0, 1], got {list(qs)}")
    return torch.quantile(draws.to(torch.float64), q, dim=0)
