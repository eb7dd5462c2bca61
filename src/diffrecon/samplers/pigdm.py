"""ΠGDM: pseudoinverse-guided diffusion (Song, Vahdat, Mardani, Kautz; ICLR 2023), baseline.

Notation map: ``H`` -> ``operator`` (linear), ``sigma_y`` -> ``noise_std``, ``r_t^2`` ->
``r2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)`` (the paper's
``r_t^2 = sigma_t^2 / (1 + sigma_t^2)`` for unit-variance data, generalised to the denoiser's
``sigma_data``), ``w`` -> ``guidance_scale``.

The guidance is the vector-Jacobian product
``g = (d x0_hat / d x_t)^T H^T (r_t^2 H H^T + sigma_y^2 I)^{-1} (y - H x0_hat)``, computed
as ``J^T (r_t^2 H^T H + sigma_y^2 I)^{-1} H^T (y - H x0_hat)`` (the push-through identity),
which for ``sigma_y = 0`` is ``J^T H^+ (y - H x0_hat) / r_t^2``. The solve is closed form for
masks and pooling and conjugate gradients otherwise.

How the guidance enters the step (``update``):

- ``"score"`` (the default): the guided score ``s(x_t) + w g`` inside DDIM, i.e. the corrected
  estimate ``x0_hat + sigma_t^2 w g``.
- ``"paper"``: the paper's Algorithm 1, ``x_{t-1} = DDIM(x_t, x0_hat) +
  sqrt(abar_t) w g`` in VP coordinates, which in this package's VE coordinates
  (``x = z / sqrt(abar)``, ``d/dz = d/dx / sqrt(abar)``) is ``x_next = DDIM(x, x0_hat) +
  w sqrt(1 + sigma_next^2) g``.
- ``"reddiff"``: ΠGDM as NVlabs/RED-diff's ``algos/pgdm.py`` runs it (the baseline of
  C-ΠGDM's few-step claim): the guidance ``J^T H^+ (y - H x0_hat)`` without ``r_t^-2`` and
  without the noise term, weighted by ``sqrt(abar_s) sqrt(abar_t)`` in VP coordinates (its
  ``awd`` setting), i.e. ``x_next = DDIM(x, x0_hat) + w J^T H^+ (y - H x0_hat)`` here, started
  from ``H^+ y + sigma_max z``.

Measured on the exact posteriors of ``diffrecon.testing.EXACT_CASES`` (128 draws; RMS z of
the mean and sampled/exact std, ``bench/posterior_fidelity.py``): at 100 steps ``"score"``
samples all eight cases (z 0.22 to 0.37, std ratio 0.85 to 0.99); ``"paper"`` diverges on
every case at 20 and at 100 steps (its ``r_t^-2`` and ``1/sigma_y^2`` gains are applied at
full weight near the end); ``"reddiff"`` ignores the measurement noise and misses the noisy
posteriors (z 5 to 61 at 100 steps; 0.27 on the single-coil case). Hence ``"score"`` is the
default and the others are there to reproduce their references (``pigdm-20-reddiff`` is
C-ΠGDM's few-step baseline). At 20 steps no update samples these posteriors.

``start="pinv"`` starts any update from the diffused pseudo-inverse.
"""

from __future__ import annotations

import math

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
    update: str = "score",
    start: str | None = None,
) -> torch.Tensor:
    """One ΠGDM draw per item of ``y``; the operator must be linear. ``update``: ``"paper"``,
    ``"reddiff"`` or ``"score"`` (module docstring); ``start``: ``"noise"`` or ``"pinv"``
    (default: ``"pinv"`` for ``"reddiff"``, as its reference, else ``"noise"``)."""
    if not operator.is_linear:
        raise ValueError(f"ΠGDM needs a linear operator, got {operator.name}")
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    start = start or ("pinv" if update == "reddiff" else "noise")
    if start not in ("noise", "pinv"):
        raise ValueError(f"start must be 'noise' or 'pinv', got {start!r}")
    sigma_data = denoiser_range(denoiser).sigma_data
    x = blank_image(operator, y, shape)
    noise = NoiseSource(generator, x)
    x = float(sigmas[0]) * noise()
    if start == "pinv":
        x = x + operator.pinv(y, max_iter=cg_iters).to(x.dtype)
    levels = sigmas.tolist()
    n = len(levels) - 1
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        r2 = sigma**2 * sigma_data**2 / (sigma**2 + sigma_data**2)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0_hat = denoiser(xg, sigma_batch(sigma, xg))
            resid = y - operator(x0_hat.detach())
            if update == "reddiff":
                v = operator.pinv(resid, max_iter=cg_iters).to(x0_hat.dtype)
            else:
                v = operator.solve_normal(
                    operator.adjoint(resid), r2, noise_std**2, max_iter=cg_iters
                )
            (g,) = torch.autograd.grad(x0_hat, xg, grad_outputs=v)
        x0_hat = x0_hat.detach()
        if update == "score":  # the guidance moves the estimate the step is taken from
            x0_hat = x0_hat + sigma**2 * guidance_scale * g
        x = ancestral_step(x, x0_hat, sigma, sigma_next, eta, noise)
        if update != "score":  # the guidance is added to the step's result
            weight = math.sqrt(1.0 + sigma_next**2) if update == "paper" else 1.0
            x = x + guidance_scale * weight * g
        if callback is not None:
            callback(StepState(i, n, sigma_next, x, x0_hat, i + 1))
    return x.detach()


UPDATES = ("paper", "reddiff", "score")
