"""ESPIRiT maps and the L1-wavelet baseline, on a simulated phantom and on real k-space."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy
import sigpy.mri
import torch

from diffrecon.complex import magnitude
from diffrecon.metrics import psnr
from diffrecon.mri import cartesian_mask, espirit_maps, l1_wavelet_recon
from diffrecon.operators import MulticoilMRI


def _phantom(size=64, coils=6):
    img = np.abs(sigpy.shepp_logan((size, size))).astype(np.complex128)
    maps = sigpy.mri.birdcage_maps((coils, size, size))
    return img, maps


def test_espirit_recovers_the_coil_subspace():
    img, maps = _phantom()
    ksp = sigpy.fft(maps * img, axes=(-2, -1))
    est = espirit_maps(ksp, calib_width=20)
    assert est.shape == maps.shape and est.dtype == torch.complex64
    coil_imgs = maps * img
    est_np = est.numpy()
    combined = (np.conj(est_np) * coil_imgs).sum(0)
    support = np.abs(img) > 0.05
    resid = np.linalg.norm((est_np * combined - coil_imgs)[:, support])
    assert resid / np.linalg.norm(coil_imgs[:, support]) < 0.05


def test_l1_wavelet_beats_zero_filled_on_phantom():
    img, maps = _phantom()
    mask = cartesian_mask(64, 4, 0.1, seed=0).mask
    op = MulticoilMRI(torch.from_numpy(maps.astype(np.complex64)), mask)
    x = torch.from_numpy(np.stack([img.real, img.imag])[None]).float()
    y = op(x)
    rec = l1_wavelet_recon(y[0], op.maps, lamda=0.002, max_iter=60)
    gt = magnitude(x)
    assert rec.shape == (2, 64, 64)
    assert psnr(gt, magnitude(rec[None])) > psnr(gt, magnitude(op.adjoint(y))) + 5


def test_real_data_espirit_and_l1(real_kspace):
    mask = np.abs(real_kspace).sum(0) > 0
    maps = espirit_maps(real_kspace, calib_width=24)
    op = MulticoilMRI(maps, torch.from_numpy(mask))
    y = torch.from_numpy(real_kspace)[None]
    rec = l1_wavelet_recon(real_kspace, maps, lamda=0.005, max_iter=40)
    resid = (op(rec[None]) - y).abs().norm() / y.abs().norm()
    zf = op.adjoint(y)
    resid_zf = (op(zf) - y).abs().norm() / y.abs().norm()
    # L1-wavelet fits the acquired samples far better than the zero-filled image does
    assert float(resid) < 0.1 < float(resid_zf)


def test_bad_inputs():
    _, maps = _phantom(16, 3)
    with pytest.raises(ValueError, match="kspace must be complex"):
        espirit_maps(np.ones((3, 16, 16)))
    with pytest.raises(ValueError, match="same coil count"):
        l1_wavelet_recon(np.ones((2, 16, 16), np.complex64), maps)
    bad = np.ones((3, 16, 16), np.complex64)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="kspace contains NaN"):
        l1_wavelet_recon(bad, maps)
