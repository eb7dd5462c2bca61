"""Unconditional sampling from a prior: for looking at what a learned prior has learned."""

from __future__ import annotations

import torch

from diffrecon.priors.base import Denoiser, sigma_batch
from diffrecon.samplers.common import Generators, NoiseSource, ancestral_step


def sample_prior(
    denoiser: Denoiser,
    shape: tuple[int, ...],
    sigmas: torch.Tensor,
    *,
    generator: Generators = None,
    eta: float = 1.0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Draws ``shape = (B, C, H, W)`` from the prior by ancestral (``eta=1``) or
    probability-flow (``eta=0``) steps along ``sigmas`` (ending in 0)."""
    x = torch.zeros(shape, device=device)
    noise = NoiseSource(generator, x)
    x = float(sigmas[0]) * noise()
    levels = sigmas.tolist()
    for sigma, sigma_next in zip(levels[:-1], levels[1:], strict=True):
        x0 = denoiser(x, sigma_batch(sigma, x))
        x = ancestral_step(x, x0, sigma, sigma_next, eta, noise)
    return x
