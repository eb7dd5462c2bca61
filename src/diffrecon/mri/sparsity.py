"""L1-wavelet reconstruction in torch, alone or pulled toward a posterior draw.

:func:`l1_wavelet_fista` solves, by FISTA (Beck and Teboulle 2009),

    min_x  1/2 ||A x - y||^2 + lam ||W x||_1 + mu/2 ||x - a||^2

for a batch of images ``x`` ``(B, 2, H, W)`` (real, imaginary), ``W`` the orthogonal db4
wavelet transform (:class:`~diffrecon.wavelets.DWT2`, complex soft thresholding) and ``a``
an anchor per image. ``mu = 0`` is SigPy's ``L1WaveletRecon`` objective (same
``1/2``-scaled data term, ``lam`` relative to the largest zero-filled magnitude as
:func:`~diffrecon.mri.baseline.l1_wavelet_recon` takes it); ``mu -> infinity`` returns the
anchor. With the draws of a posterior sampler as anchors it is the hybrid finishing step:
each draw keeps its own detail, pulled toward data consistency and wavelet sparsity, so the
spread of the draws survives. Images whose sides do not divide by ``2**levels`` are solved
on a zero-padded grid (the padding is unmeasured; the L1 term keeps it at zero).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffrecon.operators.base import LinearOperator
from diffrecon.wavelets import DWT2

WAVELET, LEVELS = "db4", 3


def _pad_amount(n: int, m: int) -> int:
    return (-n) % m


def wavelet_max(op: LinearOperator, y: torch.Tensor) -> float:
    """The largest zero-filled magnitude ``max |A^H y|``: the unit of ``lam``."""
    z = op.adjoint(y)
    return float(z.pow(2).sum(1).sqrt().max()) or 1.0


def l1_wavelet_fista(
    op: LinearOperator,
    y: torch.Tensor,
    lam: float,
    *,
    anchor: torch.Tensor | None = None,
    mu: float = 0.0,
    iters: int = 100,
    support: torch.Tensor | None = None,
    lipschitz: float | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Minimise ``1/2 ||A x - y||^2 + lam' ||W x||_1 + mu/2 ||x - anchor||^2`` with
    ``lam' = lam * max|A^H y|``; returns ``(B, 2, H, W)`` (``B`` from the anchor, else 1).

    ``y``: ``(1, coils, H, W)`` (shared by the batch); ``anchor``: ``(B, 2, H, W)``, needed
    when ``mu > 0`` and the start otherwise (default ``A^H y``); ``support``: ``(H, W)``
    bool, the image is zero outside it; ``lipschitz``: ``||A||^2`` when known (else
    estimated by power iteration); ``start``: the first iterate ``(B, 2, H, W)`` (default:
    the anchor, else ``A^H y``)."""
    if lam < 0 or mu < 0:
        raise ValueError(f"lam and mu must be >= 0, got {lam} and {mu}")
    if mu > 0 and anchor is None:
        raise ValueError("mu > 0 pulls toward an anchor: give one")
    zf = op.adjoint(y)
    x0 = (start if start is not None else zf if anchor is None else anchor).to(zf.dtype)
    b, _, h, w = x0.shape
    m = 2**LEVELS
    ph, pw = _pad_amount(h, m), _pad_amount(w, m)
    dwt = DWT2(WAVELET, LEVELS)
    thresh_unit = lam * wavelet_max(op, y)
    norm = lipschitz if lipschitz is not None else 1.02 * op.normal_norm(x0, iters=15)
    big_l = norm + mu
    keep = None if support is None else support.to(x0.device, x0.dtype)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, pw, 0, ph)) if ph or pw else t

    def crop(t: torch.Tensor) -> torch.Tensor:
        return t[..., :h, :w]

    a = None if anchor is None else pad(anchor.to(zf.dtype))
    aty = pad(zf)

    def grad(z: torch.Tensor) -> torch.Tensor:
        g = pad(op.N(crop(z))) - aty
        return g if a is None or mu == 0 else g + mu * (z - a)

    def prox(v: torch.Tensor, t: float) -> torch.Tensor:
        c = dwt.forward(v)
        mag = c.pow(2).sum(1, keepdim=True).sqrt()
        c = c * torch.clamp(1 - t / mag.clamp_min(1e-30), min=0)
        out = dwt.inverse(c)
        if keep is not None:
            out = out * pad(keep.expand(1, 1, h, w))
        return out

    x = pad(x0.clone())
    z, t = x, 1.0
    step = 1.0 / big_l
    for _ in range(iters):
        x_new = prox(z - step * grad(z), step * thresh_unit)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return crop(x).expand(b, -1, -1, -1) if x.shape[0] != b else crop(x)
