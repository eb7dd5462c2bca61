"""What every sampler shares: the step record, per-draw randomness, the update steps."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from diffrecon.operators.base import Operator

Generators = torch.Generator | Sequence[torch.Generator] | None


@dataclass(frozen=True)
class StepState:
    """Handed to ``callback`` once per sampler step: for progress bars and previews."""

    i: int  # step index, 0-based
    n: int  # number of steps
    sigma: float  # noise level of ``x``
    x: torch.Tensor  # current state
    x0_hat: torch.Tensor  # current estimate of the clean image
    nfe: int  # denoiser evaluations so far


Callback = Callable[[StepState], None] | None


class NonFiniteSampleError(ValueError):
    """A sampler's state became NaN or inf."""


def finite_guard(name: str, callback: Callback = None) -> Callable[[StepState], None]:
    """A step callback that stops a sampler the step its state stops being finite (one
    reduction per step, cheap beside a denoiser call), then calls ``callback``."""

    def guard(state: StepState) -> None:
        if not (bool(torch.isfinite(state.x).all()) and bool(torch.isfinite(state.x0_hat).all())):
            raise NonFiniteSampleError(
                f"sampler {name} produced NaN or inf at step {state.i + 1}/{state.n} (sigma "
                f"{state.sigma:.3g}): the prior returned non-finite values or the data step "
                "diverged; check the prior, the noise level and the coil maps"
            )
        if callback is not None:
            callback(state)

    return guard


def randn_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (one-off; samplers use :class:`NoiseSource`).

    With a sequence of generators, item ``b`` of the batch draws from ``generator[b]`` only,
    so a draw's noise does not depend on which batch it runs in.
    """
    return NoiseSource(generator, x, block=1)()


class NoiseSource:
    """Standard normal noise shaped like ``like``, one independent stream per draw.

    With a sequence of generators each draw's stream is pre-drawn in blocks of image-shaped
    samples (``block`` depends on the image size only, never on the batch), so a draw's noise
    is the same whatever batch it runs in while the per-draw Python calls are amortised.
    With one generator (or ``None``) the whole batch is drawn at once.
    """

    BLOCK_BYTES = 8 * 2**20  # per draw

    def __init__(self, generator: Generators, like: torch.Tensor, block: int | None = None):
        self.generator = generator
        self.shape = tuple(like.shape)
        self.dtype, self.device = like.dtype, like.device
        per_item = like[0].numel() * like.element_size()
        self.block = block or max(1, min(64, self.BLOCK_BYTES // max(per_item, 1)))
        self._buf: torch.Tensor | None = None
        self._pos = 0
        if not (generator is None or isinstance(generator, torch.Generator)):
            if len(generator) != self.shape[0]:
                raise ValueError(f"got {len(generator)} generators for a batch of {self.shape[0]}")

    def __call__(self) -> torch.Tensor:
        g = self.generator
        if g is None or isinstance(g, torch.Generator):
            dev = g.device if g is not None else self.device
            return torch.randn(self.shape, generator=g, dtype=self.dtype, device=dev).to(
                self.device
            )
        if self._buf is None or self._pos == self.block:
            self._buf = torch.stack(
                [
                    torch.randn(
                        (self.block, *self.shape[1:]),
                        generator=gi,
                        dtype=self.dtype,
                        device=gi.device,
                    ).to(self.device)
                    for gi in g
                ],
                dim=1,
            )  # (block, B, ...)
            self._pos = 0
        out = self._buf[self._pos]
        self._pos += 1
        return out


def bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` tensor to broadcast against ``like``."""
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def blank_image(operator: Operator, y: torch.Tensor, shape: tuple[int, ...] | None) -> torch.Tensor:
    """A zero image batch ``(B, *shape)`` with ``y``'s batch size, device and precision."""
    shape = shape or operator.ishape
    if shape is None or any(s is None for s in shape):
        raise ValueError(f"{operator.name} has free input sizes {shape}: pass shape=(C, H, W)")
    dtype = y.real.dtype if y.is_complex() else y.dtype
    return torch.zeros((y.shape[0], *shape), dtype=dtype, device=y.device)


def vp_step_scale(sigma: float, sigma_next: float) -> float:
    """Factor carrying a guidance step taken in VP coordinates (``x / sqrt(1 + sigma^2)``)
    between levels ``sigma`` and ``sigma_next`` to VE ones: DPS's ``zeta`` keeps the
    paper's meaning."""
    return math.sqrt((1 + sigma**2) * (1 + sigma_next**2))


def ancestral_step(
    x: torch.Tensor,
    x0: torch.Tensor,
    sigma: float,
    sigma_next: float,
    eta: float,
    noise: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """One step from ``sigma`` to ``sigma_next`` given the estimate ``x0``.

    ``eta = 0``: deterministic DDIM / Euler probability-flow step. ``eta = 1``: ancestral
    (DDPM) step, the VE form of ancestral sampling: noise ``sigma_up`` is re-injected after a
    deterministic move to ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``.
    """
    if sigma_next == 0:
        return x0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    down = math.sqrt(sigma_next**2 - up**2)
    x = x0 + (down / sigma) * (x - x0)
    return x + up * noise() if up > 0 else x
