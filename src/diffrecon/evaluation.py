"""fastMRI challenge metrics of a folder of result files, as fastMRI's ``evaluate.py``
computes them, and valid for results of a subset of slices (``--slices``).

For every result file with a target file of the same name: the target volume
(``reconstruction_rss`` for multicoil, ``reconstruction_esc`` for single-coil) restricted to
the slices the result holds (``slice_indices``), both centre-cropped to a square of the
target's width, then NMSE, PSNR and SSIM of the volume (data range: the target volume's
maximum). The summary is evaluate.py's: the mean over volumes and twice the sample standard
deviation. evaluate.py itself reads whole volumes only; on full volumes the two agree
(tested against it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from diffrecon import metrics
from diffrecon.io.h5 import refuse_external_data
from diffrecon.io.results import read_results
from diffrecon.mri.transforms import center_crop

TARGET_KEYS = {"multicoil": "reconstruction_rss", "singlecoil": "reconstruction_esc"}
METRICS = ("nmse", "psnr", "ssim")


@dataclass
class VolumeScore:
    """One volume's figures."""

    name: str
    slices: int
    nmse: float
    psnr: float
    ssim: float
    acquisition: str | None = None


def score_file(result: Path, target: Path, challenge: str = "multicoil") -> VolumeScore:
    """The metrics of one result file against its target file."""
    key = TARGET_KEYS[challenge]
    if not Path(target).is_file():  # a FIFO would block the read forever
        raise ValueError(f"{target}: not a regular file")
    with h5py.File(target, "r") as f:  # its links could read any file (or a FIFO)
        refuse_external_data(f, str(target))
    res = read_results(result)
    with h5py.File(target, "r") as f:
        if key not in f:
            raise ValueError(f"{target}: no {key!r} dataset (is this a {challenge} target?)")
        n = f[key].shape[0]
        idx = [int(i) for i in res.slice_indices]
        if any(not 0 <= i < n for i in idx):
            raise ValueError(f"{result}: slice indices {idx} outside the target's {n} slices")
        tgt = np.stack([f[key][i] for i in idx]).astype(np.float64)
        acquisition = f.attrs.get("acquisition")
    width = tgt.shape[-1]
    if tgt.shape[-2] < width or min(res.reconstruction.shape[-2:]) < width:
        raise ValueError(
            f"{result}: cannot crop target {tgt.shape[-2:]} and reconstruction "
            f"{res.reconstruction.shape[-2:]} to ({width}, {width}) as evaluate.py does"
        )
    t = center_crop(torch.from_numpy(tgt), (width, width))
    r = center_crop(torch.from_numpy(res.reconstruction.astype(np.float64)), (width, width))
    m = metrics.evaluate(t, r)
    acq = acquisition.decode() if isinstance(acquisition, bytes) else acquisition
    return VolumeScore(result.name, len(idx), m["nmse"], m["psnr"], m["ssim"], acq)


def evaluate_folder(
    targets: str | Path,
    predictions: str | Path,
    challenge: str = "multicoil",
    acquisition: str | None = None,
) -> tuple[list[VolumeScore], dict[str, tuple[float, float]]]:
    """Scores of every prediction with a target of the same name, and the summary
    ``{metric: (mean, 2 * sample std)}`` over volumes (evaluate.py's ``+/-``)."""
    if challenge not in TARGET_KEYS:
        raise ValueError(f"challenge must be multicoil or singlecoil, got {challenge!r}")
    targets, predictions = Path(targets), Path(predictions)
    for folder in (targets, predictions):
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder")
    scores = []
    for result in sorted(predictions.glob("*.h5")):
        target = targets / result.name
        if not target.exists():
            continue
        score = score_file(result, target, challenge)
        if acquisition is None or score.acquisition == acquisition:
            scores.append(score)
    if not scores:
        raise ValueError(f"no result in {predictions} has a target of the same name in {targets}")
    return scores, summarise(scores)


def summarise(scores: list[VolumeScore]) -> dict[str, tuple[float, float]]:
    """Mean and twice the sample standard deviation of each metric over volumes."""
    out: dict[str, tuple[float, float]] = {}
    for name in METRICS:
        v = np.array([getattr(s, name) for s in scores], dtype=np.float64)
        sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out[name] = (float(v.mean()), 2 * sd)
    return out


def summary_line(summary: dict[str, Any]) -> str:
    """``NMSE = ... +/- ... PSNR = ... SSIM = ...`` as evaluate.py prints it (4 digits)."""
    return " ".join(
        f"{name.upper()} = {summary[name][0]:.4g} +/- {summary[name][1]:.4g}"
        for name in METRICS
        if not math.isnan(summary[name][0])
    )


def write_scores_csv(path: str | Path, scores: list[Any]) -> None:
    """Per-volume figures of :func:`evaluate_folder` as a CSV file (atomically)."""
    import csv

    from diffrecon.io.atomic import atomic_file

    with atomic_file(path, overwrite=True) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "slices", "nmse", "psnr", "ssim", "acquisition"])
        for s in scores:
            w.writerow([s.name, s.slices, s.nmse, s.psnr, s.ssim, s.acquisition or ""])
