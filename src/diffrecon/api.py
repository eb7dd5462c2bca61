"""``reconstruct``: posterior draws and their summaries, the one call CLI and napari share."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffrecon._checks import as_tensor, check_finite
from diffrecon._version import __version__
from diffrecon.complex import magnitude
from diffrecon.operators.base import Operator, format_shape, shapes_compatible
from diffrecon.priors.base import Denoiser, denoiser_range
from diffrecon.priors.learned import channel_mismatch
from diffrecon.priors.wrappers import SupportDenoiser
from diffrecon.samplers.common import NonFiniteSampleError, StepState, finite_guard
from diffrecon.samplers.registry import Preset, as_preset
from diffrecon.uncertainty.conformal import Calibration
from diffrecon.uncertainty.ensemble import Welford
from diffrecon.uncertainty.ensemble import quantiles as _quantiles


@dataclass(frozen=True)
class SamplerRecord:
    """How a set of draws was made: enough to reproduce it (written into result files)."""

    preset: Preset
    seed: int
    draws: int
    noise_std: float
    version: str = __version__


@dataclass
class Posterior:
    """Summaries of ``n`` posterior draws of one image ``(C, H, W)``.

    ``mean``/``std`` are pixelwise over channels; for complex (2-channel) images
    ``magnitude_mean``/``magnitude_std`` summarise ``|x|``. ``draws`` is kept unless
    ``keep_draws=False`` was asked (then quantiles are unavailable). ``record`` says how
    the draws were made.
    """

    mean: torch.Tensor
    std: torch.Tensor
    count: int
    draws: torch.Tensor | None = None
    magnitude_mean: torch.Tensor | None = None
    magnitude_std: torch.Tensor | None = None
    record: SamplerRecord | None = None
    seconds: float = 0.0

    def quantiles(self, qs: Sequence[float] = (0.05, 0.5, 0.95), magnitude_of: bool = False):
        """Pixelwise quantiles ``(len(qs), ...)`` of the draws (or of their magnitudes)."""
        if self.draws is None:
            raise ValueError("quantiles need the draws: call reconstruct(..., keep_draws=True)")
        d = magnitude(self.draws) if magnitude_of else self.draws
        return _quantiles(d, qs)

    def intervals(
        self, level: float = 0.9, calibration: Calibration | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixelwise central ``level`` interval ``(lower, upper)`` of the image (of its
        magnitude for complex 2-channel images): ``mean -+ lam * std`` from a conformal
        ``calibration`` (see :func:`diffrecon.uncertainty.calibrate`), else the draws'
        quantiles (uncalibrated; needs the draws)."""
        complex_image = self.magnitude_mean is not None
        if calibration is not None:
            if calibration.level != level:
                raise ValueError(f"the calibration is for level {calibration.level}, not {level}")
            if self.count < 2:
                raise ValueError("a calibrated interval needs a std: draw 2 or more")
            mean = self.magnitude_mean if complex_image else self.mean
            std = self.magnitude_std if complex_image else self.std
            lo, hi = calibration.interval(mean.numpy(), std.numpy())
            return torch.from_numpy(lo), torch.from_numpy(hi)
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        q = self.quantiles(((1 - level) / 2, (1 + level) / 2), magnitude_of=complex_image)
        return q[0], q[1]


