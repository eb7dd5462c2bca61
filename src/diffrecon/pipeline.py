"""One multicoil k-space slice -> posterior summaries: the path the CLI and napari share.

Steps: sampling mask (fastMRI retrospective mask seeded per file, the file's own mask, or a
given one) restricted to the acquired columns; optional readout-oversampling removal; ESPIRiT
coil maps from the auto-calibration lines; intensity scaling so the prior sees its training
range; a noise estimate; :func:`diffrecon.reconstruct`; magnitude summaries cropped to the
output size and scaled back to the file's units.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffrecon import metrics
from diffrecon.api import Posterior, reconstruct
from diffrecon.complex import magnitude
from diffrecon.mri.coils import espirit_maps
from diffrecon.mri.masks import cartesian_mask
from diffrecon.mri.transforms import center_crop
from diffrecon.operators.mri import MulticoilMRI
from diffrecon.samplers.common import StepState

NOISE_FLOOR = 0.01  # in units of the scaled image (99.5th percentile magnitude = 1)


@dataclass
class MaskSpec:
    """How to undersample: a fastMRI column mask, or ``kind="file"`` for the file's own."""

    acceleration: float = 4.0
    center_fraction: float = 0.08
    kind: str = "random"  # random | equispaced | file
    seed: int | tuple[int, ...] | None = None


@dataclass
class SliceResult:
    """Magnitude summaries of one slice, in the file's intensity units, cropped."""

    mean: np.ndarray
    std: np.ndarray
    zero_filled: np.ndarray
    mask: np.ndarray
    draws: np.ndarray | None = None
    quantiles: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


