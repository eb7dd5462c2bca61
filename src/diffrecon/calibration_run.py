"""``diffrecon calibrate``: fit interval calibration on fully sampled files with a reference.

Each file is undersampled retrospectively with the run's mask, each selected slice is
reconstructed by the same :class:`~diffrecon.jobs.ReconstructionJob` a later
``diffrecon reconstruct`` uses, and the reference image (``reconstruction_rss``) is the truth.
The uncalibrated intervals are measured (coverage at 50/80/90/95%, std-error correlation, RMS
std / RMS error, in the foreground and overall), conformal risk control fits the interval
scale (:mod:`diffrecon.uncertainty.conformal`), and a JSON file records it with what it is
valid for, next to a reliability diagram (PNG).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from diffrecon._version import __version__
from diffrecon.io.atomic import OutputExistsError, atomic_file
from diffrecon.jobs import ReconstructionJob
from diffrecon.mri.masks import measured_columns
from diffrecon.mri.transforms import crop_target
from diffrecon.uncertainty.conformal import Calibration, calibrate, coverage_report, foreground
from diffrecon.uncertainty.score import fit_weights, score_features

LEVELS = (0.5, 0.8, 0.9, 0.95)
SCORES = ("std", "fitted")
QUANTILES = (0.025, 0.05, 0.1, 0.25, 0.75, 0.9, 0.95, 0.975)


def check_fully_sampled(job: ReconstructionJob) -> None:
    """Refuse a file that cannot give a truth: a ``mask`` dataset, all-zero phase-encode
    columns inside the acquired range, or no reference image."""
    f = job.input
    name = f.path.name
    if f.mask is not None:
        raise ValueError(f"{name} holds a 'mask' dataset: calibration needs fully sampled files")
    if f.target(job.slice_indices[0]) is None:
        raise ValueError(f"{name} has no reference image (reconstruction_rss): no truth")
    k = f.kspace(job.slice_indices[0])  # as stored: zeros stay exact zeros
    cols = measured_columns(k)
    left, right = f.header.padding if f.header is not None else (0, cols.size)
    if not cols[max(left, 0) : min(right, cols.size)].all():
        raise ValueError(
            f"{name} has zero phase-encode columns: it is undersampled already, and "
            "calibration needs fully sampled files"
        )


def calibrate_files(
    jobs: Sequence[ReconstructionJob],
    level: float = 0.9,
    on_slice: Callable[[str, int, float], None] | None = None,
    score: str = "std",
) -> Calibration:
    """Reconstruct every selected slice of each job's (fully sampled) file and fit the
    calibration of ``level`` intervals. The jobs must share prior, sampler, mask and draws
    (one ``valid_for``); their quantiles are set to what the coverage report needs.

    ``score="std"`` scales the std; ``"fitted"`` the score of
    :mod:`diffrecon.uncertainty.score`, its weights fitted on every other slice (0, 2, ...)
    and the scale on the rest, so the guarantee holds (it needs the hold-out check for the
    prior-free features, and twice the slices)."""
    if not jobs:
        raise ValueError("calibration needs at least one file")
    if score not in SCORES:
        raise ValueError(f"--score must be one of {', '.join(SCORES)}, got {score!r}")
    if score == "fitted" and not all(j.holdout for j in jobs):
        raise ValueError("--score fitted uses the hold-out check's maps: drop --no-holdout")
    jobs = [
        replace(j, quantile_levels=QUANTILES, interval_level=None, calibration=None) for j in jobs
    ]
    for job in jobs:
        job.check_input()
        check_fully_sampled(job)
    keys = []
    for job in jobs:  # one prior, loaded once (shared_prior)
        job.load_prior()
        keys.append(job.calibration_key())
    if any(k != keys[0] for k in keys):
        raise ValueError("all calibration files must use one prior, sampler, mask and draws")
    if jobs[0].draws < 2:
        raise ValueError("calibration needs a std: use --draws 2 or more")
    truths, means, stds, quants, feats = [], [], [], [], []
    t0 = time.perf_counter()
    for job in jobs:
        for idx in job.slice_indices:
            t1 = time.perf_counter()
            res = job.run_slice(idx)
            if not (np.isfinite(res.std).all() and np.isfinite(res.mean).all()):
                raise ValueError(f"{job.input.path.name} slice {idx}: non-finite mean or std")
            truths.append(crop_target(job.input.target(idx), res.mean.shape).astype(np.float64))
            means.append(res.mean.astype(np.float64))
            stds.append(res.std.astype(np.float64))
            quants.append(res.quantiles.astype(np.float64))
            if score == "fitted":  # the std alone needs no features
                parts = (res.std_within, res.std_between, res.l1_image, res.holdout_residual)
                feats.append(score_features(res.mean, res.std, *parts))
            if on_slice is not None:
                on_slice(job.input.path.name, idx, time.perf_counter() - t1)
    if score == "std":
        cal = calibrate(truths, means, stds, level, keys[0], __version__)
        scale_on = list(range(len(truths)))
    else:
        fit_on, scale_on = list(range(0, len(truths), 2)), list(range(1, len(truths), 2))
        weights = fit_weights(
            [feats[i] for i in fit_on],
            [np.abs(truths[i] - means[i]) for i in fit_on],
            [foreground(truths[i]) for i in fit_on],
        )
        try:
            cal = calibrate(
                *([x[i] for i in scale_on] for x in (truths, means, stds)),
                level,
                keys[0],
                __version__,
                features=[feats[i] for i in scale_on],
                weights=weights,
            )
        except ValueError as err:
            raise ValueError(
                f"--score fitted fits its weights on half of the {len(truths)} slices and the "
                f"scale on the other half: {err}"
            ) from err
    report = coverage_report(truths, means, stds, quants, QUANTILES, LEVELS)
    covered = [
        cal.foreground_coverage(truths[i], means[i], stds[i], feats[i] if feats else None)
        for i in scale_on
    ]
    report["calibrated_foreground_coverage_per_slice"] = covered
    report["calibrated_foreground_coverage_mean"] = float(np.mean(covered))
    report["seconds"] = time.perf_counter() - t0
    report["files"] = [str(j.input.path) for j in jobs]
    cal.report = report
    return cal


def diagram_path(path: str | Path) -> Path:
    """Where :func:`write_calibration` puts the reliability diagram of ``path``:
    ``NAME.reliability.png`` beside it (a name no input image is likely to have)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.reliability.png")


