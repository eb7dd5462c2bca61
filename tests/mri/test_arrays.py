"""``diffrecon.mri.reconstruct``: numpy (or torch) k-space in, complex posterior summaries out."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import diffrecon.mri as mri
from diffrecon.mri.masks import as_mask, cartesian_mask, measured_mask
from diffrecon.priors import GaussianPrior

FAST = {"sampler": "daps-fast", "steps": 3, "draws": 2, "langevin_steps": 3}


@pytest.fixture(scope="module")
def slice_(tiny_kspace_file):
    with h5py.File(tiny_kspace_file) as f:
        k = f["kspace"][0]
    k = mri.remove_readout_oversampling(k, 40) if k.shape[-2] != 40 else k
    return np.asarray(k, dtype=np.complex64)


def test_numpy_in_numpy_out_with_the_same_numbers_for_torch_input(slice_, tiny_bundle):
    mask = cartesian_mask(slice_.shape[-1], 4.0, 0.08, seed=0).mask.numpy()
    a = mri.reconstruct(slice_, mask, prior=tiny_bundle, seed=3, keep_draws=True, **FAST)
    h, w = slice_.shape[-2:]
    assert a.mean.shape == (h, w) and a.mean.dtype == np.complex64
    assert a.magnitude.shape == a.std.shape == (h, w)
    assert a.draws.shape == (2, h, w) and np.iscomplexobj(a.draws)
    assert a.maps.shape == slice_.shape and np.array_equal(a.mask, mask)
    # the complex mean is the mean of the complex draws; the magnitude the mean of |draw|
    np.testing.assert_allclose(a.mean, a.draws.mean(0), rtol=1e-4, atol=1e-6 * abs(a.mean).max())
    np.testing.assert_allclose(
        a.magnitude, np.abs(a.draws).mean(0), rtol=1e-4, atol=1e-5 * a.magnitude.max()
    )
    # torch input, a fastMRI-layout (1, 1, W, 1) float mask: the same run, the same numbers
    m4 = torch.from_numpy(mask.astype(np.float32)).reshape(1, 1, -1, 1)
    b = mri.reconstruct(torch.from_numpy(slice_), m4, prior=tiny_bundle, seed=3, **FAST)
    np.testing.assert_array_equal(a.mean, b.mean)
    assert b.draws is None


def test_mask_defaults_to_the_measured_samples_and_user_maps_are_used(slice_, tiny_bundle):
    mask = cartesian_mask(slice_.shape[-1], 4.0, 0.08, seed=1).mask.numpy()
    under = np.where(mask, slice_, 0)
    a = mri.reconstruct(under, prior=tiny_bundle, **FAST)
    assert np.array_equal(a.mask, mask)
    maps = np.ones_like(slice_) / np.sqrt(slice_.shape[0])
    b = mri.reconstruct(under, mask, maps, prior=tiny_bundle, **FAST)
    np.testing.assert_allclose(b.maps, maps)
    assert np.abs(b.zero_filled).max() > 0


def test_an_exact_prior_object_and_bad_input_refused(slice_):
    h, w = slice_.shape[-2:]
    prior = GaussianPrior(torch.zeros(2, h, w), torch.eye(2 * h * w))
    r = mri.reconstruct(slice_, np.ones(w, bool), prior=prior, **FAST)
    assert np.isfinite(r.mean).all()
    with pytest.raises(ValueError, match="must be complex"):
        mri.reconstruct(np.abs(slice_), prior=prior)
    with pytest.raises(ValueError, match="add a coil axis"):
        mri.reconstruct(slice_[0], prior=prior)
    with pytest.raises(ValueError, match="fits neither"):
        mri.reconstruct(slice_, np.ones(w + 1, bool), prior=prior)
    with pytest.raises(ValueError, match="samples nothing"):
        mri.reconstruct(slice_, np.zeros(w), prior=prior)


def test_mask_helpers():
    assert as_mask([0, 1, 1.0], (4, 3)).tolist() == [False, True, True]
    assert as_mask(np.ones((1, 4, 3, 1)), (4, 3)).shape == (4, 3)
    k = np.zeros((2, 4, 3), complex)
    k[:, :, 1] = 1
    assert measured_mask(k).tolist() == [False, True, False]
    k[:, 0, 0] = 1
    assert measured_mask(k).shape == (4, 3)


def test_reconstruct_slice_takes_a_numpy_mask(slice_, tiny_bundle):
    from diffrecon.pipeline import reconstruct_slice
    from diffrecon.priors import load

    mask = cartesian_mask(slice_.shape[-1], 4.0, 0.08, seed=0).mask
    prior = load(tiny_bundle)
    fast = {k: v for k, v in FAST.items() if k != "draws"}
    a = reconstruct_slice(slice_, prior, mask.numpy(), draws=2, **fast)
    b = reconstruct_slice(slice_, prior, mask, draws=2, **fast)
    np.testing.assert_array_equal(a.mean, b.mean)
