"""ΠGDM's three updates, each checked step by step against its definition written in the
VP coordinates of the paper and of RED-diff (our samplers run in VE coordinates)."""

from __future__ import annotations

import pytest
import torch

from diffrecon.api import draw_generators
from diffrecon.operators import Inpainting
from diffrecon.priors import GaussianPrior, denoiser_range
from diffrecon.samplers.common import NoiseSource
from diffrecon.samplers.pigdm import pigdm


def _problem():
    g = torch.Generator().manual_seed(0)
    n = 8 * 8
    a = torch.randn(n, n, generator=g, dtype=torch.float64) / n**0.5
    prior = GaussianPrior(torch.zeros(1, 8, 8), a @ a.T + 0.1 * torch.eye(n, dtype=torch.float64))
    mask = torch.rand(1, 8, 8, generator=g) < 0.5
    op = Inpainting(mask)
    y = op(torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)).float()
    return prior, op, y


def _vp_step(prior, op, y, x, sigma, sigma_next, w, kind, noise_std):
    """One deterministic (eta = 0) ΠGDM step written in VP coordinates ``z = sqrt(abar) x``."""
    a_t, a_s = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
    z = (x * a_t**0.5).detach().requires_grad_(True)
    x0 = prior(z / a_t**0.5, torch.full((x.shape[0],), sigma))
    resid = y - op(x0.detach())
    if kind == "reddiff":  # RED-diff: J^T H^+ (y - H x0), no r_t^-2, no noise term
        v = op.pinv(resid)
        coeff = a_s**0.5 * a_t**0.5 * w  # its awd weighting
    else:  # the paper: J^T H^T (r^2 H H^T + sigma_y^2 I)^{-1} (y - H x0), sqrt(abar_t) g
        sd = denoiser_range(prior).sigma_data
        r2 = sigma**2 * sd**2 / (sigma**2 + sd**2)
        v = op.solve_normal(op.adjoint(resid), r2, noise_std**2)
        coeff = a_t**0.5 * w
    (g,) = torch.autograd.grad(x0, z, grad_outputs=v)  # d/dz: the VP gradient
    eps = (z - a_t**0.5 * x0) / (1 - a_t) ** 0.5
    z_s = a_s**0.5 * x0 + (1 - a_s) ** 0.5 * eps + coeff * g
    return (z_s / a_s**0.5).detach()


@pytest.mark.parametrize("kind", ["paper", "reddiff"])
def test_one_step_equals_the_vp_definition(kind):
    prior, op, y = _problem()
    sigma, sigma_next, w, noise_std = 2.0, 0.7, 0.3, 0.05
    sigmas = torch.tensor([sigma, sigma_next])
    out = pigdm(
        prior, op, y, sigmas, noise_std=noise_std, generator=draw_generators(0, 2),
        guidance_scale=w, eta=0.0, update=kind,
    )  # fmt: skip
    x = sigma * NoiseSource(draw_generators(0, 2), torch.zeros_like(y))()  # the same start
    if kind == "reddiff":
        x = x + op.pinv(y)
    ref = _vp_step(prior, op, y, x, sigma, sigma_next, w, kind, noise_std)
    torch.testing.assert_close(out.double(), ref.double(), rtol=1e-4, atol=1e-5)


def test_score_update_moves_the_estimate_and_bad_settings_are_refused():
    prior, op, y = _problem()
    sigmas = torch.tensor([2.0, 0.7])
    kw = dict(noise_std=0.05, generator=draw_generators(0, 2), eta=0.0)
    a = pigdm(prior, op, y, sigmas, update="score", **kw)
    kw["generator"] = draw_generators(0, 2)
    b = pigdm(prior, op, y, sigmas, update="score", guidance_scale=0.0, **kw)
    assert not torch.allclose(a, b)  # the guidance acts
    with pytest.raises(ValueError, match="update must be one of"):
        pigdm(prior, op, y, sigmas, update="bogus")
    with pytest.raises(ValueError, match="start must be"):
        pigdm(prior, op, y, sigmas, start="zeros")
