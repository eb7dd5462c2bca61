"""STSL: an unbiased Hutchinson trace, behaviour on the exact Gaussian MRI posterior, the
second-order term's effect, and latent priors through an autoencoder."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffrecon.operators import Inpainting
from diffrecon.priors import GaussianPrior, GMMPrior
from diffrecon.samplers import karras_sigmas
from diffrecon.samplers.stsl import MonaiAutoencoder, hutchinson_trace, stsl
from diffrecon.testing import fidelity, gaussian_mri_problem


def _gens(n):
    return [torch.Generator().manual_seed(i) for i in range(n)]


@pytest.mark.parametrize("fd_step", [1e-3, None])
def test_hutchinson_is_unbiased_on_a_linear_denoiser(fd_step):
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, dtype=torch.float64, generator=g)
    b = torch.randn(6, dtype=torch.float64, generator=g)

    def lin(x):  # D(x) = M x + b on (B, 1, 2, 3) images
        return (x.reshape(x.shape[0], 6) @ m.T + b).reshape(x.shape)

    x = torch.randn(1, 1, 2, 3, dtype=torch.float64, generator=g)
    # the mean over all 2^6 sign vectors is exactly E_v[v^T M v] = tr(M)
    probes = [
        torch.tensor(s, dtype=torch.float64).reshape(1, 1, 2, 3)
        for s in itertools.product((-1.0, 1.0), repeat=6)
    ]
    est = float(hutchinson_trace(lin, x, probes, fd_step))
    assert est == pytest.approx(float(torch.trace(m)), abs=1e-8 if fd_step is None else 1e-6)
    single = [float(hutchinson_trace(lin, x, [p], fd_step)) for p in probes]
    assert max(single) - min(single) > 1.0  # one probe alone is noisy, only the mean is exact


@pytest.fixture(scope="module")
def problem():
    return gaussian_mri_problem(size=16, coils=4, accel=3.0, noise_std=0.02)


def test_stsl_on_the_exact_gaussian_posterior(problem):
    p = problem
    n = 64
    y = p.y.expand(n, *p.y.shape[1:])
    draws = stsl(
        p.prior,
        p.operator,
        y,
        karras_sigmas(20, 0.01, 1.0),
        generator=_gens(n),
        shape=(2, 16, 16),
        lr=1.0,
        eta=0.05,
    )
    z_rms, ratio = fidelity(draws, p)
    resid = float((p.operator(draws) - y).abs().pow(2).sum((1, 2, 3)).mean().sqrt())
    noise_norm = p.noise_std * math.sqrt(2 * float((p.y != 0).sum()))  # measured entries
    print(
        f"STSL 20 levels (60 NFE): zRMS {z_rms:.3f}, std ratio {ratio:.2f}, residual "
        f"{resid:.3f} vs noise {noise_norm:.3f}"
    )
    # measured 0.645 / 1.10 / 0.478 vs 0.554; DPS needs 200 NFE for zRMS 0.654 here
    assert z_rms < 0.9
    assert resid < 1.2 * noise_norm


def test_trace_term_vanishes_for_gaussian_priors_and_acts_otherwise(problem):
    p = problem
    sig = karras_sigmas(4, 0.05, 1.0)
    kw = dict(shape=(2, 16, 16), lr=1.0)
    a = stsl(p.prior, p.operator, p.y, sig, generator=_gens(1), eta=0.0, **kw)
    b = stsl(p.prior, p.operator, p.y, sig, generator=_gens(1), eta=1.0, **kw)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # affine D: constant trace
    gmm = GMMPrior(
        torch.tensor([0.5, 0.5]),
        torch.stack([p.prior.mean, -p.prior.mean]) + 0.3,
        torch.stack([p.prior.cov, 0.3 * p.prior.cov]),
    )
    c = stsl(gmm, p.operator, p.y, sig, generator=_gens(1), eta=0.0, **kw)
    d = stsl(gmm, p.operator, p.y, sig, generator=_gens(1), eta=1.0, **kw)
    assert float((c - d).abs().max()) > 1e-4


class _LinearAutoencoder:
    """decode(z) = P z with orthonormal columns: a latent prior whose posterior is exact."""

    def __init__(self, n: int, m: int) -> None:
        q, _ = torch.linalg.qr(
            torch.randn(n, m, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        )
        self.p = q

    def encode(self, x):
        return (x.reshape(x.shape[0], -1) @ self.p).reshape(x.shape[0], 1, 4, 4)

    def decode(self, z):
        return (z.reshape(z.shape[0], -1) @ self.p.T).reshape(z.shape[0], 1, 8, 8)


def test_latent_stsl_tracks_the_exact_latent_posterior():
    ae = _LinearAutoencoder(64, 16)
    a = torch.randn(16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    latent_prior = GaussianPrior(
        torch.zeros(1, 4, 4, dtype=torch.float64),
        a @ a.T / 16 + 0.1 * torch.eye(16, dtype=torch.float64),
    )
    op = Inpainting(torch.rand(8, 8, generator=torch.Generator().manual_seed(3)) > 0.4)
    z_true = latent_prior.sample(1, generator=torch.Generator().manual_seed(4))
    sigma_y = 0.05
    y = op(ae.decode(z_true)) + sigma_y * torch.randn(
        1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6)
    )
    y = y * op.mask
    # exact latent posterior of y = M P z + noise
    b = op.mask.reshape(-1, 1).double() * ae.p  # (64, 16)
    prec = torch.linalg.inv(latent_prior.cov) + b.T @ b / sigma_y**2
    cov = torch.linalg.inv(prec)
    mean = cov @ (b.T @ y.reshape(-1) / sigma_y**2)
    n = 64
    draws = stsl(
        latent_prior,
        op,
        y.expand(n, 1, 8, 8),
        karras_sigmas(30, 0.01, 1.0),
        generator=_gens(n),
        shape=(1, 4, 4),
        lr=0.5,
        autoencoder=ae,
    )
    assert draws.shape == (n, 1, 8, 8)
    z = ae.encode(draws).reshape(n, -1)
    z_rms = float(((z.mean(0) - mean) / cov.diagonal().sqrt()).pow(2).mean().sqrt())
    print(f"latent STSL: zRMS {z_rms:.3f}")
    assert z_rms < 1.0


def test_monai_autoencoder_adapter_runs_in_stsl():
    from monai.networks.nets import AutoencoderKL

    torch.manual_seed(0)
    net = AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(4, 4),
        latent_channels=2,
        num_res_blocks=1,
        norm_num_groups=2,
        attention_levels=(False, False),
    )
    ae = MonaiAutoencoder(net.eval(), scale_factor=1.0)
    op = Inpainting(torch.ones(8, 8, dtype=torch.bool))
    y = torch.rand(2, 1, 8, 8)
    out = stsl(
        lambda z, s: z / (1 + s.reshape(-1, 1, 1, 1) ** 2),
        op,
        y,
        karras_sigmas(2, 0.1, 1.0),
        generator=_gens(2),
        shape=(2, 4, 4),
        autoencoder=ae,
    )
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="latent shape"):
        stsl(lambda z, s: z, op, y, karras_sigmas(2, 0.1, 1.0), autoencoder=ae)


def test_squared_misfit_scales_the_data_step_by_twice_the_residual():
    """With the trace term off (eta 0), one inner step of the squared loss is the non-squared
    step times 2 ||y - A D(x)||; on an exact Gaussian prior the rest of the level is affine,
    so the outputs' offsets from a zero step keep that ratio."""
    from diffrecon.api import draw_generators
    from diffrecon.samplers.common import NoiseSource
    from diffrecon.samplers.likelihood import sq_norm

    g = torch.Generator().manual_seed(0)
    prior = GaussianPrior(torch.zeros(1, 4, 4), torch.eye(16, dtype=torch.float64))
    op = Inpainting(torch.rand(1, 4, 4, generator=g) < 0.6)
    y = op(torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)).float()
    sig = torch.tensor([1.0, 0.5])

    def run(lr, squared):
        return stsl(
            prior, op, y, sig, generator=draw_generators(0, 1), lr=lr, eta=0.0,
            step_eta=0.0, squared=squared,
        ).double()  # fmt: skip

    base = run(0.0, False)
    start = op.pinv(y) + 1.0 * NoiseSource(draw_generators(0, 1), torch.zeros_like(y))()
    r = float(sq_norm(op(prior(start, torch.ones(1))) - y).sqrt())
    lr = 0.05  # float32 sampling: offsets well above rounding
    d_l2, d_sq = run(lr, False) - base, run(lr, True) - base
    assert float(d_l2.abs().max()) > 1e-3
    torch.testing.assert_close(d_sq, 2 * r * d_l2, rtol=2e-3, atol=2e-6)


def test_the_start_is_the_adjoint_or_the_pseudo_inverse(problem, monkeypatch):
    """``start="adjoint"`` diffuses ``A^H y`` (the paper's start; preset stsl-5x20) and never
    solves for ``A^+ y``; ``"pinv"`` does (issue 27)."""
    from diffrecon.samplers.registry import resolve

    p, solves = problem, []
    real = type(p.operator).pinv

    def counted(self, *a, **k):
        solves.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(type(p.operator), "pinv", counted)
    levels = karras_sigmas(2, 0.01, 1.0)
    kw = dict(generator=_gens(1), shape=(2, 16, 16), lr=0.0)
    first = []
    for start in ("adjoint", "pinv"):
        stsl(p.prior, p.operator, p.y, levels, start=start, callback=first.append, **kw)
        assert len(solves) == (start == "pinv")
    assert not torch.equal(first[0].x, first[len(first) // 2].x)  # two different starts
    with pytest.raises(ValueError, match="start must be"):
        stsl(p.prior, p.operator, p.y, levels, start="zero", **kw)
    assert resolve("stsl-5x20").settings()["start"] == "adjoint"
