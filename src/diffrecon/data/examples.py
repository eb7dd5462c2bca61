"""Tiny random checkpoints in the published layouts, to try the importers without a download.

The docs' checkpoint examples run on these: ``inversebench-brain.pt`` is InverseBench's
layout (``{"net": EDMPrecond state dict}``, a DhariwalUNet) and ``dds-brain.pt`` a bare
guided-diffusion (ADM) state dict with learned variance, as DDS publishes it. The weights
are random: the files are read, checked and sampled like the real ones, the images are noise.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_example_checkpoints(folder: str | Path = ".", seed: int = 0) -> list[Path]:
    """Write ``inversebench-brain.pt`` and ``dds-brain.pt`` (about 1 MB each, random weights,
    32x32-capable) into ``folder``; returns their paths."""
    from diffrecon.priors.families.adm import ADMNetwork
    from diffrecon.priors.families.edm import EDMNetwork

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    edm = EDMNetwork(
        "DhariwalUNet", img_resolution=32, in_channels=2, out_channels=2, model_channels=16,
        channel_mult=[1, 2], num_blocks=1, attn_resolutions=[16],
    )  # fmt: skip
    adm = ADMNetwork(
        True, in_channels=2, model_channels=32, out_channels=4, num_res_blocks=1,
        attention_ds=(2,), channel_mult=(1, 2), num_head_channels=16,
        use_scale_shift_norm=True, resblock_updown=True,
    )  # fmt: skip
    paths = [out / "inversebench-brain.pt", out / "dds-brain.pt"]
    torch.save({"net": edm.state_dict(), "step": 0}, paths[0])
    torch.save(adm.state_dict(), paths[1])
    return paths
