"""Every linear operator of the package, built small, for the contract tests.

Each entry gives a factory ``(dtype) -> (operator, image shape)``; ``dtype`` is the image
dtype (float32/float64, or complex64/complex128 for operators that take complex images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from diffrecon.complex import complex_dtype
from diffrecon.mri import cartesian_mask, poisson_disc_mask
from diffrecon.operators import (
    GaussianBlur,
    Inpainting,
    LinearOperator,
    MotionBlur,
    MulticoilMRI,
    SigpyOperator,
    SinglecoilMRI,
    SoftSENSE,
    SuperResolution,
    random_motion_kernel,
)

H, W, COILS = 12, 10, 3


def _maps(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    m = torch.randn(COILS, H, W, dtype=complex_dtype(dtype), generator=g)
    return m / m.abs().pow(2).sum(0).sqrt()


def _column_mask() -> torch.Tensor:
    return cartesian_mask(W, 2.0, 0.2, seed=3).mask


def multicoil_columns(dtype):
    return MulticoilMRI(_maps(dtype), _column_mask()), (2, H, W)


def multicoil_odd_size(dtype):
    maps = _maps(dtype)[:, :11, :9]
    return MulticoilMRI(maps, cartesian_mask(9, 2.0, 0.25, seed=3).mask), (2, 11, 9)


def multicoil_poisson(dtype):
    return MulticoilMRI(_maps(dtype), poisson_disc_mask((H, W), 2.0, calib=(4, 4), seed=0)), (
        2,
        H,
        W,
    )


def soft_sense(dtype):
    g = torch.Generator().manual_seed(2)
    second = torch.randn(COILS, H, W, dtype=complex_dtype(dtype), generator=g)
    return SoftSENSE(torch.stack([_maps(dtype), 0.5 * second]), _column_mask()), (4, H, W)


def singlecoil(dtype):
    return SinglecoilMRI(_column_mask(), shape=(H, W)), (2, H, W)


def inpainting(dtype):
    g = torch.Generator().manual_seed(2)
    return Inpainting(torch.rand(H, W, generator=g) > 0.5), (3, H, W)


def super_resolution(dtype):
    return SuperResolution(2), (3, H, W)


def gaussian_blur(dtype):
    return GaussianBlur(kernel_size=5, sigma=1.2), (3, H, W)


def motion_blur(dtype):
    return MotionBlur(random_motion_kernel(7, 0.5, seed=4)), (2, H, W)


def sigpy_sense(dtype):
    import sigpy.mri

    maps = _maps(dtype).numpy()
    mask = np.broadcast_to(_column_mask().numpy(), (H, W)).astype(np.float64)
    return SigpyOperator(sigpy.mri.linop.Sense(maps, weights=mask)), (2, H, W)


def composed_blur_sr(dtype):
    return SuperResolution(2) @ GaussianBlur(5, 1.0), (1, H, W)


def composed_mri_inpaint(dtype):
    return MulticoilMRI(_maps(dtype), _column_mask()) @ Inpainting(
        torch.ones(H, W, dtype=torch.bool).tril()
    ), (2, H, W)


def adjoint_of_sr(dtype):
    return SuperResolution(2).H, (3, H // 2, W // 2)


REGISTRY: dict[str, Callable[[torch.dtype], tuple[LinearOperator, tuple[int, ...]]]] = {
    "MulticoilMRI-columns": multicoil_columns,
    "MulticoilMRI-poisson": multicoil_poisson,
    "MulticoilMRI-odd": multicoil_odd_size,
    "SoftSENSE-columns": soft_sense,
    "SinglecoilMRI": singlecoil,
    "Inpainting": inpainting,
    "SuperResolution": super_resolution,
    "GaussianBlur": gaussian_blur,
    "MotionBlur": motion_blur,
    "SigpyOperator-Sense": sigpy_sense,
    "SuperResolution@GaussianBlur": composed_blur_sr,
    "MulticoilMRI@Inpainting": composed_mri_inpaint,
    "SuperResolution.H": adjoint_of_sr,
}

# Operators on real (B, C, H, W) images that also accept complex images.
TAKES_COMPLEX_IMAGES = {
    "Inpainting",
    "SuperResolution",
    "GaussianBlur",
    "MotionBlur",
    "SuperResolution@GaussianBlur",
    "SuperResolution.H",
}
