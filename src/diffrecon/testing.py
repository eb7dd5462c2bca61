"""Small inverse problems with exact posteriors: check a sampler before trusting it.

Used by the test suite and `bench/posterior_fidelity.py`; cheap enough for a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffrecon.mri import cartesian_mask
from diffrecon.operators import LinearOperator, MulticoilMRI
from diffrecon.priors import GaussianPrior


@dataclass
class GaussianMRIProblem:
    prior: GaussianPrior
    operator: LinearOperator
    x_true: torch.Tensor  # (1, 2, H, W)
    y: torch.Tensor  # (1, coils, H, W)
    noise_std: float
    post_mean: torch.Tensor  # (2, H, W)
    post_cov: torch.Tensor  # (n, n)

    @property
    def post_std(self) -> torch.Tensor:
        return self.post_cov.diagonal().sqrt().reshape(self.post_mean.shape)


def nonstationary_cov(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a complex image (2 channels) whose amplitude and correlation
    length vary across the image (Gibbs kernel), plus a small white nugget."""
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, size, dtype=torch.float64),
        torch.linspace(-1, 1, size, dtype=torch.float64),
        indexing="ij",
    )
    pts = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1)
    amp = 0.25 + 0.2 * torch.exp(-((pts[:, 0] - 0.3) ** 2 + pts[:, 1] ** 2) / 0.3)
    ell = 0.15 + 0.25 * (pts[:, 1] + 1) / 2  # longer correlations to the right
    l2 = ell[:, None] ** 2 + ell[None, :] ** 2
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    k = torch.sqrt(2 * ell[:, None] * ell[None, :] / l2) * torch.exp(-d2 / l2)
    k = amp[:, None] * amp[None] * k
    n = size * size
    cov = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    cov[:n, :n] = k
    cov[n:, n:] = 0.6 * k
    cov += 1e-3 * torch.eye(2 * n, dtype=torch.float64)
    mean = torch.zeros(2, size, size, dtype=torch.float64)
    mean[0] = 0.3 * torch.exp(-(yy**2 + xx**2) / 0.5)
    return mean, cov


def gaussian_mri_problem(
    size: int = 16, coils: int = 4, accel: float = 3.0, noise_std: float = 0.02, seed: int = 0
) -> GaussianMRIProblem:
    mean, cov = nonstationary_cov(size)
    prior = GaussianPrior(mean, cov)
    g = torch.Generator().manual_seed(seed + 1)
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, size, dtype=torch.float64),
        torch.linspace(-1, 1, size, dtype=torch.float64),
        indexing="ij",
    )
    maps = []
    for c in range(coils):
        ang = 2 * torch.pi * c / coils
        cy, cx = 1.2 * torch.sin(torch.tensor(ang)), 1.2 * torch.cos(torch.tensor(ang))
        mag = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 1.5)
        maps.append(torch.polar(mag, ang + 0.5 * (xx + yy)))
    maps_t = torch.stack(maps)
    maps_t = maps_t / maps_t.abs().pow(2).sum(0).sqrt()
    mask = cartesian_mask(size, accel, 0.25, kind="equispaced", seed=seed).mask
    op = MulticoilMRI(maps_t, mask)
    x_true = prior.sample(1, generator=g)
    clean = op(x_true)
    noise = noise_std * torch.complex(
        torch.randn(clean.shape, generator=g, dtype=torch.float64),
        torch.randn(clean.shape, generator=g, dtype=torch.float64),
    )
    y = clean + torch.where(op.mask, noise, 0)
    pm, pc = prior.posterior(op, y, noise_std)
    return GaussianMRIProblem(prior, op, x_true, y, noise_std, pm, pc)


def fidelity(draws: torch.Tensor, problem: GaussianMRIProblem) -> tuple[float, float]:
    """RMS z-score of the draws' mean against the exact posterior mean (in units of the
    exact posterior std) and the median ratio sampled std / exact std."""
    mean = draws.double().mean(0)
    std = draws.double().std(0)
    z = (mean - problem.post_mean) / problem.post_std
    ratio = (std / problem.post_std).median()
    return float(z.pow(2).mean().sqrt()), float(ratio)
