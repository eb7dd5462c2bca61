"""Samplers by name, with presets as plain dicts (a preset is just keyword arguments).

Each preset gives the annealing/timestep schedule (``steps``, ``sigma_min``, ``sigma_max``,
``rho``) and the sampler's own hyper-parameters; anything can be overridden by keyword.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffrecon.samplers.daps import daps
from diffrecon.samplers.dps import dps
from diffrecon.samplers.pigdm import pigdm

SAMPLERS: dict[str, Callable[..., Any]] = {"daps": daps, "dps": dps, "pigdm": pigdm}

# Schedule keys, consumed by api.reconstruct to build `sigmas`; the rest go to the sampler.
SCHEDULE_KEYS = ("steps", "sigma_min", "sigma_max", "rho")

PRESETS: dict[str, dict[str, Any]] = {
    # DAPS-1K of the paper: 200 annealing levels x 5 ODE steps (1000 NFE), 100 Langevin steps;
    # lr is left to DAPS's default tau^2 (the paper's 1e-4 at its tau = 0.01).
    "daps-1k": {
        "sampler": "daps",
        "steps": 200,
        "sigma_min": 0.1,
        "sigma_max": 100.0,
        "rho": 7.0,
        "ode_steps": 5,
        "langevin_steps": 100,
        "lr_min_ratio": 0.01,
    },
    # A quick setting for CPU previews: 50 levels x 2 ODE steps (100 NFE).
    "daps-fast": {
        "sampler": "daps",
        "steps": 50,
        "sigma_min": 0.1,
        "sigma_max": 100.0,
        "rho": 7.0,
        "ode_steps": 2,
        "langevin_steps": 50,
        "lr_min_ratio": 0.01,
    },
    # For multicoil MRI with the default prior (tuned on held-out simulated slices, see
    # docs/priors.md): a lower final level and a slower step decay than daps-fast.
    "daps-mri": {
        "sampler": "daps",
        "steps": 50,
        "sigma_min": 0.02,
        "sigma_max": 80.0,
        "rho": 7.0,
        "ode_steps": 2,
        "langevin_steps": 50,
        "lr_min_ratio": 0.1,
    },
    # DPS with the paper's 1000 steps (ancestral), zeta of its FFHQ/ImageNet configs.
    "dps-1k": {
        "sampler": "dps",
        "steps": 1000,
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "rho": 7.0,
        "zeta": 1.0,
        "eta": 1.0,
    },
    # ΠGDM with 100 DDIM steps, eta = 1 as in the paper's experiments.
    "pigdm-100": {
        "sampler": "pigdm",
        "steps": 100,
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "rho": 7.0,
        "eta": 1.0,
        "guidance_scale": 1.0,
    },
}

DEFAULT_PRESET = {"daps": "daps-1k", "dps": "dps-1k", "pigdm": "pigdm-100"}


def resolve(name: str, **overrides: Any) -> tuple[Callable[..., Any], dict[str, Any]]:
    """``(sampler function, settings)`` for a sampler or preset name plus overrides."""
    key = name.lower()
    if key in SAMPLERS:
        key = DEFAULT_PRESET[key]
    if key not in PRESETS:
        known = sorted(set(SAMPLERS) | set(PRESETS))
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(known)}")
    settings = {**PRESETS[key], **overrides}
    return SAMPLERS[settings.pop("sampler")], settings
