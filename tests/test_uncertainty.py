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


def test_split_counts_shares_the_budget_and_refuses_too_few_draws():
    from diffrecon.uncertainty import split_counts

    assert split_counts(7, 2) == [4, 3] and split_counts(8, 3) == [3, 3, 2]
    with pytest.raises(ValueError, match="cannot be shared"):
        split_counts(1, 2)


def test_the_between_prior_spread_is_zero_for_one_prior_twice_and_the_parts_add_up():
    import numpy as np

    from diffrecon.uncertainty import prior_spread

    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3, 4))
    within, between = prior_spread(np.concatenate([a, a]), [5, 5])
    assert np.array_equal(between, np.zeros((3, 4)))
    assert np.allclose(within, a.std(0, ddof=1))
    b = rng.normal(size=(7, 3, 4)) + 2.0
    within, between = prior_spread(np.concatenate([a, b]), [5, 7])
    pooled = np.concatenate([a, b]).var(0, ddof=0)
    # law of total variance (with the population normalisation on both sides)
    w = np.array([5, 7]) / 12
    pop_within = w[0] * a.var(0) + w[1] * b.var(0)
    assert np.allclose(pop_within + between**2, pooled)
    assert within.shape == between.shape == (3, 4)
    with pytest.raises(ValueError, match="2 draws or more"):
        prior_spread(np.concatenate([a, b[:1]]), [5, 1])
    with pytest.raises(ValueError, match="do not add up"):
        prior_spread(a, [2, 2])


def test_two_exact_gaussian_priors_give_the_closed_form_between_spread():
    """Two Gaussian priors with one covariance and different means have posteriors with one
    covariance and means ``m1``, ``m2``: the between spread of equal shares is
    ``|m1 - m2| / 2``, the within std the posterior std. DAPS draws under each (common
    random numbers, as the job draws) recover both."""
    import numpy as np

    from diffrecon.api import reconstruct
    from diffrecon.priors import GaussianPrior
    from diffrecon.testing import exact_mri_problem
    from diffrecon.uncertainty import prior_spread

    p = exact_mri_problem(size=8, coils=4, accel=3.0, noise_std=0.05, seed=3)
    shifted = GaussianPrior(p.prior.mean + 4.0, p.prior.cov)
    m2, _ = shifted.posterior(p.operator, p.y, p.noise_std)
    closed = (p.post_mean - m2).abs().numpy() / 2
    assert np.median(closed / p.post_std.numpy()) > 1  # the priors clearly disagree
    n = 64
    draws = [
        reconstruct(p.y, p.operator, prior, "daps-mri", draws=n, noise_std=p.noise_std, seed=1)
        for prior in (p.prior, shifted)
    ]
    d = torch.cat([q.draws for q in draws]).numpy()
    within, between = prior_spread(d, [n, n])
    assert np.median(np.abs(between - closed) / p.post_std.numpy()) < 0.4
    assert np.median(within / p.post_std.numpy()) == pytest.approx(1.0, abs=0.15)
