"""Test-time adaptation: fit low-rank adapters of a learned prior to one measurement.

A prior trained on other anatomy invents its own structure where the data are weak (8x MRI).
Following steerable conditional diffusion (Barbano, Denker et al., 2025) and the deep
diffusion image prior (Chung and Ye, 2024), the prior is adapted to the measurement it is
about to reconstruct: LoRA adapters (:mod:`diffrecon.priors.lora`) are trained along one
annealed DAPS-style trajectory, at each level a few Adam steps on the data misfit of the
network's estimate, then an exact data-consistency draw and re-noising to the next level.

The measured samples play two parts (three where asked). The trajectory sees the **fit**
samples and the loss scores the network's estimate on them,
``||A D_theta(x_t, sigma) - y||^2 / (2 tau^2 m)`` (plus an optional total-variation term), as
in the references. The loss may instead score samples the trajectory never saw (pass
another operator and data as the loss samples: the self-supervised split of SSDU, Yaman et
al. 2020); on the shoulder-8x bench case that lost 3 dB to the unadapted prior where the
shared fit samples gained 4, so the job uses the fit samples for both. Nothing here sees
the truth. The **held-out** samples decide how far it goes: a fixed validation probe (the
starting draw noised to three of the trajectory's levels with fixed noise) is denoised after
each level and its estimates scored on the held-out samples, one validation curve. The
adapters of the best-scoring level are kept; the adaptation stops after ``patience`` levels
without a better score, and is refused (the base prior returned) when no level beats the
base network's score. Every posterior draw then uses the adapted network (adapters merged
into the weights), so the cost is paid once per slice, not per draw; with ``scope="volume"``
once per volume (on its middle slice, as DDIP adapts once for a volume), the kept adapters
(:attr:`AdaptReport.adapters`) rebuilding the same network for every other slice
(:func:`apply_adapters`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from diffrecon.operators.base import LinearOperator
from diffrecon.priors.base import sigma_batch
from diffrecon.priors.learned import LearnedPrior
from diffrecon.priors.lora import (
    load_lora_state,
    lora_parameters,
    lora_state,
    merged_prior,
    with_lora,
)
from diffrecon.priors.wrappers import SupportDenoiser
from diffrecon.samplers.common import NoiseSource
from diffrecon.samplers.daps import gaussian_data_step

SCOPES = ("slice", "volume")


@dataclass(frozen=True)
class AdaptSettings:
    """How a prior is adapted. ``levels`` annealing levels from ``sigma_max_data`` to
    ``sigma_min_data`` times the prior's ``sigma_data`` (geometric), ``steps`` Adam steps of
    learning rate ``lr`` per level on adapters of rank ``rank``; ``tv``: weight of the mean
    absolute finite difference of the estimate (in units of ``sigma_data``) beside the
    noise-normalised data misfit; ``patience``: levels in a row without a better held-out
    score on the validation probe before the adaptation stops; ``scope``: adapt to each
    slice (``"slice"``) or once per volume, on its middle slice, for all of its slices
    (``"volume"``: one adaptation's cost instead of one per slice)."""

    rank: int = 4
    levels: int = 10
    steps: int = 3
    lr: float = 1e-3
    sigma_max_data: float = 1.0
    sigma_min_data: float = 0.05
    tv: float = 0.0
    patience: int = 2
    scope: str = "slice"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(
                f"adaptation scope must be one of {', '.join(SCOPES)}, got {self.scope!r}"
            )
        for name in ("rank", "levels", "steps", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"adaptation {name} must be a positive integer, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"adaptation lr must be > 0, got {self.lr}")
        if not self.tv >= 0:
            raise ValueError(f"adaptation tv must be >= 0, got {self.tv}")
        if not 0 < self.sigma_min_data <= self.sigma_max_data:
            raise ValueError(
                "adaptation levels need 0 < sigma_min_data <= sigma_max_data, got "
                f"{self.sigma_min_data} and {self.sigma_max_data}"
            )

    @classmethod
    def parse(cls, spec: str | dict[str, Any] | AdaptSettings | None) -> AdaptSettings:
        """Settings from ``"rank=8,steps=4"`` (CLI), a dict or settings; ``""``/None: defaults."""
        if isinstance(spec, AdaptSettings):
            return spec
        if isinstance(spec, dict):
            items = dict(spec)
        else:
            items = {}
            for part in (spec or "").split(","):
                if not part.strip():
                    continue
                key, eq, value = part.partition("=")
                if not eq:
                    raise ValueError(f"--adapt settings are key=value pairs, got {part!r}")
                items[key.strip()] = value.strip()
        known = {f: type(getattr(cls(), f)) for f in cls.__dataclass_fields__}
        unknown = sorted(set(items) - set(known))
        if unknown:
            raise ValueError(f"unknown adaptation setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**{k: known[k](v) for k, v in items.items()})
        except (TypeError, ValueError) as err:
            raise ValueError(f"bad adaptation settings {items}: {err}") from err


@dataclass
class AdaptReport:
    """What an adaptation did: the held-out score (noise units, 1 = as good as the noise
    allows) of the network's estimates on the fixed validation probe, for the base network
    and after each level, the level whose adapters were kept (the best score)."""

    accepted: bool
    reason: str
    levels_run: int
    kept_level: int | None
    sigmas: list[float] = field(default_factory=list)
    score_base: float | None = None  # the base network's held-out score on the probe
    score_adapted: float | None = None  # the kept adapters' (None: refused)
    scores: list[float] = field(default_factory=list)  # after each level
    loss_misfit: list[float] = field(default_factory=list)
    seconds: float = 0.0
    # the kept adapters' parameters (None: refused), to rebuild the network elsewhere
    adapters: list[torch.Tensor] | None = field(default=None, repr=False)


def _device_of(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def adaptation_levels(settings: AdaptSettings, sigma_data: float) -> list[float]:
    """The trajectory's levels, decreasing geometrically (then 0: the final draw)."""
    hi, lo = settings.sigma_max_data * sigma_data, settings.sigma_min_data * sigma_data
    n = settings.levels
    ratios = [i / (n - 1) for i in range(n)] if n > 1 else [0.0]
    return [hi * (lo / hi) ** t for t in ratios] + [0.0]


def _residual_score(
    op: LinearOperator, y: torch.Tensor, x: torch.Tensor, tau: float, count: int
) -> torch.Tensor:
    return (op(x) - y).abs().pow(2).sum() / (2 * tau**2 * max(count, 1))


def _tv(x: torch.Tensor) -> torch.Tensor:
    rows = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return rows + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def adapt_prior(
    prior: LearnedPrior,
    operator: LinearOperator,
    y: torch.Tensor,
    loss_operator: LinearOperator,
    y_loss: torch.Tensor,
    held_operator: LinearOperator,
    y_held: torch.Tensor,
    noise_std: float,
    settings: AdaptSettings | None = None,
    *,
    generator: torch.Generator | None = None,
    support: torch.Tensor | None = None,
) -> tuple[LearnedPrior, AdaptReport]:
    """Adapt ``prior`` to one measurement: the trajectory sees the fit samples ``y``
    (``(1, ...)``, ``operator``), the loss scores the samples ``y_loss`` (``loss_operator``:
    the fit samples again, or others), the held-out samples ``y_held`` (``held_operator``,
    disjoint from both) stop it.
    ``noise_std``: the likelihood's noise level per real component. Returns the prior to
    draw with (adapters merged, frozen; ``prior`` itself when the adaptation is refused) and
    its report."""
    s = settings or AdaptSettings()
    if not isinstance(prior, LearnedPrior):
        raise ValueError(
            f"adapting a prior needs a learned prior (a network), got {type(prior).__name__}"
        )
    if not noise_std > 0:
        raise ValueError(f"adapting a prior needs a noise level > 0, got {noise_std}")
    if not all(op.is_linear for op in (operator, loss_operator, held_operator)):
        raise ValueError("adapting a prior needs linear operators")
    t0 = time.perf_counter()
    y, y_loss, y_held = (v if v.shape[0] == 1 else v[:1] for v in (y, y_loss, y_held))
    dev = y.device
    init = torch.Generator().manual_seed(
        int(torch.randint(0, 2**62, (1,), generator=generator, device=_device_of(generator)))
    )
    adapted = with_lora(prior.to(dev), s.rank, generator=init)
    net = adapted.net
    den: Any = adapted if support is None else SupportDenoiser(adapted, support.to(dev))
    params = lora_parameters(net)
    opt = torch.optim.Adam(params, lr=s.lr)
    n_loss = int((y_loss != 0).sum())
    n_held = int((y_held != 0).sum())
    tau = float(noise_std)
    sd = float(prior.sigma_data)
    levels = adaptation_levels(s, sd)
    aty = operator.adjoint(y)
    x = torch.zeros_like(aty)
    noise = NoiseSource(generator, x)
    y_noise = NoiseSource(generator, torch.view_as_real(y) if y.is_complex() else y)

    def measurement_noise() -> torch.Tensor:
        e = y_noise()
        return torch.view_as_complex(e.contiguous()) if y.is_complex() else e

    def r_of(sigma: float) -> float:  # the spread of x0 given x_t under a white prior
        return sigma * sd / math.sqrt(sigma**2 + sd**2)

    # start: a data-consistent draw around zero at the first level's spread, then noised
    z = gaussian_data_step(operator, aty, x, r_of(levels[0]), tau, noise(), measurement_noise())
    x = z + levels[0] * noise()
    # the validation probe, fixed for the whole run so its scores form one curve: that draw
    # noised to a few levels of the trajectory (fixed noise), denoised, held-out scored
    probe_levels = sorted({levels[0], levels[(len(levels) - 1) // 2], levels[-2]}, reverse=True)
    probes = [(z + p * noise(), sigma_batch(p, z)) for p in probe_levels]

    def probe_score() -> float:
        r2 = sum(
            float(_residual_score(held_operator, y_held, den(xp, sp), tau, n_held))
            for xp, sp in probes
        )
        return math.sqrt(r2 / len(probes))

    report = AdaptReport(False, "", 0, None, sigmas=levels[:-1])
    with torch.no_grad():
        report.score_base = best = probe_score()
    kept: list[torch.Tensor] | None = None
    stale = 0
    for k, (sigma, sigma_next) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
        sb = sigma_batch(sigma, x)
        for _ in range(s.steps):
            est = den(x, sb)
            loss = _residual_score(loss_operator, y_loss, est, tau, n_loss)
            if s.tv > 0:
                loss = loss + s.tv * _tv(est) / sd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            est = den(x, sb)
            score = probe_score()
            loss_score = float(_residual_score(loss_operator, y_loss, est, tau, n_loss))
        report.levels_run = k + 1
        report.scores.append(score)
        report.loss_misfit.append(loss_score)
        if score < best:
            best, kept, report.kept_level, stale = score, lora_state(net), k, 0
        else:
            stale += 1
            if stale >= s.patience:
                report.reason = (
                    f"stopped at level {k}: the held-out score did not improve on "
                    f"{stale} levels in a row"
                )
                break
        with torch.no_grad():
            z = gaussian_data_step(
                operator, aty, est.detach(), r_of(sigma), tau, noise(), measurement_noise()
            )
            x = z + sigma_next * noise() if sigma_next > 0 else z
    report.seconds = time.perf_counter() - t0
    if kept is None:
        report.reason = (
            report.reason or "refused"
        ) + "; the adapted network never predicted the held-out samples better than the base"
        return prior, report
    report.score_adapted = best
    report.adapters = [t.detach().cpu() for t in kept]
    load_lora_state(net, kept)
    report.accepted = True
    report.reason = report.reason or f"ran all {report.levels_run} levels"
    report.reason += f"; kept the adapters of level {report.kept_level}"
    return merged_prior(adapted, name=f"{prior.name}+adapted"), report


def apply_adapters(prior: LearnedPrior, rank: int, adapters: list[torch.Tensor]) -> LearnedPrior:
    """``prior`` with the adapters an :func:`adapt_prior` run kept (``report.adapters``, its
    settings' ``rank``) merged into its network: the same adapted prior, rebuilt in another
    process or for another slice without adapting again."""
    if not isinstance(prior, LearnedPrior):
        raise ValueError(f"adapters need a learned prior (a network); got {type(prior).__name__}")
    dev = next(prior.net.parameters()).device
    # the initial adapters are overwritten: a fixed generator leaves torch's global one alone
    adapted = with_lora(prior, rank, generator=torch.Generator().manual_seed(0))
    params = lora_parameters(adapted.net)
    if len(params) != len(adapters) or any(
        p.shape != t.shape for p, t in zip(params, adapters, strict=False)
    ):
        raise ValueError(f"these adapters do not fit {prior.name} at rank {rank}")
    load_lora_state(adapted.net, [t.to(dev) for t in adapters])
    return merged_prior(adapted, name=f"{prior.name}+adapted")


@dataclass(frozen=True)
class SharedAdaptation:
    """One adaptation for a whole volume (``scope="volume"``): the slice it was fitted on,
    what it did, and the kept adapters (``None``: refused, the base prior draws)."""

    slice: int
    accepted: bool
    kept_level: int | None
    seconds: float
    reason: str
    adapters: tuple[torch.Tensor, ...] | None = field(default=None, repr=False)
    key: str = ""  # what it was made with (settings, seed, prior): a resume checks it

    @classmethod
    def of_report(cls, index: int, report: AdaptReport, key: str = "") -> SharedAdaptation:
        adapters = None if report.adapters is None else tuple(report.adapters)
        return cls(index, report.accepted, report.kept_level, report.seconds, report.reason,
                   adapters, key)  # fmt: skip

    def prior(self, base: LearnedPrior, rank: int) -> LearnedPrior:
        """The prior every slice of the volume draws with."""
        return base if self.adapters is None else apply_adapters(base, rank, list(self.adapters))

    def save(self, path: Any) -> None:
        """Write it to ``path`` (atomically: a run resumed after a crash reuses it)."""
        from diffrecon.io.atomic import atomic_file

        data = {
            "slice": self.slice,
            "accepted": self.accepted,
            "kept_level": -1 if self.kept_level is None else self.kept_level,
            "seconds": self.seconds,
            "reason": self.reason,
            "adapters": [] if self.adapters is None else list(self.adapters),
            "key": self.key,
        }
        with atomic_file(path, overwrite=True) as tmp:
            torch.save(data, tmp)

    @classmethod
    def load(cls, path: Any) -> SharedAdaptation:
        data = torch.load(path, map_location="cpu", weights_only=True)
        level = int(data["kept_level"])
        adapters = tuple(data["adapters"]) if data["accepted"] else None
        return cls(int(data["slice"]), bool(data["accepted"]), None if level < 0 else level,
                   float(data["seconds"]), str(data["reason"]), adapters,
                   str(data.get("key", "")))  # fmt: skip
