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

from diffrecon.priors.learned import LearnedPrior, PriorLoadError

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
        shipped = shipped_dir() / str(name_or_path)
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
