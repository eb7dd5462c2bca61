"""ZAPS: zero-shot approximate posterior sampling (Alçalar, Akçakaya; ECCV 2024, arXiv 2407.11288).

DPS with a fixed, small number of steps on an irregular schedule (the Karras levels are
densest at low noise), where the per-step weights ``zeta_i`` and the Jacobian of Tweedie's
estimate are learned for each measurement, zero-shot:

- Tweedie gives ``d x0_hat / d x = I + sigma^2 Hess log p_sigma(x)``; ZAPS approximates the
  Hessian by ``W^T diag(h_i) W`` with ``W`` an orthogonal wavelet transform (Daubechies-4,
  :class:`~diffrecon.wavelets.DWT2`) and learnable diagonals ``h_i``, so the guidance
  ``J^T grad_{x0_hat} ||y - A x0_hat||`` needs no backward pass through the network.
- ``log zeta_i`` and ``h_i`` are fitted by unrolling the whole sampler and minimising the
  measurement-consistency loss ``||y - A x0||^2`` of its output with Adam for ``epochs``
  epochs at learning rate ``lr``; the score network is never changed. The fitted sampler then
  draws the returned sample without any backward pass.

Each draw of the batch gets its own parameters (the loss is a sum over draws and Adam is
elementwise), so a draw does not depend on the batch it runs in. ``h_i`` starts at
``-1 / (sigma_data^2 + sigma_i^2)`` (the Hessian of a white Gaussian prior) and ``zeta_i`` at
``zeta`` (DPS's weight, in DPS's units). Cost: ``epochs`` unrolled passes, each one forward
and one backward pass of the network per step, plus one forward-only pass; memory holds the
network activations of all ``steps`` of a pass (see ``bench/few_step.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from diffrecon.operators.base import Operator
from diffrecon.priors.base import Denoiser, denoiser_range, sigma_batch
from diffrecon.samplers.common import (
    Callback,
    Generators,
    NoiseSource,
    StepState,
    ancestral_step,
    blank_image,
    vp_step_scale,
)
from diffrecon.samplers.likelihood import misfit_grad, sq_norm
from diffrecon.wavelets import DWT2


@dataclass
class ZapsParams:
    """Learned per-draw parameters: ``log_zeta`` ``(B, steps)``, ``h`` ``(B, steps, *image)``
    (Hessian diagonal in the wavelet basis); ``losses`` holds the fitting curve (per epoch,
    summed over draws)."""

    log_zeta: torch.Tensor
    h: torch.Tensor
    losses: list[float] = field(default_factory=list)


def unroll(
    denoiser: Denoiser,
    operator: Operator,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    params: ZapsParams,
    noise: NoiseSource,
    dwt: DWT2,
    *,
    start: torch.Tensor,
    eta: float = 1.0,
    graph: bool = False,
    callback: Callback = None,
) -> torch.Tensor:
    """One pass of the ZAPS sampler from ``start`` (``sigmas[0] * z``); differentiable in
    ``params`` when ``graph``."""
    levels = sigmas.tolist()
    n = len(levels) - 1
    x = start
    for i in range(n):
        sigma, sigma_next = levels[i], levels[i + 1]
        with torch.set_grad_enabled(graph):
            x0_hat = denoiser(x, sigma_batch(sigma, x))
            v = misfit_grad(operator, x0_hat, y, create_graph=graph)
            jac_diag = 1.0 + sigma**2 * params.h[:, i]
            jv = dwt.inverse(jac_diag * dwt(v))
            x_next = ancestral_step(x, x0_hat, sigma, sigma_next, eta, noise)
            zeta = params.log_zeta[:, i].exp().reshape(-1, *([1] * (x.ndim - 1)))
            x = x_next - zeta * vp_step_scale(sigma, sigma_next) * jv
        if callback is not None:
            callback(StepState(i, n, sigma_next, x.detach(), x0_hat.detach(), i + 1))
    return x


def fit(
    denoiser: Denoiser,
    operator: Operator,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    shape: tuple[int, ...] | None = None,
    zeta: float = 1.0,
    eta: float = 1.0,
    epochs: int = 10,
    lr: float = 1e-2,
    wavelet: str = "db4",
    wavelet_levels: int = 3,
) -> tuple[ZapsParams, NoiseSource, DWT2]:
    """Fit ZAPS's weights and Hessian diagonals to ``y`` (one set per draw)."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    x = blank_image(operator, y, shape)
    noise = NoiseSource(generator, x)
    dwt = DWT2(wavelet, wavelet_levels)
    levels = sigmas.tolist()
    steps = len(levels) - 1
    sd2 = denoiser_range(denoiser).sigma_data ** 2
    h0 = torch.tensor([-1.0 / (sd2 + s * s) for s in levels[:-1]], dtype=x.dtype, device=x.device)
    params = ZapsParams(
        torch.full((x.shape[0], steps), math.log(zeta), dtype=x.dtype, device=x.device),
        h0.reshape(1, steps, *([1] * (x.ndim - 1))).expand(x.shape[0], steps, *x.shape[1:]).clone(),
    )
    params.log_zeta.requires_grad_(True)
    params.h.requires_grad_(True)
    opt = torch.optim.Adam([params.log_zeta, params.h], lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        with torch.enable_grad():
            out = unroll(
                denoiser,
                operator,
                y,
                sigmas,
                params,
                noise,
                dwt,
                start=levels[0] * noise(),
                eta=eta,
                graph=True,
            )
            loss = sq_norm(operator(out) - y).sum()
            loss.backward()
        opt.step()
        params.losses.append(float(loss.detach()))
    params.log_zeta.requires_grad_(False)
    params.h.requires_grad_(False)
    return params, noise, dwt


def zaps(
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
    epochs: int = 10,
    lr: float = 1e-2,
    wavelet: str = "db4",
    wavelet_levels: int = 3,
) -> torch.Tensor:
    """One ZAPS draw per item of ``y``: fit (``epochs`` unrolled passes), then sample.
    ``noise_std`` is unused (the learned weights absorb it), as in DPS."""
    params, noise, dwt = fit(
        denoiser,
        operator,
        y,
        sigmas,
        generator=generator,
        shape=shape,
        zeta=zeta,
        eta=eta,
        epochs=epochs,
        lr=lr,
        wavelet=wavelet,
        wavelet_levels=wavelet_levels,
    )
    start = float(sigmas[0]) * noise()
    x = unroll(
        denoiser, operator, y, sigmas, params, noise, dwt, start=start, eta=eta, callback=callback
    )
    return x.detach()
