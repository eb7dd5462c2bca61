"""Small MRI transforms with fastMRI's conventions: RSS coil combination, center crop,
readout-oversampling removal."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def rss(coil_images: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Root-sum-of-squares over the coil dimension (complex or real input)."""
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim))


def center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Crop the last two axes to ``shape`` around the center, as fastMRI's ``center_crop``."""
    h, w = shape
    if not (0 < h <= x.shape[-2] and 0 < w <= x.shape[-1]):
        raise ValueError(f"crop shape {shape} must fit inside {tuple(x.shape[-2:])}")
    top = (x.shape[-2] - h) // 2
    left = (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


def crop_target(target: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A reference image cropped to a result's ``(H, W)`` as fastMRI's ``evaluate.py`` sees
    it (float32)."""
    t = torch.from_numpy(np.asarray(target, dtype=np.float32))
    return center_crop(t, tuple(shape[-2:])).numpy()


def evaluation_view(target: Any, *images: Any) -> list[np.ndarray]:
    """``target`` and ``images`` (``(..., H, W)``) as fastMRI's ``evaluate.py`` compares
    them: the target cropped to the images' size, then all centre-cropped to a square of
    its width (when it is at least that tall, as ``evaluate.py`` requires)."""
    t = crop_target(target, np.shape(images[0]))
    w = t.shape[-1]
    out = [t, *(np.asarray(im) for im in images)]
    if t.shape[-2] < w:
        return out
    return [center_crop(torch.from_numpy(np.ascontiguousarray(a)), (w, w)).numpy() for a in out]


def remove_readout_oversampling(kspace: np.ndarray, size: int) -> np.ndarray:
    """Crop the readout (axis -2) of k-space ``(..., H, W)`` to ``size`` in image space and
    return to k-space (the 2x readout oversampling of raw fastMRI data)."""
    from diffrecon.operators.fft import fft2c, ifft2c

    img = ifft2c(torch.from_numpy(kspace))
    img = center_crop(img, (size, img.shape[-1]))
    return fft2c(img).numpy().astype(np.complex64)


def read_slice(source: Any, index: int, crop_readout: bool = True) -> np.ndarray:
    """Slice ``index`` ``(coils, H, W)`` of a fastMRI file or array input (anything with
    ``kspace(index)`` and ``readout_crop``), an oversampled readout cropped to the recon size
    unless ``crop_readout`` is False."""
    k = source.kspace(index)
    if crop_readout and source.readout_crop is not None:
        k = remove_readout_oversampling(k, source.readout_crop)
    return k
