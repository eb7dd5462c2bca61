"""Posterior samplers: plain functions of (denoiser, operator, y, sigmas, generator)."""

from diffrecon.samplers.common import StepState, ancestral_step, randn_like
from diffrecon.samplers.cpigdm import cpigdm
from diffrecon.samplers.daps import daps, ode_x0
from diffrecon.samplers.dps import dps
from diffrecon.samplers.likelihood import GaussianLikelihood, misfit, misfit_grad
from diffrecon.samplers.paths import uniform_time_sigmas
from diffrecon.samplers.pigdm import pigdm
from diffrecon.samplers.registry import PRESETS, SAMPLERS, resolve
from diffrecon.samplers.schedules import clamp_sigmas, geometric_sigmas, karras_sigmas
from diffrecon.samplers.stsl import stsl
from diffrecon.samplers.zaps import zaps

__all__ = [
    "PRESETS",
    "SAMPLERS",
    "GaussianLikelihood",
    "StepState",
    "ancestral_step",
    "clamp_sigmas",
    "cpigdm",
    "daps",
    "dps",
    "geometric_sigmas",
    "karras_sigmas",
    "misfit",
    "misfit_grad",
    "ode_x0",
    "pigdm",
    "randn_like",
    "resolve",
    "stsl",
    "uniform_time_sigmas",
    "zaps",
]
