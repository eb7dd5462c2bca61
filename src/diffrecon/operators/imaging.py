"""Linear image degradations: inpainting, super-resolution, Gaussian and motion blur.

All act per channel on ``(B, C, H, W)`` images, real or complex (a complex image is processed
as its real and imaginary parts). Blurs use reflect padding and true convolution, as the
DPS/DAPS benchmarks define them; their adjoints are exact (checked by the contract tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffrecon._checks import as_tensor, check_bool_mask, check_finite, check_ndim
from diffrecon.operators.base import LinearOperator


def _per_part(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a real linear map to a real tensor, or to both parts of a complex one."""
    if x.is_complex():
        return torch.complex(fn(x.real), fn(x.imag))
    return fn(x)


class Inpainting(LinearOperator):
    """``y = m * x`` with a boolean mask ``(H, W)`` or ``(C, H, W)``; missing pixels read 0.

    The operator is an orthogonal projection, so it is its own adjoint and pseudo-inverse.
    """

    def __init__(self, mask: Any) -> None:
        m = check_bool_mask("mask", mask)
        check_ndim("mask", m, (2, 3), "(H, W) or (C, H, W)")
        self.mask = m.clone()
        shape = tuple(m.shape) if m.ndim == 3 else (None, *m.shape)
        super().__init__(shape, shape)

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask.to(x.device)
        return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))

    _forward = _apply
    _adjoint = _apply

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(y)

    def _normal_projection_scale(self) -> float:
        return 1.0

    def _repr_args(self) -> str:
        return f"kept={float(self.mask.float().mean()):.3f}"


