"""Prior bundles: a folder with ``config.json`` and ``model.safetensors``; loading users' models.

``load("brain-mri-default")`` returns the prior shipped in the wheel; ``load(path)`` any
bundle. Weights are read with ``safetensors`` only (or ``torch.load(weights_only=True)``
for ``.pt`` state dicts): no pickled code is ever executed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from diffrecon.priors.wrappers import EDMDenoiser, ScaledDenoiser, VPDenoiser, ddpm_alphas_cumprod

BUNDLE_DIR = Path(__file__).parent / "bundles"
FORMAT = "diffrecon-prior-bundle"
PARAMETERISATIONS = ("edm", "x0-ve", "eps-vp", "v-vp")


class PriorLoadError(ValueError):
    """A bundle or checkpoint that cannot be used; the message says why."""


def available() -> list[str]:
    """Names of the bundles shipped with the package."""
    return sorted(p.name for p in BUNDLE_DIR.iterdir() if (p / "config.json").exists())


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from ``.safetensors`` or a ``weights_only`` torch file; anything else refused."""
    path = Path(path)
    if not path.exists():
        raise PriorLoadError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise PriorLoadError(f"{path} is not a valid safetensors file: {err}") from err
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            raise PriorLoadError(
                f"{path} could not be read with torch.load(weights_only=True) (pickled code "
                f"is never executed): {err}"
            ) from err
        if isinstance(obj, dict) and "state_dict" in obj:
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise PriorLoadError(f"{path} does not hold a state dict of tensors")
        return obj
    raise PriorLoadError(f"unsupported weights format {path.suffix!r}: use .safetensors or .pt")


def wrap_network(net: Any, parameterisation: str, config: dict[str, Any] | None = None) -> Any:
    """A ``D(x, sigma)`` from a network with a declared parameterisation.

    ``"edm"``: raw EDM network ``F(c_in x, c_noise)``; ``"x0-ve"``: ``net(x, sigma) -> x0``;
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
        den = _X0VE(net, sd, float(cfg.get("sigma_min", 0.002)), float(cfg.get("sigma_max", 80.0)))
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


class _X0VE:
    def __init__(self, net: Any, sigma_data: float, sigma_min: float, sigma_max: float) -> None:
        self.net, self.sigma_data, self.sigma_min, self.sigma_max = (
            net,
            sigma_data,
            sigma_min,
            sigma_max,
        )

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        from diffrecon.priors.base import sigma_batch

        return self.net(x, sigma_batch(sigma, x))


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

    @property
    def name(self) -> str:
        return str(self.config.get("name", "unnamed"))

    def to(self, device: str | torch.device) -> LearnedPrior:
        self.net.to(device)
        return self

    @property
    def size_multiple(self) -> int:
        """Image sizes the network accepts are multiples of this (one per downsampling)."""
        levels = len(self.config.get("architecture", {}).get("kwargs", {}).get("channels", [1]))
        return 2 ** max(levels - 1, 0)

    def __call__(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        """Denoise; images of any size are zero-padded to the network's multiple and cropped
        back (MRI backgrounds are zero, so the padding looks like more background)."""
        m = self.size_multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            out = self._den(torch.nn.functional.pad(x, (0, pw, 0, ph)), sigma)
            return out[..., :h, :w]
        return self._den(x, sigma)


def build_network(config: dict[str, Any]) -> torch.nn.Module:
    """The network a bundle's ``architecture`` entry describes."""
    arch = config.get("architecture", {})
    kind = arch.get("type")
    if kind == "monai.DiffusionModelUNet":
        from diffrecon.priors.unet import MonaiUNet

        return MonaiUNet(arch.get("kwargs"), noise_scale=float(arch.get("noise_scale", 1000.0)))
    raise PriorLoadError(f"unknown architecture type {kind!r} in the bundle config")


def save_bundle(path: str | Path, net: torch.nn.Module, config: dict[str, Any]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into the folder ``path`` (atomically
    per file: a temporary name renamed at the end)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"format": FORMAT, **config}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tmp = path / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(path / "model.safetensors")
    tmpc = path / "config.json.tmp"
    tmpc.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tmpc.replace(path / "config.json")
    return path


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> LearnedPrior:
    """Load a shipped bundle by name (``available()``) or a bundle folder by path."""
    p = Path(name_or_path)
    if not p.exists():
        shipped = BUNDLE_DIR / str(name_or_path)
        if not shipped.exists():
            raise PriorLoadError(
                f"no prior bundle {str(name_or_path)!r}: not a path, and the shipped ones are "
                f"{', '.join(available()) or 'none'}"
            )
        p = shipped
    cfg_path = p / "config.json"
    if not cfg_path.exists():
        raise PriorLoadError(f"{p} is not a prior bundle: config.json is missing")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise PriorLoadError(f"{cfg_path} is not valid JSON: {err}") from err
    if config.get("format") != FORMAT:
        raise PriorLoadError(f"{cfg_path} is not a {FORMAT} config")
    net = build_network(config)
    state = load_state_dict(p / "model.safetensors")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise PriorLoadError(
            f"weights in {p} do not fit the bundle's architecture: {first}"
        ) from err
    return LearnedPrior(net, config).to(device)


