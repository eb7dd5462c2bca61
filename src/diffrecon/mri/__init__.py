"""MRI tooling around the forward models: masks, coil maps, preprocessing, a classical
baseline, transforms."""

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
