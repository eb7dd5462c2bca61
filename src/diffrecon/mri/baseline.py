"""Classical compressed-sensing baseline: SigPy's L1-wavelet SENSE reconstruction."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffrecon._checks import as_tensor, check_finite, check_ndim


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
