"""ZAPS's speed-up claim (about 3x faster than DPS at equal quality) on the paper's other
tasks (issue 15): noisy Gaussian deblurring and random inpainting, held-out 64x64 MNI slices,
the shipped prior, sigma_y 0.05. ZAPS 20 steps x 10 epochs (our preset's settings; zeta 1)
and its paper settings (30 steps, squared misfit, discrepancy stop) against DPS-1000 (zeta
0.3 for deblurring and 0.5 for inpainting, the reference's per-task weights) and DPS-200.
One draw per image, PSNR / SSIM of the magnitude and seconds per image; SR and MRI are in
``bench/few_step.py``. Writes ``bench/results/zaps_speed.csv``.
"""

from __future__ import annotations

import numpy as np
import torch
from _results import scored_draw, write_csv

from diffrecon.data.mni import heldout_slices
from diffrecon.operators import GaussianBlur, Inpainting
from diffrecon.priors import load
from diffrecon.samplers import dps, karras_sigmas, zaps


def main() -> None:
    prior = load("brain-mri-default")
    imgs = heldout_slices(size=64)[1:3].float()
    keep = torch.rand(64, 64, generator=torch.Generator().manual_seed(0)) > 0.7
    sy = 0.05
    rows = []
    for task, op, dps_zeta in (
        ("deblur", GaussianBlur(9, 1.5), 0.3),
        ("inpaint70", Inpainting(keep), 0.5),
    ):
        methods = [
            ("DPS-1000", dps, karras_sigmas(1000, 0.002, 80.0), {"zeta": dps_zeta}),
            ("DPS-200", dps, karras_sigmas(200, 0.002, 80.0), {"zeta": dps_zeta}),
            ("ZAPS-20x10", zaps, karras_sigmas(20, 0.01, 5.0), {"epochs": 10, "lr": 0.2}),
            (
                "ZAPS-30x10 (paper)",
                zaps,
                karras_sigmas(30, 0.01, 5.0),
                {"epochs": 10, "lr": 0.2, "squared": True, "discrepancy": 1.0, "noise_std": sy},
            ),
        ]
        for name, fn, sig, kw in methods:
            ps, ss, secs = [], [], []
            for j, x in enumerate(imgs):
                clean = op(x[None])
                y = clean + sy * torch.randn(
                    clean.shape, generator=torch.Generator().manual_seed(j)
                )
                p_, s_, t_ = scored_draw(fn, prior, op, y, sig, x, seed=j, **kw)
                ps.append(p_)
                ss.append(s_)
                secs.append(t_)
            rows.append(
                {
                    "task": task,
                    "method": name,
                    "psnr": np.mean(ps),
                    "ssim": np.mean(ss),
                    "seconds": np.mean(secs),
                }
            )
            print(
                f"{task:>9} {name:>20} PSNR {np.mean(ps):6.2f} SSIM {np.mean(ss):.3f} "
                f"{np.mean(secs):6.1f}s",
                flush=True,
            )
    write_csv("bench/results/zaps_speed.csv", rows)


if __name__ == "__main__":
    main()
