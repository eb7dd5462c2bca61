"""Streaming moments, quantiles and calibration."""

from __future__ import annotations

import pytest
import torch

from diffrecon.uncertainty import Welford, coverage, quantiles, z_scores


def test_welford_matches_two_pass_moments_across_uneven_batches():
    data = torch.randn(37, 3, 4, dtype=torch.float64) * 3 + 1
    w = Welford()
    for chunk in torch.split(data, [1, 10, 5, 21]):
        w.update(chunk)
    assert w.count == 37
    assert torch.allclose(w.mean, data.mean(0)) and torch.allclose(w.var, data.var(0))
    with pytest.raises(ValueError, match="two draws"):
        lone = Welford()
        lone.update(data[:1])
        _ = lone.var


def test_quantiles_and_coverage_of_a_calibrated_sampler():
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(2000, generator=g, dtype=torch.float64)  # truth ~ N(0, 1) per pixel
    draws = torch.randn(400, 2000, generator=g, dtype=torch.float64)  # posterior N(0, 1)
    cov = coverage(draws, truth, levels=(0.5, 0.9))
    assert cov[0.5] == pytest.approx(0.5, abs=0.04) and cov[0.9] == pytest.approx(0.9, abs=0.03)
    over = coverage(0.3 * draws, truth, levels=(0.9,))  # overconfident sampler
    assert over[0.9] < 0.5
    q = quantiles(draws, [0.5])
    assert q.shape == (1, 2000) and float(q.abs().mean()) < 0.1
    assert torch.allclose(
        z_scores(torch.ones(3), torch.full((3,), 2.0), torch.zeros(3)),
        torch.full((3,), 0.5, dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="must match"):
        coverage(draws, truth[:5])
