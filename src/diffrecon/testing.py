"""Small inverse problems with exact posteriors: check a sampler before trusting it.

Used by the test suite and `bench/posterior_fidelity.py`; cheap enough for a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffrecon.mri import cartesian_mask
from diffrecon.operators import LinearOperator, MulticoilMRI, SinglecoilMRI
from diffrecon.priors import GaussianPrior, GMMPrior


@dataclass
class ExactProblem:
    """An MRI problem whose posterior is known in closed form (Gaussian or Gaussian-mixture
    prior, linear operator, Gaussian noise): ``post_mean`` and ``post_var`` are pixelwise
    ``(2, H, W)``; ``post_cov`` is the dense covariance (Gaussian priors only)."""

    prior: GaussianPrior | GMMPrior
    operator: LinearOperator
    x_true: torch.Tensor  # (1, 2, H, W)
    y: torch.Tensor  # (1, coils, H, W)
    noise_std: float
    post_mean: torch.Tensor  # (2, H, W)
    post_var: torch.Tensor  # (2, H, W)
    post_cov: torch.Tensor | None = None  # (n, n)
    name: str = ""

    @property
    def post_std(self) -> torch.Tensor:
        return self.post_var.sqrt()


GaussianMRIProblem = ExactProblem  # the name of the first (Gaussian-only) version


def nonstationary_cov(
    size: int, ell_scale: float = 1.0, imag_ratio: float = 0.6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of a complex image (2 channels) whose amplitude and correlation
    length vary across the image (Gibbs kernel), plus a small white nugget. ``ell_scale``
    stretches the correlation lengths (the prior's spectrum: smaller is whiter) and
    ``imag_ratio`` is the imaginary channel's variance relative to the real one's."""
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, size, dtype=torch.float64),
        torch.linspace(-1, 1, size, dtype=torch.float64),
        indexing="ij",
    )
    pts = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1)
    amp = 0.25 + 0.2 * torch.exp(-((pts[:, 0] - 0.3) ** 2 + pts[:, 1] ** 2) / 0.3)
    ell = ell_scale * (0.15 + 0.25 * (pts[:, 1] + 1) / 2)  # longer correlations to the right
    l2 = ell[:, None] ** 2 + ell[None, :] ** 2
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    k = torch.sqrt(2 * ell[:, None] * ell[None, :] / l2) * torch.exp(-d2 / l2)
    k = amp[:, None] * amp[None] * k
    n = size * size
    cov = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    cov[:n, :n] = k
    cov[n:, n:] = imag_ratio * k
    cov += 1e-3 * torch.eye(2 * n, dtype=torch.float64)
    mean = torch.zeros(2, size, size, dtype=torch.float64)
    mean[0] = 0.3 * torch.exp(-(yy**2 + xx**2) / 0.5)
    return mean, cov


def coil_maps(size: int, coils: int) -> torch.Tensor:
    """Smooth, normalised birdcage-like sensitivities ``(coils, size, size)`` complex128."""
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
    return maps_t / maps_t.abs().pow(2).sum(0).sqrt()


def exact_mri_problem(
    size: int = 16,
    coils: int = 4,
    accel: float = 3.0,
    noise_std: float = 0.02,
    seed: int = 0,
    *,
    amplitude: float = 1.0,
    mixture: bool = False,
    name: str = "",
    ell_scale: float = 1.0,
    imag_ratio: float = 0.6,
) -> ExactProblem:
    """A complex ``size``-square image, ``coils`` coils (1: single-coil Cartesian MRI, else
    SENSE), an equispaced column mask at ``accel`` (centre fraction 0.25, or ``0.5 / accel``
    above 3x), complex noise of ``noise_std`` per real component. The prior is the
    non-stationary Gaussian of :func:`nonstationary_cov` scaled by ``amplitude`` or, with
    ``mixture``, a two-component mixture of it and a shifted, narrower copy (a bright blob on
    the right); ``ell_scale`` and ``imag_ratio`` shape its spectrum (:func:`nonstationary_cov`)."""
    mean, cov = nonstationary_cov(size, ell_scale, imag_ratio)
    mean, cov = amplitude * mean, amplitude**2 * cov
    if mixture:
        yy, xx = torch.meshgrid(
            torch.linspace(-1, 1, size, dtype=torch.float64),
            torch.linspace(-1, 1, size, dtype=torch.float64),
            indexing="ij",
        )
        blob = mean.clone()
        blob[0] = blob[0] + 0.8 * amplitude * torch.exp(-((yy - 0.2) ** 2 + (xx - 0.4) ** 2) / 0.1)
        prior: GaussianPrior | GMMPrior = GMMPrior(
            torch.tensor([0.6, 0.4], dtype=torch.float64),
            torch.stack([mean, blob]),
            torch.stack([cov, 0.5 * cov]),
        )
    else:
        prior = GaussianPrior(mean, cov)
    g = torch.Generator().manual_seed(seed + 1)
    center = 0.25 if accel <= 3 else 0.5 / accel  # room for outer lines at higher rates
    mask = cartesian_mask(size, accel, center, kind="equispaced", seed=seed).mask
    if coils == 1:
        op: LinearOperator = SinglecoilMRI(mask, shape=(size, size))
    else:
        op = MulticoilMRI(coil_maps(size, coils), mask)
    x_true = prior.sample(1, generator=g)
    clean = op(x_true)
    noise = noise_std * torch.complex(
        torch.randn(clean.shape, generator=g, dtype=torch.float64),
        torch.randn(clean.shape, generator=g, dtype=torch.float64),
    )
    y = clean + torch.where(op.mask, noise, 0)
    if mixture:
        w, means, covs = prior.posterior(op, y, noise_std)
        pm = (w[:, None, None, None] * means).sum(0)
        second = covs.diagonal(dim1=1, dim2=2).reshape(means.shape) + means**2
        pv = (w[:, None, None, None] * second).sum(0) - pm**2
        return ExactProblem(prior, op, x_true, y, noise_std, pm, pv, None, name)
    pm, pc = prior.posterior(op, y, noise_std)
    pv = pc.diagonal().reshape(pm.shape)
    return ExactProblem(prior, op, x_true, y, noise_std, pm, pv, pc, name)


