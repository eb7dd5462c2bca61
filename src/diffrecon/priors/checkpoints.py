"""Published diffusion checkpoints as priors: read safely, recognise the family, load.

``load_checkpoint(path)`` reads a ``.safetensors`` file or a ``torch.load(weights_only=True)``
file (pickled code is never run; EDM's ``.pkl`` snapshots are refused with the one-line
conversion), unwraps the usual nesting (``ema``, ``net``, ``model``, ``state_dict``, DDP's
``module.``), recognises the family from the key names and builds our own network for it:

- ``edm``: EDM / InverseBench ``EDMPrecond`` with ``DhariwalUNet`` or ``SongUNet``
  (:mod:`~diffrecon.priors.families.edm`), EDM preconditioning;
- ``adm``: guided-diffusion ``UNetModel`` (:mod:`~diffrecon.priors.families.adm`), a VP
  epsilon model on the DDPM linear-beta schedule, ``learn_sigma`` read from the channels;
- ``ncsnpp``: score_sde's NCSN++ (:mod:`~diffrecon.priors.families.ncsnpp`), a continuous VE
  score model; score_sde's ``{'model', 'ema', 'step'}`` checkpoints load their EMA weights
  and drop the ``sigmas`` table.

``open_prior(spec, format)`` is the one entry the CLI, napari, jobs and the numpy API use:
shipped names, bundle folders, checkpoint files and diffusers folders.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from diffrecon.priors.families.ncsnpp import DEFAULTS as NCSNPP_DEFAULTS
from diffrecon.priors.learned import LearnedPrior, PriorLoadError, check_tensors, key_mismatch

FORMATS = ("auto", "bundle", "edm", "adm", "ncsnpp", "monai", "diffusers")
NESTING = ("ema", "net", "model", "state_dict", "params")
EDM_PKL_HINT = (
    "EDM's .pkl snapshots pickle code, which diffrecon never runs. Convert it once with your "
    "own EDM install: python -c \"import pickle, torch; net = pickle.load(open('IN.pkl', "
    "'rb'))['ema']; torch.save(net.state_dict(), 'OUT.pt')\""
)
# options each family takes (what the weights do not record), with their defaults
FAMILY_OPTIONS: dict[str, dict[str, Any]] = {
    "edm": {"sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0},
    "adm": {
        "num_head_channels": 64,
        "num_heads": 4,
        "num_heads_upsample": -1,
        "use_new_attention_order": False,
        "beta_start": 1e-4,
        "beta_end": 2e-2,
        "num_train_timesteps": 1000,
        "beta_schedule": "linear",
    },
}
FAMILY_OPTIONS["ncsnpp"] = {**NCSNPP_DEFAULTS, "sigma_min": 0.01, "sigma_max": 378.0}
COMMON_OPTIONS = {"data_scale": 1.0, "data_shift": 0.0, "name": None}


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (the CLI's ``--prior-option``, the widget's field) as options;
    values are read as JSON where they parse (numbers, true/false), else kept as text."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PriorLoadError(f"prior options take KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value.strip()
    return options


def _tensors(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's tensors from a checkpoint file, with wrapper dicts and DDP prefixes
    removed; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise PriorLoadError(f"checkpoint not found: {path}")
    if path.suffix == ".pkl":
        raise PriorLoadError(f"{path}: {EDM_PKL_HINT}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except Exception as err:
            raise PriorLoadError(f"{path} is not a valid safetensors file: {err}") from err
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise PriorLoadError(
                f"{path} could not be read with torch.load(weights_only=True): it holds "
                f"pickled objects other than tensors, which diffrecon never unpickles ({first}). "
                "Save the network's state_dict() instead."
            ) from err
    if isinstance(obj, dict) and isinstance(obj.get("ema"), dict) and "shadow_params" in obj["ema"]:
        # score_sde: {'model': state dict, 'ema': {'shadow_params': [...]}, 'step', ...}
        from diffrecon.priors.families.ncsnpp import ema_state

        model = obj.get("model")
        if not _tensors(model):
            raise PriorLoadError(f"{path}: an EMA checkpoint without a 'model' state dict")
        model = _strip_module(model)
        try:
            state = ema_state(model, list(obj["ema"]["shadow_params"]))
        except ValueError as err:
            raise PriorLoadError(f"{path}: {err}") from err
        check_tensors(state, str(path))
        return state
    seen = []
    while isinstance(obj, dict) and not _tensors(obj):
        key = next((k for k in NESTING if k in obj and isinstance(obj[k], dict)), None)
        if key is None:
            raise PriorLoadError(
                f"{path} holds a dict with keys {sorted(obj)[:8]} and no state dict of tensors "
                f"under any of {list(NESTING)}"
            )
        seen.append(key)
        obj = obj[key]
    if not _tensors(obj):
        raise PriorLoadError(f"{path} does not hold a state dict of tensors")
    state = _strip_module(obj)
    check_tensors(state, str(path))
    return state


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without DataParallel's ``module.`` prefix."""
    while state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def detect_format(shapes: dict[str, tuple[int, ...]]) -> str:
    """The checkpoint family the key names show, or a ``PriorLoadError`` saying what it
    looks like."""
    keys = set(shapes)
    if any(k.startswith("model.enc.") for k in keys) and "model.map_layer0.weight" in keys:
        return "edm"
    if "time_embed.0.weight" in keys and "input_blocks.0.0.weight" in keys:
        return "adm"
    if "conv_in.conv.weight" in keys or any(k.startswith("down_blocks.") for k in keys):
        return "monai"
    if any(k.startswith("all_modules.") for k in keys):
        return "ncsnpp"
    raise PriorLoadError(
        "unknown checkpoint layout (first keys: "
        + ", ".join(sorted(keys)[:5])
        + "); give --prior-format, or wrap the network with diffrecon.priors.from_module"
    )


