"""Priors as denoisers ``D(x, sigma) = E[x0 | x0 + sigma n]``: exact and learned.

``load(name_or_path)`` gives a shipped prior (``available()``) or a bundle folder;
``load_checkpoint`` a published EDM/InverseBench or guided-diffusion checkpoint;
``open_prior`` any of these by name; ``from_module``, ``load_monai_ddpm`` and
``load_diffusers_unet`` wrap networks from elsewhere.
"""

from diffrecon.priors.base import Denoiser, SigmaRange, denoiser_range, sigma_batch
from diffrecon.priors.bundles import available, load, save_bundle
from diffrecon.priors.checkpoints import load_checkpoint, open_prior
from diffrecon.priors.gaussian import GaussianPrior
from diffrecon.priors.gmm import GMMPrior
from diffrecon.priors.importers import load_diffusers_unet, load_monai_ddpm
from diffrecon.priors.learned import LearnedPrior, PriorLoadError, from_module
from diffrecon.priors.wrappers import (
    EDMDenoiser,
    FlowMatchingDenoiser,
    ScaledDenoiser,
    SupportDenoiser,
    VPDenoiser,
    X0Denoiser,
    ddpm_alphas_cumprod,
)

__all__ = [
    "Denoiser",
    "EDMDenoiser",
    "FlowMatchingDenoiser",
    "GMMPrior",
    "GaussianPrior",
    "LearnedPrior",
    "PriorLoadError",
    "ScaledDenoiser",
    "SigmaRange",
    "SupportDenoiser",
    "VPDenoiser",
    "X0Denoiser",
    "available",
    "ddpm_alphas_cumprod",
    "denoiser_range",
    "from_module",
    "load",
    "load_checkpoint",
    "load_diffusers_unet",
    "load_monai_ddpm",
    "open_prior",
    "save_bundle",
    "sigma_batch",
]