def draw_generators(
    seed: int, draws: int, device: torch.device | str = "cpu"
) -> list[torch.Generator]:
    """One independent generator per draw, derived from ``seed`` by ``numpy.SeedSequence``."""
    states = np.random.SeedSequence(seed).spawn(draws)
    gens = []
    for s in states:
        g = torch.Generator(device=device)
        g.manual_seed(int(s.generate_state(1, dtype=np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF))
        gens.append(g)
    return gens


def reconstruct(
    y: Any,
    operator: Operator,
    prior: Denoiser,
    sampler: str | Preset = "daps",
    draws: int = 16,
    noise_std: float = 0.01,
    seed: int = 0,
    *,
    batch_size: int | None = None,
    keep_draws: bool = True,
    shape: tuple[int, ...] | None = None,
    device: str | torch.device | None = None,
    callback: Callable[[StepState], None] | None = None,
    on_batch: Callable[[Posterior], None] | None = None,
    support: Any = None,
    **overrides: Any,
) -> Posterior:
    """Draw ``draws`` posterior samples of the image behind one measurement ``y``.

    ``y``: ``(*oshape)`` or ``(1, *oshape)``. ``sampler``: a sampler (``"daps"``, ``"dps"``,
    ``"pigdm"``, ``"cpigdm"``, ``"zaps"``, ``"stsl"``), preset name (``"daps-fast"``...) or a
    resolved :class:`~diffrecon.samplers.registry.Preset`;
    ``overrides`` replace preset settings, including the schedule (``steps``, ``sigma_min``,
    ``sigma_max``, ``rho``, ``spacing``); unknown settings, and problems the sampler cannot
    run (see :meth:`~diffrecon.samplers.registry.Preset.check`), are refused before any
    work. Draws run in
    batches of ``batch_size`` (default: up to 16; halved on CUDA out-of-memory); draw ``d``
    uses its own generator, so its random numbers do not depend on the batch size (results
    agree across batch sizes to float32 rounding). ``on_batch`` sees the
    running summary after each batch (for streaming displays). With ``device``, the
    operator, ``y`` and a prior that has ``.to`` (learned priors) are moved there.
    ``support``: an ``(H, W)`` bool mask of where the image may be non-zero (e.g. where coil
    maps are); the prior is restricted to it and every draw is zero outside it.
    """
    if not isinstance(operator, Operator):
        raise ValueError(f"operator must be a diffrecon Operator, got {type(operator).__name__}")
    if not callable(prior):
        raise ValueError(f"prior must be a denoiser D(x, sigma), got {type(prior).__name__}")
    if isinstance(draws, bool) or not isinstance(draws, int | np.integer):
        raise ValueError(f"draws must be an integer, got {draws!r}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    preset = as_preset(sampler, overrides)
    preset.check(operator, noise_std)
    wanted = getattr(prior, "channels", None)
    image_c = operator.ishape[0] if operator.ishape else None
    if isinstance(wanted, int) and isinstance(image_c, int) and wanted != image_c:
        raise ValueError(channel_mismatch(getattr(prior, "name", "prior"), wanted, image_c))
    y_t = check_finite("y", as_tensor("y", y))
    if operator.complex_output and not y_t.is_complex():
        raise ValueError(f"{operator.name} measures complex data, but y is {y_t.dtype}")
    if operator.oshape is not None and y_t.ndim == len(operator.oshape):
        y_t = y_t[None]
    if y_t.shape[0] != 1:
        raise ValueError(f"y must hold one measurement (1, ...), got batch {y_t.shape[0]}")
    if not shapes_compatible(tuple(y_t.shape[1:]), operator.oshape):
        raise ValueError(
            f"y has shape {tuple(y_t.shape)} but {operator.name} gives "
            f"{format_shape(operator.oshape)}"
        )
    dev = torch.device(device) if device is not None else y_t.device
    op = operator.to(dev)
    y_t = y_t.to(dev)
    if device is not None and callable(getattr(prior, "to", None)):
        prior.to(dev)  # learned priors hold a network; exact priors follow their input

    support_t = None
    if support is not None:
        prior = SupportDenoiser(prior, support)
        support_t = prior.support.to(dev)
        ishape = operator.ishape
        if ishape is not None and tuple(support_t.shape) != tuple(ishape[-2:]):
            raise ValueError(
                f"support {tuple(support_t.shape)} does not match the image {format_shape(ishape)}"
            )
    sigmas = preset.schedule.sigmas(denoiser_range(prior))
    gens = draw_generators(seed, draws, dev)
    batch = max(1, min(batch_size or 16, draws))

    guard = finite_guard(f"{preset.name!r} ({preset.sampler})", callback)
    stats, mag_stats = Welford(), Welford()
    kept: list[torch.Tensor] = []
    t0 = time.perf_counter()
    record = SamplerRecord(preset, seed, draws, float(noise_std))
    start = 0
    while start < draws:
        stop = min(start + batch, draws)
        y_rep = y_t.expand(stop - start, *y_t.shape[1:])
        try:
            x = preset.fn(
                prior,
                op,
                y_rep,
                sigmas,
                noise_std=noise_std,
                generator=gens[start:stop],
                shape=shape,
                callback=guard,
                **preset.hyper,
            )
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            gens[start:stop] = draw_generators(seed, draws, dev)[start:stop]  # fresh streams
            batch = max(1, batch // 2)
            torch.cuda.empty_cache()
            continue
        x = x.detach()
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteSampleError(
                f"sampler {preset.name!r} ({preset.sampler}) returned NaN or inf draws"
            )
        if support_t is not None:
            x = x * support_t.to(x.dtype)
        stats.update(x)
        if x.shape[1] == 2:
            mag_stats.update(magnitude(x))
        if keep_draws:
            kept.append(x.cpu())
        start = stop
        if on_batch is not None:
            on_batch(_summary(stats, mag_stats, kept, record, t0))
    return _summary(stats, mag_stats, kept, record, t0)


def posterior_from_draws(draws: torch.Tensor, record: SamplerRecord | None) -> Posterior:
    """The :class:`Posterior` summaries of given draws ``(n, C, H, W)`` (e.g. draws changed
    by a finishing step after sampling), with the record of how they were made."""
    stats, mag = Welford(), Welford()
    stats.update(draws)
    if draws.shape[1] == 2:
        mag.update(magnitude(draws))
    return _summary(stats, mag, [draws.cpu()], record, time.perf_counter())


def _summary(
    stats: Welford, mag: Welford, kept: list[torch.Tensor], record: SamplerRecord, t0: float
) -> Posterior:
    std = stats.std if stats.count > 1 else torch.zeros_like(stats.mean)
    return Posterior(
        mean=stats.mean.cpu(),
        std=std.cpu(),
        count=stats.count,
        draws=torch.cat(kept) if kept else None,
        magnitude_mean=mag.mean.cpu() if mag.mean is not None else None,
        magnitude_std=(mag.std.cpu() if mag.count > 1 else None) if mag.mean is not None else None,
        record=record,
        seconds=time.perf_counter() - t0,
    )
