"""DPS: Diffusion Posterior Sampling (Chung et al., ICLR 2023, Alg. 1), the baseline.

Notation map: ``x_i`` -> ``x`` at level ``sigmas[i]``; ``x0_hat = D(x_i)``; the DDPM ancestral
update -> :func:`ancestral_step` with ``eta=1`` in VE coordinates; ``zeta_i`` -> ``zeta``.

The guidance step is ``x_{i-1} -= zeta * grad_{x_i} ||y - A(x0_hat)||`` with the *non-squared*
norm, as the reference code does; the paper's ``zeta_i = zeta' / ||y - A(x0_hat)||`` on the
squared norm is the same step with ``zeta = 2 zeta'``. The step is taken in the paper's VP
coordinates and carried to VE ones (a factor ``1 / sqrt(abar_i abar_{i-1})``, with
``abar = 1 / (1 + sigma^2)``), so ``zeta`` means what it means in the paper (about 0.3-1.0
for images scaled to [-1, 1]). DPS needs ``||y - A x0_hat||``'s gradient through the
denoiser: each step costs one forward and one backward pass. A schedule without a final 0
(uniform VP levels) gets one: the last step, as the reference's ``t = 0`` step, lands on the
noise-free estimate with its guidance step, not on the lowest level's noise.
"""

from __future__ import annotations

import torch

from diffrecon.operators.base import Operator
from diffrecon.priors.base import Denoiser, sigma_batch
from diffrecon.samplers.common import (
    Callback,
    Generators,
    NoiseSource,
    StepState,
    ancestral_step,
    blank_image,
    vp_step_scale,
)
from diffrecon.samplers.likelihood import misfit


def dps(
    denoiser: Denoiser,
    operator: Operator,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise_std: float = 0.0,
    generator: Generators = None,
    shape: tuple[int, ...] | None = None,
    callback: Callback = None,
    zeta: float = 1.0,
    eta: float = 1.0,
) -> torch.Tensor:
    """One DPS draw per item of ``y``. ``noise_std`` is unused by the update (DPS's step size
    absorbs it) and accepted for a uniform signature."""
    x = blank_image(operator, y, shape)
    noise = NoiseSource(generator, x)
    x = float(sigmas[0]) * noise()
    levels = sigmas.tolist()
    if levels[-1] > 0:  # the reference's last step (t = 0) returns the noise-free estimate
        levels.append(0.0)
    n = len(levels) - 1
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = denoiser(xg, sigma_batch(sigma, xg))
            dist = misfit(operator, x0_hat, y)
            (grad,) = torch.autograd.grad(dist.sum(), xg)
        x0_hat = x0_hat.detach()
        x_next = ancestral_step(x, x0_hat, sigma, sigma_next, eta, noise)
        x = x_next - zeta * vp_step_scale(sigma, sigma_next) * grad
        if callback is not None:
            callback(StepState(i, n, sigma_next, x, x0_hat, i + 1))
    return x.detach()
