"""From an undersampled multicoil k-space slice to what a sampler needs.

:func:`prepare_slice` does the MRI preprocessing in one place: the auto-calibration (ACS)
width, an intensity scale so the prior sees its training range (99.5th percentile magnitude
of the ACS-only image = 1), ESPIRiT coil maps, the SENSE operator, the scaled data, the
zero-filled image and a noise estimate. Everything in a :class:`PreparedSlice` is in units of
the scaled image; ``scale`` takes results back to the file's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffrecon.complex import magnitude
from diffrecon.mri.coils import (
    Region,
    auto_kernel_width,
    calibration_region,
    centre_region,
    espirit_maps,
)
from diffrecon.mri.masks import as_mask
from diffrecon.mri.nlinv import nlinv
from diffrecon.mri.transforms import center_crop
from diffrecon.operators.fft import ifft2c
from diffrecon.operators.mri import MulticoilMRI

COIL_MAP_METHODS = ("espirit", "nlinv")


def estimate_noise_std(kspace: np.ndarray, mask: np.ndarray) -> float:
    """Noise std per real component of undersampled k-space ``(coils, H, W)``.

    The smaller of two robust (median absolute deviation) estimates, each biased upwards
    only by signal: sampled k-space points at the readout edges (outer 1/16 per side), and
    the outer readout rows (1/8 per side) of the zero-filled coil images, divided by the
    square root of the sampled fraction (zero-filling keeps that share of the noise power).
    """
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


def intensity_scale(kspace: np.ndarray, calib: int) -> float:
    """99.5th percentile magnitude of the coil-combined low-resolution (ACS-only) image."""
    h, w = kspace.shape[-2:]
    low = np.zeros_like(kspace)
    ch, cw = min(calib, h), min(calib, w)
    t, left = (h - ch) // 2, (w - cw) // 2
    low[:, t : t + ch, left : left + cw] = kspace[:, t : t + ch, left : left + cw]
    img = ifft2c(torch.from_numpy(low)).abs().pow(2).sum(0).sqrt().numpy()
    return float(np.percentile(img, 99.5)) or 1.0


@dataclass(frozen=True)
class PreparedSlice:
    """One undersampled slice ready for a sampler (image quantities in scaled units)."""

    operator: MulticoilMRI
    y: torch.Tensor  # (1, coils, H, W) complex64, scaled, zero where unsampled
    mask: torch.Tensor  # as given: (W,) or (H, W) bool
    maps: torch.Tensor  # (coils, H, W) complex64: ESPIRiT's (uncropped) or the user's
    scale: float  # file units per scaled unit
    calib_width: int
    noise_std: float  # per real component of y: the estimate, or the given value / scale
    noise_estimated: bool
    zero_filled: torch.Tensor  # (2, H, W) A^H y (real, imaginary)
    maps_source: str = "espirit"  # how the maps were made
    calib_region: Region | None = None  # ESPIRiT's calibration rectangle (rows, cols)
    support: torch.Tensor | None = None  # (H, W) bool where the maps are; None: everywhere
    out_size: tuple[int, int] | None = None  # the results' crop (e.g. the recon size)

    def data_residual(self, image: torch.Tensor) -> float | None:
        """``||y - A x|| / (noise_std sqrt(2 m))`` for an image ``(2, H, W)`` in scaled units,
        ``m`` the measured complex values: about 1 when ``x`` fits the data to the noise
        level (a posterior mean somewhat below), far above when it does not."""
        if not self.noise_std > 0:
            return None
        op = self.operator.to(image.device)
        resid = op(image[None].to(self.y.real.dtype)) - self.y.to(image.device)
        m = int(self.mask2d.sum()) * self.y.shape[1]
        return float(resid.abs().pow(2).sum().sqrt() / (self.noise_std * np.sqrt(2 * m)))

    @property
    def mask2d(self) -> np.ndarray:
        h, w = self.y.shape[-2:]
        return self.mask.expand(h, w).numpy() if self.mask.ndim == 1 else self.mask.numpy()

    @property
    def crop_size(self) -> tuple[int, int]:
        """``(H, W)`` of the results: ``out_size`` where it fits inside the image."""
        h, w = self.y.shape[-2:]
        size = self.out_size or (h, w)
        return min(size[0], h), min(size[1], w)

    def to_file(self, a: torch.Tensor) -> np.ndarray:
        """A real image (or stack) in scaled units -> file units, cropped, float32: the one
        way results go back to the k-space's units."""
        return center_crop(a * self.scale, self.crop_size).numpy().astype(np.float32)

    def to_file_complex(self, a: torch.Tensor) -> np.ndarray:
        """``(..., 2, H, W)`` real/imaginary in scaled units -> complex64 in file units,
        cropped."""
        z = torch.complex(a[..., 0, :, :].double(), a[..., 1, :, :].double()) * self.scale
        return center_crop(z, self.crop_size).numpy().astype(np.complex64)

    def zero_filled_magnitude(self) -> torch.Tensor:
        """``|A^H y|`` ``(H, W)`` float64, in the file's units."""
        return magnitude(self.zero_filled[None])[0].double() * self.scale


def _acs_region(mask2d: np.ndarray, calib_width: int) -> Region:
    """The fully sampled ACS rectangle, or the ``calib_width`` centre square (partly empty)
    when the ACS is narrower than an ESPIRiT kernel."""
    try:
        return calibration_region(mask2d)
    except ValueError:
        return centre_region(mask2d.shape, calib_width)


