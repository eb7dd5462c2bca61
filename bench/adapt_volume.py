"""Adapt once per volume: the prior adapted on one slice, used on its neighbour (issue 25).

Two neighbouring axial slices of the whole-head MNI T1 template (skull and scalp kept, from
the slab the shipped prior never saw; ``--gap`` mm apart), cut and resized alike as in
``real_anatomy.py``'s ``head-axial`` case, then given ``--margin`` empty columns on each side
of the phase-encode axis (with none, the head fills the field of view and the coil maps, not
the prior, decide the result: ``real_anatomy.py`` measures that case); one coil set (12
birdcage coils), one smooth phase per slice, noise 1% of the 99.5th percentile, one fastMRI
random column mask for both (8x, centre fraction 0.04). Rows, all on the second slice (the
one reconstructed), with the guarded default (hold-out check, map choice), 4 draws:

- ``not adapted``: the shipped prior (the control);
- ``adapted on itself``: ``--adapt`` (scope ``slice``): adapted to the slice it reconstructs;
- ``adapted on the neighbour``: ``--adapt scope=volume`` with the adaptation fitted on the
  first slice (:meth:`~diffrecon.jobs.ReconstructionJob.adapt_volume`), as a volume's other
  slices get it.

PSNR / SSIM of the posterior mean's magnitude against the RSS of the fully sampled noisy coil
images; seconds of the adaptation and of the whole run on this machine. Writes
``bench/results/adapt_volume.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_csv
from real_anatomy import HEAD_WIDTH, coil_set

from diffrecon import metrics
from diffrecon.adapt import AdaptSettings
from diffrecon.data.mni import get_slice, smooth_phase
from diffrecon.io.arrays import ArrayInput
from diffrecon.jobs import ReconstructionJob
from diffrecon.mri.masks import cartesian_mask
from diffrecon.mri.transforms import rss
from diffrecon.operators.fft import fft2c, ifft2c


def head_pair(z0: int, z1: int, seed: int, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-space ``(2, coils, H, W)`` of axial slices ``z0`` and ``z1`` (one crop, one coil set,
    ``margin`` empty columns each side) and their RSS targets ``(2, H, W)``."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    mags = [get_slice("t1", "axial", z) for z in (z0, z1)]
    body = np.logical_or(*(m > 0.05 for m in mags))
    cols, rows = np.flatnonzero(body.any(0)), np.flatnonzero(body.any(1))
    cut = [m[max(rows[0] - 4, 0) : rows[-1] + 5, cols[0] : cols[-1] + 1] for m in mags]
    cut = [zoom(m, HEAD_WIDTH / m.shape[1], order=1) for m in cut]
    scale = np.percentile(np.clip(cut[0], 0, None), 99.5)
    imgs = [np.pad(np.clip(m, 0, None) / scale, ((0, 0), (margin, margin))) for m in cut]
    maps = coil_set(12, imgs[0].shape, rng)
    sigma = 0.01 * float(np.percentile(imgs[0], 99.5))
    ks, targets = [], []
    for mag in imgs:
        img = mag * np.exp(1j * smooth_phase(mag.shape, rng))
        k = fft2c(torch.from_numpy((maps * img).astype(np.complex64))).numpy()
        k = k + sigma * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
        ks.append(k.astype(np.complex64))
        targets.append(rss(ifft2c(torch.from_numpy(ks[-1]))).numpy().astype(np.float64))
    return np.stack(ks), np.stack(targets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--z", type=int, default=104, help="the slice adapted on (axial index)")
    ap.add_argument("--gap", type=int, default=2, help="the neighbour's distance in slices (mm)")
    ap.add_argument("--margin", type=int, default=32, help="empty columns each side")
    ap.add_argument("--accel", type=int, default=8)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="2 levels everywhere: a quick check")
    args = ap.parse_args()
    kspace, targets = head_pair(args.z, args.z + args.gap, seed=7, margin=args.margin)
    w = kspace.shape[-1]
    cf = 0.04 if args.accel >= 8 else 0.08
    mask = cartesian_mask(w, args.accel, cf, seed=11).mask.numpy()
    source = ArrayInput(kspace, name="head-pair", mask=mask, target_images=targets)
    base = dict(prior="brain-mri-default", draws=args.draws, seed=0, slices=[1])
    few = {"levels": 2, "steps": 1} if args.smoke else {}
    if args.smoke:
        base["steps"] = 2
    rows = []

    def run(name: str, **kw) -> None:
        t0 = time.perf_counter()
        job = ReconstructionJob(source, **{**base, **kw}).validate()
        res = job.run_slice(1)
        secs = time.perf_counter() - t0
        m = metrics.evaluate(targets[1], res.mean)
        check = res.provenance.validation
        row = {
            "row": name,
            "psnr": round(m["psnr"], 3),
            "ssim": round(m["ssim"], 4),
            "seconds": round(secs, 1),
            "adapted": None if check is None else check.adapted,
            "adapt_level": None if check is None else check.adapt_level,
            "adapt_seconds": None if check is None else check.adapt_seconds,
            "holdout_score_posterior": None if check is None else check.score_posterior,
            "accel": args.accel,
            "slices": f"{args.z} -> {args.z + args.gap}",
            "maps": None if check is None else check.maps,
            "holdout_score_l1": None if check is None else check.score_l1,
        }
        rows.append(row)
        print(row, flush=True)

    zf = ReconstructionJob(source, **base).prepare(1).zero_filled_magnitude().numpy()
    m = metrics.evaluate(targets[1], zf)
    rows.append({"row": "zero-filled", "psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4)})
    print(rows[-1], flush=True)
    run("not adapted")
    run("adapted on itself", adapt=AdaptSettings(**few))
    t0 = time.perf_counter()
    volume = AdaptSettings(scope="volume", **few)
    shared = ReconstructionJob(source, **{**base, "slices": [0, 1]}, adapt=volume).adapt_volume(0)
    adapt_secs = time.perf_counter() - t0
    print(f"adapted on slice {args.z}: {shared.reason} ({adapt_secs:.0f} s)", flush=True)
    run("adapted on the neighbour", adapt=volume, shared_adaptation=shared)
    rows[-1]["adapt_seconds"] = round(adapt_secs, 1)
    write_csv(Path("bench/results/adapt_volume.csv"), rows)


if __name__ == "__main__":
    main()
