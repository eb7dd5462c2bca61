"""One multicoil k-space slice -> posterior summaries in the file's units.

:func:`reconstruct_prepared` takes a :class:`~diffrecon.mri.preprocess.PreparedSlice`
(operator, scaled data, coil maps, noise estimate), runs :func:`diffrecon.reconstruct` with
the likelihood level ``max(noise estimate, preset's noise floor)``, and returns magnitude
summaries cropped to the output size and scaled back to the file's units, with their
provenance. :func:`reconstruct_slice` does the preprocessing first. Files, slices and masks
are the job's business (:mod:`diffrecon.jobs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from diffrecon import metrics
from diffrecon.api import Posterior, reconstruct
from diffrecon.complex import magnitude
from diffrecon.mri.preprocess import PreparedSlice, prepare_slice
from diffrecon.mri.transforms import center_crop
from diffrecon.results import SliceProvenance, SliceResult
from diffrecon.samplers.common import StepState
from diffrecon.samplers.registry import Preset, as_preset
from diffrecon.uncertainty.conformal import Calibration


def reconstruct_prepared(
    prepared: PreparedSlice,
    prior: Any,
    *,
    sampler: str | Preset = "daps",
    draws: int = 8,
    seed: int = 0,
    out_size: tuple[int, int] | None = None,
    target: np.ndarray | None = None,
    quantile_levels: tuple[float, ...] = (),
    keep_draws: bool = False,
    device: str = "cpu",
    batch_size: int | None = None,
    interval_level: float | None = None,
    calibration: Calibration | None = None,
    callback: Callable[[StepState], None] | None = None,
    on_batch: Callable[[SliceResult], None] | None = None,
    **overrides: Any,
) -> SliceResult:
    """Posterior summaries of a prepared slice. ``on_batch`` sees the running summary (no
    quantiles, intervals or metrics) after each batch of draws, for streaming displays.

    ``interval_level``: also give a central interval of the magnitude at that level, from a
    conformal ``calibration`` when one is given, else from the draws' quantiles
    (uncalibrated); two draws or more are needed."""
    if calibration is not None and interval_level is None:
        interval_level = calibration.level
    want_interval = interval_level is not None and draws >= 2
    t0 = time.perf_counter()
    preset = as_preset(sampler, overrides)
    # the preset's floor (1% of the image scale by default): an underestimated noise level
    # would make the likelihood (and DAPS's Langevin step, which scales with it) needlessly
    # sharp
    tau = max(prepared.noise_std, preset.noise_floor)
    h, w = prepared.y.shape[-2:]
    size = out_size or (h, w)
    size = (min(size[0], h), min(size[1], w))
    scale = prepared.scale

    def crop(a: torch.Tensor) -> np.ndarray:
        return center_crop(a, size).numpy().astype(np.float32)

    def crop_complex(a: torch.Tensor) -> np.ndarray:
        """``(..., 2, H, W)`` real/imaginary -> cropped complex64 in file units."""
        z = torch.complex(a[..., 0, :, :].double(), a[..., 1, :, :].double()) * scale
        return center_crop(z, size).numpy().astype(np.complex64)

    zf = crop(prepared.zero_filled_magnitude())

    def summarise(post: Posterior, final: bool) -> SliceResult:
        """Magnitude summaries in file units, cropped (partial ones skip the quantiles)."""
        mag_std = post.magnitude_std
        if mag_std is None or post.count < 2:
            mag_std = torch.zeros_like(post.magnitude_mean)
        quants = None
        if final and quantile_levels and post.draws is not None:
            quants = crop(post.quantiles(quantile_levels, magnitude_of=True) * scale)
        draws_mag = None
        if keep_draws and post.draws is not None:
            draws_mag = crop(magnitude(post.draws).double() * scale)
        mean, std = crop(post.magnitude_mean * scale), crop(mag_std * scale)
        lower = upper = std_cal = None
        if final and want_interval:
            if calibration is not None:
                lower, upper = (a.astype(np.float32) for a in calibration.interval(mean, std))
                std_cal = calibration.calibrated_std(mean, std).astype(np.float32)
            elif post.draws is not None:
                lower, upper = (crop(b * scale) for b in post.intervals(interval_level))
        draws_c = None
        if keep_draws and final and post.draws is not None:
            draws_c = crop_complex(post.draws)
        return SliceResult(
            mean=mean,
            std=std,
            draws_done=post.count,
            mean_complex=crop_complex(post.mean),
            draws_complex=draws_c,
            provenance=SliceProvenance(
                record=post.record,
                mask=prepared.mask.numpy(),
                maps=prepared.maps_source,
                maps_used=prepared.maps.numpy() if final else None,
                calib_width=prepared.calib_width,
                intensity_scale=scale,
                noise_std_estimate=prepared.noise_std * scale,
                noise_std_used=tau,
                data_residual=prepared.data_residual(post.mean.float()) if final else None,
            ),
            zero_filled=zf,
            draws=draws_mag,
            quantiles=quants,
            lower=lower,
            upper=upper,
            interval_level=interval_level if lower is not None else None,
            calibrated=std_cal is not None,
            std_calibrated=std_cal,
            seconds=time.perf_counter() - t0,
        )

    post = reconstruct(
        prepared.y,
        prepared.operator,
        prior,
        sampler=preset,
        draws=draws,
        noise_std=tau,
        seed=seed,
        device=device,
        batch_size=batch_size,
        keep_draws=keep_draws or bool(quantile_levels) or (want_interval and calibration is None),
        callback=callback,
        on_batch=None if on_batch is None else (lambda p: on_batch(summarise(p, False))),
        support=prepared.support,
    )
    result = summarise(post, True)
    if target is not None:
        tgt = center_crop(torch.from_numpy(np.asarray(target, dtype=np.float32)), size).numpy()
        ours, zero = metrics.evaluate(tgt, result.mean), metrics.evaluate(tgt, zf)
        result.metrics = {
            "psnr": ours["psnr"],
            "ssim": ours["ssim"],
            "psnr_zero_filled": zero["psnr"],
            "ssim_zero_filled": zero["ssim"],
        }
    return result


def reconstruct_slice(
    kspace: np.ndarray,
    prior: Any,
    mask: Any,
    *,
    noise_std: float | None = None,
    calib_width: int | None = None,
    **kwargs: Any,
) -> SliceResult:
    """Posterior reconstruction of one slice ``(coils, H, W)`` (already readout-cropped):
    :func:`~diffrecon.mri.preprocess.prepare_slice` then :func:`reconstruct_prepared`
    (``kwargs``: sampler, draws, seed, target, callbacks, preset overrides...)."""
    prepared = prepare_slice(kspace, mask, noise_std=noise_std, calib_width=calib_width)
    return reconstruct_prepared(prepared, prior, **kwargs)
