"""Classical compressed-sensing baseline: SigPy's L1-wavelet SENSE reconstruction."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffrecon._checks import as_tensor, check_finite, check_ndim
from diffrecon.mri.coils import espirit_maps
from diffrecon.mri.preprocess import PreparedSlice


def l1_wavelet_recon(
    kspace: Any,
    maps: Any,
    lamda: float = 0.005,
    max_iter: int = 100,
    mask: Any = None,
) -> torch.Tensor:
    """L1-wavelet regularised SENSE reconstruction (``sigpy.mri.app.L1WaveletRecon``).

    ``kspace`` complex ``(coils, H, W)``, zero where unsampled; ``maps`` complex
    ``(coils, H, W)``. ``lamda`` is relative to the largest magnitude of the zero-filled
    coil-combined image, so it does not depend on the data's scale. Sampled locations are
    ``mask`` if given, else the non-zero entries of ``kspace``. Returns ``(2, H, W)`` float32
    (real, imaginary), the diffrecon image convention.
    """
    import sigpy.mri

    k = as_tensor("kspace", kspace)
    s = as_tensor("maps", maps)
    check_ndim("kspace", k, (3,), "(coils, H, W)")
    check_ndim("maps", s, (3,), "(coils, H, W)")
    if k.shape != s.shape:
        raise ValueError(
            f"maps {tuple(s.shape)} must match kspace {tuple(k.shape)} (same coil count)"
        )
    check_finite("kspace", k)
    check_finite("maps", s)
    ksp = k.detach().cpu().numpy().astype(np.complex64)
    mps = s.detach().cpu().numpy().astype(np.complex64)
    if mask is None:
        weights = (np.abs(ksp).sum(axis=0) > 0).astype(np.float32)
    else:
        m = as_tensor("mask", mask).cpu().numpy().astype(np.float32)
        weights = np.broadcast_to(m, ksp.shape[-2:]).copy()
    zero_filled = sigpy.mri.linop.Sense(mps, weights=weights).H * (ksp * weights)
    scale = float(np.abs(zero_filled).max()) or 1.0
    img = sigpy.mri.app.L1WaveletRecon(
        ksp * weights, mps, lamda * scale, weights=weights, max_iter=max_iter, show_pbar=False
    ).run()
    img = np.asarray(img)
    return torch.from_numpy(np.stack([img.real, img.imag]).astype(np.float32))


def l1_wavelet_baseline(
    prepared: PreparedSlice, lamda: float = 0.005, max_iter: int = 100, crop: float = 0.95
) -> torch.Tensor:
    """:func:`l1_wavelet_recon` of a :class:`~diffrecon.mri.preprocess.PreparedSlice`: the
    data, mask, scale and calibration region the sampler sees; ``(2, H, W)`` in file units.

    ``crop``: ESPIRiT's support threshold for the baseline's maps. The default 0.95 is
    SigPy's (what a SigPy user gets: the L1 term shrinks the unsupported background to
    zero); ``crop=0`` reuses the sampler's uncropped maps.
    """
    maps = prepared.maps
    if crop > 0:
        maps = espirit_maps(
            prepared.y[0],
            calib_width=prepared.calib_width,
            region=prepared.calib_region,
            crop=crop,
        )
    img = l1_wavelet_recon(prepared.y[0], maps, lamda=lamda, max_iter=max_iter, mask=prepared.mask)
    return img * prepared.scale
