"""MRI tooling around the forward models: masks, coil maps, preprocessing, a classical
baseline, transforms. Numpy k-space in, posterior summaries out is
:func:`diffrecon.reconstruct_kspace` (a job, above the samplers: not imported here).
"""

from typing import Any

from diffrecon.mri.baseline import l1_wavelet_baseline, l1_wavelet_recon
from diffrecon.mri.coils import espirit_maps
from diffrecon.mri.masks import (
    CartesianMask,
    MaskSpec,
    cartesian_mask,
    fastmri_seed,
    poisson_disc_mask,
)
from diffrecon.mri.preprocess import PreparedSlice, prepare_slice
from diffrecon.mri.transforms import center_crop, remove_readout_oversampling, rss

__all__ = [
    "CartesianMask",
    "MaskSpec",
    "PreparedSlice",
    "cartesian_mask",
    "center_crop",
    "espirit_maps",
    "fastmri_seed",
    "l1_wavelet_baseline",
    "l1_wavelet_recon",
    "poisson_disc_mask",
    "prepare_slice",
    "remove_readout_oversampling",
    "rss",
]


def __getattr__(name: str) -> Any:
    if name == "reconstruct":  # moved up to the job layer: say where, import nothing
        raise AttributeError(
            "diffrecon.mri.reconstruct is now diffrecon.reconstruct_kspace (same arguments); "
            "it returns a SliceResult whose .mean is the posterior mean of |x| and "
            ".mean_complex the complex mean"
        )
    raise AttributeError(f"module 'diffrecon.mri' has no attribute {name!r}")
