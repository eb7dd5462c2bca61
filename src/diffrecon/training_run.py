"""``diffrecon train-prior``: the options of the command turned into a training run (data
source, architecture, bundle description) of :func:`diffrecon.priors.train.train_prior`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from diffrecon.data.sources import training_source


def train_from_options(
    out: Path,
    *,
    data: str,
    steps: int,
    patch: int,
    batch: int,
    lr: float,
    ema: float,
    channels: list[int],
    seed: int,
    device: str,
    minutes: float | None = None,
    init: str | None = None,
    name: str | None = None,
    synth_fraction: float = 0.5,
    command: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume training) an EDM denoiser bundle in ``out``; returns the summary of
    :func:`~diffrecon.priors.train.train_prior`. ``data``: ``mni``, ``synth`` or a slices
    file (:func:`~diffrecon.data.sources.training_source`); a plain UNet without attention
    with ``channels`` per level."""
    from diffrecon.priors.train import train_prior

    source, dataset = training_source(data, patch, seed, synth_fraction)
    channels = list(channels)
    arch = {
        "channels": channels,
        "attention_levels": [False] * len(channels),
        "norm_num_groups": math.gcd(32, *channels),
    }
    return train_prior(
        out,
        source.batch,
        steps=steps,
        batch_size=batch,
        lr=lr,
        ema_decay=ema,
        arch=arch,
        seed=seed,
        device=device,
        minutes=minutes,
        progress=progress,
        data_state=source.get_state,
        set_data_state=source.set_state,
        init=init,
        bundle_config={
            "name": name or Path(out).name,
            "data": {
                "channels": 2,
                "complex": True,
                "range": "real/imag in about [-1, 1]",
                "scaling": "magnitude 99.5th percentile = 1",
                **dataset,
            },
            "training": {
                "command": command,
                "patch": patch,
                "batch": batch,
                "lr": lr,
                "ema": ema,
                "seed": seed,
                "device": device,
                "init": init,
            },
        },
    )
