"""Third-party networks as learned priors: MONAI DDPM state dicts and diffusers folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from diffrecon.priors.bundles import load_state_dict
from diffrecon.priors.learned import LearnedPrior, PriorLoadError


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
            "channels": int(kwargs.get("in_channels", 1)),
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