def _check_options(family: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = {**COMMON_OPTIONS, **FAMILY_OPTIONS.get(family, {})}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise PriorLoadError(
            f"unknown option(s) {unknown} for a {family} checkpoint; it takes {sorted(allowed)}"
        )
    return {**allowed, **options}


def fit_state_dict(
    make: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], label: str
) -> torch.nn.Module:
    """The network ``make()`` builds, with ``state`` loaded strictly. The keys and shapes are
    compared on a copy built on the meta device first (nothing allocated), so a file whose
    keys imply a huge network is refused before its memory is asked for; a mismatch lists
    missing, unexpected and misshapen keys."""
    with torch.device("meta"):
        probe = make()
    expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
    why = key_mismatch(expected, {k: tuple(v.shape) for k, v in state.items()})
    if why is not None:
        raise PriorLoadError(f"{label} does not fit the network: {why}")
    net = make()
    net.load_state_dict(state, strict=True)
    return net


def load_checkpoint(path: str | Path, format: str = "auto", **options: Any) -> LearnedPrior:
    """A published checkpoint as a prior (see the module docstring). ``options``: the
    family's settings the weights do not record (``FAMILY_OPTIONS``) and ``data_scale`` /
    ``data_shift`` (``x_net = scale * x + shift``: the network's value range); unknown
    options are refused."""
    state = read_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    family = detect_format(shapes) if format == "auto" else format
    label = str(path)
    if family == "edm":
        from diffrecon.priors.families.edm import EDMNetwork, infer_config

        opts = _check_options("edm", options)
        try:
            arch = infer_config(shapes)
        except (ValueError, KeyError) as err:
            raise PriorLoadError(
                f"{label}: not an EDM DhariwalUNet/SongUNet state dict ({err})"
            ) from err
        make: Callable[[], torch.nn.Module] = functools.partial(EDMNetwork, **arch)
        config = {
            "parameterisation": "edm",
            "sigma_data": opts["sigma_data"],
            "sigma_min": opts["sigma_min"],
            "sigma_max": opts["sigma_max"],
        }
        levels = len(arch["channel_mult"])
        channels = arch["in_channels"]
    elif family == "adm":
        from diffrecon.priors.families.adm import ADMNetwork, infer_config

        opts = _check_options("adm", options)
        try:
            arch = infer_config(shapes)
        except (ValueError, KeyError) as err:
            raise PriorLoadError(f"{label}: not a guided-diffusion UNetModel ({err})") from err
        learn_sigma = arch["out_channels"] == 2 * arch["in_channels"]
        heads = {k: opts[k] for k in ("num_head_channels", "num_heads", "num_heads_upsample")}
        make = functools.partial(
            ADMNetwork,
            learn_sigma,
            **arch,
            **heads,
            use_new_attention_order=opts["use_new_attention_order"],
        )
        try:
            with torch.device("meta"):
                make()  # the heads must divide the channels: said before anything is built
        except ValueError as err:
            raise PriorLoadError(f"{label}: {err} (set num_head_channels or num_heads)") from err
        config = {
            "parameterisation": "eps-vp",
            **{
                k: opts[k]
                for k in ("beta_start", "beta_end", "num_train_timesteps", "beta_schedule")
            },
        }
        levels = len(arch["channel_mult"])
        channels = arch["in_channels"]
    elif family == "ncsnpp":
        from diffrecon.priors.families.ncsnpp import NCSNpp, infer_config

        opts = _check_options("ncsnpp", options)
        state.pop("sigmas", None)  # the discrete noise table: not part of the network
        try:
            arch = {**infer_config(shapes), **{k: opts[k] for k in NCSNPP_DEFAULTS}}
            make = functools.partial(NCSNpp, **arch)
            with torch.device("meta"):
                make()
        except (ValueError, KeyError) as err:
            why = f"not a score_sde NCSN++ with Fourier embedding and BigGAN blocks ({err})"
            raise PriorLoadError(f"{label}: {why}") from err
        config = {
            "parameterisation": "score-ve",
            "sigma_min": opts["sigma_min"],
            "sigma_max": opts["sigma_max"],
        }
        levels = len(arch["ch_mult"])
        channels = arch["channels"]
        arch = {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}
    elif family in ("monai", "diffusers", "bundle"):
        raise PriorLoadError(
            f"{label}: a {family} prior is not a single checkpoint file: use "
            + {
                "monai": "diffrecon.priors.load_monai_ddpm(weights, arch) (the weights do "
                "not record the architecture)",
                "diffusers": "the model folder (with config.json) as --prior",
                "bundle": "the bundle folder as --prior",
            }[family]
        )
    else:
        raise PriorLoadError(f"--prior-format must be one of {FORMATS}, got {format!r}")
    net = fit_state_dict(make, state, label)
    config.update(
        name=opts["name"] or Path(path).stem,
        format=family,
        architecture={"type": type(net).__name__, "kwargs": {**arch}},
        channels=channels,
        size_multiple=2 ** (levels - 1),
        data_scale=opts["data_scale"],
        data_shift=opts["data_shift"],
    )
    return LearnedPrior(net, config)


