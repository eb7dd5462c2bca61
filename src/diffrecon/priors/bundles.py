"""Prior bundles: a folder with ``config.json`` and ``model.safetensors``.

``load("brain-mri-default")`` returns a prior shipped in the package (``priors/shipped/``,
read with :mod:`importlib.resources`); ``load(path)`` any bundle. Weights are read with
``safetensors`` only (or ``torch.load(weights_only=True)`` for ``.pt`` state dicts): no
pickled code is ever executed.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from diffrecon.priors.learned import LearnedPrior, PriorLoadError, check_tensors, key_mismatch

FORMAT = "diffrecon-prior-bundle"


def shipped_dir() -> Path:
    """The folder of the bundles shipped in the package (installed unzipped)."""
    return Path(str(resources.files("diffrecon.priors").joinpath("shipped")))


def available() -> list[str]:
    """Names of the bundles shipped with the package."""
    return sorted(p.name for p in shipped_dir().iterdir() if (p / "config.json").exists())


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from ``.safetensors`` or a ``weights_only`` torch file; anything else refused."""
    path = Path(path)
    if not path.is_file():  # a FIFO or a folder would block or fail deep inside the reader
        raise PriorLoadError(f"weights file not found (or not a regular file): {path}")
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


# bounds on what a bundle config may ask for, checked before anything is allocated
MAX_CHANNELS = 1024
MAX_LEVELS = 6
UNET_KEYS = {
    "spatial_dims",
    "in_channels",
    "out_channels",
    "channels",
    "attention_levels",
    "num_res_blocks",
    "norm_num_groups",
    "num_head_channels",
    "resblock_updown",
    "with_conditioning",
    "transformer_num_layers",
    "dropout_cattn",
    "upcast_attention",
    "include_fc",
    "use_combined_linear",
    "use_flash_attention",
}


def _int(value: Any, name: str, lo: int, hi: int, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise PriorLoadError(f"{label}: {name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def validate_config(config: Any, label: str) -> dict[str, Any]:
    """Types and ranges of a bundle config, before it decides any allocation."""
    if not isinstance(config, dict):
        raise PriorLoadError(
            f"{label}: the config must be a JSON object, got {type(config).__name__}"
        )
    if config.get("format") != FORMAT:
        raise PriorLoadError(f"{label} is not a {FORMAT} config")
    levels = {}
    for key, default in (("sigma_data", 0.5), ("sigma_min", 0.002), ("sigma_max", 80.0)):
        v = config.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
            raise PriorLoadError(f"{label}: {key} must be a positive finite number, got {v!r}")
        levels[key] = float(v)
    if not levels["sigma_min"] < levels["sigma_max"]:
        raise PriorLoadError(
            f"{label}: sigma_min {levels['sigma_min']} must be below sigma_max "
            f"{levels['sigma_max']}"
        )
    arch = config.get("architecture")
    if not isinstance(arch, dict) or not isinstance(arch.get("type"), str):
        raise PriorLoadError(f"{label}: 'architecture' must be an object with a 'type'")
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise PriorLoadError(f"{label}: architecture.kwargs must be an object")
    unknown = set(kwargs) - UNET_KEYS
    if unknown:
        raise PriorLoadError(f"{label}: unknown architecture settings {sorted(unknown)}")
    channels = kwargs.get("channels", [32, 64, 64])
    if not isinstance(channels, list) or not 1 <= len(channels) <= MAX_LEVELS:
        raise PriorLoadError(f"{label}: channels must be a list of 1 to {MAX_LEVELS} integers")
    for c in channels:
        _int(c, "each of channels", 1, MAX_CHANNELS, label)
    for key, hi in (("in_channels", 16), ("out_channels", 32), ("num_res_blocks", 8)):
        if key in kwargs:
            _int(kwargs[key], key, 1, hi, label)
    if "spatial_dims" in kwargs and kwargs["spatial_dims"] != 2:
        raise PriorLoadError(f"{label}: spatial_dims must be 2, got {kwargs['spatial_dims']!r}")
    groups = kwargs.get("norm_num_groups", 32)
    _int(groups, "norm_num_groups", 1, MAX_CHANNELS, label)
    if any(c % groups for c in channels):
        raise PriorLoadError(f"{label}: every channel count must be divisible by norm_num_groups")
    att = kwargs.get("attention_levels", [False] * len(channels))
    if (
        not isinstance(att, list)
        or len(att) != len(channels)
        or not all(isinstance(a, bool) for a in att)
    ):
        raise PriorLoadError(f"{label}: attention_levels must be one boolean per level")
    scale = arch.get("noise_scale", 1000.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < 1e9:
        raise PriorLoadError(f"{label}: architecture.noise_scale must be positive, got {scale!r}")
    return config


def _check_weights_fit(net: torch.nn.Module, weights: Path, label: str) -> None:
    """Compare the network's parameter names and shapes (built on the meta device: nothing
    allocated) with the safetensors header, and list what does not match."""
    if weights.suffix != ".safetensors":
        return
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as err:
        raise PriorLoadError(f"{weights} is not a valid safetensors file: {err}") from err
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    why = key_mismatch(expected, header, limit=5)
    if why is not None:
        raise PriorLoadError(f"weights in {label} do not fit the bundle's architecture ({why})")


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    per file, through :mod:`diffrecon.io.atomic`: the weights first, then the config that
    names their checksum)."""
    from safetensors.torch import save_file

    from diffrecon.io.atomic import atomic_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_file(path / "model.safetensors", overwrite=True) as tmp:
        save_file(state, str(tmp))
        cfg = {"format": FORMAT, **config, "weights_sha256": _sha256(tmp)}
    with atomic_file(path / "config.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return path


def load(name_or_path: str | Path, device: str | torch.device = "cpu") -> LearnedPrior:
    """Load a shipped bundle by name (``available()``) or a bundle folder by path."""
    p = Path(name_or_path)
    if not p.exists():
        shipped = shipped_dir() / str(name_or_path)
        if not shipped.exists():
            raise PriorLoadError(
                f"no prior bundle {str(name_or_path)!r}: not a path, and the shipped ones are "
                f"{', '.join(available()) or 'none'}"
            )
        p = shipped
    cfg_path = p / "config.json"
    if not cfg_path.is_file():  # a FIFO named config.json would block the read forever
        raise PriorLoadError(
            f"{p} is not a prior bundle: config.json is missing (or not a regular file)"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PriorLoadError(f"{cfg_path} is not valid JSON: {err}") from err
    validate_config(config, str(cfg_path))
    weights = p / "model.safetensors"
    if not weights.is_file():
        raise PriorLoadError(f"weights file not found (or not a regular file): {weights}")
    digest = config.get("weights_sha256")
    if digest is not None and _sha256(weights) != digest:
        raise PriorLoadError(
            f"{weights} does not match the SHA-256 recorded in its config.json (corrupted or "
            "replaced weights)"
        )
    with torch.device("meta"):
        skeleton = build_network(config)
    _check_weights_fit(skeleton, weights, str(p))
    state = load_state_dict(weights)
    check_tensors(state, str(weights))
    net = build_network(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise PriorLoadError(
            f"weights in {p} do not fit the bundle's architecture: {first}"
        ) from err
    return LearnedPrior(net, config).to(device)
