"""The linear-operator contract, for every operator in the registry."""

from __future__ import annotations

import pytest
import torch

from diffrecon.linalg import inner

from .registry import REGISTRY, TAKES_COMPLEX_IMAGES

CASES = [(name, dt) for name in REGISTRY for dt in (torch.float32, torch.float64)] + [
    (name, dt)
    for name in sorted(TAKES_COMPLEX_IMAGES)
    for dt in (torch.complex64, torch.complex128)
]
TOL = {torch.float32: 1e-5, torch.complex64: 1e-5, torch.float64: 1e-12, torch.complex128: 1e-12}


def _rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g)
    return torch.randn(shape, dtype=dtype, generator=g)


def _build(name, dtype):
    op, ishape = REGISTRY[name](dtype)
    x = _rand((2, *ishape), dtype, 0)
    y_like = op(x)
    return op, x, y_like


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in CASES])
def test_adjoint_identity(name, dtype):
    op, x, y_like = _build(name, dtype)
    y = _rand(y_like.shape, y_like.dtype, 1)
    lhs = inner(op(x), y)
    rhs = inner(x, op.adjoint(y))
    scale = (op(x).abs().norm() * y.abs().norm()).item()
    assert torch.allclose(lhs, rhs, rtol=0, atol=TOL[dtype] * scale), (lhs, rhs)


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{str(d)[6:]}" for n, d in CASES])
def test_linearity_shapes_batching(name, dtype):
    op, x, y = _build(name, dtype)
    x2 = _rand(x.shape, dtype, 5)
    a, b = 0.7, -1.3
    tol = 50 * TOL[dtype]
    assert torch.allclose(op(a * x + b * x2), a * op(x) + b * op(x2), atol=tol * y.abs().max())
    # shapes and dtypes: precision follows the input
    assert y.shape[0] == 2 and op.adjoint(y).shape == x.shape
    assert op.adjoint(y).dtype == x.dtype
    real = {torch.float32: torch.float32, torch.complex64: torch.float32}.get(dtype, torch.float64)
    assert (y.real if y.is_complex() else y).dtype == real
    if op.oshape is not None and None not in op.oshape:
        assert tuple(y.shape[1:]) == op.oshape
    # batching: a batch is the stack of its items
    single = torch.cat([op(x[i : i + 1]) for i in range(2)])
    assert torch.allclose(single, y, atol=tol * y.abs().max())
    single_h = torch.cat([op.adjoint(y[i : i + 1]) for i in range(2)])
    assert torch.allclose(single_h, op.adjoint(y), atol=tol * x.abs().max() * 10)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_adjoint_and_normal_views(name):
    op, x, y = _build(name, torch.float64)
    assert op.H.H is op
    assert op.H is op.H and op.N is op.N  # cached
    assert torch.allclose(op.H(y), op.adjoint(y))
    assert torch.allclose(op.N(x), op.adjoint(op(x)))
    assert torch.allclose(op.vjp(x, y), op.adjoint(y))
    assert name.split("-")[0].split("@")[0].split(".")[0] in repr(op)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_pinv_is_least_squares_minimum_norm(name):
    """A^+ y solves the normal equations and lies in range(A^H), closed form or by CG."""
    op, x, y = _build(name, torch.float64)
    xp = op.pinv(y, tol=1e-12, max_iter=2000)
    # normal equations A^H A x+ = A^H y
    lhs, rhs = op.adjoint(op(xp)), op.adjoint(y)
    assert (lhs - rhs).norm() <= 1e-5 * rhs.norm()
    # consistent data are reproduced
    assert (op(xp) - y).abs().norm() <= 1e-4 * y.abs().norm()  # cond(A)^2 for blurs