def open_prior(
    spec: Any, format: str = "auto", device: str | torch.device = "cpu", **options: Any
) -> Any:
    """Any prior a user can name: a denoiser object (returned as it is), a shipped name or
    bundle folder, a diffusers model folder, or a checkpoint file (:func:`load_checkpoint`)."""
    if format not in FORMATS:
        raise PriorLoadError(f"--prior-format must be one of {FORMATS}, got {format!r}")
    if not isinstance(spec, str | Path):
        if format != "auto" or options:
            raise PriorLoadError("a prior object takes no --prior-format or options")
        return spec
    from diffrecon.priors.bundles import load

    p = Path(spec)
    if p.is_dir() and format in ("auto", "diffusers") and (p / "config.json").is_file():
        try:
            cfg = json.loads((p / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            cfg = {}
        if format == "diffusers" or "_class_name" in cfg:
            from diffrecon.priors.importers import load_diffusers_unet

            return load_diffusers_unet(p, **options).to(device)
    if p.is_file() or format in ("edm", "adm"):
        return load_checkpoint(p, format, **options).to(device)
    if options:
        raise PriorLoadError(f"prior options {sorted(options)} apply to checkpoint files only")
    return load(spec, device=device)


def _stamp(path: Path) -> tuple[int, ...]:
    """What changes when a prior's files change (modification times and sizes)."""
    files = sorted(path.iterdir()) if path.is_dir() else [path] if path.exists() else []
    return tuple(v for f in files if f.is_file() for v in (f.stat().st_mtime_ns, f.stat().st_size))


@functools.lru_cache(maxsize=4)
def _shared(spec: str, format: str, device: str, options: str, stamp: tuple) -> Any:
    return open_prior(spec, format, device=device, **json.loads(options))


def shared_prior(
    spec: Any, format: str = "auto", device: str = "cpu", options: dict[str, Any] | None = None
) -> Any:
    """:func:`open_prior`, loaded once per process for the same name, format, device,
    options and files (the policy every job, the batch workers, calibration and napari
    share: a volume's slices and a batch's files do not load the network again)."""
    if not isinstance(spec, str | Path):
        return open_prior(spec, format, device=device, **(options or {}))
    text = json.dumps(options or {}, sort_keys=True, default=str)
    return _shared(str(spec), format, str(device), text, _stamp(Path(spec)))
