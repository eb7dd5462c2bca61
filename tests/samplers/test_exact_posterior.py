"""Samplers against exact posteriors (Gaussian and Gaussian-mixture priors)."""

from __future__ import annotations

import pytest
import torch

from diffrecon import reconstruct
from diffrecon.operators import Inpainting
from diffrecon.priors import GMMPrior
from diffrecon.testing import fidelity, gaussian_mri_problem

# DAPS on the exact case: 60 annealing levels x 2 ODE steps, 60 Langevin steps (the paper's
# lr scaled to this problem's likelihood curvature 1/noise_std^2 = 2500: lr * 2500 = 1 < 2).
DAPS_EXACT = dict(
    steps=60,
    sigma_min=0.01,
    sigma_max=100.0,
    lr=4e-4,
    lr_min_ratio=0.05,
    langevin_steps=60,
    ode_steps=2,
)


@pytest.fixture(scope="module")
def mri_problem():
    return gaussian_mri_problem(size=16, coils=4, accel=3.0, noise_std=0.02)


def test_exact_problem_is_what_the_issue_asks(mri_problem):
    p = mri_problem
    assert p.x_true.shape == (1, 2, 16, 16) and p.operator.coils == 4
    assert 2.5 <= p.operator.acceleration <= 3.5
    # the exact posterior is far tighter than the prior: the data matter
    assert float(p.post_std.max()) < 0.5 * float(p.prior.cov.diagonal().sqrt().min())


def test_daps_matches_the_exact_posterior(mri_problem):
    p = mri_problem
    post = reconstruct(
        p.y.to(torch.complex64),
        p.operator,
        p.prior,
        sampler="daps",
        draws=256,
        noise_std=p.noise_std,
        seed=0,
        batch_size=256,
        **DAPS_EXACT,
    )
    z_rms, std_ratio = fidelity(post.draws, p)
    print(f"DAPS exact-Gaussian: zRMS={z_rms:.3f} std-ratio={std_ratio:.3f}")
    assert z_rms < 0.5
    assert 1 / 1.5 < std_ratio < 1.5


@pytest.mark.parametrize(
    ("sampler", "kw"),
    [
        ("dps", dict(steps=200, sigma_min=0.01, sigma_max=100.0, zeta=0.3)),
        ("pigdm", dict(steps=50, sigma_min=0.01, sigma_max=100.0)),
    ],
)
def test_baselines_report_their_figures(mri_problem, sampler, kw):
    """DPS and ΠGDM approximate the posterior; their figures are reported, not judged. Only
    what they are meant to do is asserted: ΠGDM's mean reaches the data's noise level."""
    p = mri_problem
    post = reconstruct(
        p.y.to(torch.complex64),
        p.operator,
        p.prior,
        sampler=sampler,
        draws=64,
        noise_std=p.noise_std,
        seed=0,
        batch_size=64,
        **kw,
    )
    z_rms, std_ratio = fidelity(post.draws, p)
    print(f"{sampler} exact-Gaussian: zRMS={z_rms:.3f} std-ratio={std_ratio:.3f}")
    assert torch.isfinite(post.draws).all()
    if sampler == "pigdm":
        resid = p.operator(post.mean[None].float()) - p.y.to(torch.complex64)
        rms = float(resid[:, :, p.operator.mask.expand(16, 16)].abs().pow(2).mean().div(2).sqrt())
        assert rms < 3 * p.noise_std


def _gmm_problem():
    """Three 2x2 components that differ mostly in the two unobserved pixels: the posterior has
    three well-separated modes whose weights depend on how each explains the observed ones."""
    means = torch.tensor(
        [
            [[[0.0, 0.1], [2.0, 2.0]]],
            [[[0.1, 0.0], [-2.0, 2.0]]],
            [[[-0.1, 0.0], [0.0, -2.5]]],
        ],
        dtype=torch.float64,
    )
    covs = torch.stack([0.05 * torch.eye(4, dtype=torch.float64)] * 3)
    covs[:, 0, 1] = covs[:, 1, 0] = 0.02
    prior = GMMPrior(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), means, covs)
    mask = torch.tensor([[True, True], [False, False]])
    op = Inpainting(mask)
    y = torch.tensor([[[[0.05, 0.05], [0.0, 0.0]]]], dtype=torch.float64)
    return prior, op, y


def test_daps_visits_every_gmm_mode_with_the_right_weights():
    prior, op, y = _gmm_problem()
    noise_std = 0.1
    w_post, m_post, c_post = prior.posterior(op, y, noise_std)
    post = reconstruct(
        y,
        op,
        prior,
        sampler="daps",
        draws=512,
        noise_std=noise_std,
        seed=1,
        batch_size=512,
        shape=(1, 2, 2),
        steps=50,
        sigma_min=0.01,
        sigma_max=20.0,
        lr=2e-3,
        lr_min_ratio=0.05,
        langevin_steps=40,
        ode_steps=2,
    )
    # assign each draw to the nearest posterior component mean (modes are >3 std apart)
    d = (post.draws.reshape(512, 1, 4) - m_post.reshape(1, 3, 4)).pow(2).sum(-1)
    frac = torch.bincount(d.argmin(1), minlength=3).double() / 512
    print("posterior weights", w_post.tolist(), "DAPS fractions", frac.tolist())
    assert bool((frac > 0.05).all())  # every mode visited
    # binomial sd at N=512 is <= 0.022; 0.07 allows ~3 sd plus DAPS's annealing bias
    assert torch.allclose(frac, w_post, atol=0.07)


# What the offered MRI preset meets on the widened exact family (issue 27; measured on seeds
# 0-399, 64 draws, docs/uncertainty.md; earlier runs reached zRMS 0.71 and ratio 1.33): zRMS
# at most 0.62 and std ratios 0.90 to 1.31, with 362 of 400 cases inside the target (zRMS <
# 0.3, ratio in [0.85, 1.15]); the misses are mostly 1 to 4 coils at 4-6x. The guard holds
# every case to beyond the measured worst (no seed of the 400 comes near it), so a fresh seed
# fails only when the sampler got worse.
WIDENED_Z, WIDENED_RATIO = 1.0, (0.8, 1.5)


def test_the_offered_preset_on_a_fresh_random_sample_of_the_widened_family():
    """Three cases drawn afresh each run (seeds printed, so a failure reproduces with
    ``diffrecon.testing.random_case(seed)``): presets are not tuned to eight fixed cases."""
    import secrets

    from diffrecon.samplers.registry import MRI_DEFAULT
    from diffrecon.testing import random_case, random_case_settings

    for seed in [secrets.randbelow(10**6) for _ in range(3)]:
        p = random_case(seed)
        post = reconstruct(
            p.y.to(torch.complex64), p.operator, p.prior, sampler=MRI_DEFAULT, draws=64,
            noise_std=p.noise_std, seed=0,
        )  # fmt: skip
        z, ratio = fidelity(post.draws, p)
        where = (
            f"random_case({seed}) = {random_case_settings(seed)}: zRMS {z:.3f}, ratio {ratio:.3f}"
        )
        assert z < WIDENED_Z and WIDENED_RATIO[0] <= ratio <= WIDENED_RATIO[1], where
