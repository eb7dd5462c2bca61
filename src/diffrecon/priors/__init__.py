"""Priors as denoisers ``D(x, sigma) = E[x0 | x0 + sigma n]``: exact and learned."""

from diffrecon.priors.base import Denoiser, SigmaRange, denoiser_range, sigma_batch
from diffrecon.priors.gaussian import GaussianPrior
from diffrecon.priors.gmm import GMMPrior
from diffrecon.priors.wrappers import (
    EDMDenoiser,
    FlowMatchingDenoiser,
    ScaledDenoiser,
    VPDenoiser,
    ddpm_alphas_cumprod,
)

__all__ = [
    "Denoiser",
    "EDMDenoiser",
    "FlowMatchingDenoiser",
    "GMMPrior",
    "GaussianPrior",
    "ScaledDenoiser",
    "SigmaRange",
    "VPDenoiser",
    "ddpm_alphas_cumprod",
    "denoiser_range",
    "sigma_batch",
]
