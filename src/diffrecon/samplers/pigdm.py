"""ΠGDM: pseudoinverse-guided diffusion (Song, Vahdat, Mardani, Kautz; ICLR 2023), baseline.

Notation map: ``H`` -> ``operator`` (linear), ``sigma_y`` -> ``noise_std``, ``r_t^2`` ->
``r2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)`` (the paper's
``r_t^2 = sigma_t^2 / (1 + sigma_t^2)`` for unit-variance data, generalised to the denoiser's
``sigma_data``), ``w`` -> ``guidance_scale``.

The guidance is the vector-Jacobian product
``g = (d x0_hat / d x_t)^T H^T (r_t^2 H H^T + sigma_y^2 I)^{-1} (y - H x0_hat)``, computed
as ``J^T (r_t^2 H^T H + sigma_y^2 I)^{-1} H^T (y - H x0_hat)`` (the push-through identity),
which for ``sigma_y = 0`` is ``J^T H^+ (y - H x0_hat) / r_t^2``. The solve is closed form for
masks and pooling and conjugate gradients otherwise. The guided score
``s(x_t) + w g`` enters the DDIM update (``eta``) through the corrected estimate
``x0_hat + sigma_t^2 w g``; the paper's algorithm box adds ``sqrt(abar_t) g`` to the VP update
instead, which differs by a per-step factor that its guidance weights absorb.
"""

from __future__ import annotations

import torch

from diffrecon.operators.base import LinearOperator
from diffrecon.priors.base import Denoiser, denoiser_range, sigma_batch
from diffrecon.samplers.common import (
    Callback,
    Generators,
    NoiseSource,
    StepState,
    ancestral_step,
    blank_image,
)


def pigdm(
    denoiser: Denoiser,
    operator: LinearOperator,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise_std: float = 0.0,
    generator: Generators = None,
    shape: tuple[int, ...] | None = None,
    callback: Callback = None,
    guidance_scale: float = 1.0,
    eta: float = 1.0,
    cg_iters: int = 50,
) -> torch.Tensor:
    """One ΠGDM draw per item of ``y``; the operator must be linear."""
    if not operator.is_linear:
        raise ValueError(f"ΠGDM needs a linear operator, got {operator.name}")
    sigma_data = denoiser_range(denoiser).sigma_data
    x = blank_image(operator, y, shape)
    noise = NoiseSource(generator, x)
    x = float(sigmas[0]) * noise()
    levels = sigmas.tolist()
    n = len(levels) - 1
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        r2 = sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = denoiser(xg, sigma_batch(sigma, xg))
            resid = y - operator(x0_hat.detach())
            v = operator.solve_normal(operator.adjoint(resid), r2, noise_std**2, max_iter=cg_iters)
            (g,) = torch.autograd.grad(x0_hat, xg, grad_outputs=v)
        x0_guided = x0_hat.detach() + sigma**2 * guidance_scale * g
        x = ancestral_step(x, x0_guided, sigma, sigma_next, eta, noise)
        if callback is not None:
            callback(StepState(i, n, sigma_next, x, x0_guided, i + 1))
    return x.detach()
