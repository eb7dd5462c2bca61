"""NLINV: its signal model's derivative and adjoint, and the maps it finds on a phantom."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.mri.masks import cartesian_mask
from diffrecon.mri.nlinv import SignalModel, nlinv, sobolev_weights
from diffrecon.operators.fft import fft2c


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(
        torch.randn(*shape, generator=g, dtype=torch.float64),
        torch.randn(*shape, generator=g, dtype=torch.float64),
    )


def test_the_signal_models_derivative_and_adjoint():
    h, w, coils = 12, 10, 3
    m = (torch.rand(h, w, generator=torch.Generator().manual_seed(1)) > 0.4).double()
    model = SignalModel(m, sobolev_weights((h, w)))
    x, c_hat, dx, dc = (
        _rand(h, w, seed=2),
        _rand(coils, h, w, seed=3),
        _rand(h, w, seed=4),
        _rand(coils, h, w, seed=5),
    )
    c = model.profiles(c_hat)
    # G is bilinear: G(u + e du) = G(u) + e J du + e^2 G(du)
    eps = 1e-3
    step = model(x + eps * dx, c_hat + eps * dc) - model(x, c_hat)
    lin = model.jac(x, c, dx, dc)
    assert float((step / eps - lin).norm() / lin.norm()) < 2e-3
    r = _rand(coils, h, w, seed=6)
    lhs = (lin.conj() * r).sum()
    back = model.jac_h(x, c, r)
    rhs = (dx.conj() * back[0]).sum() + (dc.conj() * back[1]).sum()
    assert abs(complex(lhs - rhs)) < 1e-10 * abs(complex(lhs))


def _phantom(n=64, coils=6, seed=0):
    import sigpy
    import sigpy.mri

    img = sigpy.shepp_logan((n, n)).astype(np.complex64)
    maps = sigpy.mri.birdcage_maps((coils, n, n), r=1.2, nzz=coils).astype(np.complex64)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    k = fft2c(torch.from_numpy(maps * img)).numpy()
    sigma = 0.005 * float(np.abs(k).max())
    rng = np.random.default_rng(seed)
    k = k + sigma * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
    return torch.from_numpy(k.astype(np.complex64)), maps, img, sigma


def test_recovers_the_coil_maps_of_a_phantom_and_stops_at_the_noise():
    """3x with 8 ACS lines: the maps agree with the true ones inside the object to a few
    percent, the fit stops when its residual reaches the noise (discrepancy principle),
    and maps times image reproduce the coil images."""
    k, maps, img, sigma = _phantom()
    mask = cartesian_mask(64, 3, 0.12, seed=0).mask
    found = nlinv(k * mask, mask, sigma)
    assert found.maps.shape == maps.shape and found.maps.dtype == torch.complex64
    assert found.residual is not None and found.residual < 1.0 and found.steps < 16
    obj = np.abs(img) > 0.2 * np.abs(img).max()
    s, t = found.maps.numpy(), maps
    inner = (s.conj() * t).sum(0)
    err = np.linalg.norm(s * np.exp(1j * np.angle(inner)) - t, axis=0)
    assert err[obj].mean() < 0.1, err[obj].mean()
    np.testing.assert_allclose(np.linalg.norm(s, axis=0), 1.0, atol=1e-5)
    model = found.maps.numpy() * found.image.numpy()
    rel = np.linalg.norm((model - maps * img)[:, obj]) / np.linalg.norm((maps * img)[:, obj])
    assert rel < 0.5  # the image is an unregularised 3x reconstruction: noisy, not wrong
    # without a noise level: a fixed number of steps, no residual ratio
    blind = nlinv(k * mask, mask)
    assert blind.residual is None and blind.steps == 10


def test_refuses_what_it_cannot_fit():
    k = torch.zeros(2, 8, 8, dtype=torch.complex64)
    with pytest.raises(ValueError, match="non-zero"):
        nlinv(k, torch.ones(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="does not fit"):
        nlinv(k + 1, torch.ones(7, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(coils, H, W\)"):
        nlinv(k[0], torch.ones(8, dtype=torch.bool))
