"""Phase retrieval and HDR: definitions, VJPs against finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffrecon.operators import HDR, PhaseRetrieval, fft2c


def _fd_vjp(op, x, v, eps=1e-6):
    """sum_j v_j dA_j/dx_i by central differences, one coordinate at a time."""
    g = torch.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.numel()):
        d = torch.zeros_like(flat)
        d[i] = eps
        plus = op(x + d.reshape(x.shape))
        minus = op(x - d.reshape(x.shape))
        g.reshape(-1)[i] = (v * (plus - minus)).sum() / (2 * eps)
    return g


def test_phase_retrieval_definition_and_shape():
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    op = PhaseRetrieval(oversample=2.0)
    y = op(x)
    assert op.pads(16, 16) == (4, 4) and y.shape == (2, 1, 24, 24)
    padded = F.pad(x, (4, 4, 4, 4)).to(torch.complex128)
    assert torch.allclose(y, fft2c(padded).abs())
    # Parseval: the orthonormal FFT keeps the energy
    assert torch.allclose((y**2).sum((1, 2, 3)), (x**2).sum((1, 2, 3)))
    # amplitude is blind to a global sign
    assert torch.allclose(op(-x), y)


def test_phase_retrieval_vjp_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64, generator=g) + 0.1
    op = PhaseRetrieval(oversample=4.0)
    v = torch.randn(op(x).shape, dtype=torch.float64, generator=g)
    assert torch.allclose(op.vjp(x, v), _fd_vjp(op, x, v), atol=1e-6)


def test_hdr_definition_and_vjp():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64, generator=g) * 1.6 - 0.8
    # keep finite differences off the kinks at |alpha x| = 1
    near_kink = (x.abs() - 0.5).abs() < 0.02
    x = torch.where(near_kink, x + 0.05 * torch.sign(x), x)
    op = HDR(alpha=2.0)
    assert torch.equal(op(x), torch.clamp(2 * x, -1, 1))
    v = torch.randn(x.shape, dtype=x.dtype, generator=g)
    vjp = op.vjp(x, v)
    assert torch.allclose(vjp, _fd_vjp(op, x, v), atol=1e-6)
    # saturated pixels carry no gradient
    assert bool((vjp[(2 * x).abs() > 1] == 0).all())


def test_bad_parameters():
    with pytest.raises(ValueError, match="alpha"):
        HDR(alpha=0)
    with pytest.raises(ValueError, match="oversample"):
        PhaseRetrieval(oversample=-1)
