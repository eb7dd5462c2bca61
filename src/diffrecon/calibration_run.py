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
from diffrecon.io.results import EVIDENCE, SPREAD
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


def prepare_jobs(jobs: Sequence[ReconstructionJob], score: str = "std") -> list[ReconstructionJob]:
    """The jobs as a calibration runs them (the quantiles its report needs, no intervals),
    checked before any work: fully sampled files with a reference, one prior, preset, mask
    and draw count (one ``valid_for``), a std (2 draws or more), the hold-out maps for
    ``score="fitted"``. Loads the prior (once: the jobs share it)."""
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
    return jobs


class _Slices:
    """What the fit needs of each calibration slice, in file and slice order."""

    def __init__(self, score: str) -> None:
        self.score = score
        self.truths: list[np.ndarray] = []
        self.means: list[np.ndarray] = []
        self.stds: list[np.ndarray] = []
        self.quants: list[np.ndarray] = []
        self.feats: list[dict[str, np.ndarray]] = []

    def add(
        self,
        job: ReconstructionJob,
        idx: int,
        mean: np.ndarray,
        std: np.ndarray,
        quantiles: np.ndarray,
        maps: Sequence[np.ndarray | None],
    ) -> None:
        """One slice: its mean, std, quantiles and ``maps`` (``std_within``,
        ``std_between``, ``l1_image``, ``holdout_residual``, each or None), from a
        :class:`~diffrecon.results.SliceResult` or one slice of a result file."""
        if not (np.isfinite(std).all() and np.isfinite(mean).all()):
            raise ValueError(f"{job.input.path.name} slice {idx}: non-finite mean or std")
        self.truths.append(crop_target(job.input.target(idx), mean.shape).astype(np.float64))
        self.means.append(mean.astype(np.float64))
        self.stds.append(std.astype(np.float64))
        self.quants.append(quantiles.astype(np.float64))
        if self.score == "fitted":  # the std alone needs no features
            self.feats.append(score_features(mean, std, *maps))


# the maps of a result the fitted score reads, in score_features' order
SCORE_MAPS = (*SPREAD, *EVIDENCE)


def calibrate_files(
    jobs: Sequence[ReconstructionJob],
    level: float = 0.9,
    on_slice: Callable[[str, int, float], None] | None = None,
    score: str = "std",
    on_step: Callable[[Any], None] | None = None,
) -> Calibration:
    """Reconstruct every selected slice of each job's (fully sampled) file in this process
    and fit the calibration of ``level`` intervals (:func:`prepare_jobs` checks the jobs).

    ``score="std"`` scales the std; ``"fitted"`` the score of
    :mod:`diffrecon.uncertainty.score`, its weights fitted on every other slice (0, 2, ...)
    and the scale on the rest, so the guarantee holds (it needs the hold-out check for the
    prior-free features, and twice the slices). ``on_slice(name, index, seconds)`` and
    ``on_step`` (the sampler's steps) report progress."""
    jobs = prepare_jobs(jobs, score)
    data = _Slices(score)
    t0 = time.perf_counter()
    for job in jobs:
        for idx in job.slice_indices:
            t1 = time.perf_counter()
            res = job.run_slice(idx, on_step=on_step)
            maps = [getattr(res, n) for n in SCORE_MAPS]
            data.add(job, idx, res.mean, res.std, res.quantiles, maps)
            if on_slice is not None:
                on_slice(job.input.path.name, idx, time.perf_counter() - t1)
    return _fit(data, jobs, level, score, time.perf_counter() - t0)


def calibrate_results(
    jobs: Sequence[ReconstructionJob],
    results: Sequence[str | Path],
    level: float = 0.9,
    score: str = "std",
    seconds: float = 0.0,
) -> Calibration:
    """The same fit as :func:`calibrate_files` from the result files a batch run wrote for
    the jobs' files, one per job in order (``calibrate --workers``: the slices were
    reconstructed by :func:`~diffrecon.batch.reconstruct_files` with the jobs' settings
    and ``quantile_levels=QUANTILES``). ``seconds``: the batch's time, for the report."""
    from diffrecon.io.results import read_results

    if len(results) != len(jobs):
        raise ValueError(f"{len(jobs)} calibration files but {len(results)} result files")
    data = _Slices(score)
    for job, path in zip(jobs, results, strict=True):
        res = read_results(path)
        levels = None if res.quantile_levels is None else tuple(res.quantile_levels)
        if levels is None or not np.allclose(levels, QUANTILES):
            raise ValueError(f"{path}: quantiles {levels}, not the calibration's {QUANTILES}")
        if [int(i) for i in res.slice_indices] != list(job.slice_indices):
            raise ValueError(f"{path}: slices {res.slice_indices.tolist()} are not the job's")
        for k, idx in enumerate(job.slice_indices):
            maps = [None if getattr(res, n) is None else getattr(res, n)[k] for n in SCORE_MAPS]
            data.add(job, idx, res.reconstruction[k], res.std[k], res.quantiles[k], maps)
    return _fit(data, list(jobs), level, score, seconds)


def _fit(
    data: _Slices, jobs: list[ReconstructionJob], level: float, score: str, seconds: float
) -> Calibration:
    """The calibration of the collected slices, with its coverage report."""
    truths, means, stds, feats = data.truths, data.means, data.stds, data.feats
    key = jobs[0].calibration_key()
    if score == "std":
        cal = calibrate(truths, means, stds, level, key, __version__)
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
                key,
                __version__,
                features=[feats[i] for i in scale_on],
                weights=weights,
            )
        except ValueError as err:
            raise ValueError(
                f"--score fitted fits its weights on half of the {len(truths)} slices and the "
                f"scale on the other half: {err}"
            ) from err
    report = coverage_report(truths, means, stds, data.quants, QUANTILES, LEVELS)
    covered = [
        cal.foreground_coverage(truths[i], means[i], stds[i], feats[i] if feats else None)
        for i in scale_on
    ]
    report["calibrated_foreground_coverage_per_slice"] = covered
    report["calibrated_foreground_coverage_mean"] = float(np.mean(covered))
    report["seconds"] = seconds
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
