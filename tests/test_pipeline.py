"""The mask spec (the one home of the seed policy) and the noise estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.mri.masks import MaskSpec, cartesian_mask, fastmri_seed
from diffrecon.mri.preprocess import estimate_noise_std
from diffrecon.operators.fft import fft2c


def test_build_mask_fastmri_seeding_and_padding():
    spec = MaskSpec(4.0, 0.08, "random", seed=fastmri_seed("file1000001.h5"))
    m = spec.build((64, 368), None)
    ref = cartesian_mask(368, 4.0, 0.08, seed=fastmri_seed("file1000001.h5")).mask
    assert torch.equal(m, ref)
    padded = spec.build((64, 368), None, padding=(10, 350))
    assert not padded[:10].any() and not padded[350:].any()
    assert torch.equal(padded[10:350], ref[10:350])


def test_build_mask_from_file():
    file_mask = np.zeros(32, bool)
    file_mask[::3] = True
    assert torch.equal(
        MaskSpec(kind="file").build((40, 32), file_mask), torch.from_numpy(file_mask)
    )
    with pytest.raises(ValueError, match="no 'mask' dataset"):
        MaskSpec(kind="file").build((40, 32), None)
    with pytest.raises(ValueError, match="fits neither"):
        MaskSpec(kind="file").build((40, 32), np.ones(31, bool))


def test_noise_estimate_on_pure_noise_and_on_a_padded_object():
    rng = np.random.default_rng(0)
    mask = cartesian_mask(64, 4.0, 0.1, seed=0).mask.numpy()
    noise = 0.02 * (rng.normal(size=(4, 128, 64)) + 1j * rng.normal(size=(4, 128, 64)))
    k = np.where(mask, noise, 0)
    assert estimate_noise_std(k, mask) == pytest.approx(0.02, rel=0.1)
    # an object filling the middle half of a 2x oversampled readout
    img = np.zeros((4, 128, 64), complex)
    img[:, 40:88, 8:56] = 1.0
    signal = fft2c(torch.from_numpy(img)).numpy()
    k = np.where(mask, signal + noise, 0)
    assert estimate_noise_std(k, mask) == pytest.approx(0.02, rel=0.25)
