"""``diffrecon.reconstruct_kspace``: numpy (or torch) k-space in, a job's slice result out."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import diffrecon.mri as mri
from diffrecon import reconstruct_kspace
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
    a = reconstruct_kspace(slice_, mask, prior=tiny_bundle, seed=3, keep_draws=True, **FAST)
    h, w = slice_.shape[-2:]
    assert a.mean_complex.shape == (h, w) and a.mean_complex.dtype == np.complex64
    assert a.mean.shape == a.std.shape == (h, w)
    assert a.draws_complex.shape == (2, h, w) and np.iscomplexobj(a.draws_complex)
    assert a.maps.shape == slice_.shape and np.array_equal(a.mask, mask)
    # the complex mean is the mean of the complex draws; the magnitude the mean of |draw|
    z, d = a.mean_complex, a.draws_complex
    np.testing.assert_allclose(z, d.mean(0), rtol=1e-4, atol=1e-6 * abs(z).max())
    np.testing.assert_allclose(a.mean, np.abs(d).mean(0), rtol=1e-4, atol=1e-5 * a.mean.max())
    # torch input, a fastMRI-layout (1, 1, W, 1) float mask: the same run, the same numbers
    m4 = torch.from_numpy(mask.astype(np.float32)).reshape(1, 1, -1, 1)
    b = reconstruct_kspace(torch.from_numpy(slice_), m4, prior=tiny_bundle, seed=3, **FAST)
    np.testing.assert_array_equal(a.mean_complex, b.mean_complex)
    assert b.draws_complex is None


def test_mask_defaults_to_the_measured_samples_and_user_maps_are_used(slice_, tiny_bundle):
    mask = cartesian_mask(slice_.shape[-1], 4.0, 0.08, seed=1).mask.numpy()
    under = np.where(mask, slice_, 0)
    a = reconstruct_kspace(under, prior=tiny_bundle, **FAST)
    assert np.array_equal(a.mask, mask)
    maps = np.ones_like(slice_) / np.sqrt(slice_.shape[0])
    b = reconstruct_kspace(under, mask, maps, prior=tiny_bundle, **FAST)
    np.testing.assert_allclose(b.maps, maps)
    assert np.abs(b.zero_filled).max() > 0


def test_an_exact_prior_object_and_bad_input_refused(slice_):
    h, w = slice_.shape[-2:]
    prior = GaussianPrior(torch.zeros(2, h, w), torch.eye(2 * h * w))
    r = reconstruct_kspace(slice_, np.ones(w, bool), prior=prior, **FAST)
    assert np.isfinite(r.mean_complex).all()
    with pytest.raises(ValueError, match="must be complex"):
        reconstruct_kspace(np.abs(slice_), prior=prior)
    with pytest.raises(ValueError, match="add a coil axis"):
        reconstruct_kspace(slice_[0], prior=prior)
    with pytest.raises(ValueError, match="fits neither"):
        reconstruct_kspace(slice_, np.ones(w + 1, bool), prior=prior)
    with pytest.raises(ValueError, match="samples nothing"):
        reconstruct_kspace(slice_, np.zeros(w), prior=prior)


def test_mask_helpers():
    assert as_mask([0, 1, 1.0], (4, 3)).tolist() == [False, True, True]
    assert as_mask(np.ones((1, 4, 3, 1)), (4, 3)).shape == (4, 3)
    k = np.zeros((2, 4, 3), complex)
    k[:, :, 1] = 1
    assert measured_mask(k).tolist() == [False, True, False]
    k[:, 0, 0] = 1
    assert measured_mask(k).shape == (4, 3)


def test_the_old_numpy_entry_names_its_new_home():
    """``diffrecon.mri.reconstruct`` returned a complex ``mean``; its successor's ``mean`` is
    the magnitude, so the old name fails loudly instead of silently changing meaning."""
    with pytest.raises(AttributeError, match="reconstruct_kspace"):
        mri.reconstruct  # noqa: B018


def test_a_prepared_slice_runs_as_a_job_with_a_numpy_or_torch_mask(slice_, tiny_bundle):
    from diffrecon.jobs import ReconstructionJob
    from diffrecon.mri.preprocess import prepare_slice
    from diffrecon.priors import load

    mask = cartesian_mask(slice_.shape[-1], 4.0, 0.08, seed=0).mask
    prior = load(tiny_bundle)
    fast = {"sampler": "daps-fast", "steps": 3, "overrides": {"langevin_steps": 3}}
    runs = []
    for m in (mask.numpy(), mask):
        prep = prepare_slice(slice_, m)
        job = ReconstructionJob.of_prepared(prep, prior=prior, draws=2, **fast)
        runs.append(job.run_slice(0, prepared=prep))
    np.testing.assert_array_equal(runs[0].mean, runs[1].mean)
    # the same numbers as the arrays entry, which prepares the slice itself
    direct = reconstruct_kspace(np.where(mask.numpy(), slice_, 0), mask, prior=prior, **FAST)
    np.testing.assert_allclose(direct.mean, runs[0].mean, rtol=1e-5, atol=1e-6)
