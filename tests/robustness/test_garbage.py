"""Garbage is never returned or written: non-finite draws stop the sampler with a message
naming it, and degenerate k-space is refused with what is wrong (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.api import reconstruct
from diffrecon.mri.masks import cartesian_mask
from diffrecon.mri.preprocess import prepare_slice
from diffrecon.operators import Inpainting
from diffrecon.priors import GaussianPrior
from diffrecon.samplers.common import NonFiniteSampleError

SAMPLERS = ["daps-fast", "dps", "pigdm-20", "zaps-20", "stsl-20", "cpigdm-5"]


def nan_prior(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * float("nan")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_prior_returning_nan_stops_every_sampler_by_name(sampler):
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[..., ::2, :] = False
    op = Inpainting(mask)
    y = op(torch.rand(1, 1, 8, 8))
    with pytest.raises(NonFiniteSampleError, match=rf"sampler '{sampler}'.*NaN or inf"):
        reconstruct(
            y, op, nan_prior, sampler=sampler, draws=1, steps=3, noise_std=0.01, shape=(1, 8, 8)
        )


def test_a_finite_prior_is_untouched_by_the_guard():
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[..., ::2, :] = False
    op = Inpainting(mask)
    prior = GaussianPrior(torch.zeros(1, 8, 8), torch.eye(64))
    post = reconstruct(
        op(torch.rand(1, 1, 8, 8)), op, prior, sampler="daps-fast", draws=2, steps=3, noise_std=0.01
    )
    assert torch.isfinite(post.draws).all()


@pytest.mark.parametrize(
    "scale, match",
    [(0.0, "all zeros"), (1e-42, "outside what float32"), (1e36, "outside what float32")],
)
def test_degenerate_kspace_is_refused_with_the_reason(scale, match):
    rng = np.random.default_rng(0)
    k = (rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))).astype(np.complex64)
    mask = cartesian_mask(16, 2, 0.25, seed=0).mask
    with pytest.raises(ValueError, match=match):
        prepare_slice(k * np.float32(scale) if scale else np.zeros_like(k), mask)
