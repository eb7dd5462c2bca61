"""Forward models ``y = A(x)``: MRI, phase retrieval, HDR and linear image degradations."""

from diffrecon.operators.base import Adjoint, Composed, ComposedLinear, LinearOperator, Operator
from diffrecon.operators.fft import fft2c, ifft2c
from diffrecon.operators.imaging import (
    Blur,
    GaussianBlur,
    Inpainting,
    MotionBlur,
    SuperResolution,
    gaussian_kernel,
    random_motion_kernel,
)
from diffrecon.operators.mri import MulticoilMRI, SinglecoilMRI, SoftSENSE
from diffrecon.operators.nonlinear import HDR, PhaseRetrieval
from diffrecon.operators.sigpy import SigpyOperator

__all__ = [
    "HDR",
    "Adjoint",
    "Blur",
    "Composed",
    "ComposedLinear",
    "GaussianBlur",
    "Inpainting",
    "LinearOperator",
    "MotionBlur",
    "MulticoilMRI",
    "SoftSENSE",
    "Operator",
    "PhaseRetrieval",
    "SigpyOperator",
    "SinglecoilMRI",
    "SuperResolution",
    "fft2c",
    "gaussian_kernel",
    "ifft2c",
    "random_motion_kernel",
]
