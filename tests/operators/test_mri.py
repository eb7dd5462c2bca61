"""MulticoilMRI against fastMRI's FFT and SigPy's SENSE; single-coil specifics; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy.mri
import torch

from diffrecon.complex import to_channels
from diffrecon.mri import cartesian_mask, poisson_disc_mask
from diffrecon.operators import MulticoilMRI, SinglecoilMRI, fft2c, ifft2c


def _problem(h=16, w=14, coils=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(coils, h, w, dtype=torch.complex128, generator=g)
    x = torch.randn(2, 2, h, w, dtype=torch.float64, generator=g)
    return maps, x


def test_fft2c_is_fastmri_fft2c(fastmri_fftc):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 15, 16, dtype=torch.complex64, generator=g)  # odd and even sizes
    ref = torch.view_as_complex(fastmri_fftc.fft2c_new(torch.view_as_real(z)))
    ref_i = torch.view_as_complex(fastmri_fftc.ifft2c_new(torch.view_as_real(z)))
    assert torch.allclose(fft2c(z), ref, atol=1e-6)
    assert torch.allclose(ifft2c(z), ref_i, atol=1e-6)
    assert torch.allclose(ifft2c(fft2c(z)), z, atol=1e-5)


@pytest.mark.parametrize(
    ("mask_kind", "h", "w"),
    [("columns", 16, 14), ("columns", 15, 13), ("poisson", 16, 14), ("poisson", 13, 14)],
)
def test_multicoil_equals_sigpy_sense(mask_kind, h, w):
    maps, x = _problem(h, w)
    if mask_kind == "columns":
        mask = cartesian_mask(w, 3.0, 0.15, seed=1).mask
        weights = np.broadcast_to(mask.numpy(), (h, w)).astype(np.float64)
    else:
        mask = poisson_disc_mask((h, w), 2.5, calib=(4, 4), seed=2)
        weights = mask.numpy().astype(np.float64)
    op = MulticoilMRI(maps, mask)
    sense = sigpy.mri.linop.Sense(maps.numpy(), weights=weights)
    y = op(x)
    for b in range(x.shape[0]):
        z = (x[b, 0] + 1j * x[b, 1]).numpy()
        np.testing.assert_allclose(y[b].numpy(), sense * z, atol=1e-12)
        np.testing.assert_allclose(
            op.adjoint(y)[b].numpy(),
            to_channels(torch.from_numpy(sense.H * (sense * z))[None])[0],
            atol=1e-12,
        )


def test_forward_is_zero_where_unsampled_and_float32_gives_complex64():
    maps, x = _problem()
    mask = cartesian_mask(14, 4.0, 0.15, seed=3).mask
    op = MulticoilMRI(maps.to(torch.complex64), mask)
    y = op(x.float())
    assert y.dtype == torch.complex64 and y.shape == (2, 4, 16, 14)
    assert bool((y[..., ~mask] == 0).all()) and bool((y[..., mask] != 0).all())
    assert op.oshape == (4, 16, 14) and op.ishape == (2, 16, 14)


def test_singlecoil_pinv_closed_form_and_column_mask_shape():
    mask = cartesian_mask(14, 2.0, 0.2, seed=0).mask
    op = SinglecoilMRI(mask, shape=(16, 14))
    _, x = _problem()
    y = op(x)
    assert y.shape == (2, 1, 16, 14)
    # A A^H = M: the zero-filled image reproduces the data exactly
    assert torch.allclose(op(op.pinv(y)), y, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        SinglecoilMRI(mask)


def test_bad_input_names_the_argument():
    maps, x = _problem()
    mask = cartesian_mask(14, 2.0, 0.2, seed=0).mask
    with pytest.raises(ValueError, match="mask must be a boolean"):
        MulticoilMRI(maps, mask.float())
    with pytest.raises(ValueError, match="mask has 13 columns"):
        MulticoilMRI(maps, mask[:13])
    with pytest.raises(ValueError, match=r"mask must have shape \(16, 14\)"):
        MulticoilMRI(maps, torch.ones(15, 14, dtype=torch.bool))
    with pytest.raises(ValueError, match="maps must be complex"):
        MulticoilMRI(maps.real, mask)
    with pytest.raises(ValueError, match=r"maps must have shape \(coils, H, W\)"):
        MulticoilMRI(maps[0], mask)
    bad = maps.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="maps contains NaN"):
        MulticoilMRI(bad, mask)
    op = MulticoilMRI(maps, mask)
    with pytest.raises(ValueError, match=r"MulticoilMRI: x must have shape \(B, 2, 16, 14\)"):
        op(x[:, :1])
    with pytest.raises(ValueError, match="y has 3 coils but the coil maps have 4"):
        op.adjoint(torch.zeros(1, 3, 16, 14, dtype=torch.complex128))


@pytest.mark.parametrize(("h", "w", "two_d"), [(16, 14, False), (15, 13, False), (12, 10, True)])
def test_row_solve_is_exact_for_column_masks(h, w, two_d):
    """Column masks (also given as an (H, W) mask with equal rows) solve the damped normal
    equations exactly by the per-row eigendecomposition: the residual is float rounding,
    at the damping ratios DAPS meets (1/tau^2 up to 1e4 against 1/r^2 down to 1)."""
    maps, _ = _problem(h, w)
    maps = (maps / maps.abs().pow(2).sum(0).sqrt()).to(torch.complex64)
    mask = cartesian_mask(w, 3.0, 0.2, seed=2).mask
    op = MulticoilMRI(maps, mask.expand(h, w) if two_d else mask)
    assert op.separable_rows
    b = torch.randn(3, 2, h, w, generator=torch.Generator().manual_seed(1))
    for scale, damping in ((1e4, 1.0), (1.0, 1.0), (25.0, 400.0)):
        x = op.solve_damped(b, scale, damping, max_iter=1)  # no iterations: not CG
        assert x.dtype == b.dtype
        res = scale * op.N(x.double()) + damping * x.double() - b.double()
        assert float(res.norm() / b.norm()) < 1e-5
    moved = op.to("cpu")  # the cached eigendecomposition travels with the operator
    assert torch.allclose(moved.solve_damped(b, 1.0, 1.0), op.solve_damped(b, 1.0, 1.0))


def test_two_d_masks_keep_conjugate_gradients():
    maps, _ = _problem(12, 10)
    mask = poisson_disc_mask((12, 10), 2.0, calib=(4, 4), seed=0)
    op = MulticoilMRI(maps.to(torch.complex64), mask)
    assert not op.separable_rows
    b = torch.randn(2, 2, 12, 10, generator=torch.Generator().manual_seed(1))
    x = op.solve_damped(b, 10.0, 1.0, max_iter=300, tol=1e-10)
    res = 10.0 * op.N(x.double()) + x.double() - b.double()
    assert float(res.norm() / b.norm()) < 1e-4