def _espirit_source(region: Region, note: str = "") -> str:
    rows, cols = region[0].stop - region[0].start, region[1].stop - region[1].start
    return f"espirit({note}region={rows}x{cols}, kernel={auto_kernel_width(region)}, crop=0)"


def prepare_slice(
    kspace: np.ndarray,
    mask: Any,
    *,
    noise_std: float | None = None,
    calib_width: int | None = None,
    maps: Any = None,
    calib_kspace: np.ndarray | None = None,
    out_size: tuple[int, int] | None = None,
    coil_maps: str = "espirit",
) -> PreparedSlice:
    """Preprocess one slice ``(coils, H, W)`` (already readout-cropped) sampled by ``mask``.

    ``noise_std``: the k-space noise per real component in file units (default: estimated
    from the data); ``calib_width``: calibrate ESPIRiT on this centre square (default: the
    whole fully sampled ACS rectangle, e.g. every readout row x the ACS columns);
    ``maps``: coil sensitivities ``(coils, H, W)`` to use instead of ESPIRiT's;
    ``calib_kspace``: the same slice before the readout crop ``(coils, H_full, W)``, for a
    column mask: ESPIRiT calibrates there and its maps are centre-cropped to ``H`` (coil
    sensitivities are smooth across the whole acquired field of view, not across the crop,
    whose edges cut them); ``out_size``: the size results are cropped to; ``coil_maps``:
    how maps are estimated when none are given, ``"espirit"`` (from the ACS) or
    ``"nlinv"`` (jointly with the image from every sample, :mod:`diffrecon.mri.nlinv`).
    """
    if coil_maps not in COIL_MAP_METHODS:
        raise ValueError(f"coil_maps must be one of {COIL_MAP_METHODS}, got {coil_maps!r}")
    k = np.asarray(kspace, dtype=np.complex64)
    if k.ndim != 3:
        raise ValueError(f"kspace must be (coils, H, W), got {k.shape}")
    mask = as_mask(mask, k.shape[-2:])
    if not np.isfinite(k).all():
        raise ValueError("kspace contains NaN or inf")
    h, w = k.shape[-2:]
    m2d = (mask.expand(h, w) if mask.ndim == 1 else mask).numpy()
    y = np.where(m2d, k, 0).astype(np.complex64)
    peak = float(np.abs(y).max()) if y.size else 0.0
    if peak == 0:
        raise ValueError("the sampled k-space is all zeros: there is no signal to reconstruct")
    if not 1e-30 < peak < 1e30:
        raise ValueError(
            f"the k-space magnitude peaks at {peak:.3g}, outside what float32 arithmetic "
            "handles (1e-30 to 1e30): rescale the data"
        )
    square = calib_width is not None
    if not square:
        calib_width = calibration_width(m2d)
        region = None
        if maps is None:
            region = _acs_region(m2d, calib_width)
    else:
        region = centre_region((h, w), calib_width)
    scale = intensity_scale(y, calib_width)
    y_s = y / scale
    # uncropped maps (unit norm everywhere): background pixels stay measured, so the data,
    # not the prior alone, decide them (cropped maps leave them in A's null space)
    espirit = maps is None and coil_maps == "espirit"
    maps_source = "user"
    sigma = estimate_noise_std(y_s, m2d) if noise_std is None else noise_std / scale
    if maps is None and coil_maps == "nlinv":
        found = nlinv(torch.from_numpy(y_s), mask, sigma)
        maps, maps_source = found.maps, f"nlinv ({found.steps} steps)"
    elif espirit and calib_kspace is not None and mask.ndim == 1 and not square:
        full = np.asarray(calib_kspace, dtype=np.complex64)
        m_full = np.broadcast_to(mask.numpy(), full.shape[-2:])
        full_region = _acs_region(m_full, calib_width)
        full_maps = espirit_maps(
            np.where(m_full, full, 0) / scale, region=full_region, crop=0.0, noise_std=sigma
        )
        maps = center_crop(full_maps, (h, w)).contiguous()
        maps_source = _espirit_source(full_region, f"readout {full.shape[-2]} cropped to {h}, ")
    elif espirit:
        maps = espirit_maps(y_s, region=region, crop=0.0, noise_std=sigma)
        maps_source = _espirit_source(region)
    else:
        maps = torch.as_tensor(np.asarray(maps, dtype=np.complex64))
        if tuple(maps.shape) != k.shape:
            raise ValueError(
                f"the coil maps {tuple(maps.shape)} do not fit the k-space slice {k.shape} "
                "(coils, H, W after the readout crop)"
            )
        if not bool(torch.isfinite(maps).all()):
            raise ValueError("the coil maps contain NaN or inf")
    op = MulticoilMRI(maps, mask)
    y_t = torch.from_numpy(y_s)[None]
    # maps that vanish somewhere (cropped to the object, as SigPy and BART crop them) leave
    # the image there unmeasured: the sampler then keeps it zero rather than inventing it
    power = maps.abs().pow(2).sum(0)
    support = power > 1e-6 * float(power.max())
    if not bool(support.any()):
        raise ValueError("the coil maps are zero everywhere")
    return PreparedSlice(
        operator=op,
        y=y_t,
        mask=mask,
        maps=maps,
        scale=scale,
        calib_width=calib_width,
        noise_std=sigma,
        noise_estimated=noise_std is None,
        zero_filled=op.adjoint(y_t)[0],
        maps_source=maps_source,
        calib_region=region,
        support=None if bool(support.all()) else support,
        out_size=None if out_size is None else (int(out_size[0]), int(out_size[1])),
    )
