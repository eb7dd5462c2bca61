"""DAPS: Decoupled Annealing Posterior Sampling (Zhang et al., arXiv 2407.01521, Alg. 1).

Notation map (paper -> code): ``sigma_{t_i}`` -> ``sigmas[i]`` (annealing levels, decreasing,
last entry 0); ``x_{t_i}`` -> ``x``; ``x0_hat(x_{t_i})`` -> ``x0_hat`` (probability-flow ODE
from ``sigma_{t_i}`` to 0 in ``ode_steps`` Euler steps); ``r_{t_i}`` -> ``sigma`` (the paper's
choice ``r_t = sigma_t``); ``beta_y`` -> ``tau`` (defaults to ``noise_std``); ``eta_t`` ->
the Langevin step size, decayed linearly from ``lr`` to ``lr * lr_min_ratio`` over the
annealing as in the reference code. ``lr`` defaults to ``tau^2``: the paper's 1e-4 at its
``tau = 0.01``, scaled with the likelihood's curvature ``1 / tau^2`` so the step stays
stable for an operator with ``||A|| <= 1`` whatever the noise level.

Each level: (1) ODE to an estimate ``x0_hat``; (2) Langevin MCMC on
``p(x0 | x_t, y) ∝ N(x0; x0_hat, r_t^2 I) p(y | x0)``; (3) re-noise to the next level.
"""

from __future__ import annotations

import math

import torch

from diffrecon.operators.base import Operator
from diffrecon.priors.base import Denoiser, sigma_batch
from diffrecon.samplers.common import Callback, Generators, NoiseSource, StepState, blank_image
from diffrecon.samplers.likelihood import GaussianLikelihood
from diffrecon.samplers.schedules import karras_sigmas


def ode_x0(
    denoiser: Denoiser, x: torch.Tensor, sigma: float, steps: int, sigma_min: float
) -> torch.Tensor:
    """``x0_hat``: Euler steps of ``dx/dsigma = (x - D(x, sigma)) / sigma`` from ``sigma`` to 0
    over a Karras schedule down to ``sigma_min``; the last step lands on ``D``. NFE = ``steps``."""
    if steps <= 1 or sigma <= sigma_min:
        return denoiser(x, sigma_batch(sigma, x))
    levels = karras_sigmas(steps, sigma_min, sigma)
    for s, s_next in zip(levels[:-1].tolist(), levels[1:].tolist(), strict=True):
        d0 = denoiser(x, sigma_batch(s, x))
        x = d0 if s_next == 0 else x + (s_next - s) * (x - d0) / s
    return x


def daps(
    denoiser: Denoiser,
    operator: Operator,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise_std: float,
    generator: Generators = None,
    shape: tuple[int, ...] | None = None,
    callback: Callback = None,
    ode_steps: int = 5,
    ode_sigma_min: float = 0.01,
    langevin_steps: int = 100,
    lr: float | None = None,
    lr_min_ratio: float = 0.01,
    tau: float | None = None,
) -> torch.Tensor:
    """Posterior draws ``(B, *shape)`` for measurements ``y`` ``(B, ...)`` (one draw per item).

    ``sigmas``: annealing levels, decreasing, ending with 0 (see ``karras_sigmas``).
    ``shape``: image shape, needed only when ``operator.ishape`` has free sizes.
    """
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    tau = noise_std if tau is None else tau
    if not tau > 0:
        raise ValueError("DAPS needs tau > 0 (a noiseless likelihood has no Langevin target)")
    likelihood = GaussianLikelihood(tau)
    lr = tau**2 if lr is None else lr
    x = blank_image(operator, y, shape)
    noise = NoiseSource(generator, x)
    nll_grad = likelihood.nll_grad_fn(operator, y)
    x = float(sigmas[0]) * noise()
    levels = sigmas.tolist()
    n = len(levels) - 1
    nfe = 0
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        # (1) x0_hat(x_t) by the probability-flow ODE
        x0_hat = ode_x0(denoiser, x, sigma, ode_steps, ode_sigma_min)
        nfe += max(1, ode_steps) if sigma > ode_sigma_min else 1
        # (2) Langevin dynamics on p(x0 | x_t, y), step size decayed with the annealing
        step = lr * (1.0 + (i / n) * (lr_min_ratio - 1.0))
        if step / sigma**2 >= 2.0:
            raise ValueError(
                f"DAPS Langevin step {step:.3g} at level {i} (r_t = sigma = {sigma:.3g}) is "
                f"unstable: step / r_t^2 = {step / sigma**2:.3g} must stay below 2; lower lr, "
                "lr_min_ratio or raise sigma_min"
            )
        z = x0_hat
        for _ in range(langevin_steps):
            grad = nll_grad(z) + (z - x0_hat) / sigma**2
            z = z - step * grad + math.sqrt(2 * step) * noise()
        if not bool(torch.isfinite(z).all()):
            raise FloatingPointError(
                f"DAPS diverged at level {i} (sigma={sigma:.3g}): the Langevin step {step:.3g} "
                f"is too large for 1/r_t^2 = {1 / sigma**2:.3g} plus the likelihood curvature; "
                "lower lr or lr_min_ratio, or raise tau"
            )
        # (3) forward diffusion to the next level
        x = z + sigma_next * noise() if sigma_next > 0 else z
        if callback is not None:
            callback(StepState(i, n, sigma_next, x, z, nfe))
    return x