def build_mask(
    spec: MaskSpec,
    shape: tuple[int, int],
    file_mask: np.ndarray | None,
    padding: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Boolean mask ``(W,)`` or ``(H, W)``; columns outside the acquired ``padding`` range
    are never sampled (fastMRI zero-pads them)."""
    h, w = shape
    if spec.kind == "file":
        if file_mask is None:
            raise ValueError("--mask-type file: the file has no 'mask' dataset")
        m = torch.from_numpy(np.asarray(file_mask, dtype=bool))
        if m.shape not in ((w,), (h, w)):
            raise ValueError(f"the file's mask {tuple(m.shape)} fits neither (W,) nor (H, W)")
        return m
    m = cartesian_mask(
        w,
        spec.acceleration,
        spec.center_fraction,
        kind=spec.kind,  # type: ignore[arg-type]
        seed=spec.seed,
    ).mask
    if padding is not None:
        m = m.clone()
        m[: padding[0]] = False
        m[padding[1] :] = False
    return m


def estimate_noise_std(kspace: np.ndarray, mask: np.ndarray) -> float:
    """Noise std per real component of undersampled k-space ``(coils, H, W)``.

    The smaller of two robust (median absolute deviation) estimates, each biased upwards
    only by signal: sampled k-space points at the readout edges (outer 1/16 per side), and
    the outer readout rows (1/8 per side) of the zero-filled coil images, divided by the
    square root of the sampled fraction (zero-filling keeps that share of the noise power).
    """
    from diffrecon.operators.fft import ifft2c

    h = kspace.shape[-2]
    m = np.broadcast_to(np.asarray(mask, dtype=bool), kspace.shape[-2:])

    def mad(vals: np.ndarray) -> float:
        parts = np.concatenate([vals.real.ravel(), vals.imag.ravel()])
        return float(1.4826 * np.median(np.abs(parts - np.median(parts)))) if parts.size else np.inf

    edge = max(1, h // 16)
    k_est = mad(
        np.concatenate(
            [kspace[:, :edge][..., m[:edge]].ravel(), kspace[:, -edge:][..., m[-edge:]].ravel()]
        )
    )
    coil_imgs = ifft2c(torch.from_numpy(np.ascontiguousarray(kspace))).numpy()
    rows = max(1, h // 8)
    img_est = mad(np.concatenate([coil_imgs[:, :rows], coil_imgs[:, -rows:]], axis=1))
    img_est /= np.sqrt(max(m.mean(), 1e-6))
    est = min(k_est, img_est)
    return 0.0 if not np.isfinite(est) else est


def calibration_width(mask2d: np.ndarray, lo: int = 8, hi: int = 48) -> int:
    """Side of the largest fully sampled square around the k-space centre (the ACS region),
    clipped to ``[lo, hi]``: ESPIRiT's calibration width for column and 2-D masks alike."""
    h, w = mask2d.shape
    cy, cx = h // 2, w // 2
    size = 0
    while size + 2 <= min(h, w):
        t, left = cy - (size + 2) // 2, cx - (size + 2) // 2
        if not mask2d[t : t + size + 2, left : left + size + 2].all():
            break
        size += 2
    return max(lo, min(size, hi))


def _acs_scale(kspace: np.ndarray, calib: int) -> float:
    """99.5th percentile magnitude of the coil-combined low-resolution (ACS-only) image."""
    from diffrecon.operators.fft import ifft2c

    h, w = kspace.shape[-2:]
    low = np.zeros_like(kspace)
    ch, cw = min(calib, h), min(calib, w)
    t, left = (h - ch) // 2, (w - cw) // 2
    low[:, t : t + ch, left : left + cw] = kspace[:, t : t + ch, left : left + cw]
    img = ifft2c(torch.from_numpy(low)).abs().pow(2).sum(0).sqrt().numpy()
    return float(np.percentile(img, 99.5)) or 1.0


def reconstruct_slice(
    kspace: np.ndarray,
    prior: Any,
    mask: torch.Tensor,
    *,
    sampler: str = "daps",
    draws: int = 8,
    seed: int = 0,
    noise_std: float | None = None,
    out_size: tuple[int, int] | None = None,
    target: np.ndarray | None = None,
    quantile_levels: tuple[float, ...] = (),
    keep_draws: bool = False,
    device: str = "cpu",
    batch_size: int | None = None,
    calib_width: int | None = None,
    callback: Callable[[StepState], None] | None = None,
    on_batch: Callable[[SliceResult], None] | None = None,
    **hyper: Any,
) -> SliceResult:
    """Posterior reconstruction of one slice ``(coils, H, W)`` (already readout-cropped).

    ``on_batch`` sees the running summary (a :class:`SliceResult` without quantiles or
    metrics) after each batch of draws, for streaming displays.
    """
    t0 = time.perf_counter()
    k = np.asarray(kspace, dtype=np.complex64)
    if k.ndim != 3:
        raise ValueError(f"kspace must be (coils, H, W), got {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError("kspace contains NaN or inf")
    h, w = k.shape[-2:]
    m2d = mask.expand(h, w) if mask.ndim == 1 else mask
    y = np.where(m2d.numpy(), k, 0).astype(np.complex64)
    if calib_width is None:
        calib_width = calibration_width(m2d.numpy())
    scale = _acs_scale(y, calib_width)
    y_s = y / scale
    # uncropped maps (unit norm everywhere): background pixels stay measured, so the data,
    # not the prior alone, decide them (cropped maps leave them in A's null space)
    maps = espirit_maps(y_s, calib_width=calib_width, crop=0.0)
    op = MulticoilMRI(maps, mask)
    sigma = estimate_noise_std(y_s, m2d.numpy()) if noise_std is None else noise_std / scale
    # a floor at 1% of the image scale: an underestimated noise level would make the
    # likelihood (and DAPS's Langevin step, which scales with it) needlessly sharp
    tau = max(sigma, NOISE_FLOOR)
    size = out_size or (h, w)
    size = (min(size[0], h), min(size[1], w))

    def crop(a: torch.Tensor) -> np.ndarray:
        return center_crop(a, size).numpy().astype(np.float32)

    zf = crop(magnitude(op.adjoint(torch.from_numpy(y_s)[None]))[0].double() * scale)

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
        return SliceResult(
            crop(post.magnitude_mean * scale),
            crop(mag_std * scale),
            zf,
            m2d.numpy(),
            draws=draws_mag,
            quantiles=quants,
            seconds=time.perf_counter() - t0,
            settings={
                **post.settings,
                "draws_done": post.count,
                "noise_std_estimate": sigma * scale,
                "intensity_scale": scale,
                "calib_width": calib_width,
            },
        )

    post = reconstruct(
        torch.from_numpy(y_s)[None],
        op,
        prior,
        sampler=sampler,
        draws=draws,
        noise_std=tau,
        seed=seed,
        device=device,
        batch_size=batch_size,
        keep_draws=keep_draws or bool(quantile_levels),
        callback=callback,
        on_batch=None if on_batch is None else (lambda p: on_batch(summarise(p, False))),
        **hyper,
    )
    result = summarise(post, True)
    if target is not None:
        tgt = center_crop(torch.from_numpy(np.asarray(target, dtype=np.float32)), size).numpy()
        result.metrics = {
            "psnr": metrics.psnr(tgt[None], result.mean[None], maxval=float(tgt.max())),
            "ssim": metrics.ssim(tgt[None], result.mean[None], maxval=float(tgt.max())),
            "psnr_zero_filled": metrics.psnr(tgt[None], zf[None], maxval=float(tgt.max())),
            "ssim_zero_filled": metrics.ssim(tgt[None], zf[None], maxval=float(tgt.max())),
        }
    return result


def reconstruct_file_slice(
    file: Any,
    index: int,
    spec: MaskSpec,
    prior: Any,
    *,
    crop_readout: bool = True,
    **kwargs: Any,
) -> SliceResult:
    """One slice of an open fastMRI file, as ``diffrecon reconstruct`` does it: readout
    crop, the mask of ``spec`` (or the file's own) outside the zero-padded columns, the
    header's recon size and the file's target for the metrics. ``kwargs`` go to
    :func:`reconstruct_slice` (sampler, draws, seed, callbacks...)."""
    k = file.kspace(index, crop_readout=crop_readout)
    padding = file.header.padding if file.header is not None else None
    mask = build_mask(spec, k.shape[-2:], file.mask, padding)
    return reconstruct_slice(
        k, prior, mask, out_size=file.recon_size, target=file.target(index), **kwargs
    )
