"""Any SigPy ``Linop`` (e.g. non-Cartesian ``sigpy.mri.linop.Sense``) as a diffrecon operator.

SigPy runs on numpy arrays one item at a time, so batches are looped over and tensors go
through the CPU. Autograd works: the backward pass applies the linop's adjoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffrecon.complex import complex_dtype, real_dtype, to_channels, to_complex
from diffrecon.operators.base import LinearOperator


def _apply_linop(linop: Any, t: torch.Tensor) -> torch.Tensor:
    arr = t.detach().cpu().numpy()
    out = np.stack([np.asarray(linop * item) for item in arr])
    return torch.from_numpy(out).to(device=t.device, dtype=t.dtype)


class _LinopFunction(torch.autograd.Function):
    """``y = L z`` for complex ``z``; the gradient of a real loss is ``L^H grad_y``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, linop: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.linop = linop
        return _apply_linop(linop, z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return _apply_linop(ctx.linop.H, grad), None


class SigpyOperator(LinearOperator):
    """Wrap a SigPy ``Linop``.

    With ``complex_image=True`` (the default, for MRI) images are ``(B, 2, *linop.ishape)``
    real channel pairs, as for every diffrecon MRI operator; otherwise images are complex
    ``(B, *linop.ishape)`` tensors. Measurements are complex ``(B, *linop.oshape)``.
    """

    def __init__(self, linop: Any, complex_image: bool = True) -> None:
        try:
            lin_i, lin_o = tuple(linop.ishape), tuple(linop.oshape)
            _ = linop.H
        except AttributeError as err:
            raise ValueError(f"linop must be a sigpy.linop.Linop, got {type(linop)}") from err
        self.linop = linop
        self.complex_image = complex_image
        ishape = (2, *lin_i) if complex_image else lin_i
        super().__init__(ishape, lin_o)

    @property
    def name(self) -> str:
        return f"SigpyOperator[{type(self.linop).__name__}]"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.complex_image:
            z = to_complex(x)
        else:
            z = x if x.is_complex() else x.to(complex_dtype(x.dtype))
        return _LinopFunction.apply(z, self.linop)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not y.is_complex():
            y = y.to(complex_dtype(y.dtype))
        z = _LinopFunction.apply(y, self.linop.H)
        return to_channels(z).to(real_dtype(z.dtype)) if self.complex_image else z

    def to(self, device: torch.device | str) -> SigpyOperator:
        """SigPy works on host arrays; tensors on other devices are copied through the CPU."""
        return self

    def _repr_args(self) -> str:
        return repr(self.linop).strip("<>")
