"""Adapters from other network parameterisations to the one denoiser convention.

Variance-preserving diffusion (DDPM) uses ``z_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with
``a_t = alphas_cumprod[t]``. Dividing by ``sqrt(a_t)`` gives ``x = x0 + sigma n`` with
``sigma = sqrt((1 - a_t) / a_t)``: the same process in the VE form every sampler here uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch

from diffrecon.priors.base import sigma_batch

Prediction = Literal["epsilon", "v", "x0"]


def ddpm_alphas_cumprod(
    num_steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 2e-2,
    schedule: Literal["linear", "scaled_linear"] = "linear",
) -> torch.Tensor:
    """``alphas_cumprod`` of a DDPM beta schedule (MONAI/diffusers definitions)."""
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    else:
        raise ValueError(f"schedule must be 'linear' or 'scaled_linear', got {schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


class VPDenoiser:
    """Wrap ``net(z_t, t)`` trained as a discrete VP model as ``D(x, sigma)``.

    ``prediction``: what the network outputs (``"epsilon"``, ``"v"`` or ``"x0"``). A sigma
    between two training levels maps to a fractional timestep by interpolating ``log sigma``
    (the network's time embedding is continuous). ``scale``/``shift`` map the network's data
    range to the sampler's: ``x_net = x * scale + shift`` (e.g. [0, 1] data: scale 2, shift -1).
    """

    def __init__(
        self,
        net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        alphas_cumprod: torch.Tensor,
        prediction: Prediction = "epsilon",
        sigma_data: float = 0.5,
    ) -> None:
        if prediction not in ("epsilon", "v", "x0"):
            raise ValueError(f"prediction must be 'epsilon', 'v' or 'x0', got {prediction!r}")
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.net = net
        self.prediction = prediction
        self.sigmas = ((1 - ac) / ac).sqrt()
        self.log_sigmas = self.sigmas.log()
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])
        self.sigma_data = sigma_data

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose VE sigma is ``sigma`` (log-linear interpolation)."""
        ls = self.log_sigmas.to(sigma.device)
        log_s = sigma.to(torch.float64).clamp(self.sigma_min, self.sigma_max).log()
        hi = torch.searchsorted(ls, log_s).clamp(1, len(ls) - 1)
        lo = hi - 1
        frac = (log_s - ls[lo]) / (ls[hi] - ls[lo])
        return lo.to(torch.float64) + frac

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        sb = s.reshape(-1, *([1] * (x.ndim - 1)))
        a_sqrt = 1.0 / torch.sqrt(1.0 + sb**2)  # sqrt(alpha_bar)
        z = x * a_sqrt  # VP input
        t = self.sigma_to_t(s).to(x.dtype)
        out = self.net(z, t)
        if self.prediction == "epsilon":
            return x - sb * out
        if self.prediction == "v":
            # v = sqrt(a) eps - sqrt(1 - a) x0  =>  x0 = sqrt(a) z - sqrt(1 - a) v
            return a_sqrt * z - torch.sqrt(1 - a_sqrt**2) * out
        return out


class ScaledDenoiser:
    """Run a denoiser trained on ``x_net = scale * x + shift`` on data in the sampler's range."""

    def __init__(self, inner: Callable, scale: float = 1.0, shift: float = 0.0) -> None:
        self.inner, self.scale, self.shift = inner, float(scale), float(shift)
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise ValueError(f"data_scale must be a finite, non-zero number, got {scale!r}")
        if not math.isfinite(self.shift):
            raise ValueError(f"data_shift must be a finite number, got {shift!r}")
        for attr in ("sigma_min", "sigma_max", "sigma_data"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr) / abs(self.scale))

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        out = self.inner(x * self.scale + self.shift, s * abs(self.scale))
        return (out - self.shift) / self.scale


