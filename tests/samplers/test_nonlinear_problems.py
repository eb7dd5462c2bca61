"""Phase retrieval and HDR with a small Gaussian prior: the residual reaches the noise level."""

from __future__ import annotations

import pytest
import torch

from diffrecon import reconstruct
from diffrecon.operators import HDR, PhaseRetrieval
from diffrecon.priors import GaussianPrior


def _smooth_prior(size=6):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pts = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1).double()
    cov = 0.2 * torch.exp(-((pts[:, None] - pts[None]) ** 2).sum(-1) / 4.0)
    cov += 1e-3 * torch.eye(size * size, dtype=torch.float64)
    mean = torch.full((1, size, size), 0.3, dtype=torch.float64)
    return GaussianPrior(mean, cov)


@pytest.mark.parametrize(("op", "lr"), [(PhaseRetrieval(2.0), 5e-5), (HDR(2.0), 5e-5)])
def test_residual_decreases_to_noise_level(op, lr):
    prior = _smooth_prior()
    g = torch.Generator().manual_seed(0)
    x_true = prior.sample(1, generator=g)
    noise_std = 0.02
    y = op(x_true)
    y = y + noise_std * torch.randn(y.shape, generator=g, dtype=y.dtype)
    start = prior.sample(8, generator=g)  # prior draws: what the data must correct
    res_prior = float((op(start) - y).pow(2).mean().sqrt())
    post = reconstruct(
        y,
        op,
        prior,
        sampler="daps",
        draws=8,
        noise_std=noise_std,
        seed=0,
        shape=(1, 6, 6),
        steps=40,
        sigma_min=0.01,
        sigma_max=10.0,
        lr=lr,
        lr_min_ratio=0.05,
        langevin_steps=40,
        ode_steps=2,
    )
    res = float((op(post.draws.double()) - y).pow(2).mean().sqrt())
    print(
        f"{op.name}: residual RMS prior draws {res_prior:.4f} -> DAPS draws {res:.4f} "
        f"(noise {noise_std})"
    )
    assert res < 2.0 * noise_std < res_prior
