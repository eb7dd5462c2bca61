"""The demo reconstruction (``make demo`` / ``diffrecon demo``).

Builds a small fastMRI-format multicoil file from held-out MNI slices (never seen by the
default prior), reconstructs one slice at 4x with the default prior and several posterior
draws, writes the result h5 and a PNG figure (truth, zero-filled, posterior mean, std, error),
and prints PSNR/SSIM against the zero-filled and SigPy L1-wavelet baselines.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from diffrecon import metrics
from diffrecon.data.simulate import simulate_fastmri
from diffrecon.io.results import write_results
from diffrecon.jobs import ReconstructionJob
from diffrecon.mri.baseline import l1_wavelet_baseline
from diffrecon.mri.masks import MaskSpec
from diffrecon.mri.transforms import center_crop, crop_target
from diffrecon.samplers.registry import MRI_DEFAULT


def run_demo(
    out_dir: Path, draws: int = 4, steps: int | None = None, quiet: bool = False
) -> dict[str, dict[str, float]]:
    """Run the demo into ``out_dir``; returns the metrics per method."""
    out_dir.mkdir(parents=True, exist_ok=True)
    kfile = simulate_fastmri(out_dir / "demo_kspace.h5", slices=(104,), size=(192, 160))
    job = ReconstructionJob(
        kfile,
        sampler=MRI_DEFAULT,
        steps=steps,
        slices=[0],
        mask=MaskSpec(4.0, 0.08, "random"),
        draws=draws,
        seed=0,
        keep_draws=True,
        batch_size=draws,
        command="diffrecon demo",
    ).validate()
    # one preprocessing (maps, scale, noise) for the sampler and the classical baseline
    prepared = job.prepare(0)
    target = job.input.target(0)
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(desc="DAPS", unit="level", disable=None)  # none in a redirected log

    def tick(state):
        if bar is not None:
            bar.total = state.n
            bar.update(1)

    t0 = time.perf_counter()
    res = job.run_slice(0, on_step=tick, prepared=prepared)
    if bar is not None:
        bar.close()
    t_daps = time.perf_counter() - t0
    out_h5 = write_results(out_dir / "demo_recon.h5", job.volume([res]), overwrite=True)
    t0 = time.perf_counter()
    l1 = l1_wavelet_baseline(prepared, lamda=0.005, max_iter=100)
    l1_mag = center_crop(torch.sqrt(l1[0] ** 2 + l1[1] ** 2), res.mean.shape).numpy()
    t_l1 = time.perf_counter() - t0
    tgt = crop_target(target, res.mean.shape)
    scores = {}
    for name, img, secs in (
        ("zero-filled", res.zero_filled, 0.0),
        ("L1-wavelet", l1_mag, t_l1),
        (f"DAPS mean ({draws} draws)", res.mean, t_daps),
    ):
        scores[name] = {**metrics.evaluate(tgt, img), "seconds": secs}
        print(
            f"{name:<22} PSNR {scores[name]['psnr']:6.2f} dB  SSIM {scores[name]['ssim']:.4f}"
            f"  ({secs:.1f} s)"
        )
    check = res.provenance.validation if res.provenance is not None else None
    if check is not None:  # the hold-out check of the run (docs/validation.md)
        print(f"{check.describe()} ({check.seconds:.1f} s of the DAPS time)")
        if check.warning() is not None:
            print(f"warning: {check.warning()}")
    _figure(out_dir / "demo.png", tgt, res.zero_filled, l1_mag, res.mean, res.std)
    print(f"wrote {out_h5} and {out_dir / 'demo.png'}")
    return scores


def _figure(path: Path, gt, zf, l1, mean, std) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(gt.max())
    panels = [
        ("ground truth", gt, "gray", vmax),
        ("zero-filled (4x)", zf, "gray", vmax),
        ("L1-wavelet", l1, "gray", vmax),
        ("posterior mean", mean, "gray", vmax),
        ("posterior std", std, "magma", None),
        ("|mean - truth|", np.abs(mean - gt), "magma", None),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    for ax, (title, im, cmap, vm) in zip(axes, panels, strict=True):
        h = ax.imshow(im, cmap=cmap, vmin=0, vmax=vm)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        if cmap == "magma":
            fig.colorbar(h, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
