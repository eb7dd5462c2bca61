"""Exact priors: Tweedie's formula, GMM reduces to Gaussian, posterior formulas, errors."""

from __future__ import annotations

import pytest
import torch

from diffrecon.operators import Inpainting
from diffrecon.priors import GaussianPrior, GMMPrior


def _cov(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, dtype=torch.float64, generator=g)
    return a @ a.T / n + 0.1 * torch.eye(n, dtype=torch.float64)


def _log_density_gauss(x, mean, cov):
    d = x.reshape(x.shape[0], -1) - mean.reshape(1, -1)
    return -0.5 * (d @ torch.linalg.inv(cov) * d).sum(1)


def test_gaussian_denoiser_is_tweedie():
    mean = torch.randn(1, 2, 3, dtype=torch.float64)
    cov = _cov(6)
    prior = GaussianPrior(mean, cov)
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64).requires_grad_(True)
    sigma = 0.7
    logp = _log_density_gauss(x, mean, cov + sigma**2 * torch.eye(6, dtype=torch.float64))
    (score,) = torch.autograd.grad(logp.sum(), x)
    assert torch.allclose(prior(x.detach(), sigma), x.detach() + sigma**2 * score, atol=1e-10)
    # per-item sigmas
    sig = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    each = torch.cat([prior(x[i : i + 1].detach(), float(sig[i])) for i in range(4)])
    assert torch.allclose(prior(x.detach(), sig), each)


def test_gmm_denoiser_is_tweedie_and_one_component_is_gaussian():
    means = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    covs = torch.stack([_cov(4, s) for s in range(3)])
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    gmm = GMMPrior(w, means, covs)
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64).requires_grad_(True)
    sigma = 0.4
    eye = torch.eye(4, dtype=torch.float64)
    comps = torch.stack(
        [
            _log_density_gauss(x, means[k], covs[k] + sigma**2 * eye)
            - 0.5 * torch.logdet(covs[k] + sigma**2 * eye)
            + w[k].log()
            for k in range(3)
        ],
        1,
    )
    (score,) = torch.autograd.grad(torch.logsumexp(comps, 1).sum(), x)
    assert torch.allclose(gmm(x.detach(), sigma), x.detach() + sigma**2 * score, atol=1e-10)
    single = GMMPrior(torch.ones(1, dtype=torch.float64), means[:1], covs[:1])
    gauss = GaussianPrior(means[0], covs[0])
    assert torch.allclose(single(x.detach(), sigma), gauss(x.detach(), sigma), atol=1e-12)


def test_gaussian_posterior_matches_conditioning_formula():
    mean = torch.randn(1, 3, 3, dtype=torch.float64)
    cov = _cov(9, 1)
    prior = GaussianPrior(mean, cov)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0] = True
    op = Inpainting(mask)
    y = op(torch.randn(1, 1, 3, 3, dtype=torch.float64))
    s = 0.1
    pm, pc = prior.posterior(op, y, s)
    obs = mask.reshape(-1)
    a = torch.eye(9, dtype=torch.float64)[obs]
    k = cov @ a.T @ torch.linalg.inv(a @ cov @ a.T + s**2 * torch.eye(3, dtype=torch.float64))
    ref_mean = mean.reshape(-1) + k @ (y.reshape(-1)[obs] - a @ mean.reshape(-1))
    assert torch.allclose(pm.reshape(-1), ref_mean, atol=1e-10)
    assert torch.allclose(pc, cov - k @ a @ cov, atol=1e-10)


def test_prior_samples_have_the_prior_moments():
    mean = torch.randn(1, 2, 2, dtype=torch.float64)
    cov = _cov(4, 2)
    draws = GaussianPrior(mean, cov).sample(20000, generator=torch.Generator().manual_seed(0))
    flat = draws.reshape(20000, -1)
    assert torch.allclose(flat.mean(0), mean.reshape(-1), atol=0.03)
    assert torch.allclose(torch.cov(flat.T), cov, atol=0.03)


def test_bad_priors():
    with pytest.raises(ValueError, match=r"cov must have shape \(4, 4\)"):
        GaussianPrior(torch.zeros(1, 2, 2), torch.eye(3))
    with pytest.raises(ValueError, match="symmetric"):
        GaussianPrior(torch.zeros(1, 1, 2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianPrior(torch.zeros(1, 1, 2), torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="summing to 1"):
        GMMPrior(torch.tensor([0.5, 0.2]), torch.zeros(2, 1, 1, 2), torch.stack([torch.eye(2)] * 2))
