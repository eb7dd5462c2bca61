"""Samplers by name, presets as plain dicts, and what each sampler can run on.

A preset is keyword arguments: the schedule (``steps``, ``sigma_min``, ``sigma_max``, ``rho``,
``spacing``: a :class:`~diffrecon.samplers.schedules.Schedule`), the sampler's own
hyper-parameters, and ``noise_floor`` (the smallest likelihood noise level the k-space
pipeline lets the sampler see). :func:`resolve` turns a name plus overrides into a
:class:`Preset` value and refuses unknown settings; :meth:`Preset.check` refuses a problem
the sampler cannot run (a nonlinear operator for ΠGDM, noisy data without ``A A^H = c I``
for C-ΠGDM) before any work starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diffrecon.operators.base import Operator
from diffrecon.samplers.cpigdm import cpigdm
from diffrecon.samplers.daps import daps
from diffrecon.samplers.dps import dps
from diffrecon.samplers.pigdm import pigdm
from diffrecon.samplers.schedules import Schedule
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

# Arguments every sampler takes from reconstruct(), never from a preset.
CALL_ARGS = ("noise_std", "generator", "shape", "callback")
NOISE_FLOOR = 0.01  # in units of the scaled image (99.5th percentile magnitude = 1)


@dataclass(frozen=True)
class Capabilities:
    """What a sampler can run on, declared once per sampler function."""

    linear_only: bool = False  # needs a linear operator (pseudo-inverse guidance)
    uses_noise_std: bool = True  # the update reads noise_std (DPS-like steps absorb it)
    noisy_needs_scalar_gram: bool = False  # noise_std > 0 needs A A^H = c I
    needs_exact_pinv: bool = False  # P = A^+ A must be an exact projector (closed form)
    # True: its draws aim at the posterior (spread is meant as uncertainty); False: a point
    # estimator whose randomness comes from its start (C-ΠGDM's ODE, STSL's descent)
    posterior: bool = True

    def problem(
        self, *, linear: bool, scalar_gram: bool, noisy: bool, exact_pinv: bool = True
    ) -> str | None:
        """Why a problem of this kind cannot run, or ``None`` if it can."""
        if self.linear_only and not linear:
            return "needs a linear operator"
        if self.needs_exact_pinv and not exact_pinv:
            return (
                "needs an exact pseudo-inverse (its projection P = A^+ A must be idempotent); "
                "this operator has only an iterative one (on 8-coil SENSE, ||P^2 x - P x|| / "
                "||P x|| = 7e-2), so the sampler would collapse onto the early-stopped "
                "least-squares solution: use daps-mri"
            )
        if self.noisy_needs_scalar_gram and noisy and not scalar_gram:
            return (
                "needs A A^H = c I for noisy data (masks, pooling, single-coil MRI); multicoil "
                "SENSE has no such form"
            )
        return None


CAPABILITIES: dict[str, Capabilities] = {
    "daps": Capabilities(),
    "dps": Capabilities(uses_noise_std=False),
    "pigdm": Capabilities(linear_only=True),
    "cpigdm": Capabilities(
        linear_only=True, noisy_needs_scalar_gram=True, needs_exact_pinv=True, posterior=False
    ),
    "zaps": Capabilities(),  # noise_std stops the fitting (discrepancy principle)
    "stsl": Capabilities(uses_noise_std=False, posterior=False),
}


@dataclass(frozen=True)
class Preset:
    """A resolved sampler setting: the function, its schedule and its own keyword arguments."""

    name: str
    sampler: str
    schedule: Schedule
    hyper: Mapping[str, Any] = field(default_factory=dict)
    noise_floor: float = NOISE_FLOOR

    @property
    def fn(self) -> Callable[..., Any]:
        return SAMPLERS[self.sampler]

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES[self.sampler]

    def check(self, operator: Operator, noise_std: float) -> None:
        """Refuse an operator / noise level this sampler cannot run, naming why."""
        scalar_gram = operator.is_linear and (
            operator._normal_projection_scale() is not None  # type: ignore[attr-defined]
        )
        exact = operator.is_linear and operator.has_exact_pinv  # type: ignore[attr-defined]
        self.check_kind(
            linear=operator.is_linear,
            scalar_gram=scalar_gram,
            noisy=noise_std > 0,
            exact_pinv=exact,
        )

    def check_kind(
        self, *, linear: bool, scalar_gram: bool, noisy: bool, exact_pinv: bool = True
    ) -> None:
        """:meth:`check` for a problem described by its properties (before it is built)."""
        why = self.capabilities.problem(
            linear=linear, scalar_gram=scalar_gram, noisy=noisy, exact_pinv=exact_pinv
        )
        if why is not None:
            raise ValueError(f"sampler {self.name!r} ({self.sampler}) {why}")

    def settings(self) -> dict[str, Any]:
        """Schedule and hyper-parameters as one flat dict (what a result file records)."""
        return {**self.schedule.as_dict(), **self.hyper}


# DAPS-1K of the paper: 200 annealing levels x 5 ODE steps (1000 NFE), 100 Langevin steps;
# lr is left to DAPS's default tau^2 (the paper's 1e-4 at its tau = 0.01). The paper's
# algorithm as published: not calibrated (std 1.3x the exact one on the base exact case).
_DAPS_1K: dict[str, Any] = {
    "sampler": "daps",
    "steps": 200,
    "sigma_min": 0.1,
    "sigma_max": 100.0,
    "rho": 7.0,
    "ode_steps": 5,
    "langevin_steps": 100,
    "lr_min_ratio": 0.01,
}
# DPS as its reference code runs it: 1000 ancestral steps of the DDPM linear-beta schedule
# (uniform in VP time, sigma about 157 down to 0.01; 26% of the steps below sigma 1), zeta
# per task from its configs: 1.0 for phase retrieval (and our MRI default), 0.3 for
# super-resolution and deblurring, 0.5 for inpainting. Levels above the prior's trained
# range are clamped to it.
_DPS_1K: dict[str, Any] = {
    "sampler": "dps",
    "spacing": "vp",
    # 1000 levels (999 intervals) from sigma 157 to 0.01, then dps() takes the final step to
    # the noise-free estimate: 1000 network calls, the reference's t = 999 ... 0
    "steps": 999,
    "sigma_min": 0.01,
    "sigma_max": 157.0,
    "eta": 1.0,
}

_DAPS_MRI_100: dict[str, Any] = {
    "sampler": "daps",
    "steps": 100,
    "sigma_min_data": 0.04,
    "sigma_max": 80.0,
    "rho": 7.0,
    "ode_steps": 1,
    "data_step": "auto",
    "r_t": "white",
    "cg_iters": 50,
    "langevin_steps": 50,
    "lr_min_ratio": 0.1,
}
# Above a few sigma_data the exact data step (r_t "white": r_t close to sigma_data) draws
# from the posterior under a white prior whatever the level, so the levels between 80 and
# 4 sd only redraw that; 30 levels from 4 sd keep the level density below it.
_DAPS_MRI = {
    **{k: v for k, v in _DAPS_MRI_100.items() if k != "sigma_max"},
    "steps": 30,
    "sigma_max_data": 4.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    "daps-1k": _DAPS_1K,
    # DAPS-1K with the reference code's per-task Langevin step (its configs, at tau 0.01):
    # super-resolution 1e-4, inpainting and phase retrieval 5e-5, HDR 2e-5.
    **{
        f"daps-1k-{task}": {**_DAPS_1K, "lr": lr}
        for task, lr in (("sr", 1e-4), ("inpaint", 5e-5), ("pr", 5e-5), ("hdr", 2e-5))
    },
    # The calibrated DAPS (docs/uncertainty.md): for linear operators each level draws
    # exactly from N(x0_hat, r_t^2 I) p(y | x0) (perturb-and-solve, no Langevin bias), from a
    # Tweedie centre (one denoiser call: NFE = steps), with r_t^2 = s^2 sd^2 / (s^2 + sd^2)
    # and a final level of 0.04 sd (sd: the prior's sigma_data; 0.02 for the default prior),
    # 30 levels from 4 sd. On every case of the exact family (diffrecon.testing, 256 draws):
    # std ratios 1.03-1.05 and zRMS <= 0.27 (100 levels from sigma 80: 1.02-1.04, 0.29;
    # 25 levels, or a first level of 1 sd, miss zRMS < 0.3 on some). A fixed final level
    # fails either faint images (0.02: std 1.7x at amplitude 0.1) or the data fit on the real
    # 8-coil brain (0.002: data residual 1.42 against 1.00).
    # Nonlinear operators fall back to Langevin steps (data_step "auto"), measured only with
    # the daps-1k presets: use those there.
    "daps-mri": _DAPS_MRI,
    # daps-mri as it was before issue 24: the same, with 100 levels from sigma 80 (kept by
    # name so that benchmarks can print the two side by side).
    "daps-mri-100": _DAPS_MRI_100,
    # daps-mri with half the levels (15) and 20 conjugate-gradient iterations where a solve
    # needs them (2-D masks): twice as fast, less exact (exact family: std ratios 1.03-1.09,
    # zRMS up to 0.37, above the 0.3 the calibrated presets meet).
    "daps-fast": {**_DAPS_MRI, "steps": 15, "cg_iters": 20},
    # DPS as its reference code runs it (see _DPS_1K), zeta per task
    **{
        name: {**_DPS_1K, "zeta": zeta}
        for name, zeta in (("dps-1k", 1.0), ("dps-1k-sr", 0.3), ("dps-1k-inpaint", 0.5))
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
    # range tuned on a held-out slice for 4x SR (bench/few_step.py: 64 best; the divergence
    # seen at 128 then was float32 rounding in the projection, since fixed).
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
    # C-ΠGDM / C-ΠGFM with the reference code's settings (mandt-lab/c-pigdm): 4x SR w 15,
    # lambda 0, from VP time 0.4 (sigma 2.03) in 5 uniform steps to VP time 1e-3 (sigma
    # 0.0105); noisy problems w 1, lambda 0; flows w 20, lambda 0.2 from flow time 0.6
    # (sigma 1.5) in 10 steps (bench/cpigdm_claim.py measures them against ours).
    "cpigdm-ref-sr": {
        "sampler": "cpigdm",
        "spacing": "vp",
        "steps": 5,
        "sigma_min": 0.0105,
        "sigma_max": 2.03,
        "w": 15.0,
        "lam": 0.0,
    },
    # The reference's flow time runs from noise (0) to data (1) and ours the other way
    # (issue 27): its start skip_t 0.6 is our rf time 0.4, sigma (1 - 0.6) / 0.6 = 2/3 (it was
    # 1.5 here before), and its B x_bar dt with dt > 0 is our lam x_bar dt with dt < 0, so its
    # lambda 0.2 is our lam -0.2 (A_t then agrees up to a constant factor). That start is
    # the reference's run.sh setting (its compression task): on 70% inpainting it fails
    # (8.5 dB against 15.8 from the misread 1.5; bench/cpigdm_claim.py, docs/samplers.md).
    "cpigfm-ref": {
        "sampler": "cpigdm",
        "path": "rf",
        "spacing": "rf",
        "steps": 10,
        "sigma_min": 0.001,
        "sigma_max": 2.0 / 3.0,
        "w": 20.0,
        "lam": -0.2,
    },
    # ZAPS: 20 irregular (Karras) steps from sigma 5, weights and Hessian diagonals fitted
    # for 10 epochs (settings of bench/few_step.py for multicoil MRI; 4x SR preferred zeta 5).
    # Not from pure noise as the paper: from sigma 80 it diverges on every exact case (RMS z
    # 9.7 to 779; zaps-30 turns non-finite at its first step; docs/samplers.md, issue 27).
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

# ZAPS as the paper specifies it where it does: 30 steps, the squared misfit, and the fitting
# stopped by the discrepancy principle at noise_std (zaps.py docstring: on the exact posterior
# neither helped; the rest as zaps-20).
PRESETS["zaps-30"] = {**PRESETS["zaps-20"], "steps": 30, "squared": True, "discrepancy": 1.0}
# The reference's noisy sampler (NoisyConjugatePGDMSampler, ncpgdm.yaml: w 1, lam 0); at
# those settings its sigma_y correction vanishes (cpigdm.py), so it runs as if noiseless.
PRESETS["cpigdm-ref-noisy"] = {**PRESETS["cpigdm-ref-sr"], "w": 1.0, "noise_model": "reference"}
# ΠGDM as RED-diff runs it (algos/pgdm.py: guidance J^T H^+ (y - H x0), no r_t^-2, no noise
# term, started from H^+ y): the baseline of C-ΠGDM's "5 steps match ΠGDM at 20" claim, which
# is about noiseless problems.
PRESETS["pigdm-20-reddiff"] = {**PRESETS["pigdm-20"], "update": "reddiff"}
PRESETS["stsl-5x20"] = {
    # STSL with the paper's K = 5 inner steps, eta = 0.02, squared misfit and start from the
    # adjoint A^H y; lr 0.3 chosen on the exact Gaussian MRI posterior (stsl.py docstring:
    # zRMS 0.46 against stsl-20's 0.65; lr 1 diverges). NFE 220. The adjoint start (issue
    # 27; 32 draws, five exact cases): mean zRMS 0.69 against 0.90 from the pseudo-inverse
    # (12coils-6x 0.76 vs 1.85, base 0.60 vs 0.48), the same std ratios.
    **PRESETS["stsl-20"],
    "lr": 0.3,
    "eta": 0.02,
    "inner_steps": 5,
    "squared": True,
    "start": "adjoint",
}

DEFAULT_PRESET = {
    "daps": "daps-mri",  # the calibrated DAPS; the paper's algorithm and settings: "daps-1k"
    "dps": "dps-1k",
    "pigdm": "pigdm-100",
    "cpigdm": "cpigdm-5",
    "zaps": "zaps-20",
    "stsl": "stsl-5x20",  # the paper's settings: ahead of stsl-20 on the exact case, SR, 4x MRI
}
MRI_DEFAULT = "daps-mri"  # the CLI's, the demo's and the napari widget's first choice
# What the CLI and the napari widget offer for multicoil MRI: the presets that, at their
# default settings, were at least as good as zero-filled (PSNR and SSIM of the posterior
# mean) on every case of the real-anatomy benchmark (bench/real_anatomy.py,
# docs/benchmarks.md). Other presets still run when named, with a warning.
MRI_VALIDATED = ("daps-mri",)


def _hyper_names(fn: Callable[..., Any]) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind == p.KEYWORD_ONLY} - set(CALL_ARGS)


def resolve(name: str, **overrides: Any) -> Preset:
    """The :class:`Preset` for a sampler or preset name, with ``overrides`` applied.

    Unknown names and settings the sampler does not take are refused here, before any work.
    """
    key = str(name).lower()
    if key in SAMPLERS:
        key = DEFAULT_PRESET[key]
    if key not in PRESETS:
        known = sorted(set(SAMPLERS) | set(PRESETS))
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(known)}")
    preset = dict(PRESETS[key])
    for end in ("min", "max"):  # an explicit level overrides the preset's relative one
        if f"sigma_{end}" in overrides and f"sigma_{end}_data" not in overrides:
            preset.pop(f"sigma_{end}_data", None)
    settings = {**preset, **overrides}
    sampler = settings.pop("sampler")
    floor = float(settings.pop("noise_floor", NOISE_FLOOR))
    if not floor >= 0:
        raise ValueError(f"noise_floor must be >= 0, got {floor}")
    schedule = Schedule(**{k: settings.pop(k) for k in Schedule.keys() if k in settings})
    unknown = set(settings) - _hyper_names(SAMPLERS[sampler])
    if unknown:
        raise ValueError(
            f"{', '.join(sorted(unknown))}: not a setting of sampler {sampler!r} (it takes "
            f"{', '.join(sorted(_hyper_names(SAMPLERS[sampler]) | set(Schedule.keys())))})"
        )
    return Preset(
        name=str(name), sampler=sampler, schedule=schedule, hyper=settings, noise_floor=floor
    )


def warm_tail(preset: Preset, below_data: float) -> Preset:
    """``preset`` started warm: the tail of its schedule from the first level at or below
    ``below_data`` times ``sigma_data`` (:meth:`~diffrecon.samplers.schedules.Schedule.tail`),
    from the white-prior posterior mean plus that level's noise (DAPS's ``start="white"``),
    which is what its higher levels converge to. On the widened exact family a start at
    1.5 ``sigma_data`` keeps 51 of 60 cases within the calibrated presets' bounds against
    53 from pure noise (``docs/benchmarks.md``). Presets it does not apply to (not DAPS,
    a schedule not relative to ``sigma_data``, Langevin data steps) are returned as they
    are."""
    sched, hyper = preset.schedule, preset.hyper
    applies = preset.sampler == "daps" and sched.spacing == "karras"
    applies = applies and None not in (sched.sigma_min_data, sched.sigma_max_data)
    applies = applies and hyper.get("data_step") in ("exact", "auto")
    if not applies or hyper.get("start", "noise") != "noise":
        return preset
    schedule = sched.tail(below_data)
    if schedule == sched:
        return preset
    return Preset(
        name=f"{preset.name} (warm from {schedule.sigma_max_data:.3g} sigma_data)",
        sampler=preset.sampler,
        schedule=schedule,
        hyper={**hyper, "start": "white"},
        noise_floor=preset.noise_floor,
    )


def steps_overrides(steps: int | None) -> dict[str, Any]:
    """The override a ``--steps`` value makes: none for ``None`` (the preset's schedule),
    else the number of noise levels (checked by :func:`resolve`)."""
    return {} if steps is None else {"steps": steps}


def as_preset(sampler: str | Preset, overrides: Mapping[str, Any]) -> Preset:
    """A name (resolved with ``overrides``) or an already resolved :class:`Preset`."""
    if isinstance(sampler, Preset):
        if overrides:
            raise ValueError(
                f"settings {', '.join(sorted(overrides))} given beside a resolved preset: "
                "pass them to resolve()"
            )
        return sampler
    return resolve(sampler, **overrides)


# Presets kept by name for the benchmarks that reproduce a paper's comparison, but no longer
# offered: on the exact posteriors (diffrecon.testing, 32 draws, 2-core CPU, issue 27) they
# do not sample the posterior, and no setting of theirs was found that does.
WITHDRAWN: dict[str, str] = {
    "pigdm-20": "ΠGDM with 20 levels diverges on the exact posteriors (RMS z 2.6 to 140, "
    "std ratio 8 to 114; pigdm-100: RMS z 0.23 to 0.42, std ratio 0.87 to 0.97), the "
    "few-step instability C-ΠGDM was made for: use pigdm-100, or cpigdm-5 where it applies",
    "pigdm-20-reddiff": "RED-diff's ΠGDM (no noise term) collapses towards a point on the "
    "exact posteriors (std ratio 0.0014 to 0.79, RMS z up to 30): the baseline of C-ΠGDM's "
    "noiseless few-step claim, not a posterior sampler",
}


def offered(*, linear: bool, scalar_gram: bool, noisy: bool, exact_pinv: bool = True) -> list[str]:
    """Preset names that can run a problem of this kind (not :data:`WITHDRAWN`), the MRI
    default first."""
    ok = [
        name
        for name, p in PRESETS.items()
        if name not in WITHDRAWN
        and CAPABILITIES[p["sampler"]].problem(
            linear=linear, scalar_gram=scalar_gram, noisy=noisy, exact_pinv=exact_pinv
        )
        is None
    ]
    return sorted(ok, key=lambda n: n != MRI_DEFAULT)


def offered_for_mri() -> list[str]:
    """The presets offered for multicoil MRI: runnable there and validated on real anatomy."""
    runnable = offered(linear=True, scalar_gram=False, noisy=True, exact_pinv=False)
    return [name for name in runnable if name in MRI_VALIDATED]


def mri_warning(sampler: str | Preset) -> str | None:
    """Why a sampler or preset is not among the MRI offer, or None when it is."""
    name = sampler.name if isinstance(sampler, Preset) else DEFAULT_PRESET.get(sampler, sampler)
    if name in WITHDRAWN:
        return f"{name!r} is withdrawn: {WITHDRAWN[name]}"
    if name in MRI_VALIDATED:
        return None
    return (
        f"{name!r} is not validated for MRI: on the real-anatomy benchmark it fell below "
        f"zero-filled or was not measured (docs/benchmarks.md); validated: "
        f"{', '.join(MRI_VALIDATED)}"
    )