class SuperResolution(LinearOperator):
    """Downsampling by ``factor`` with average pooling (``H`` and ``W`` divisible by it).

    ``A A^H = I / factor^2``, so the pseudo-inverse is ``factor^2 A^H`` (pixel replication).
    """

    def __init__(self, factor: int) -> None:
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"factor must be a positive integer, got {factor!r}")
        self.factor = factor
        super().__init__((None, None, None), (None, None, None))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.ishape, "x")
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"{self.name}: x size {tuple(x.shape[-2:])} is not divisible by "
                f"factor={self.factor}"
            )
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_part(lambda t: F.avg_pool2d(t, self.factor), x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        f = self.factor
        up = y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
        return up / f**2

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._adjoint(y) * self.factor**2

    def _normal_projection_scale(self) -> float:
        return 1.0 / self.factor**2

    def _repr_args(self) -> str:
        return f"factor={self.factor}"


def _reflect_pad_adjoint(z: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Adjoint of ``F.pad(x, (pw, pw, ph, ph), mode="reflect")``: fold the borders back."""
    shape = z.shape[:-2] + (z.shape[-2] - 2 * ph, z.shape[-1] - 2 * pw)
    with torch.enable_grad():
        x = torch.zeros(shape, dtype=z.dtype, device=z.device, requires_grad=True)
        out = F.pad(x, (pw, pw, ph, ph), mode="reflect")
        (g,) = torch.autograd.grad(out, x, grad_outputs=z)
    return g


class Blur(LinearOperator):
    """Convolution of every channel with one 2-D kernel (odd sizes), reflect-padded."""

    def __init__(self, kernel: Any) -> None:
        k = as_tensor("kernel", kernel)
        check_ndim("kernel", k, (2,), "(kh, kw)")
        if not k.is_floating_point():
            raise ValueError(f"kernel must be real floating point, got dtype {k.dtype}")
        check_finite("kernel", k)
        if k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ValueError(f"kernel sizes must be odd, got {tuple(k.shape)}")
        self.kernel = k.clone()
        super().__init__((None, None, None), (None, None, None))

    def _pads(self) -> tuple[int, int]:
        return self.kernel.shape[0] // 2, self.kernel.shape[1] // 2

    def _weight(self, t: torch.Tensor) -> torch.Tensor:
        return self.kernel.to(device=t.device, dtype=t.dtype)[None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x, self.ishape, "x")
        ph, pw = self._pads()
        if x.shape[-2] <= ph or x.shape[-1] <= pw:
            raise ValueError(
                f"{self.name}: x size {tuple(x.shape[-2:])} must exceed half the kernel "
                f"size {tuple(self.kernel.shape)} for reflect padding"
            )
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self._pads()

        def conv(t: torch.Tensor) -> torch.Tensor:
            b, c, h, w = t.shape
            padded = F.pad(t.reshape(b * c, 1, h, w), (pw, pw, ph, ph), mode="reflect")
            # conv2d correlates; flipping the kernel makes it a true convolution
            out = F.conv2d(padded, torch.flip(self._weight(t), dims=(-2, -1)))
            return out.reshape(b, c, h, w)

        return _per_part(conv, x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        ph, pw = self._pads()

        def conv_t(t: torch.Tensor) -> torch.Tensor:
            b, c, h, w = t.shape
            full = F.conv_transpose2d(
                t.reshape(b * c, 1, h, w), torch.flip(self._weight(t), dims=(-2, -1))
            )
            return _reflect_pad_adjoint(full, ph, pw).reshape(b, c, h, w)

        return _per_part(conv_t, y)

    def _repr_args(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}"


def gaussian_kernel(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised isotropic Gaussian kernel ``(kernel_size, kernel_size)``, float64."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    r = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


class GaussianBlur(Blur):
    """Gaussian blur; the DAPS/DPS benchmark uses ``kernel_size=61, sigma=3.0``."""

    def __init__(self, kernel_size: int = 61, sigma: float = 3.0) -> None:
        super().__init__(gaussian_kernel(kernel_size, sigma).float())
        self.sigma = float(sigma)

    def _repr_args(self) -> str:
        return f"kernel_size={self.kernel.shape[0]}, sigma={self.sigma}"


class MotionBlur(Blur):
    """Blur with a given motion kernel (see :func:`random_motion_kernel`)."""


def random_motion_kernel(
    size: int = 61, intensity: float = 0.5, seed: int | None = None, steps: int | None = None
) -> torch.Tensor:
    """A random camera-shake kernel ``(size, size)``, non-negative, summing to one.

    A particle moves with random accelerations whose strength grows with ``intensity`` in
    [0, 1] (0: a straight line, 1: an erratic path), the path is scaled to fill the kernel
    and rasterised with bilinear splatting. The same ``seed`` gives the same kernel; the
    global RNG is not touched.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3, got {size}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity must lie in [0, 1], got {intensity}")
    rng = np.random.default_rng(seed)
    n = steps or 4 * size
    angle = rng.uniform(0, 2 * math.pi)
    velocity = np.array([math.cos(angle), math.sin(angle)])
    pos = np.zeros((n, 2))
    for i in range(1, n):
        # random acceleration; a pull back towards the start keeps the path compact
        kick = rng.normal(size=2) * intensity * 0.6
        velocity = velocity + kick - 0.02 * intensity * pos[i - 1]
        velocity /= max(np.linalg.norm(velocity), 1e-8)
        pos[i] = pos[i - 1] + velocity
    pos -= pos.mean(axis=0)
    extent = np.abs(pos).max()
    pos *= (size // 2 - 1) / max(extent, 1e-8)
    pos += size // 2
    kernel = np.zeros((size, size))
    i0 = np.floor(pos).astype(int)
    frac = pos - i0
    for (r, c), (fr, fc) in zip(i0, frac, strict=True):
        for dr, wr in ((0, 1 - fr), (1, fr)):
            for dc, wc in ((0, 1 - fc), (1, fc)):
                if 0 <= r + dr < size and 0 <= c + dc < size:
                    kernel[r + dr, c + dc] += wr * wc
    return torch.from_numpy(kernel / kernel.sum()).float()
