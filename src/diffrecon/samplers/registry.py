"""Samplers by name, with presets as plain dicts (a preset is just keyword arguments).

Each preset gives the annealing/timestep schedule (``steps``, ``sigma_min``, ``sigma_max``,
``rho``) and the sampler's own hyper-parameters; anything can be overridden by keyword.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffrecon.samplers.cpigdm import cpigdm
from diffrecon.samplers.daps import daps
from diffrecon.samplers.dps import dps
from diffrecon.samplers.pigdm import pigdm
from diffrecon.samplers.stsl import stsl
from diffrecon.samplers.zaps import zaps

SAMPLERS: dict[str, Callable[..., Any]] = {
    "daps": daps,
    "dps": dps,
    "pigdm": pigdm,
    "cpigdm": cpigdm,
    "zaps": zaps,
    "stsl": stsl,
}

# Schedule keys, consumed by api.reconstruct to build `sigmas`; the rest go to the sampler.
# spacing: "karras" (default) or a path name ("vp", "rf"): uniform in that path's time.
SCHEDULE_KEYS = ("steps", "sigma_min", "sigma_max", "rho", "spacing")

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
    # ΠGDM with 20 steps: the baseline of C-ΠGDM's few-step claim.
    "pigdm-20": {
        "sampler": "pigdm",
        "steps": 20,
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "rho": 7.0,
        "eta": 1.0,
        "guidance_scale": 1.0,
    },
    # C-ΠGDM with the paper's few-step setting: 5 steps uniform in VP time, here from
    # sigma 1.0 (t = 0.26) to sigma 0.01 (t = 0.001). w = 32 is a stable middle of the
    # range tuned on a held-out slice for 4x SR (bench/few_step.py: 64 best, 128 diverges).
    "cpigdm-5": {
        "sampler": "cpigdm",
        "spacing": "vp",
        "steps": 5,
        "sigma_min": 0.01,
        "sigma_max": 1.0,
        "w": 32.0,
        "lam": 0.0,
    },
    # C-ΠGFM: the same on the rectified-flow path (any denoiser, or a FlowMatchingDenoiser).
    "cpigfm-5": {
        "sampler": "cpigdm",
        "path": "rf",
        "spacing": "rf",
        "steps": 5,
        "sigma_min": 0.01,
        "sigma_max": 1.0,
        "w": 32.0,
        "lam": 0.0,
    },
    # ZAPS: 20 irregular (Karras) steps from sigma 5, weights and Hessian diagonals fitted
    # for 10 epochs (settings of bench/few_step.py for multicoil MRI; 4x SR preferred zeta 5).
    "zaps-20": {
        "sampler": "zaps",
        "steps": 20,
        "sigma_min": 0.01,
        "sigma_max": 5.0,
        "rho": 7.0,
        "zeta": 1.0,
        "epochs": 10,
        "lr": 0.2,
    },
    # STSL: 20 levels from the diffused pseudo-inverse at sigma 1, one inner step, 1 probe
    # (lr tuned for multicoil MRI with the default prior; 4x SR preferred 10).
    "stsl-20": {
        "sampler": "stsl",
        "steps": 20,
        "sigma_min": 0.01,
        "sigma_max": 1.0,
        "rho": 7.0,
        "lr": 3.0,
        "eta": 0.05,
        "inner_steps": 1,
        "probes": 1,
    },
}

DEFAULT_PRESET = {
    "daps": "daps-1k",
    "dps": "dps-1k",
    "pigdm": "pigdm-100",
    "cpigdm": "cpigdm-5",
    "zaps": "zaps-20",
    "stsl": "stsl-20",
}


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
