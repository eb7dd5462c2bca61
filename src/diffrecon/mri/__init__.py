"""MRI tooling around the forward models: masks, coil maps, a classical baseline, transforms."""

from diffrecon.mri.baseline import l1_wavelet_recon
from diffrecon.mri.coils import espirit_maps
from diffrecon.mri.masks import CartesianMask, cartesian_mask, fastmri_seed, poisson_disc_mask
from diffrecon.mri.transforms import center_crop, rss

__all__ = [
    "CartesianMask",
    "cartesian_mask",
    "center_crop",
    "espirit_maps",
    "fastmri_seed",
    "l1_wavelet_recon",
    "poisson_disc_mask",
    "rss",
]
