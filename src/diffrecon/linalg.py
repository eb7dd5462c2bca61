"""Batched linear algebra on tensors: real inner products and conjugate gradients.

Inner products are the real ones, ``<a, b> = Re sum(conj(a) * b)``, so real images with a
(real, imaginary) channel pair and complex measurements share one adjoint convention.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-batch-item real inner product ``Re <a, b>`` over all dimensions but the first."""
    prod = torch.conj(a) * b if a.is_complex() else a * b
    prod = prod.real if prod.is_complex() else prod
    return prod.reshape(prod.shape[0], -1).sum(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def conjugate_gradient(
    apply_a: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> torch.Tensor:
    """Solve ``A x = b`` for a Hermitian positive (semi-)definite ``A``, batched over dim 0.

    Each batch item has its own step sizes; items stop updating once their relative residual
    falls below ``tol``. Started from zero on a consistent system ``A^H A x = A^H y``, the
    iterates stay in the range of ``A^H`` and converge to the minimum-norm solution.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_a(x) if x0 is not None else b.clone()
    p = r.clone()
    rs = inner(r, r)
    b_norm = inner(b, b).clamp_min(torch.finfo(rs.dtype).tiny)
    for _ in range(max_iter):
        active = rs > (tol**2) * b_norm
        if not bool(active.any()):
            break
        ap = apply_a(p)
        denom = inner(p, ap)
        alpha = torch.where(active & (denom > 0), rs / torch.where(denom > 0, denom, 1), 0)
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * ap
        rs_new = inner(r, r)
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), 0)
        p = r + _bcast(beta, p) * p
        rs = torch.where(active, rs_new, rs)
    return x