def gaussian_mri_problem(
    size: int = 16, coils: int = 4, accel: float = 3.0, noise_std: float = 0.02, seed: int = 0
) -> ExactProblem:
    """The first exact case: Gaussian prior, SENSE (see :func:`exact_mri_problem`)."""
    return exact_mri_problem(size, coils, accel, noise_std, seed, name="base")


# The family every posterior sampler is measured on (bench/posterior_fidelity.py): amplitudes
# 0.1 to 10, 1 to 12 coils, 2x to 6x, noise 0.005 to 0.1, Gaussian and mixture priors.
EXACT_CASES: dict[str, dict] = {
    "base": dict(coils=4, accel=3.0, noise_std=0.02),
    "faint": dict(coils=8, accel=4.0, noise_std=0.005, amplitude=0.1),
    "bright": dict(coils=4, accel=2.0, noise_std=0.1, amplitude=10.0),
    "12coils-6x": dict(coils=12, accel=6.0, noise_std=0.02),
    "2coils-2x": dict(coils=2, accel=2.0, noise_std=0.05),
    "single-coil": dict(coils=1, accel=2.0, noise_std=0.02),
    "noisy": dict(coils=4, accel=4.0, noise_std=0.1),
    "mixture": dict(coils=4, accel=3.0, noise_std=0.02, mixture=True),
}


def random_case_settings(seed: int) -> dict:
    """The settings of one seeded random draw from the widened exact family (issue 27), so
    that presets are not tuned to :data:`EXACT_CASES`: size 8 to 16, 1 to 12 coils, 2x to 6x,
    noise 0.005 to 0.1 and amplitude 0.1 to 10 (log-uniform), correlation lengths 0.5x to
    2x, imaginary variance 0.2 to 1 of the real, a two-component mixture one time in four."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return dict(
        size=int(rng.choice([8, 12, 16])),
        coils=int(rng.choice([1, 2, 4, 8, 12])),
        accel=float(rng.choice([2.0, 2.5, 3.0, 4.0, 5.0, 6.0])),
        noise_std=float(np.exp(rng.uniform(np.log(0.005), np.log(0.1)))),
        amplitude=float(np.exp(rng.uniform(np.log(0.1), np.log(10.0)))),
        ell_scale=float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        imag_ratio=float(rng.uniform(0.2, 1.0)),
        mixture=bool(rng.random() < 0.25),
        seed=int(seed),
    )


def random_case(seed: int) -> ExactProblem:
    """One seeded random exact problem (:func:`random_case_settings`), named ``random-SEED``."""
    return exact_mri_problem(name=f"random-{seed}", **random_case_settings(seed))


def exact_case(name: str, size: int = 16) -> ExactProblem:
    """One case of :data:`EXACT_CASES` by name."""
    if name not in EXACT_CASES:
        raise ValueError(f"unknown exact case {name!r}; choose one of {', '.join(EXACT_CASES)}")
    return exact_mri_problem(size=size, name=name, **EXACT_CASES[name])


def fidelity(draws: torch.Tensor, problem: GaussianMRIProblem) -> tuple[float, float]:
    """RMS z-score of the draws' mean against the exact posterior mean (in units of the
    exact posterior std) and the median ratio sampled std / exact std."""
    mean = draws.double().mean(0)
    std = draws.double().std(0)
    z = (mean - problem.post_mean) / problem.post_std
    ratio = (std / problem.post_std).median()
    return float(z.pow(2).mean().sqrt()), float(ratio)
