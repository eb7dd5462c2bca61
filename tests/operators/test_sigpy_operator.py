"""SigpyOperator: agrees with the native operator, gradients flow, non-Cartesian works."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy.mri
import torch

from diffrecon.mri import cartesian_mask
from diffrecon.operators import MulticoilMRI, SigpyOperator


def _setup():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 12, 10, dtype=torch.complex128, generator=g)
    mask = cartesian_mask(10, 2.0, 0.2, seed=0).mask
    weights = np.broadcast_to(mask.numpy(), (12, 10)).astype(np.float64)
    native = MulticoilMRI(maps, mask)
    wrapped = SigpyOperator(sigpy.mri.linop.Sense(maps.numpy(), weights=weights))
    x = torch.randn(2, 2, 12, 10, dtype=torch.float64, generator=g)
    return native, wrapped, x


def test_round_trip_agrees_with_native():
    native, wrapped, x = _setup()
    assert wrapped.ishape == native.ishape and wrapped.oshape == native.oshape
    y = native(x)
    assert torch.allclose(wrapped(x), y, atol=1e-12)
    assert torch.allclose(wrapped.adjoint(y), native.adjoint(y), atol=1e-12)
    assert torch.allclose(wrapped.N(x), native.N(x), atol=1e-12)


def test_gradients_flow_through_sigpy():
    native, wrapped, x = _setup()
    y = native(torch.randn_like(x))
    grads = []
    for op in (native, wrapped):
        xg = x.clone().requires_grad_(True)
        loss = (op(xg) - y).abs().pow(2).sum()
        loss.backward()
        grads.append(xg.grad)
    assert grads[1] is not None and torch.allclose(grads[0], grads[1], atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda t: wrapped(t).abs().pow(2).sum(), (x[:1].clone().requires_grad_(True),)
    )


def test_non_cartesian_sense_adjoint():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 8, 8, dtype=torch.complex128, generator=g).numpy()
    coord = np.random.default_rng(0).uniform(-4, 4, size=(30, 2))
    op = SigpyOperator(sigpy.mri.linop.Sense(maps, coord=coord))
    assert op.oshape == (2, 30)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64, generator=g)
    y = torch.randn(2, 2, 30, dtype=torch.complex128, generator=g)
    lhs = (torch.conj(op(x)) * y).real.sum()
    rhs = (x * op.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-6)


def test_rejects_non_linops():
    with pytest.raises(ValueError, match="linop must be a sigpy.linop.Linop"):
        SigpyOperator(np.eye(3))
