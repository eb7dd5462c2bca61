"""DAPS: Decoupled Annealing Posterior Sampling (Zhang et al., arXiv 2407.01521, Alg. 1).

Notation map (paper -> code): ``sigma_{t_i}`` -> ``sigmas[i]`` (annealing levels, decreasing,
last entry 0); ``x_{t_i}`` -> ``x``; ``x0_hat(x_{t_i})`` -> ``x0_hat`` (probability-flow ODE
from ``sigma_{t_i}`` to 0 in ``ode_steps`` Euler steps); ``r_{t_i}`` -> ``sigma`` (the paper's
choice ``r_t = sigma_t``); ``beta_y`` -> ``tau`` (defaults to ``noise_std``); ``eta_t`` ->
the Langevin step size, decayed linearly from ``lr`` to ``lr * lr_min_ratio`` over the
annealing as in the reference code. ``lr`` defaults to ``tau^2`` (the paper's 1e-4 at its
``tau = 0.01``), capped per level at ``1 / (1 / r_t^2 + ||A||^2 / tau^2)``, the inverse of
the target's largest curvature: above it unadjusted Langevin is far from its target, and at
twice it unstable (a step that large is refused).

Each level: (1) ODE to an estimate ``x0_hat``; (2) Langevin MCMC on
``p(x0 | x_t, y) ∝ N(x0; x0_hat, r_t^2 I) p(y | x0)``; (3) re-noise to the next level.
For linear operators step (2) can instead be one exact draw from that Gaussian
(``data_step="exact"``, perturb-and-solve): no Langevin bias, and the calibrated presets use
it with a Tweedie centre (``ode_steps=1``), ``r_t="white"`` and a final level of 4% of the
prior's ``sigma_data`` (``docs/uncertainty.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffrecon.operators.base import LinearOperator, Operator
from diffrecon.priors.base import Denoiser, denoiser_range, sigma_batch
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


def gaussian_data_step(
    operator: LinearOperator,
    aty: torch.Tensor,
    center: torch.Tensor,
    r: float,
    tau: float,
    e1: torch.Tensor,
    e2: torch.Tensor,
    cg_iters: int = 50,
) -> torch.Tensor:
    """One exact draw from ``N(x0; center, r^2 I) N(y; A x0, tau^2 I)`` (linear ``A``).

    Perturb-and-solve: with ``P = I / r^2 + A^H A / tau^2``, solve
    ``P z = center / r^2 + A^H y / tau^2 + e1 / r + A^H e2 / tau`` for standard normal ``e1``
    (image-shaped) and ``e2`` (measurement-shaped, unit variance per real component): the
    right-hand side has covariance ``P``, so ``z ~ N(P^{-1}(center / r^2 + A^H y / tau^2),
    P^{-1})``. Closed form for masks and pooling, conjugate gradients (``cg_iters``,
    warm-started at the centre) otherwise.
    """
    rhs = center / r**2 + aty / tau**2 + e1 / r + operator.adjoint(e2) / tau
    return operator.solve_damped(rhs, 1 / tau**2, 1 / r**2, x0=center, max_iter=cg_iters)


def langevin(
    nll_grad: Callable[[torch.Tensor], torch.Tensor],
    center: torch.Tensor,
    r: float,
    step: float,
    steps: int,
    noise: NoiseSource,
    level: int = 0,
    curvature: float = 0.0,
) -> torch.Tensor:
    """``steps`` unadjusted Langevin steps on ``N(x0; center, r^2 I) exp(-nll(x0))`` from
    ``center``. A step unstable for the target's largest curvature ``1 / r^2 + curvature``
    (``curvature = ||A||^2 / tau^2`` for linear operators) is refused; divergence is reported."""
    lam = 1.0 / r**2 + curvature
    if step * lam >= 2.0:
        raise ValueError(
            f"DAPS Langevin step {step:.3g} at level {level} is unstable: step x (1/r_t^2 + "
            f"||A||^2/tau^2) = {step:.3g} x ({1 / r**2:.3g} + {curvature:.3g}) = "
            f"{step * lam:.3g} must stay below 2; lower lr or lr_min_ratio, raise sigma_min, "
            "or use data_step='exact' for a linear operator"
        )
    z = center
    for _ in range(steps):
        grad = nll_grad(z) + (z - center) / r**2
        z = z - step * grad + math.sqrt(2 * step) * noise()
    if not bool(torch.isfinite(z).all()):
        raise FloatingPointError(
            f"DAPS diverged at level {level} (sigma={r:.3g}): the Langevin step {step:.3g} "
            f"is too large for 1/r_t^2 = {1 / r**2:.3g} plus the likelihood curvature; "
            "lower lr or lr_min_ratio, or raise tau"
        )
    return z


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
    data_step: str = "langevin",
    cg_iters: int = 50,
    r_t: str = "sigma",
    start: str = "noise",
) -> torch.Tensor:
    """Posterior draws ``(B, *shape)`` for measurements ``y`` ``(B, ...)`` (one draw per item).

    ``sigmas``: annealing levels, decreasing, ending with 0 (see ``karras_sigmas``).
    ``shape``: image shape, needed only when ``operator.ishape`` has free sizes.
    ``data_step``: ``"langevin"`` (the paper's ``langevin_steps`` unadjusted Langevin steps),
    ``"exact"`` (linear operators: one exact draw from the Gaussian
    ``N(x0_hat, r_t^2 I) p(y | x0)`` by perturb-and-solve, see :func:`gaussian_data_step`) or
    ``"auto"`` (exact for linear operators, Langevin otherwise). ``r_t``: ``"sigma"`` (the
    paper's ``r_t = sigma_t``) or ``"white"`` (``r_t^2 = sigma_t^2 sd^2 / (sigma_t^2 + sd^2)``
    with ``sd`` the denoiser's ``sigma_data``: the spread of ``x0`` given ``x_t`` under a white
    prior of that variance, which ``sigma_t`` overstates at high noise). ``start``:
    ``"noise"`` (the paper's ``x_T = sigma_T n``) or ``"white"`` (linear operators: a warm
    start ``x_T = m + sigma_T n`` around ``m``, the posterior mean under a white prior of
    variance ``sd^2``, i.e. ``(A^H A / tau^2 + I / sd^2)^{-1} A^H y / tau^2``; what the
    levels above a few ``sd`` converge to, so a schedule may start lower).
    """
    if r_t not in ("sigma", "white"):
        raise ValueError(f"r_t must be 'sigma' or 'white', got {r_t!r}")
    if data_step not in ("langevin", "exact", "auto"):
        raise ValueError(f"data_step must be 'langevin', 'exact' or 'auto', got {data_step!r}")
    if start not in ("noise", "white"):
        raise ValueError(f"start must be 'noise' or 'white', got {start!r}")
    if start == "white" and not operator.is_linear:
        raise ValueError(f"DAPS's white warm start needs a linear operator, got {operator.name}")
    if data_step == "auto":
        data_step = "exact" if operator.is_linear else "langevin"
    if data_step == "exact" and not operator.is_linear:
        raise ValueError(f"DAPS's exact data step needs a linear operator, got {operator.name}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    tau = noise_std if tau is None else tau
    if not tau > 0:
        raise ValueError("DAPS needs tau > 0 (a noiseless likelihood has no Langevin target)")
    likelihood = GaussianLikelihood(tau)
    default_lr = lr is None
    lr = tau**2 if lr is None else lr
    x = blank_image(operator, y, shape)
    noise = NoiseSource(generator, x)
    if data_step == "exact":
        y_noise = NoiseSource(generator, torch.view_as_real(y) if y.is_complex() else y)

        def measurement_noise() -> torch.Tensor:
            e = y_noise()
            return torch.view_as_complex(e.contiguous()) if y.is_complex() else e

    if data_step == "exact" or start == "white":
        aty = operator.adjoint(y)  # type: ignore[attr-defined]
    nll_grad = likelihood.nll_grad_fn(operator, y)
    # the likelihood's curvature ||A||^2 / tau^2 (linear operators; unknown otherwise)
    curvature = 0.0
    if data_step == "langevin" and operator.is_linear:
        curvature = operator.normal_norm(x) / tau**2  # type: ignore[attr-defined]
    sd = denoiser_range(denoiser).sigma_data
    x = float(sigmas[0]) * noise()
    if start == "white":
        x = x + operator.solve_damped(aty / tau**2, 1 / tau**2, 1 / sd**2)  # type: ignore[attr-defined]
    levels = sigmas.tolist()
    n = len(levels) - 1
    nfe = 0
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        # (1) x0_hat(x_t) by the probability-flow ODE
        x0_hat = ode_x0(denoiser, x, sigma, ode_steps, ode_sigma_min)
        nfe += max(1, ode_steps) if sigma > ode_sigma_min else 1
        r = sigma if r_t == "sigma" else sigma * sd / math.sqrt(sigma**2 + sd**2)
        if data_step == "exact":
            # (2') an exact draw from p(x0 | x_t, y) under the Gaussian approximation
            e1, e2 = noise(), measurement_noise()
            z = gaussian_data_step(operator, aty, x0_hat, r, tau, e1, e2, cg_iters)  # type: ignore[arg-type]
        else:
            # (2) Langevin dynamics on p(x0 | x_t, y), step size decayed with the annealing
            step = lr * (1.0 + (i / n) * (lr_min_ratio - 1.0))
            if default_lr:  # never above 1 / lambda_max, where ULA is unstable or far off
                step = min(step, 1.0 / (1.0 / r**2 + curvature))
            z = langevin(
                nll_grad, x0_hat, r, step, langevin_steps, noise, level=i, curvature=curvature
            )
        # (3) forward diffusion to the next level
        x = z + sigma_next * noise() if sigma_next > 0 else z
        if callback is not None:
            callback(StepState(i, n, sigma_next, x, z, nfe))
    return x
