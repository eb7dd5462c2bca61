"""Coil sensitivity maps by ESPIRiT (SigPy's ``EspiritCalib``), returned as torch tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffrecon._checks import as_tensor, check_finite, check_ndim


def espirit_maps(
    kspace: Any,
    calib_width: int = 24,
    thresh: float = 0.02,
    kernel_width: int = 6,
    crop: float = 0.95,
    max_iter: int = 100,
) -> torch.Tensor:
    """ESPIRiT coil maps ``(coils, H, W)`` complex64 from (undersampled) k-space.

    ``kspace`` is complex ``(coils, H, W)`` with a fully sampled ``calib_width`` center
    (the auto-calibration lines); maps are zero outside the ``crop``-thresholded support.
    """
    import sigpy.mri

    k = as_tensor("kspace", kspace)
    check_ndim("kspace", k, (3,), "(coils, H, W)")
    if not k.is_complex():
        raise ValueError(f"kspace must be complex, got dtype {k.dtype}")
    check_finite("kspace", k)
    if calib_width > min(k.shape[-2:]):
        raise ValueError(f"calib_width={calib_width} exceeds the k-space size {tuple(k.shape)}")
    arr = k.detach().cpu().numpy().astype(np.complex64)
    maps = sigpy.mri.app.EspiritCalib(
        arr,
        calib_width=calib_width,
        thresh=thresh,
        kernel_width=kernel_width,
        crop=crop,
        max_iter=max_iter,
        show_pbar=False,
    ).run()
    return torch.from_numpy(np.asarray(maps, dtype=np.complex64))
