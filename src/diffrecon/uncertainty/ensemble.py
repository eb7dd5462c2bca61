"""Summaries of posterior draws: Welford mean/variance, quantiles, and the parts of the
spread of draws made under several priors.

Thousands of draws need memory for one running mean and one running sum of squares only;
quantiles need the draws themselves, so they are computed when the draws are kept. Draws
shared among priors (:func:`split_counts`) split their spread into the spread under one
prior and the priors' disagreement (:func:`prior_spread`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
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


def split_counts(draws: int, groups: int) -> list[int]:
    """``draws`` shared among ``groups`` priors as evenly as possible, earlier ones first:
    7 draws over 2 priors are ``[4, 3]``. The budget is split, not multiplied."""
    if groups < 1 or draws < groups:
        raise ValueError(f"{draws} draws cannot be shared among {groups} priors")
    return [draws // groups + (1 if g < draws % groups else 0) for g in range(groups)]


def prior_spread(draws: np.ndarray, counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The within-prior std and the between-prior spread of draws made under several priors.

    ``draws``: ``(n, ...)``, the draws of prior 0 first, then prior 1's, ... (``counts``
    each, 2 or more). With weights ``w_k = n_k / n``, per-prior means ``m_k`` and unbiased
    variances ``v_k``: ``within = sqrt(sum_k w_k v_k)`` (the spread the data leave under one
    prior) and ``between = sqrt(sum_k w_k (m_k - m)^2)`` with ``m = sum_k w_k m_k`` (how much
    the priors disagree: the prior's own doubt, which no number of draws under one prior
    shows). ``within^2 + between^2`` is the law of total variance, and equals the pooled
    variance up to the ``n - 1`` versus ``n_k - 1`` normalisations.
    """
    d = np.asarray(draws, dtype=np.float64)
    counts = [int(c) for c in counts]
    if sum(counts) != d.shape[0]:
        raise ValueError(f"counts {counts} do not add up to the {d.shape[0]} draws")
    if any(c < 2 for c in counts):
        raise ValueError(f"every prior needs 2 draws or more for a within-prior std: {counts}")
    n = float(d.shape[0])
    groups = np.split(d, np.cumsum(counts)[:-1])
    means = [g.mean(0) for g in groups]
    pooled = sum(c / n * m for c, m in zip(counts, means, strict=True))
    within = sum(c / n * g.var(0, ddof=1) for c, g in zip(counts, groups, strict=True))
    between = sum(c / n * (m - pooled) ** 2 for c, m in zip(counts, means, strict=True))
    return np.sqrt(within), np.sqrt(between)
