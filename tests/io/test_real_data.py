"""The real 8-coil brain acquisition: converted to fastMRI format and reconstructed."""

from __future__ import annotations

import numpy as np

from diffrecon import reconstruct_kspace
from diffrecon.data.real import convert_sigpy_brain
from diffrecon.io.fastmri import open_fastmri
from diffrecon.mri.baseline import l1_wavelet_recon
from diffrecon.mri.coils import espirit_maps
from diffrecon.mri.masks import MaskSpec
from diffrecon.mri.preprocess import calibration_width
from diffrecon.priors import load

from ..conftest import REAL_KSPACE


def test_convert_and_reconstruct_real_brain(tmp_path, real_kspace):
    path = convert_sigpy_brain(REAL_KSPACE, tmp_path / "brain.h5")
    f = open_fastmri(path)
    assert f.multicoil and f.shape == (1, 8, 230, 180) and f.mask.shape == (230, 180)
    k = f.kspace(0)
    assert np.array_equal(k, real_kspace)
    mask = MaskSpec(kind="file").build(k.shape[-2:], f.mask)
    assert calibration_width(mask.numpy()) == 24  # the acquisition's 24x24 ACS square
    res = reconstruct_kspace(
        k, mask, prior=load("brain-mri-default"), sampler="daps-fast", draws=2, steps=4
    )
    assert res.mean.shape == (230, 180) and np.isfinite(res.mean).all()
    assert (res.std > 0).mean() > 0.99
    # agreement with the classical reconstruction, by correlation of magnitudes
    l1 = l1_wavelet_recon(k, espirit_maps(k, calib_width=24), lamda=0.005, max_iter=40)
    l1_mag = np.hypot(l1[0].numpy(), l1[1].numpy())
    corr = np.corrcoef(res.mean.ravel(), l1_mag.ravel())[0, 1]
    print(f"real brain: correlation of the posterior mean with L1-wavelet {corr:.3f}")
    assert corr > 0.9
