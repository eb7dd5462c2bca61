"""The torch DWT is orthogonal, differentiable and equals PyWavelets' periodized transform."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from diffrecon.wavelets import DWT2


@pytest.mark.parametrize(("wavelet", "levels"), [("db4", 3), ("db4", 1), ("haar", 2)])
def test_dwt_is_orthogonal_and_matches_pywavelets(wavelet, levels):
    dwt = DWT2(wavelet, levels)
    x = torch.randn(2, 2, 32, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    c = dwt(x)
    torch.testing.assert_close(dwt.inverse(c), x, rtol=0, atol=1e-12)  # perfect reconstruction
    assert float(c.norm() / x.norm()) == pytest.approx(1.0, abs=1e-12)  # norm preserved
    # adjoint = inverse: <W x, c'> = <x, W^T c'>
    c2 = torch.randn_like(c)
    assert float((c * c2).sum()) == pytest.approx(float((x * dwt.inverse(c2)).sum()), rel=1e-10)
    ref = pywt.coeffs_to_array(
        pywt.wavedec2(x[1, 0].numpy(), wavelet, mode="periodization", level=levels)
    )[0]
    np.testing.assert_allclose(c[1, 0].numpy(), ref, atol=1e-12)


def test_dwt_is_differentiable_and_checks_sizes():
    dwt = DWT2("db4", 2)
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: dwt(v), (x,))
    with pytest.raises(ValueError, match="divisible by 4"):
        dwt(torch.zeros(1, 1, 6, 8))
    with pytest.raises(ValueError, match="not orthogonal"):
        DWT2("bior2.2")
