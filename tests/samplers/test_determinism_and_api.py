"""Reproducibility, RNG hygiene, plain-function denoisers and bad input to reconstruct()."""

from __future__ import annotations

import pytest
import torch

from diffrecon import reconstruct
from diffrecon.operators import Inpainting, SuperResolution
from diffrecon.priors import GaussianPrior
from diffrecon.samplers import daps, karras_sigmas
from diffrecon.testing import gaussian_mri_problem

FAST = dict(steps=8, sigma_min=0.05, sigma_max=10.0, langevin_steps=5, ode_steps=2, lr=1e-4)


@pytest.fixture(scope="module")
def problem():
    return gaussian_mri_problem(size=8, coils=2, accel=2.0, noise_std=0.05)


@pytest.mark.parametrize("sampler", ["daps", "dps", "pigdm"])
def test_same_seed_same_draws_whatever_the_batch_size(problem, sampler):
    kw = FAST if sampler == "daps" else dict(steps=8, sigma_min=0.05, sigma_max=10.0)
    args = (problem.y, problem.operator, problem.prior)
    a = reconstruct(*args, sampler=sampler, draws=6, noise_std=0.05, seed=3, batch_size=6, **kw)
    b = reconstruct(*args, sampler=sampler, draws=6, noise_std=0.05, seed=3, batch_size=4, **kw)
    c = reconstruct(*args, sampler=sampler, draws=6, noise_std=0.05, seed=3, batch_size=1, **kw)
    d = reconstruct(*args, sampler=sampler, draws=6, noise_std=0.05, seed=4, batch_size=6, **kw)
    assert torch.allclose(a.draws, b.draws, atol=1e-10) and torch.allclose(
        a.draws, c.draws, atol=1e-10
    )
    assert not torch.allclose(a.draws, d.draws)
    assert torch.allclose(a.mean, c.mean, atol=1e-10) and torch.allclose(a.std, c.std, atol=1e-10)


def test_global_rng_untouched(problem):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    reconstruct(
        problem.y, problem.operator, problem.prior, sampler="daps", draws=2, noise_std=0.05, **FAST
    )
    assert torch.equal(torch.get_rng_state(), state)


def test_plain_function_denoiser_and_callback():
    mean = torch.zeros(1, 4, 4, dtype=torch.float64)
    prior = GaussianPrior(mean, torch.eye(16, dtype=torch.float64))

    def denoise(x, sigma):  # a plain function, no attributes
        return prior(x, sigma)

    op = Inpainting(torch.rand(4, 4, generator=torch.Generator().manual_seed(0)) > 0.5)
    y = op(torch.ones(1, 1, 4, 4, dtype=torch.float64))
    seen = []
    sigmas = karras_sigmas(5, 0.05, 5.0)
    out = daps(
        denoise,
        op,
        y.expand(3, 1, 4, 4),
        sigmas,
        noise_std=0.05,
        generator=torch.Generator().manual_seed(0),
        langevin_steps=3,
        ode_steps=2,
        callback=seen.append,
        shape=(1, 4, 4),
    )
    assert out.shape == (3, 1, 4, 4) and len(seen) == 5
    assert seen[-1].i == 4 and seen[-1].sigma == 0 and seen[-1].nfe == 10  # 5 levels x 2 ODE steps


def test_reconstruct_summaries(problem):
    post = reconstruct(
        problem.y,
        problem.operator,
        problem.prior,
        sampler="daps",
        draws=5,
        noise_std=0.05,
        seed=0,
        **FAST,
    )
    assert post.draws.shape == (5, 2, 8, 8) and post.count == 5
    assert torch.allclose(post.mean, post.draws.double().mean(0))
    assert torch.allclose(post.std, post.draws.double().std(0))
    mags = post.draws.double().pow(2).sum(1).sqrt()
    assert torch.allclose(post.magnitude_mean, mags.mean(0))
    assert post.quantiles([0.1, 0.9]).shape == (2, 2, 8, 8)
    assert post.record.preset.sampler == "daps" and post.record.seed == 0
    lean = reconstruct(
        problem.y,
        problem.operator,
        problem.prior,
        sampler="daps",
        draws=3,
        noise_std=0.05,
        keep_draws=False,
        **FAST,
    )
    assert lean.draws is None
    with pytest.raises(ValueError, match="keep_draws"):
        lean.quantiles()


def test_reconstruct_streams_batches(problem):
    seen = []
    reconstruct(
        problem.y,
        problem.operator,
        problem.prior,
        sampler="daps",
        draws=5,
        batch_size=2,
        noise_std=0.05,
        on_batch=lambda p: seen.append(p.count),
        **FAST,
    )
    assert seen == [2, 4, 5]


def test_reconstruct_bad_input(problem):
    args = (problem.operator, problem.prior)
    with pytest.raises(ValueError, match="unknown sampler 'foo'"):
        reconstruct(problem.y, *args, sampler="foo")
    bad = problem.y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="y contains NaN"):
        reconstruct(bad, *args)
    with pytest.raises(ValueError, match="y has shape"):
        reconstruct(problem.y[..., :5], *args)
    with pytest.raises(ValueError, match="draws must be >= 1"):
        reconstruct(problem.y, *args, draws=0)
    with pytest.raises(ValueError, match="pass shape"):
        reconstruct(torch.zeros(1, 1, 4, 4), SuperResolution(2), problem.prior, **FAST)
    with pytest.raises(ValueError, match="unstable"):
        reconstruct(
            problem.y,
            *args,
            sampler="daps",
            draws=1,
            **{**FAST, "lr": 1.0, "data_step": "langevin"},
        )


def test_device_moves_priors_that_can_move(problem):
    moved = []

    class Movable:
        def __init__(self, inner):
            self.inner = inner

        def to(self, device):
            moved.append(str(device))
            return self

        def __call__(self, x, sigma):
            return self.inner(x, sigma)

    reconstruct(
        problem.y,
        problem.operator,
        Movable(problem.prior),
        sampler="daps",
        draws=1,
        noise_std=0.05,
        device="cpu",
        **FAST,
    )
    assert moved == ["cpu"]


@pytest.mark.parametrize(
    ("sampler", "kw"),
    [
        ("cpigdm", dict(steps=3, sigma_min=0.05, sigma_max=1.0)),
        ("cpigfm-5", dict(steps=3, sigma_min=0.05, sigma_max=1.0)),
        ("zaps", dict(steps=3, sigma_min=0.05, sigma_max=10.0, epochs=2)),
        ("stsl", dict(steps=3, sigma_min=0.05, sigma_max=1.0)),
    ],
)
def test_seed_samplers_are_batch_independent_through_reconstruct(problem, sampler, kw):
    if sampler.startswith("cpig"):  # C-ΠGDM needs an exact projector: single-coil k-space
        from diffrecon.testing import exact_case

        problem = exact_case("single-coil", size=8)
    args = (problem.y, problem.operator, problem.prior)
    noise = 0.05
    a = reconstruct(*args, sampler=sampler, draws=3, noise_std=noise, seed=3, batch_size=3, **kw)
    b = reconstruct(*args, sampler=sampler, draws=3, noise_std=noise, seed=3, batch_size=1, **kw)
    torch.testing.assert_close(a.draws, b.draws, rtol=1e-6, atol=1e-8)
    assert a.record.preset.sampler in ("cpigdm", "zaps", "stsl") and torch.isfinite(a.mean).all()
    if sampler.startswith("cpig"):
        assert a.record.preset.schedule.spacing in ("vp", "rf")