def write_calibration(path: Path, cal: Calibration, overwrite: bool = False) -> Path:
    """The calibration as JSON (atomically) and its reliability diagram beside it
    (:func:`diagram_path`); either existing is replaced only with ``overwrite``."""
    path = Path(path)
    for p in (path, diagram_path(path)):
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p} exists: pass --overwrite to replace it")
    with atomic_file(path, overwrite=overwrite) as tmp, open(tmp, "w") as fh:
        json.dump(cal.as_dict(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    reliability_diagram(diagram_path(path), cal, overwrite=overwrite)
    return path


def read_calibration(path: str | Path) -> Calibration:
    """A calibration file, refused with a message if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such calibration file")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{p} is not JSON: {err}") from err
    return Calibration.from_dict(data, source=str(p))


def reliability_diagram(path: Path, cal: Calibration, overwrite: bool = True) -> None:
    """Nominal vs measured foreground coverage: the draws' quantile intervals, Gaussian
    ``mean +- z std`` intervals, and the calibrated interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep: dict[str, Any] = cal.report
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="ideal")
    for kind, marker in (("quantile", "o"), ("gaussian", "s")):
        got = rep.get(kind, {}).get("foreground", {})
        if got:
            xs = sorted(float(k) for k in got)
            ax.plot(xs, [got[str(x)] for x in xs], marker=marker, label=f"uncalibrated ({kind})")
    if "calibrated_foreground_coverage_mean" in rep:
        ax.plot(
            [cal.level],
            [rep["calibrated_foreground_coverage_mean"]],
            "*",
            ms=14,
            color="C3",
            label=f"calibrated (lambda {cal.lam:.2f})",
        )
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("foreground pixels covered")
    ax.set_xlim(0.4, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(f"{cal.slices} slices, {cal.valid_for.get('draws')} draws", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_file(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
