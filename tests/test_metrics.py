"""Metrics agree with skimage and fastMRI's evaluate.py definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from diffrecon import metrics
from diffrecon.mri import center_crop, rss


@pytest.mark.parametrize("seed", range(3))
def test_agree_with_skimage(seed):
    rng = np.random.default_rng(seed)
    gt = rng.random((3, 40, 33)) * 5
    pred = gt + rng.normal(scale=0.3, size=gt.shape)
    ref_ssim = np.mean(
        [structural_similarity(gt[i], pred[i], data_range=gt.max()) for i in range(3)]
    )
    assert metrics.ssim(gt, pred) == pytest.approx(ref_ssim, abs=1e-10)
    assert metrics.psnr(gt, pred) == pytest.approx(
        peak_signal_noise_ratio(gt, pred, data_range=gt.max()), abs=1e-10
    )
    ref_nmse = np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2
    assert metrics.nmse(gt, pred) == pytest.approx(ref_nmse, rel=1e-12)
    out = metrics.evaluate(torch.from_numpy(gt), torch.from_numpy(pred))
    assert set(out) == {"nmse", "psnr", "ssim"}


def test_metric_input_checks():
    with pytest.raises(ValueError, match="one shape"):
        metrics.psnr(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match="volume"):
        metrics.ssim(np.ones((8, 8)), np.ones((8, 8)))


def test_rss_and_center_crop():
    coils = torch.randn(4, 10, 12, dtype=torch.complex64)
    assert torch.allclose(rss(coils), coils.abs().pow(2).sum(0).sqrt())
    img = torch.arange(10 * 12).reshape(10, 12)
    crop = center_crop(img, (4, 5))
    assert crop.shape == (4, 5) and int(crop[0, 0]) == img[3, 3]
    with pytest.raises(ValueError, match="fit"):
        center_crop(img, (11, 5))
