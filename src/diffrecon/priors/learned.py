"""A learned prior: a network with a declared parameterisation, wrapped as ``D(x, sigma)``.

Where the network comes from (a bundle, a third-party checkpoint, a module in memory) is the
business of :mod:`~diffrecon.priors.bundles` and :mod:`~diffrecon.priors.importers`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from diffrecon.priors.wrappers import (
    EDMDenoiser,
    ScaledDenoiser,
    ScoreVEDenoiser,
    VPDenoiser,
    X0Denoiser,
    ddpm_alphas_cumprod,
)

PARAMETERISATIONS = ("edm", "x0-ve", "eps-vp", "v-vp", "score-ve")


class PriorLoadError(ValueError):
    """A bundle or checkpoint that cannot be used; the message says why."""


def check_tensors(state: dict[str, torch.Tensor], label: str) -> None:
    """Refuse a state dict whose tensors are not stored weights: a broadcast view (a few
    bytes declaring a huge shape, which the network would then allocate) or NaN/inf (a
    damaged checkpoint, or one saved mid-divergence, which would only show as NaN images
    minutes into sampling). The view check comes first: it reads no data."""
    for k, v in state.items():
        stored = v.untyped_storage().nbytes()
        if v.numel() and stored < v.numel() * v.element_size():
            raise PriorLoadError(
                f"{label}: tensor {k!r} declares shape {tuple(v.shape)} but stores {stored} "
                "bytes (a broadcast view, not saved weights)"
            )
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise PriorLoadError(f"{label}: tensor {k!r} holds NaN or inf (damaged weights)")


def key_mismatch(expected: dict[str, tuple], got: dict[str, tuple], limit: int = 6) -> str | None:
    """``"missing keys: ...; unexpected keys: ...; shape keys: ..."`` for two name -> shape
    maps (weights against a network), or ``None`` when they agree."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k]))
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if keys:
            more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{what} keys: {', '.join(keys[:limit])}{more}")
    return "; ".join(parts) or None


def channel_mismatch(name: str, prior_channels: int, image_channels: int) -> str:
    """Why a prior cannot model these images (magnitude priors on complex MRI above all)."""
    msg = (
        f"the prior {name!r} models {prior_channels}-channel images, the problem has "
        f"{image_channels}"
    )
    if prior_channels == 1 and image_channels == 2:
        msg += (
            ": a magnitude (1-channel) prior cannot model complex MR images, whose phase the "
            "data constrain; use a complex (2-channel: real, imaginary) prior for MRI"
        )
    return msg


def wrap_network(net: Any, parameterisation: str, config: dict[str, Any] | None = None) -> Any:
    """A ``D(x, sigma)`` from a network with a declared parameterisation.

    ``"edm"``: raw EDM network ``F(c_in x, c_noise)``; ``"x0-ve"``: ``net(x, sigma) -> x0``;
    ``"score-ve"``: a VE score network ``net(x, sigma)`` (Tweedie: ``x + sigma^2 net``);
    ``"eps-vp"`` / ``"v-vp"``: DDPM network ``net(z_t, t)`` with the beta schedule in
    ``config`` (``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``).
    ``config["data_scale"]``/``["data_shift"]`` map the sampler's data to the network's.
    """
    cfg = dict(config or {})
    sd = float(cfg.get("sigma_data", 0.5))
    if parameterisation == "edm":
        den: Any = EDMDenoiser(
            net,
            sigma_data=sd,
            sigma_min=float(cfg.get("sigma_min", 0.002)),
            sigma_max=float(cfg.get("sigma_max", 80.0)),
        )
    elif parameterisation == "x0-ve":
        den = X0Denoiser(
            net, sd, float(cfg.get("sigma_min", 0.002)), float(cfg.get("sigma_max", 80.0))
        )
    elif parameterisation == "score-ve":
        den = ScoreVEDenoiser(
            net, sd, float(cfg.get("sigma_min", 0.01)), float(cfg.get("sigma_max", 378.0))
        )
    elif parameterisation in ("eps-vp", "v-vp"):
        ac = ddpm_alphas_cumprod(
            int(cfg.get("num_train_timesteps", 1000)),
            float(cfg.get("beta_start", 1e-4)),
            float(cfg.get("beta_end", 2e-2)),
            cfg.get("beta_schedule", "linear"),
        )
        den = VPDenoiser(
            net, ac, prediction="epsilon" if parameterisation == "eps-vp" else "v", sigma_data=sd
        )
    else:
        raise PriorLoadError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )
    scale, shift = float(cfg.get("data_scale", 1.0)), float(cfg.get("data_shift", 0.0))
    return den if (scale, shift) == (1.0, 0.0) else ScaledDenoiser(den, scale, shift)


