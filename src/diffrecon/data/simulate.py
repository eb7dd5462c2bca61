"""Simulated fastMRI-format multicoil files from the MNI-derived slices.

Held-out axial slices (never seen by the default prior) of a chosen contrast, a smooth random
phase, birdcage coil sensitivities, complex Gaussian noise, fully sampled k-space, an
``ismrmrd_header`` with the matrix sizes and encoding limits, and the ``reconstruction_rss``
target exactly as fastMRI computes it (RSS of the coil images, center-cropped).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from diffrecon.data.mni import HELDOUT_Z, get_slice, smooth_phase
from diffrecon.io.fastmri import header_xml
from diffrecon.mri.transforms import center_crop, rss
from diffrecon.operators.fft import fft2c, ifft2c


def _crop_or_pad(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``img`` centre-cropped or zero-padded (background) to ``shape``, per axis."""
    for axis, n in enumerate(shape):
        size = img.shape[axis]
        if size > n:
            start = (size - n) // 2
            img = np.take(img, np.arange(start, start + n), axis=axis)
        elif size < n:
            before = (n - size) // 2
            pad = [(0, 0), (0, 0)]
            pad[axis] = (before, n - size - before)
            img = np.pad(img, pad)
    return img


def simulate_fastmri(
    path: str | Path,
    *,
    contrast: str = "t2",
    slices: tuple[int, ...] = (100, 104, 108),
    size: tuple[int, int] = (192, 160),
    readout_oversampling: int = 2,
    coils: int = 8,
    noise_level: float = 0.003,
    seed: int = 0,
    patient_id: str = "MNI152-sim",
) -> Path:
    """Write a fully sampled multicoil fastMRI-format file; returns its path.

    ``size`` is the recon size (the header's reconSpace; the 233x197 MNI slice is cropped
    or zero-padded to it); the readout (first axis) is
    acquired ``readout_oversampling`` times wider, as on scanners and in fastMRI, so
    k-space is ``(slices, coils, oversampling * H, W)`` and the RSS target is the
    centre crop to ``size``.
    """
    import sigpy.mri

    if any(not HELDOUT_Z[0] <= z < HELDOUT_Z[1] for z in slices):
        raise ValueError(f"slices must come from the held-out slab {HELDOUT_Z}")
    rng = np.random.default_rng(seed)
    h, w = size
    hk = readout_oversampling * h
    maps = sigpy.mri.birdcage_maps((coils, hk, w), r=1.3 * readout_oversampling).astype(
        np.complex64
    )
    kspace, targets = [], []
    for z in slices:
        mag = _crop_or_pad(get_slice(contrast, "axial", z), (h, w))
        pad = (hk - h) // 2
        mag = np.pad(mag, ((pad, hk - h - pad), (0, 0)))
        img = mag * np.exp(1j * smooth_phase((hk, w), rng))
        coil_imgs = torch.from_numpy((maps * img).astype(np.complex64))
        k = fft2c(coil_imgs)
        noise = noise_level * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
        k = k + torch.from_numpy(noise.astype(np.complex64))
        kspace.append(k.numpy())
        targets.append(center_crop(rss(ifft2c(k)), (h, w)).numpy())
    kspace_arr = np.stack(kspace).astype(np.complex64)
    target_arr = np.stack(targets).astype(np.float32)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(p, "w") as f:
        f.create_dataset("kspace", data=kspace_arr)
        f.create_dataset("reconstruction_rss", data=target_arr)
        f.create_dataset("ismrmrd_header", data=header_xml((hk, w, 1), (h, w, 1), w // 2, w - 1))
        f.attrs["acquisition"] = f"SIM_{contrast.upper()}_MNI152"
        f.attrs["max"] = float(target_arr.max())
        f.attrs["norm"] = float(np.linalg.norm(target_arr))
        f.attrs["patient_id"] = patient_id
    return p
