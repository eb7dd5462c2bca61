"""The operator algebra: composition checks, immutability, repr, device copies, CG."""

from __future__ import annotations

import pytest
import torch

from diffrecon.linalg import conjugate_gradient
from diffrecon.operators import (
    HDR,
    GaussianBlur,
    Inpainting,
    MulticoilMRI,
    PhaseRetrieval,
    SuperResolution,
)


def _mri(h=8, w=6):
    maps = torch.ones(2, h, w, dtype=torch.complex64)
    return MulticoilMRI(maps, torch.ones(w, dtype=torch.bool))


def test_composition_is_shape_checked_at_construction():
    mri = _mri()
    with pytest.raises(ValueError, match=r"cannot compose MulticoilMRI @ Inpainting"):
        _ = mri @ Inpainting(torch.ones(5, 5, dtype=torch.bool))
    ok = mri @ Inpainting(torch.ones(8, 6, dtype=torch.bool))
    assert ok.is_linear and ok.ishape == (None, 8, 6) and ok.oshape == (2, 8, 6)
    assert "MulticoilMRI" in repr(ok) and "Inpainting" in repr(ok)


def test_nonlinear_composition_and_vjp():
    op = HDR(2.0) @ GaussianBlur(3, 1.0)
    assert not op.is_linear
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64) * 0.4
    v = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    # inside the linear range of HDR the VJP is alpha * blur^H v
    assert torch.allclose(op.vjp(x, v), 2.0 * GaussianBlur(3, 1.0).adjoint(v))
    assert isinstance(PhaseRetrieval(2.0) @ SuperResolution(2), type(op))


def test_operators_are_immutable():
    op = _mri()
    with pytest.raises(AttributeError, match="immutable"):
        op.mask = torch.zeros(6, dtype=torch.bool)
    # the operator owns a copy: changing the caller's mask changes nothing
    mask = torch.ones(6, dtype=torch.bool)
    op2 = MulticoilMRI(torch.ones(2, 8, 6, dtype=torch.complex64), mask)
    mask[:] = False
    assert bool(op2.mask.all())


def test_to_device_returns_a_new_operator_with_fresh_caches():
    op = _mri()
    _ = op.H
    moved = op.to("cpu")
    assert moved is not op and moved.H is not op.H and moved.H.H is moved
    x = torch.randn(1, 2, 8, 6)
    assert torch.allclose(moved(x), op(x))


def test_shape_errors_name_operator_and_argument():
    with pytest.raises(ValueError, match=r"SuperResolution: x size \(7, 8\) is not divisible"):
        SuperResolution(2)(torch.zeros(1, 1, 7, 8))
    with pytest.raises(ValueError, match=r"Inpainting: x must have shape \(B, \*, 4, 4\)"):
        Inpainting(torch.ones(4, 4, dtype=torch.bool))(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match=r"MulticoilMRI.H: x must have shape"):
        _mri().H(torch.zeros(1, 2, 8, 5, dtype=torch.complex64))
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        GaussianBlur(4, 1.0)


def test_conjugate_gradient_batched_solves_spd_systems():
    g = torch.Generator().manual_seed(0)
    mats = torch.randn(3, 5, 5, dtype=torch.float64, generator=g)
    spd = mats @ mats.transpose(1, 2) + 0.5 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(3, 5, dtype=torch.float64, generator=g)
    x = conjugate_gradient(lambda v: (spd @ v[..., None])[..., 0], b, tol=1e-12, max_iter=50)
    assert torch.allclose(x, torch.linalg.solve(spd, b), atol=1e-9)
