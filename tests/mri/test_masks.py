"""Masks reproduce fastMRI's mask functions; acceleration and center lines as specified."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffrecon.mri import cartesian_mask, fastmri_seed, poisson_disc_mask


@pytest.mark.parametrize("kind", ["random", "equispaced"])
@pytest.mark.parametrize(("accel", "cf"), [(4, 0.08), (8, 0.04), (4, 0.16)])
@pytest.mark.parametrize("num_cols", [368, 372, 320, 41])
def test_identical_to_fastmri(fastmri_subsample, kind, accel, cf, num_cols):
    cls = {
        "random": fastmri_subsample.RandomMaskFunc,
        "equispaced": fastmri_subsample.EquispacedMaskFractionFunc,
    }[kind]
    for seed in [0, 1, 123, fastmri_seed("file1000001.h5")]:
        ref, ref_low = cls([cf], [accel])((1, 640, num_cols, 2), seed=seed)
        ours = cartesian_mask(num_cols, accel, cf, kind=kind, seed=seed)
        np.testing.assert_array_equal(ours.mask.numpy(), ref.numpy().reshape(-1) > 0)
        assert ours.num_low_frequencies == ref_low


@settings(max_examples=40, deadline=None)
@given(
    num_cols=st.integers(64, 400),
    accel=st.sampled_from([2, 4, 6, 8]),
    cf=st.sampled_from([0.04, 0.08, 0.12]),
    seed=st.integers(0, 2**31 - 1),
)
def test_center_and_acceleration(num_cols, accel, cf, seed):
    if num_cols / accel <= round(num_cols * cf):
        with pytest.raises(ValueError, match="impossible"):
            cartesian_mask(num_cols, accel, cf, seed=seed)
        return
    for kind in ("random", "equispaced"):
        m = cartesian_mask(num_cols, accel, cf, kind=kind, seed=seed)
        low = round(num_cols * cf)
        pad = (num_cols - low + 1) // 2
        assert m.num_low_frequencies == low
        assert bool(m.mask[pad : pad + low].all())
        assert m.mask.dtype.is_floating_point is False
        # same seed, same mask
        assert bool(
            (cartesian_mask(num_cols, accel, cf, kind=kind, seed=seed).mask == m.mask).all()
        )
        if kind == "equispaced":
            # the fraction-adjusted spacing hits the target within rounding of a line
            assert abs(int(m.mask.sum()) - num_cols / accel) <= 2


def test_random_mask_expected_acceleration():
    counts = [int(cartesian_mask(368, 4, 0.08, seed=s).mask.sum()) for s in range(300)]
    assert abs(np.mean(counts) - 368 / 4) < 1.0


def test_impossible_acceleration_is_rejected():
    with pytest.raises(ValueError, match="impossible"):
        cartesian_mask(100, 20, 0.2)
    with pytest.raises(ValueError, match="acceleration must be >= 1"):
        cartesian_mask(100, 0.5, 0.08)
    with pytest.raises(ValueError, match="center_fraction"):
        cartesian_mask(100, 4, 0.0)
    with pytest.raises(ValueError, match="kind"):
        cartesian_mask(100, 4, 0.08, kind="spiral")


def test_poisson_disc_mask():
    m = poisson_disc_mask((64, 48), 4.0, calib=(12, 12), seed=3)
    assert m.dtype.is_floating_point is False and m.shape == (64, 48)
    assert bool(m[26:38, 18:30].all())  # calibration square
    assert 3.0 < m.numel() / int(m.sum()) < 5.0
    assert bool((poisson_disc_mask((64, 48), 4.0, calib=(12, 12), seed=3) == m).all())
    assert not bool((poisson_disc_mask((64, 48), 4.0, calib=(12, 12), seed=4) == m).all())
