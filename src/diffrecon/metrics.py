"""Image-quality metrics exactly as fastMRI's ``evaluate.py`` computes them.

Volumes are ``(slices, H, W)`` magnitude images. PSNR and SSIM use ``data_range = gt.max()``
over the whole volume; SSIM is skimage's default (7x7 uniform window, sample covariance,
K1=0.01, K2=0.03, borders cropped) averaged over slices. Computed in float64 with torch,
so they run on the device the images are on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from diffrecon._checks import as_tensor


def _pair(gt: Any, pred: Any) -> tuple[torch.Tensor, torch.Tensor]:
    g = as_tensor("gt", gt)
    p = as_tensor("pred", pred).to(g.device)
    if g.shape != p.shape:
        raise ValueError(f"gt {tuple(g.shape)} and pred {tuple(p.shape)} must have one shape")
    if g.is_complex() or p.is_complex():
        raise ValueError("metrics take magnitude images: pass abs() of complex images")
    return g.double(), p.double()


def mse(gt: Any, pred: Any) -> float:
    """Mean squared error."""
    g, p = _pair(gt, pred)
    return float(((g - p) ** 2).mean())


def nmse(gt: Any, pred: Any) -> float:
    """Normalised MSE ``||gt - pred||^2 / ||gt||^2``."""
    g, p = _pair(gt, pred)
    return float(((g - p) ** 2).sum() / (g**2).sum())


def psnr(gt: Any, pred: Any, maxval: float | None = None) -> float:
    """PSNR in dB with ``data_range = gt.max()`` unless ``maxval`` is given."""
    g, p = _pair(gt, pred)
    data_range = float(g.max()) if maxval is None else float(maxval)
    return float(10.0 * torch.log10(data_range**2 / ((g - p) ** 2).mean()))


def _ssim_slice(g: torch.Tensor, p: torch.Tensor, data_range: float, win: int) -> torch.Tensor:
    k1, k2 = 0.01, 0.03
    npix = win * win
    cov_norm = npix / (npix - 1)
    stack = torch.stack([g, p, g * g, p * p, g * p])[:, None]
    # a "valid" mean filter equals skimage's reflect-filtered map with borders cropped
    means = F.avg_pool2d(stack, win, stride=1)[:, 0]
    ux, uy, uxx, uyy, uxy = means
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean()


def ssim(gt: Any, pred: Any, maxval: float | None = None, win_size: int = 7) -> float:
    """Mean SSIM over the slices of a volume ``(slices, H, W)``, fastMRI style."""
    g, p = _pair(gt, pred)
    if g.ndim != 3:
        raise ValueError(f"gt must be a volume (slices, H, W), got {tuple(g.shape)}")
    if min(g.shape[-2:]) < win_size:
        raise ValueError(f"images {tuple(g.shape[-2:])} are smaller than win_size={win_size}")
    data_range = float(g.max()) if maxval is None else float(maxval)
    vals = [_ssim_slice(g[i], p[i], data_range, win_size) for i in range(g.shape[0])]
    return float(torch.stack(vals).mean())


def evaluate(gt: Any, pred: Any) -> dict[str, float]:
    """NMSE, PSNR and SSIM of one volume (a single 2-D slice is treated as a volume)."""
    g = as_tensor("gt", gt)
    p = as_tensor("pred", pred)
    if g.ndim == 2:
        g, p = g[None], p[None]
    return {"nmse": nmse(g, p), "psnr": psnr(g, p), "ssim": ssim(g, p)}
