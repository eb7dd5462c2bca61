"""What the CLI and napari offer for MRI is never worse than zero-filling.

Every preset in :func:`offered_for_mri`, at its default settings with the shipped default
prior, must give a posterior mean at least as good as the zero-filled image (PSNR and SSIM)
on a small simulated multicoil case (a held-out MNI slice, 4 birdcage coils, fastMRI 4x).
The real-anatomy benchmark (bench/real_anatomy.py) decides the offer; this test keeps a
preset that regresses from staying in it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.data.mni import get_slice, smooth_phase
from diffrecon.jobs import ArrayInput, ReconstructionJob
from diffrecon.mri.transforms import rss
from diffrecon.operators.fft import fft2c, ifft2c
from diffrecon.samplers.registry import MRI_DEFAULT, mri_warning, offered_for_mri


@pytest.fixture(scope="module")
def small_case():
    """A whole held-out MNI head at 80x96 (downsampled), 6 normalised birdcage coils, smooth
    phase, 1% noise, fully sampled k-space and its RSS target."""
    import sigpy.mri
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    mag = get_slice("t2", "axial", 104)
    mag = zoom(mag, 0.4, order=1)
    canvas = np.zeros((80, 96))
    h, w = min(mag.shape[0], 80), min(mag.shape[1], 96)
    top, left = (80 - h) // 2, (96 - w) // 2
    canvas[top : top + h, left : left + w] = mag[:h, :w]
    img = canvas / np.percentile(canvas, 99.5) * np.exp(1j * smooth_phase(canvas.shape, rng))
    maps = sigpy.mri.birdcage_maps((6, 80, 96), r=1.3)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0))
    k = fft2c(torch.from_numpy((maps * img).astype(np.complex64))).numpy()
    k = k + 0.01 * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
    target = rss(ifft2c(torch.from_numpy(k.astype(np.complex64)))).numpy()
    return ArrayInput(k[None].astype(np.complex64), target_images=target[None])


@pytest.mark.parametrize("preset", offered_for_mri())
def test_offered_presets_beat_zero_filled(small_case, preset):
    job = ReconstructionJob(small_case, prior="brain-mri-default", sampler=preset, draws=1)
    m = job.run_slice(0).metrics
    assert m["psnr"] >= m["psnr_zero_filled"] + 1.0, m
    assert m["ssim"] >= m["ssim_zero_filled"], m


def test_the_offer_and_its_warning():
    offer = offered_for_mri()
    assert offer[0] == MRI_DEFAULT and "cpigdm-5" not in offer
    assert mri_warning("daps") is None and mri_warning(MRI_DEFAULT) is None
    for name in ("pigdm-100", "daps-1k", "daps-fast"):
        if name not in offer:
            assert "not validated for MRI" in mri_warning(name)
    # withdrawn presets (issue 27) are never offered and say why when run by name
    assert "pigdm-20" not in offer and "diverges" in mri_warning("pigdm-20")


def test_an_unvalidated_preset_runs_with_a_warning(tmp_path, tiny_kspace_file, tiny_bundle, capsys):
    from diffrecon.cli import main

    args = ["reconstruct", str(tiny_kspace_file), "-o", str(tmp_path), "--prior", str(tiny_bundle)]
    run = ["--slices", "1", "--steps", "2", "--draws", "2", "--sampler", "pigdm-100", "--quiet"]
    assert main([*args, *run]) == 0
    assert "'pigdm-100' is not validated for MRI" in capsys.readouterr().err
