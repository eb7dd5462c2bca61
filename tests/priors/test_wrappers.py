"""VP (epsilon / v / x0) networks and range scaling give the same D(x, sigma)."""

from __future__ import annotations

import pytest
import torch

from diffrecon.priors import (
    FlowMatchingDenoiser,
    GaussianPrior,
    ScaledDenoiser,
    VPDenoiser,
    ddpm_alphas_cumprod,
)


def _vp_net(prior, alphas_cumprod, prediction):
    """A VP network built from an exact prior: what a perfectly trained model would output."""
    ac = alphas_cumprod

    def net(z, t):
        t_idx = t.round().long()
        a = ac[t_idx].to(z.dtype).reshape(-1, 1, 1, 1)
        sigma = ((1 - a) / a).sqrt()
        x = z / a.sqrt()
        x0 = prior(x, sigma.reshape(-1))
        eps = (x - x0) / sigma
        if prediction == "epsilon":
            return eps
        if prediction == "v":
            return a.sqrt() * eps - (1 - a).sqrt() * x0
        return x0

    return net


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear"])
def test_vp_wrapper_reproduces_the_exact_denoiser_at_training_levels(prediction, schedule):
    prior = GaussianPrior(
        torch.zeros(1, 2, 2, dtype=torch.float64), torch.eye(4, dtype=torch.float64) * 0.3
    )
    ac = (
        ddpm_alphas_cumprod(1000, 1e-4, 2e-2, schedule)
        if schedule == "linear"
        else ddpm_alphas_cumprod(1000, 8.5e-4, 1.2e-2, schedule)
    )
    wrapped = VPDenoiser(_vp_net(prior, ac, prediction), ac, prediction=prediction)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    for t in (0, 10, 500, 999):
        sigma = float(wrapped.sigmas[t])
        xs = x * (1 + sigma)
        assert torch.allclose(wrapped(xs, sigma), prior(xs, sigma), atol=1e-8), (t, prediction)
        assert abs(float(wrapped.sigma_to_t(torch.tensor([sigma], dtype=torch.float64))) - t) < 1e-6


def test_scaled_denoiser_maps_ranges():
    # a prior on [0, 1] data, used by a sampler working in [-1, 1]
    inner = GaussianPrior(
        torch.full((1, 1, 2), 0.5, dtype=torch.float64), 0.04 * torch.eye(2, dtype=torch.float64)
    )
    outer = GaussianPrior(
        torch.zeros(1, 1, 2, dtype=torch.float64), 0.16 * torch.eye(2, dtype=torch.float64)
    )
    wrapped = ScaledDenoiser(inner, scale=0.5, shift=0.5)  # x_inner = 0.5 x + 0.5
    x = torch.randn(4, 1, 1, 2, dtype=torch.float64)
    assert torch.allclose(wrapped(x, 0.3), outer(x, 0.3), atol=1e-12)
    assert wrapped.sigma_max == pytest.approx(inner.sigma_max / 0.5)


def test_edm_preconditioning_reproduces_the_denoiser_it_was_fit_to():
    from diffrecon.priors import EDMDenoiser

    prior = GaussianPrior(
        torch.zeros(1, 2, 2, dtype=torch.float64), torch.eye(4, dtype=torch.float64) * 0.25
    )
    holder = {}

    def net(x_in, c_noise):  # the exact EDM training target F = (D - c_skip x) / c_out
        sigma = (4 * c_noise).exp()
        c_skip, c_out, c_in, _ = holder["edm"].coefficients(sigma)
        x = x_in / c_in.reshape(-1, 1, 1, 1)
        return (prior(x, sigma) - c_skip.reshape(-1, 1, 1, 1) * x) / c_out.reshape(-1, 1, 1, 1)

    edm = EDMDenoiser(net, sigma_data=0.5)
    holder["edm"] = edm
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    for sigma in (0.01, 0.5, 20.0):
        assert torch.allclose(edm(x, sigma), prior(x, sigma), atol=1e-10)


@pytest.mark.parametrize("data_at", ["one", "zero"])
def test_flow_matching_wrapper_reproduces_the_exact_denoiser(data_at):
    """The exact velocity of a Gaussian prior (E[v | x_t], built from its posterior mean in
    the flow's own time) wrapped back must give the prior's denoiser at any sigma."""
    a = torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    prior = GaussianPrior(torch.full((1, 4, 4), 0.1, dtype=torch.float64), a @ a.T / 16)

    def velocity(xt, t_scaled):
        t = (t_scaled / 999.0).reshape(-1, 1, 1, 1)
        w = t if data_at == "one" else 1 - t  # weight of the data in x_t
        x0 = prior(xt / w, ((1 - w) / w).reshape(-1))
        # data_at one: v = x1 - z = (x1 - x_t) / (1 - t); zero: v = z - x0 = (x_t - x0) / t
        return (x0 - xt) / (1 - t) if data_at == "one" else (xt - x0) / t

    den = FlowMatchingDenoiser(velocity, data_at=data_at, time_scale=999.0)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.05, 1.0, 20.0], dtype=torch.float64)
    torch.testing.assert_close(den(x, sigma), prior(x, sigma))
    assert den.sigma_min < 0.01 and den.sigma_max > 100
    with pytest.raises(ValueError, match="data_at"):
        FlowMatchingDenoiser(velocity, data_at="half")


def test_support_denoiser_restricts_the_prior_and_checks_its_mask():
    from diffrecon.api import reconstruct
    from diffrecon.operators import MulticoilMRI
    from diffrecon.priors import GaussianPrior, SupportDenoiser

    support = torch.zeros(4, 4, dtype=torch.bool)
    support[1:3, 1:3] = True
    prior = GaussianPrior(torch.zeros(2, 4, 4), torch.eye(32))
    d = SupportDenoiser(prior, support)
    out = d(torch.randn(3, 2, 4, 4), torch.full((3,), 0.5))
    assert torch.all(out[..., ~support] == 0) and torch.any(out[..., support] != 0)
    assert d.sigma_data == prior.sigma_data  # the range attributes are the prior's
    with pytest.raises(ValueError, match="2-D bool mask"):
        SupportDenoiser(prior, support.float())
    with pytest.raises(ValueError, match="support is empty"):
        SupportDenoiser(prior, torch.zeros(4, 4, dtype=torch.bool))
    maps = torch.ones(2, 4, 4, dtype=torch.complex64) / 2**0.5
    op = MulticoilMRI(maps, torch.ones(4, dtype=torch.bool))
    y = op(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="does not match the image"):
        reconstruct(y, op, prior, sampler="daps-fast", draws=1, support=torch.ones(3, 3) > 0)
    post = reconstruct(y, op, prior, sampler="daps-fast", draws=2, steps=3, support=support)
    assert torch.all(post.draws[..., ~support] == 0)
