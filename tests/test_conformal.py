"""Conformal calibration of intervals: the guarantee, its refusals, the file it lives in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffrecon.uncertainty import Calibration, calibrate, coverage_report, std_mc_error
from diffrecon.uncertainty.conformal import crc_threshold, foreground


def _slices(n, rng, scale=2.0, size=24):
    """Slices whose std is ``scale`` times too small: truth = mean + scale * std * z."""
    truths, means, stds = [], [], []
    for _ in range(n):
        mean = 1.0 + rng.random((size, size))
        std = 0.05 + 0.1 * rng.random((size, size))
        truths.append(mean + scale * std * rng.standard_normal((size, size)))
        means.append(mean)
        stds.append(std)
    return truths, means, stds


def test_calibrated_intervals_cover_new_slices_as_often_as_claimed():
    rng = np.random.default_rng(0)
    cal = calibrate(*_slices(19, rng), level=0.9, valid_for={"draws": 8}, version="x")
    # an overconfident std (2x too small): lambda near 2 x 1.94, the normal quantile of the
    # 5.3% miss rate that 19 slices allow at risk 0.1 ((0.1 x 20 - 1) / 19: the finite-sample
    # price of the guarantee)
    assert 3.6 < cal.lam < 4.2
    truths, means, stds = _slices(60, rng)
    covered = []
    for t, m, s in zip(truths, means, stds, strict=True):
        lo, hi = cal.interval(m, s)
        covered.append(((t >= lo) & (t <= hi))[foreground(t)].mean())
    assert 0.9 <= float(np.mean(covered)) < 0.97
    # the uncalibrated mean +- 1.645 std covers far less: the report says so
    rep = coverage_report(truths, means, stds)
    assert rep["gaussian"]["foreground"]["0.9"] < 0.65
    assert 0.4 < rep["rms_std_over_rms_error"]["all"] < 0.6


def test_the_threshold_is_the_smallest_with_controlled_risk():
    rng = np.random.default_rng(1)
    scores = [np.abs(rng.standard_normal(100)) for _ in range(9)]
    lam = crc_threshold(scores, 0.9)

    def risk(x):
        missed = np.mean([(s > x).mean() for s in scores])
        return 9 / 10 * missed + 1 / 10

    assert risk(lam) <= 0.1 + 1e-12
    below = np.unique(np.concatenate(scores))
    below = below[below < lam]
    assert risk(below[-1]) > 0.1  # nothing smaller works


def test_refusals():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="8 calibration slice\\(s\\) cannot guarantee 90%"):
        calibrate(*_slices(8, rng), level=0.9, valid_for={}, version="x")
    t, m, s = _slices(3, rng)
    s[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="slice 1"):
        calibrate(t, m, s, level=0.5, valid_for={}, version="x")
    with pytest.raises(ValueError, match="not a diffrecon-calibration"):
        Calibration.from_dict({"format": "other"})
    assert std_mc_error(1) is None and std_mc_error(9) == pytest.approx(0.25)


def test_json_round_trip_and_mismatch():
    rng = np.random.default_rng(3)
    key = {"prior": "tiny", "draws": 4, "settings": {"steps": 2, "sigma_min": 0.01}}
    cal = calibrate(*_slices(4, rng), level=0.5, valid_for=key, version="0.1.0")
    back = Calibration.from_dict(json.loads(json.dumps(cal.as_dict())))
    assert back.lam == cal.lam and back.valid_for == key
    assert back.mismatch(dict(key)) is None
    why = back.mismatch({**key, "draws": 8})
    assert "draws is 8" in why and "made with 4" in why
    # values no fit produces are refused, naming the field (issue 28 #8b)
    for field_, bad in (("lambda", -1.0), ("lambda", float("nan")), ("level", 1.5)):
        with pytest.raises(ValueError, match=f"{field_} must"):
            Calibration.from_dict({**cal.as_dict(), field_: bad})
    with pytest.raises(ValueError, match="no slices"):
        Calibration.from_dict({**cal.as_dict(), "calibration_slices": 0})


def test_posterior_intervals(tiny_problem_posterior):
    post = tiny_problem_posterior
    lo, hi = post.intervals(0.8)
    assert lo.shape == post.magnitude_mean.shape and bool((lo <= hi).all())
    rng = np.random.default_rng(4)
    cal = calibrate(*_slices(4, rng), level=0.8, valid_for={}, version="x")
    clo, chi = post.intervals(0.8, calibration=cal)
    half = (chi - clo) / 2
    assert torch.allclose(half[half > 0].min(), half[half > 0].min())  # finite, positive
    with pytest.raises(ValueError, match="level 0.8, not 0.5"):
        post.intervals(0.5, calibration=cal)


@pytest.fixture(scope="module")
def tiny_problem_posterior():
    from diffrecon import reconstruct
    from diffrecon.testing import gaussian_mri_problem

    p = gaussian_mri_problem(size=8, coils=2, accel=2.0, noise_std=0.05)
    return reconstruct(
        p.y.to(torch.complex64),
        p.operator,
        p.prior,
        sampler="daps-fast",
        draws=6,
        seed=0,
        noise_std=0.05,
        steps=5,
    )


def test_non_finite_std_never_gives_an_interval_and_names_the_slice(
    tiny_kspace_file, tiny_bundle, monkeypatch
):
    from diffrecon.jobs import ReconstructionJob
    from diffrecon.uncertainty.conformal import NonFiniteStdError

    rng = np.random.default_rng(5)
    cal = calibrate(*_slices(4, rng), level=0.5, valid_for={}, version="x")
    std = np.ones((4, 4))
    std[1, 1] = np.inf
    with pytest.raises(NonFiniteStdError, match="NaN or inf"):
        cal.interval(np.ones((4, 4)), std)

    def broken(*a, **k):
        raise NonFiniteStdError("the posterior std holds NaN or inf")

    monkeypatch.setattr("diffrecon.jobs.reconstruct", broken)
    job = ReconstructionJob(tiny_kspace_file, prior=str(tiny_bundle), slices=[1])
    with pytest.raises(NonFiniteStdError, match="tiny.h5 slice 1: the posterior std"):
        job.run_slice(1)


def _featured(n, rng, size=24):
    """Slices whose error is driven by a feature the std does not see: |error| grows with
    ``l1_distance`` while the std is flat noise."""
    out = []
    for _ in range(n):
        mean = 1.0 + rng.random((size, size))
        std = 0.05 + 0.01 * rng.random((size, size))
        dist = 0.02 + 0.3 * rng.random((size, size)) ** 3
        truth = mean + dist * rng.standard_normal((size, size))
        feats = {
            "within": std,
            "between": np.zeros_like(std),
            "l1_distance": dist,
            "holdout_residual": 0.05 * rng.random((size, size)),
        }
        out.append((truth, mean, std, feats))
    return out


@pytest.mark.parametrize("weights", ["fitted", {"within": 1.0}, {"within": 0.3, "between": 2.0}])
def test_a_fitted_score_keeps_the_coverage_guarantee_whatever_its_weights(weights):
    """Conformal risk control holds for any score fixed before the calibration slices: the
    fitted weights (from other slices) and arbitrary ones alike cover new exchangeable
    slices at the level on average; the fitted score does it with shorter intervals."""
    from diffrecon.uncertainty.score import fit_weights, score_map

    rng = np.random.default_rng(7)
    fit = _featured(10, rng)
    if weights == "fitted":
        weights = fit_weights(
            [f[3] for f in fit], [np.abs(f[0] - f[1]) for f in fit], [f[0] > 0 for f in fit]
        )
        assert weights["l1_distance"] > 0  # the feature that drives the error is found
    cal_set, test_set = _featured(19, rng), _featured(80, rng)
    t, m, s, f = (list(x) for x in zip(*cal_set, strict=True))
    cal = calibrate(t, m, s, 0.9, {}, "x", features=f, weights=weights)
    assert cal.weights == weights
    covered = [cal.foreground_coverage(*row) for row in test_set]
    assert 0.9 <= float(np.mean(covered)) < 0.97
    std_only = calibrate(t, m, s, 0.9, {}, "x")
    assert np.mean([std_only.foreground_coverage(*row[:3]) for row in test_set]) >= 0.9
    if "l1_distance" in weights:
        length = np.mean([cal.lam * score_map(row[3], weights).mean() for row in test_set])
        assert length < 0.8 * np.mean([std_only.lam * row[2].mean() for row in test_set])
    back = Calibration.from_dict(json.loads(json.dumps(cal.as_dict())))
    assert back.weights == cal.weights
    row = test_set[0]
    assert np.array_equal(back.interval(*row[1:]), cal.interval(*row[1:]))


def test_score_weights_are_checked_and_features_required():
    rng = np.random.default_rng(8)
    t, m, s, f = (list(x) for x in zip(*_featured(4, rng), strict=True))
    cal = calibrate(t, m, s, 0.5, {}, "x", features=f, weights={"l1_distance": 1.0})
    assert cal.needs_holdout
    with pytest.raises(ValueError, match="give the run's features"):
        cal.interval(m[0], s[0])
    with pytest.raises(ValueError, match="needs the feature\\(s\\) l1_distance"):
        cal.interval(m[0], s[0], {"within": s[0]})
    for bad, match in (
        ({"l1_distance": -1.0}, "must be finite and >= 0"),
        ({"colour": 1.0}, "unknown score feature 'colour'"),
        ({"within": 0.0}, "every weight of the score is zero"),
    ):
        with pytest.raises(ValueError, match=match):
            Calibration.from_dict({**cal.as_dict(), "score": {"weights": bad}})
    with pytest.raises(ValueError, match="one feature set per calibration slice"):
        calibrate(t, m, s, 0.5, {}, "x", weights={"within": 1.0})