class EDMDenoiser:
    """EDM preconditioning (Karras et al. 2022): a raw network ``F(x_in, c_noise)`` becomes
    ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)`` with
    ``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
    ``c_in = 1 / sqrt(s^2 + sd^2)`` and ``c_noise = log(s) / 4`` (``sd`` = ``sigma_data``)."""

    def __init__(
        self,
        net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
    ):
        self.net = net
        self.sigma_data, self.sigma_min, self.sigma_max = sigma_data, sigma_min, sigma_max

    def coefficients(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(c_skip, c_out, c_in, c_noise)`` for a ``(B,)`` tensor of noise levels."""
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / torch.sqrt(sigma**2 + sd**2)
        c_in = 1 / torch.sqrt(sigma**2 + sd**2)
        return c_skip, c_out, c_in, sigma.log() / 4

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        c_skip, c_out, c_in, c_noise = (
            c.reshape(-1, *([1] * (x.ndim - 1))) for c in self.coefficients(s)
        )
        return c_skip * x + c_out * self.net(c_in * x, c_noise.reshape(-1))


class FlowMatchingDenoiser:
    """Wrap a velocity model ``v(x_t, t)`` (flow matching / rectified flow with straight
    paths) as ``D(x, sigma)``.

    ``data_at="one"`` (Liu et al.'s rectified flow): ``x_t = t x1 + (1 - t) z``,
    ``v = x1 - z``, so ``sigma = (1 - t) / t`` and ``x1_hat = x_t + (1 - t) v``.
    ``data_at="zero"``: ``x_t = (1 - t) x0 + t z``, ``v = z - x0``, ``x0_hat = x_t - t v``.
    The network sees ``t * time_scale`` (999 for score-SDE-style embeddings). ``t_range``
    bounds the times it was trained on and sets ``sigma_min``/``sigma_max``.
    """

    def __init__(
        self,
        velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        data_at: str = "one",
        time_scale: float = 1.0,
        t_range: tuple[float, float] = (1e-3, 1 - 1e-3),
        sigma_data: float = 0.5,
    ) -> None:
        if data_at not in ("one", "zero"):
            raise ValueError(f"data_at must be 'one' or 'zero', got {data_at!r}")
        lo, hi = t_range
        if not 0 < lo < hi < 1:
            raise ValueError(f"t_range must satisfy 0 < lo < hi < 1, got {t_range}")
        self.velocity, self.data_at, self.time_scale = velocity, data_at, float(time_scale)
        if data_at == "one":  # sigma = (1 - t) / t falls as t grows
            self.sigma_min, self.sigma_max = (1 - hi) / hi, (1 - lo) / lo
        else:  # sigma = t / (1 - t)
            self.sigma_min, self.sigma_max = lo / (1 - lo), hi / (1 - hi)
        self.sigma_data = sigma_data

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        sb = s.reshape(-1, *([1] * (x.ndim - 1)))
        data_weight = 1.0 / (1.0 + sb)  # x_t = data_weight * (x0 + sigma z)
        xt = x * data_weight
        if self.data_at == "one":
            t = data_weight
            v = self.velocity(xt, (t.reshape(-1) * self.time_scale).to(x.dtype))
            return xt + (1 - t) * v
        t = 1 - data_weight
        v = self.velocity(xt, (t.reshape(-1) * self.time_scale).to(x.dtype))
        return xt - t * v


class ScoreVEDenoiser:
    """A VE score network ``s(x, sigma) ~ grad log p(x; sigma)`` (score_sde's NCSN++) as
    ``D(x, sigma) = x + sigma^2 s(x, sigma)`` (Tweedie's formula)."""

    def __init__(self, net: Any, sigma_data: float, sigma_min: float, sigma_max: float) -> None:
        self.net = net
        self.sigma_data, self.sigma_min, self.sigma_max = sigma_data, sigma_min, sigma_max

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        s = sigma_batch(sigma, x)
        return x + s.reshape(-1, *([1] * (x.ndim - 1))) ** 2 * self.net(x, s)


class X0Denoiser:
    """A network that predicts ``x0`` directly from ``(x, sigma)`` in the package's own VE
    convention: ``D(x, sigma) = net(x, sigma)``, with the trained range declared."""

    def __init__(self, net: Any, sigma_data: float, sigma_min: float, sigma_max: float) -> None:
        self.net = net
        self.sigma_data, self.sigma_min, self.sigma_max = sigma_data, sigma_min, sigma_max

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        return self.net(x, sigma_batch(sigma, x))


class SupportDenoiser:
    """A denoiser restricted to a known support: ``D_s(x, sigma) = s * D(x, sigma)``.

    With coil maps that are zero outside the object, the image there is in the SENSE
    operator's null space: nothing measures it, and an unrestricted prior fills it with
    texture. Restricting the prior to images that vanish outside ``support`` (``(H, W)``
    bool, broadcast over channels) constrains it instead. ``sigma_min`` and the other range
    attributes are the wrapped denoiser's.
    """

    def __init__(
        self, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], support: Any
    ) -> None:
        s = torch.as_tensor(support)
        if s.dtype != torch.bool or s.ndim != 2:
            raise ValueError(
                f"support must be a 2-D bool mask (H, W), got {s.dtype} {tuple(s.shape)}"
            )
        if not bool(s.any()):
            raise ValueError("support is empty: no pixel left to reconstruct")
        self.denoiser = denoiser
        self.support = s

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = self.denoiser(x, sigma)
        return out * self.support.to(device=out.device, dtype=out.dtype)

    def __getattr__(self, name: str) -> Any:
        if name in ("denoiser", "support"):
            raise AttributeError(name)
        return getattr(self.denoiser, name)
