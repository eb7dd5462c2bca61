"""MRI tooling around the forward models: masks, coil maps, preprocessing, a classical
baseline, transforms; and ``reconstruct``, numpy k-space in, posterior summaries out
(:func:`diffrecon.arrays.reconstruct`, imported on first use: it sits above the samplers).
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
    "reconstruct",
    "remove_readout_oversampling",
    "rss",
]


def __getattr__(name: str) -> Any:
    if name == "reconstruct":  # lazily: diffrecon.arrays imports the pipeline, which imports us
        from diffrecon.arrays import reconstruct

        return reconstruct
    raise AttributeError(f"module 'diffrecon.mri' has no attribute {name!r}")