def from_module(module: torch.nn.Module, parameterisation: str, **config: Any) -> LearnedPrior:
    """Any ``torch.nn.Module`` with a declared parameterisation (``"eps-vp"``, ``"v-vp"``,
    ``"x0-ve"``, ``"edm"``); ``config`` as in :func:`wrap_network` (beta schedule, sigmas,
    ``data_scale``/``data_shift``)."""
    if parameterisation not in PARAMETERISATIONS:
        raise PriorLoadError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )
    return LearnedPrior(
        module, {"name": type(module).__name__, "parameterisation": parameterisation, **config}
    )


class _TimestepNet(torch.nn.Module):
    """``net(z_t, t)`` for MONAI/diffusers UNets that take ``timesteps=``."""

    def __init__(self, unet: torch.nn.Module, diffusers: bool = False) -> None:
        super().__init__()
        self.unet, self.diffusers = unet, diffusers

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.diffusers:
            return self.unet(z, t).sample
        return self.unet(z, timesteps=t)


def load_monai_ddpm(
    weights: str | Path,
    arch: dict[str, Any],
    prediction: str = "epsilon",
    beta_schedule: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 2e-2,
    num_train_timesteps: int = 1000,
    **config: Any,
) -> LearnedPrior:
    """A MONAI ``DiffusionModelUNet`` state dict trained with MONAI's ``DDPMScheduler``.

    ``arch``: the ``DiffusionModelUNet`` keyword arguments; ``prediction``: ``"epsilon"`` or
    ``"v_prediction"``/``"v"``; the beta schedule as given to the scheduler (MONAI's
    ``"scaled_linear_beta"`` is ``"scaled_linear"`` here).
    """
    from monai.networks.nets import DiffusionModelUNet

    kwargs = dict(arch)
    for key in ("channels", "attention_levels", "num_res_blocks", "num_head_channels"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    unet = DiffusionModelUNet(**kwargs)
    try:
        unet.load_state_dict(load_state_dict(weights), strict=True)
    except RuntimeError as err:
        raise PriorLoadError(
            f"{weights} does not fit the given architecture: {str(err).splitlines()[0]}"
        ) from err
    param = "v-vp" if prediction in ("v", "v_prediction") else "eps-vp"
    schedule = {"linear_beta": "linear", "scaled_linear_beta": "scaled_linear"}.get(
        beta_schedule, beta_schedule
    )
    return LearnedPrior(
        _TimestepNet(unet),
        {
            "name": Path(weights).stem,
            "parameterisation": param,
            "beta_schedule": schedule,
            "beta_start": beta_start,
            "beta_end": beta_end,
            "num_train_timesteps": num_train_timesteps,
            **config,
        },
    )


def load_diffusers_unet(folder: str | Path, **config: Any) -> LearnedPrior:
    """A diffusers ``UNet2DModel`` folder (local files only; needs the ``diffusers`` extra).

    The parameterisation and beta schedule come from a ``scheduler_config.json`` in the
    folder or its parent (``prediction_type``, ``beta_schedule``, ``beta_start``,
    ``beta_end``, ``num_train_timesteps``); ``config`` overrides them.
    """
    try:
        from diffusers import UNet2DModel
    except ImportError as err:
        raise PriorLoadError(
            "loading diffusers models needs `pip install diffrecon[diffusers]`"
        ) from err
    folder = Path(folder)
    sched: dict[str, Any] = {}
    for cand in (
        folder / "scheduler_config.json",
        folder.parent / "scheduler" / "scheduler_config.json",
        folder.parent / "scheduler_config.json",
    ):
        if cand.exists():
            sched = json.loads(cand.read_text())
            break
    unet = UNet2DModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    pred = config.pop("prediction_type", sched.get("prediction_type", "epsilon"))
    cfg = {
        "name": folder.name,
        "parameterisation": "v-vp" if pred == "v_prediction" else "eps-vp",
        "beta_schedule": sched.get("beta_schedule", "linear"),
        "beta_start": sched.get("beta_start", 1e-4),
        "beta_end": sched.get("beta_end", 2e-2),
        "num_train_timesteps": sched.get("num_train_timesteps", 1000),
        **config,
    }
    return LearnedPrior(_TimestepNet(unet, diffusers=True), cfg)
