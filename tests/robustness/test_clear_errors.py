"""Wrong arguments get a ValueError that names them, never a crash or a hang (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.api import reconstruct
from diffrecon.mri.masks import cartesian_mask
from diffrecon.operators import Inpainting, MulticoilMRI
from diffrecon.priors import GaussianPrior

PRIOR = GaussianPrior(torch.zeros(2, 4, 4), torch.eye(32))
MAPS = torch.ones(2, 4, 4, dtype=torch.complex64) / 2**0.5
OP = MulticoilMRI(MAPS, torch.ones(4, dtype=torch.bool))
Y = OP(torch.randn(1, 2, 4, 4))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"prior": None}, "prior must be a denoiser"),
        ({"operator": None}, "operator must be a diffrecon Operator"),
        ({"draws": 2.5}, "draws must be an integer"),
        ({"y": Y.real}, "measures complex data, but y is torch.float32"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min must be below"),
    ],
)
def test_reconstruct_names_the_bad_argument(kw, match):
    args = {"y": Y, "operator": OP, "prior": PRIOR, "sampler": "daps-fast", "draws": 1, **kw}
    with pytest.raises(ValueError, match=match):
        reconstruct(**args)


def test_operators_and_masks_refuse_degenerate_sizes():
    with pytest.raises(ValueError, match="maps must have coils and pixels"):
        MulticoilMRI(torch.ones(0, 4, 4, dtype=torch.complex64), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"num_cols must lie in \[2, 65536\]"):
        cartesian_mask(10**9, 4, 0.08)
    with pytest.raises(ValueError, match="num_cols must be an integer"):
        cartesian_mask(True, 4, 0.08)
    with pytest.raises(ValueError, match="mask"):
        Inpainting(np.ones((4, 4)))
    with pytest.raises(ValueError, match="x must be real"):
        OP(torch.randn(1, 2, 4, 4, dtype=torch.complex64))


def test_draws_agree_across_batch_sizes_to_float32_rounding():
    """Documented in docs/samplers.md: draw d has its own generator, so batch size changes
    only the float summation order (agreement to ~1e-5 relative, not bit for bit)."""
    mask = cartesian_mask(8, 2, 0.25, seed=0).mask
    maps = torch.ones(2, 8, 8, dtype=torch.complex64) / 2**0.5
    op = MulticoilMRI(maps, mask)
    prior = GaussianPrior(torch.zeros(2, 8, 8), torch.eye(128))
    y = op(torch.randn(1, 2, 8, 8))
    a = reconstruct(y, op, prior, sampler="daps-fast", draws=4, steps=5, batch_size=1).draws
    b = reconstruct(y, op, prior, sampler="daps-fast", draws=4, steps=5, batch_size=4).draws
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
