"""Coil maps estimated jointly with the image from all the measured k-space: NLINV.

ESPIRiT calibrates on the fully sampled centre alone. With few ACS lines (8 to 10 at 8x)
and an object that fills the phase-encode field of view its maps are off by a few percent
inside the object, and at 8x the SENSE inverse turns that model error into aliasing bands
the prior cannot remove (docs/validation.md: with the true maps the same run gains 11 dB).
NLINV (Uecker, Hohage, Block, Frahm, MRM 2008) fits the signal model
``y_j = M F (x c_j)`` to every measured sample, the image ``x`` and the coil profiles
``c_j`` together, by the iteratively regularised Gauss-Newton method (IRGNM). The coils
are smooth by construction: ``c_j = F^-1 (w^-1 c_hat_j)`` with the Sobolev weight
``w = (1 + a |k|^2)^(l / 2)`` (k in cycles per field of view over the matrix size; ``a``
220, ``l`` 32 as in the paper), so the Newton updates regularise ``c_hat`` and the image
with one weight ``alpha_n = alpha_0 q^n``.

Each Newton step solves ``(J^H J + alpha_n) du = J^H (y - G(u)) + alpha_n (u_0 - u)`` by
conjugate gradients (``u_0``: the start, image 1 and coils 0; the data scaled to norm 100
as in the paper, so the same ``alpha`` suits every file). The steps stop by the
discrepancy principle: at the first step whose residual ``||y - G(u)||`` falls below
``tau`` times the noise's expected norm (Bakushinsky and Kokurin's stopping rule for the
IRGNM), at most :data:`MAX_STEPS`; without a noise level, :data:`STEPS_WITHOUT_NOISE`.
The maps are the coil profiles normalised to unit root-sum-of-squares, phase-referenced
to coil 0 like ESPIRiT's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from diffrecon.mri.coils import phase_reference
from diffrecon.operators.fft import fft2c, ifft2c

SOBOLEV_A = 220.0
SOBOLEV_L = 32.0
DATA_NORM = 100.0  # the data are scaled to this norm before the fit (as the paper)
ALPHA0 = 1.0
REDUCTION = 0.5  # alpha_{n+1} = REDUCTION * alpha_n
MAX_STEPS = 16
STEPS_WITHOUT_NOISE = 10
TAU = 1.0  # discrepancy principle: stop below TAU times the noise's expected norm
CG_ITERS = 40
CG_TOL = 1e-6  # relative to the first residual's energy
COMPLEX = torch.complex64  # the fit's arithmetic


@dataclass(frozen=True)
class NlinvResult:
    """The fit: unit-norm maps ``(coils, H, W)`` complex64, the image ``(H, W)`` in the
    data's units (the coil profiles' root-sum-of-squares folded in), the Newton steps
    taken, the final residual over the noise's expected norm (None without a noise
    level) and the time."""

    maps: torch.Tensor
    image: torch.Tensor
    steps: int
    residual: float | None
    seconds: float


def sobolev_weights(
    shape: tuple[int, int], a: float = SOBOLEV_A, l: float = SOBOLEV_L
) -> torch.Tensor:
    """``(1 + a |k|^2)^(-l / 2)`` on the centred k-space grid ``shape`` (k in cycles per
    pixel, so the weight falls to 1e-2 about 10 samples from the centre of a 256 grid)."""
    h, w = shape
    ky = (torch.arange(h, dtype=torch.float64) - h // 2) / h
    kx = (torch.arange(w, dtype=torch.float64) - w // 2) / w
    return (1 + a * (ky[:, None] ** 2 + kx[None] ** 2)) ** (-l / 2)


def _cg(apply, b: list[torch.Tensor], iters: int, tol: float) -> list[torch.Tensor]:
    """Conjugate gradients on the Hermitian positive definite ``apply`` over a list of
    tensors (the image and the coil coefficients), from zero."""

    def dot(u: list[torch.Tensor], v: list[torch.Tensor]) -> float:
        return sum(float((a.conj() * c).sum().real) for a, c in zip(u, v, strict=True))

    x = [torch.zeros_like(t) for t in b]
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rr = dot(r, r)
    stop = tol * rr
    for _ in range(iters):
        if rr <= stop or rr == 0:
            break
        ap = apply(p)
        step = rr / dot(p, ap)
        x = [xi + step * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - step * ai for ri, ai in zip(r, ap, strict=True)]
        rr_new = dot(r, r)
        p = [ri + (rr_new / rr) * pi for ri, pi in zip(r, p, strict=True)]
        rr = rr_new
    return x


@dataclass(frozen=True)
class SignalModel:
    """NLINV's model on a sampling pattern ``m`` (float, ``(H, W)``) with Sobolev weights
    ``wt``: ``G(x, c_hat) = m F (x F^-1 (wt c_hat))`` and its derivative at a point."""

    m: torch.Tensor
    wt: torch.Tensor

    def profiles(self, c_hat: torch.Tensor) -> torch.Tensor:
        """Coil profiles ``(coils, H, W)`` from the weighted coefficients."""
        return ifft2c(self.wt * c_hat)

    def __call__(self, x: torch.Tensor, c_hat: torch.Tensor) -> torch.Tensor:
        return self.m * fft2c(x[None] * self.profiles(c_hat))

    def jac(
        self, x: torch.Tensor, c: torch.Tensor, dx: torch.Tensor, dc: torch.Tensor
    ) -> torch.Tensor:
        """``J (dx, dc)`` at image ``x`` and profiles ``c``."""
        return self.m * fft2c(dx[None] * c + x[None] * self.profiles(dc))

    def jac_h(self, x: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> list[torch.Tensor]:
        """``J^H r`` at image ``x`` and profiles ``c``: ``[d image, d coefficients]``."""
        z = ifft2c(self.m * r)
        return [(c.conj() * z).sum(0), self.wt * fft2c(x.conj()[None] * z)]


def nlinv(
    y: torch.Tensor,
    mask: torch.Tensor,
    noise_std: float | None = None,
    *,
    max_steps: int = MAX_STEPS,
    tau: float = TAU,
    alpha0: float = ALPHA0,
    reduction: float = REDUCTION,
    cg_iters: int = CG_ITERS,
) -> NlinvResult:
    """Fit image and coil maps to the measured k-space ``y`` ``(coils, H, W)`` (zero where
    not sampled) sampled by ``mask`` (``(H, W)`` or a column mask ``(W,)``);
    ``noise_std``: the k-space noise per real component in ``y``'s units, for the stop."""
    t0 = time.perf_counter()
    if y.ndim != 3:
        raise ValueError(f"NLINV needs k-space (coils, H, W), got {tuple(y.shape)}")
    coils, h, w = y.shape
    if mask.shape not in ((w,), (h, w)):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit k-space {(h, w)}")
    m2d = mask.bool().to(y.device).expand(h, w)
    data = torch.where(m2d, y.to(COMPLEX), 0)
    norm = float(data.abs().pow(2).sum().sqrt())
    if not norm > 0 or not math.isfinite(norm):
        raise ValueError("NLINV needs measured k-space with a finite, non-zero norm")
    scale = DATA_NORM / norm
    data = data * scale
    model = SignalModel(
        m2d.to(COMPLEX.to_real()), sobolev_weights((h, w)).to(y.device, COMPLEX.to_real())
    )
    floor = None
    if noise_std is not None and noise_std > 0:
        floor = noise_std * scale * math.sqrt(2.0 * float(model.m.sum()) * coils)
    steps = max_steps if floor is not None else min(max_steps, STEPS_WITHOUT_NOISE)
    x = torch.ones(h, w, dtype=COMPLEX, device=y.device)
    c_hat = torch.zeros(coils, h, w, dtype=COMPLEX, device=y.device)
    residual, taken = float("inf"), 0
    for n in range(steps):
        alpha = alpha0 * reduction**n
        c = model.profiles(c_hat)

        def normal(u: list[torch.Tensor], x=x, c=c, alpha=alpha) -> list[torch.Tensor]:
            back = model.jac_h(x, c, model.jac(x, c, *u))
            return [a + alpha * b for a, b in zip(back, u, strict=True)]

        gx, gc = model.jac_h(x, c, data - model(x, c_hat))
        dx, dc = _cg(normal, [gx - alpha * (x - 1), gc - alpha * c_hat], cg_iters, CG_TOL)
        x, c_hat = x + dx, c_hat + dc
        taken = n + 1
        residual = float((data - model(x, c_hat)).abs().pow(2).sum().sqrt())
        if floor is not None and residual < tau * floor:
            break
    c = model.profiles(c_hat)
    rss = c.abs().pow(2).sum(0).sqrt().clamp_min(1e-30)
    maps = phase_reference(c / rss)
    # the image takes the phase the reference removed from the maps: maps x is unchanged
    ref = c[0] / c[0].abs().clamp_min(1e-30)
    return NlinvResult(
        maps=maps.to(torch.complex64).contiguous(),
        image=x * rss * ref / scale,
        steps=taken,
        residual=None if floor is None else residual / floor,
        seconds=time.perf_counter() - t0,
    )