PRECISIONS = ("float32", "bfloat16")
# "auto": bfloat16 where the hardware computes it natively, float32 elsewhere
AUTO_PRECISION = "auto"
PRECISION_CHOICES = (*PRECISIONS, AUTO_PRECISION)  # what a job or the CLI accepts
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively, so that bf16 autocast about halves a
    network call: CUDA GPUs of compute capability 8.0 or higher, CPUs with AVX512-BF16 or
    AMX-BF16 (read from Linux's CPU flags). Elsewhere bf16 is emulated and slower than
    float32, so ``"auto"`` keeps float32 there."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return bool(_cpu_flags() & set(_CPU_BF16_FLAGS))
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``precision`` with ``"auto"`` made concrete for ``device`` (:func:`native_bfloat16`)."""
    if precision == AUTO_PRECISION:
        return "bfloat16" if native_bfloat16(device) else "float32"
    if precision not in PRECISIONS:
        choices = ", ".join(PRECISION_CHOICES)
        raise ValueError(f"precision must be one of {choices}, got {precision!r}")
    return precision


class LearnedPrior:
    """A loaded bundle: the denoiser plus its config; ``.to(device)`` moves the network."""

    def __init__(self, net: torch.nn.Module, config: dict[str, Any]) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.config = config
        self._den = wrap_network(self.net, config.get("parameterisation", "edm"), config)
        for attr in ("sigma_min", "sigma_max", "sigma_data"):
            setattr(self, attr, getattr(self._den, attr))
        self.precision = "float32"

    @property
    def name(self) -> str:
        return str(self.config.get("name", "unnamed"))

    def to(self, device: str | torch.device) -> LearnedPrior:
        self.net.to(device)
        return self

    def with_precision(self, precision: str) -> LearnedPrior:
        """This prior (the same network, not a copy of it) computing in ``precision``:
        ``"float32"`` or ``"bfloat16"`` (the network's convolutions and matrix products under
        bf16 autocast; the preconditioning and the output stay float32). On CPUs with
        AVX512-BF16 and on GPUs about twice as fast; its effect on results is measured in
        ``docs/benchmarks.md``."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        other = copy.copy(self)
        other.precision = precision
        return other

    @property
    def size_multiple(self) -> int:
        """Image sizes the network accepts are multiples of this (one per downsampling)."""
        if "size_multiple" in self.config:
            return int(self.config["size_multiple"])
        levels = len(self.config.get("architecture", {}).get("kwargs", {}).get("channels", [1]))
        return 2 ** max(levels - 1, 0)

    @property
    def channels(self) -> int | None:
        """Image channels the network models (2: complex MR images as real and imaginary)."""
        if "channels" in self.config:
            return int(self.config["channels"])
        kwargs = self.config.get("architecture", {}).get("kwargs", {})
        value = kwargs.get("in_channels")
        return None if value is None else int(value)

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """Denoise; images of any size are zero-padded to the network's multiple and cropped
        back (MRI backgrounds are zero, so the padding looks like more background)."""
        c = self.channels
        if c is not None and x.ndim == 4 and x.shape[1] != c:
            raise ValueError(channel_mismatch(self.name, c, int(x.shape[1])))
        m = self.size_multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        low = self.precision == "bfloat16"
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=low):
            if ph or pw:
                out = self._den(torch.nn.functional.pad(x, (0, pw, 0, ph)), sigma)
                out = out[..., :h, :w]
            else:
                out = self._den(x, sigma)
        return out.to(x.dtype)


def from_module(module: torch.nn.Module, parameterisation: str, **config: Any) -> LearnedPrior:
    """Any ``torch.nn.Module`` with a declared parameterisation (``"eps-vp"``, ``"v-vp"``,
    ``"x0-ve"``, ``"edm"``); ``config`` as in :func:`wrap_network` (beta schedule, sigmas,
    ``data_scale``/``data_shift``)."""
    if parameterisation not in PARAMETERISATIONS:
        raise PriorLoadError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )
    unknown = sorted(set(config) - MODULE_OPTIONS)
    if unknown:
        raise PriorLoadError(
            f"from_module: unknown option(s) {unknown}; it takes {sorted(MODULE_OPTIONS)}"
        )
    net: torch.nn.Module = module
    if config.pop("learn_sigma", False):
        if not parameterisation.endswith("-vp"):
            raise PriorLoadError("learn_sigma applies to VP (eps-vp, v-vp) networks")
        net = _FirstHalf(module)
    return LearnedPrior(
        net, {"name": type(module).__name__, "parameterisation": parameterisation, **config}
    )


# what from_module's config may hold (wrap_network's settings and the prior's description)
MODULE_OPTIONS = {
    "name",
    "sigma_data",
    "sigma_min",
    "sigma_max",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "data_scale",
    "data_shift",
    "channels",
    "size_multiple",
    "learn_sigma",
}


class _FirstHalf(torch.nn.Module):
    """A network with learned variance (``2C`` output channels): its epsilon half only."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.net(z, t)
        if out.shape[1] != 2 * z.shape[1]:
            raise ValueError(
                f"learn_sigma: the network returns {out.shape[1]} channels for {z.shape[1]} in, "
                "not twice as many"
            )
        return out[:, : z.shape[1]]
