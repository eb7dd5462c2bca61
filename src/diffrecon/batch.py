"""Batch reconstruction of many fastMRI files: one task per slice, on Dask or in-process.

:func:`reconstruct_files` takes files, folders (searched recursively for ``*.h5``) and text
files listing one path per line. Every file is checked before any work (with several inputs
a bad file is reported and skipped; with one it is refused). Each slice is a task: it runs a
:class:`~diffrecon.jobs.ReconstructionJob` for that slice and persists its result at once as
a one-slice result file in ``OUT/.NAME.parts/`` (atomically); when a file's last slice is
done, the parts are merged into ``OUT/NAME`` (atomically) and the parts folder removed. So
``resume=True`` redoes only missing slices and skips finished files, and a failing slice
(retried ``retries`` times) costs only itself. A slice's draws depend on the seed, the file
name and the slice index alone, never on scheduling: ``workers=2`` gives the in-process
numbers. ``client``: a ``dask.distributed.Client`` of any cluster (SLURM through
dask-jobqueue, Kubernetes, a ``dask-scheduler`` by hand); ``workers=N`` starts a local
cluster of N one-thread processes; neither runs in this process. A manifest
(``manifest.csv`` and ``manifest.json``) records every input's outcome.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffrecon._version import __version__
from diffrecon.io.atomic import atomic_file, refuse_overwriting_inputs
from diffrecon.io.results import merge_parts, read_reconstruction

HOLDOUT_SCORES = ("holdout_score_posterior", "holdout_score_l1", "holdout_score_finish")


def collect_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for ``*.h5`` (sorted), and ``.txt``
    files read as one path per line (blank lines and ``#`` comments skipped)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.h5") if not q.name.startswith("."))
            if not found:
                raise ValueError(f"{p}: no .h5 files in this folder")
            out.extend(found)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line)
                    out.append(q if q.is_absolute() else p.parent / q)
        else:
            out.append(p)
    names = [p.name for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"inputs with the same name would write the same output: {dup}")
    return out


def settings_hash(settings: dict[str, Any]) -> str:
    """A short hash of the reconstruction settings (recorded in the manifest)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _job(path: str | Path, settings: dict[str, Any]) -> Any:
    from diffrecon.jobs import ReconstructionJob

    return ReconstructionJob(path, **settings)


def run_slice_task(
    path: str,
    settings: dict[str, Any],
    index: int,
    part: str,
    on_step: Any = None,
    shared: Any = None,
) -> dict[str, Any]:
    """Reconstruct one slice and persist it as a one-slice result file ``part`` (the task a
    worker runs; the prior is loaded once per process); returns its manifest figures.
    ``on_step``: the sampler's step callback (in-process runs: progress bars); ``shared``:
    the file's one adaptation of the prior (``--adapt scope=volume``, see
    :func:`shared_adaptation`)."""
    import torch

    from diffrecon.io.results import write_results
    from diffrecon.results import VolumeResult

    torch.set_num_threads(int(os.environ.get("DIFFRECON_TORCH_THREADS", torch.get_num_threads())))
    job = _job(path, settings if shared is None else {**settings, "shared_adaptation": shared})
    t0 = time.perf_counter()
    job.load_prior()
    res = job.run_slice(index, on_step=on_step)
    write_results(part, VolumeResult([res], [index], job.attrs([res])), overwrite=True, pad=False)
    return {
        "index": index,
        "seconds": time.perf_counter() - t0,
        "psnr": res.metrics.get("psnr"),
        "ssim": res.metrics.get("ssim"),
        "data_residual": res.data_residual,
        "holdout": None if res.provenance is None else res.provenance.validation,
    }


@dataclass
class FilePlan:
    """One input: its output, parts folder, the slices still to do, or why it is refused."""

    input: Path
    output: Path
    parts: Path
    slices: list[int] = field(default_factory=list)
    todo: list[int] = field(default_factory=list)
    error: str | None = None
    status: str = "pending"
    shared: Any = None  # the file's one adaptation of the prior (--adapt scope=volume)

    def part(self, index: int) -> Path:
        return self.parts / f"slice{index:04d}.h5"


ADAPTATION_FILE = "adaptation.pt"


def shared_adaptation(plan: FilePlan, settings: dict[str, Any]) -> Any:
    """The prior's one adaptation for ``plan``'s volume (``--adapt scope=volume``), fitted in
    this process on the middle slice before its slices are sent out, and kept in the parts
    folder, so a resumed run reuses it instead of adapting again; ``None`` when the run does
    not adapt per volume."""
    from diffrecon.adapt import SharedAdaptation

    adapt = settings.get("adapt")
    if adapt is None or getattr(adapt, "scope", "slice") != "volume":
        return None
    saved = plan.parts / ADAPTATION_FILE
    job = _job(plan.input, settings)
    if saved.exists():
        kept = SharedAdaptation.load(saved)
        if kept.key == job.adaptation_key(kept.slice):
            return kept
    found = job.adapt_volume()
    found.save(saved)
    return found


def plan_files(
    inputs: Sequence[Path],
    out: Path,
    settings: dict[str, Any],
    resume: bool,
    overwrite: bool,
    nifti: bool = False,
    also_read: Sequence[str | Path] = (),
) -> list[FilePlan]:
    """Check every input before any work and list the slices each still needs: the job's
    checks, no output onto an input (nor onto the coil maps or ``also_read``, e.g. the
    calibration file), no existing output (result file, with ``nifti`` its NIfTI mean)
    replaced unless ``overwrite``."""
    from diffrecon.io.nifti import nifti_path
    from diffrecon.io.results import read_slice_indices

    plans = []
    read = [*inputs, settings.get("maps"), *also_read]
    read = [p for p in read if isinstance(p, str | Path)]
    for path in inputs:
        output = out / path.name
        plan = FilePlan(path, output, out / f".{path.name}.parts")
        try:
            refuse_overwriting_inputs([out, output], read)
            job = _job(path, {**settings, "prior": "unused"})
            job.check_input()
            plan.slices = list(job.slice_indices)
            if output.exists() and resume and _readable(output):
                held = read_slice_indices(output)
                if held != plan.slices:  # skipping it would return fewer slices than asked
                    raise ValueError(
                        f"{output} holds slices {_span(held)} and this run selects "
                        f"{_span(plan.slices)}: --resume does not change a finished file; "
                        "pass --overwrite to redo it, or write to another folder"
                    )
                plan.status = "skipped (done)"
            elif output.exists() and not (overwrite or resume):
                raise ValueError(f"{output} exists: pass --overwrite or --resume")
            else:
                nii = nifti_path(out, output.stem, "mean")
                if nifti and nii.exists() and not (overwrite or resume):
                    raise ValueError(f"{nii} exists: pass --overwrite to replace it")
                # a part a killed writer or a full disk left truncated is redone, not merged
                done = {i for i in plan.slices if resume and _readable(plan.part(i))}
                if not resume and plan.parts.exists():
                    shutil.rmtree(plan.parts)
                plan.todo = [i for i in plan.slices if i not in done]
        except (ValueError, OSError) as err:
            plan.error, plan.status = str(err), "refused"
        plans.append(plan)
    return plans


def _span(indices: Sequence[int]) -> str:
    """Slice indices for a message: all of a few, else the first and last few."""
    idx = list(indices)
    return str(idx) if len(idx) <= 8 else f"[{idx[0]}, {idx[1]}, ..., {idx[-1]}] ({len(idx)})"


def _readable(path: Path) -> bool:
    """Whether ``path`` is a result file that opens (a truncated one does not)."""
    from diffrecon.io.results import read_attrs

    if not path.is_file():
        return False
    try:
        read_attrs(path)
    except (OSError, ValueError, KeyError):
        return False
    return True


WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DIFFRECON_TORCH_THREADS": "1"}
# Dask's nanny sets MALLOC_TRIM_THRESHOLD_ before a worker starts, which turns off glibc's
# dynamic mmap threshold: every allocation of 128 KiB or more (a 64x64 batch of 4 draws) is
# then an mmap with fresh page faults, and a sampler's many small tensor operations ran 3 to
# 17 times slower in workers than in-process (bench/batch.py). A fixed 64 MiB threshold
# restores the speed; it must be in the environment before the worker process starts.
MALLOC_FIX = {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**20)}
# worker processes log distributed's errors only: a slice's failure reaches the batch (and
# its manifest) through its future, and shutdown warnings after an interrupt are noise
QUIET_WORKERS = {"DASK_LOGGING__DISTRIBUTED": "error"}


def _refuse_other_settings(plans: list[FilePlan], settings: dict[str, Any]) -> None:
    """``--resume``: a file whose persisted slices were made with other settings is refused
    (it would mix them); the command line may differ."""
    from diffrecon.io.results import flat_attrs, read_attrs, settings_mismatch

    for plan in plans:
        done = [i for i in plan.slices if i not in plan.todo]
        if not done or plan.status.startswith("skipped"):
            continue
        job = _job(plan.input, settings)
        want = flat_attrs(job.record.as_attrs())
        why = settings_mismatch(read_attrs(plan.part(done[0])), want)
        if why is not None:
            plan.error, plan.status = (
                f"its persisted slices were made with other settings ({why}): resume with "
                "the same settings, or rerun without --resume",
                "refused",
            )
            plan.todo = []


@contextlib.contextmanager
def _nanny_environ() -> Iterator[None]:
    """Worker processes started inside get :data:`MALLOC_FIX` and :data:`QUIET_WORKERS` at
    start-up, and ignore Ctrl-C: a terminal's interrupt goes to the whole process group,
    and the batch, not each worker, stops the work (cancels the slices, closes the
    cluster, writes the manifest)."""
    import dask

    env = {**MALLOC_FIX, **QUIET_WORKERS}
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited
    try:
        with dask.config.set(
            {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in env.items()}
        ):
            yield
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def gpu_cluster(gpus: Sequence[int | str]) -> Any:
    """A Dask cluster on this machine with one single-threaded worker process per GPU, each
    pinned to its GPU with ``CUDA_VISIBLE_DEVICES`` (so each sees it as ``cuda``)."""
    from dask.distributed import Nanny, Scheduler, SpecCluster

    ids = [str(g).strip() for g in gpus]
    if not ids or any(not g for g in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"--gpus takes distinct GPU ids such as 0,1; got {list(gpus)!r}")
    workers = {
        f"gpu{g}": {
            "cls": Nanny,
            "options": {"nthreads": 1, "env": {**WORKER_ENV, "CUDA_VISIBLE_DEVICES": g}},
        }
        for g in ids
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0"}}
    with _nanny_environ():
        return SpecCluster(workers=workers, scheduler=scheduler, name="diffrecon-gpus")


def _executor(client: Any, workers: int | None, gpus: Sequence[int | str] | None = None):
    """(client, cluster to close) for the settings: a given client, a new cluster (one
    worker per GPU, or ``workers`` CPU workers) or none (in-process)."""
    if client is not None or not (workers or gpus):
        return client, None
    from dask.distributed import Client, LocalCluster

    if gpus:
        cluster = gpu_cluster(gpus)
        return Client(cluster), cluster
    with _nanny_environ():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            env=WORKER_ENV,
        )
    return Client(cluster), cluster


def reconstruct_files(
    paths: Iterable[str | Path],
    out: str | Path,
    *,
    client: Any = None,
    workers: int | None = None,
    gpus: Sequence[int | str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    retries: int = 1,
    on_slice: Callable[[str, int, dict[str, Any] | None, str | None], None] | None = None,
    on_start: Callable[[int, str | None], None] | None = None,
    on_step: Callable[[Any], None] | None = None,
    nifti: bool = False,
    also_read: Sequence[str | Path] = (),
    **settings: Any,
) -> list[dict[str, Any]]:
    """Reconstruct every slice of every input; returns the manifest rows (also written as
    ``OUT/manifest.csv`` and ``OUT/manifest.json``). ``settings`` are
    :class:`~diffrecon.jobs.ReconstructionJob` keywords (``prior`` as a name or path, so
    workers can load it). ``gpus``: one worker per GPU id on this machine, each pinned to
    its GPU (``CUDA_VISIBLE_DEVICES``) and running on ``cuda``. ``on_start(n_tasks,
    dashboard)`` and ``on_slice(name, index, figures, error)`` report progress, and
    ``on_step`` sees the sampler's steps of in-process runs. ``nifti``: also write each
    finished result's maps as NIfTI (:func:`~diffrecon.io.nifti.export_nifti`).
    ``also_read``: files the run reads besides the inputs (never written over).

    This is the one path from files to result files: the CLI takes it for one file too
    (in-process, no cluster)."""
    if not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    if gpus and (client is not None or workers):
        raise ValueError("--gpus starts its own cluster: not with --workers or --scheduler")
    if gpus:
        settings = {**settings, "device": "cuda"}  # each worker sees its own GPU as cuda
    inputs = collect_inputs(paths)
    if not inputs:
        raise ValueError("no inputs")
    out = Path(out)
    plans = plan_files(inputs, out, settings, resume, overwrite, nifti, also_read)
    if len(plans) == 1 and plans[0].error is not None:
        raise ValueError(plans[0].error)
    ok = [p for p in plans if p.error is None]
    if ok:
        # the prior loads (once per process), and a calibration fits one prior, preset,
        # mask and draw count: checked once, up front, before anything is written
        job = _job(ok[0].input, settings)
        job.load_prior()
        job.check_calibration()
        if resume:
            _refuse_other_settings(ok, {**settings, "prior": job.prior})
            if len(plans) == 1 and plans[0].error is not None:
                raise ValueError(plans[0].error)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(p, i) for p in plans if p.error is None for i in p.todo]
    for p in plans:
        if p.todo:
            p.parts.mkdir(parents=True, exist_ok=True)
    figures: dict[tuple[Path, int], dict[str, Any]] = {}
    failed: dict[tuple[Path, int], str] = {}
    client, cluster = _executor(client, workers, gpus) if tasks else (None, None)
    t0 = time.perf_counter()
    interrupted = False
    try:
        if on_start is not None:
            on_start(len(tasks), getattr(client, "dashboard_link", None))
        for plan in plans:
            if plan.error is None and plan.todo:
                plan.shared = shared_adaptation(plan, settings)
        if client is None:
            for plan, idx in tasks:
                _run_local(plan, idx, settings, retries, figures, failed, on_slice, on_step)
        else:
            _run_dask(client, tasks, settings, retries, figures, failed, on_slice)
    except KeyboardInterrupt:  # the finished slices are kept and listed in the manifest
        interrupted = True
    finally:
        if cluster is not None:
            _close_quietly(client, cluster)
    rows = [_finish_safely(plan, settings, figures, failed, nifti, interrupted) for plan in plans]
    for row in rows:
        row["batch_seconds"] = round(time.perf_counter() - t0, 1)
    write_manifest(out, rows)
    if interrupted:
        raise BatchInterrupted(out / "manifest.csv")
    return rows


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by Ctrl-C after writing its manifest: the inputs done are merged, the
    others keep their finished slices for ``--resume``."""

    def __init__(self, manifest: Path) -> None:
        super().__init__(str(manifest))
        self.manifest = manifest


def _close_quietly(client: Any, cluster: Any) -> None:
    """Close a cluster this batch started without distributed's shutdown warnings (a worker
    killed mid-slice after an interrupt, "still alive after 4 seconds, killing"): they are
    about processes the batch is done with."""
    import logging

    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        client.close()
        cluster.close()
    finally:
        log.setLevel(level)


def _run_local(plan, idx, settings, retries, figures, failed, on_slice, on_step=None) -> None:
    extra = {} if on_step is None else {"on_step": on_step}
    if plan.shared is not None:
        extra["shared"] = plan.shared
    for attempt in range(retries + 1):
        try:
            figures[(plan.input, idx)] = run_slice_task(
                str(plan.input), settings, idx, str(plan.part(idx)), **extra
            )
            failed.pop((plan.input, idx), None)
            break
        except Exception as err:  # a slice's failure is reported, the batch goes on
            failed[(plan.input, idx)] = f"{type(err).__name__}: {err}"
            if attempt == retries:
                break
    if on_slice is not None:
        on_slice(
            plan.input.name, idx, figures.get((plan.input, idx)), failed.get((plan.input, idx))
        )


def _run_dask(client, tasks, settings, retries, figures, failed, on_slice) -> None:
    from dask.distributed import as_completed

    futures = {}
    for plan, idx in tasks:
        fut = client.submit(
            run_slice_task,
            str(plan.input),
            settings,
            idx,
            str(plan.part(idx)),
            **({} if plan.shared is None else {"shared": plan.shared}),
            retries=retries,
            pure=False,
            key=f"slice-{plan.input.name}-{idx}-{time.time_ns()}",
        )
        futures[fut] = (plan, idx)
    try:
        for fut in as_completed(futures):
            _collect(fut, futures[fut], figures, failed, on_slice)
    except KeyboardInterrupt:
        client.cancel(list(futures))  # a shared scheduler stops the batch's slices too
        raise


def _collect(fut, where, figures, failed, on_slice) -> None:
    """One finished Dask slice: its figures or its error, reported."""
    plan, idx = where
    try:
        figures[(plan.input, idx)] = fut.result()
    except Exception as err:
        failed[(plan.input, idx)] = f"{type(err).__name__}: {err}"
    if on_slice is not None:
        on_slice(
            plan.input.name, idx, figures.get((plan.input, idx)), failed.get((plan.input, idx))
        )


def _finish_safely(
    plan: FilePlan, settings, figures, failed, nifti: bool = False, interrupted: bool = False
) -> dict:
    """:func:`_finish`, with a failure to write (a full disk) reported in the file's row
    in one line instead of ending the batch without a manifest."""
    try:
        return _finish(plan, settings, figures, failed, nifti, interrupted)
    except OSError as err:
        row = _row(plan, settings)
        row["status"], row["error"] = "failed", f"writing {plan.output.name}: {err.strerror or err}"
        return row


def _row(plan: FilePlan, settings: dict[str, Any]) -> dict[str, Any]:
    """A file's manifest row as planned: input, output, status, slices, settings hash,
    version, error."""
    return {
        "input": str(plan.input),
        "output": str(plan.output),
        "status": plan.status,
        "slices": len(plan.slices),
        "settings_hash": settings_hash({k: v for k, v in settings.items() if k != "command"}),
        "diffrecon_version": __version__,
        "error": plan.error,
    }


def _finish(
    plan: FilePlan, settings, figures, failed, nifti: bool = False, interrupted: bool = False
) -> dict[str, Any]:
    """Merge a file's parts when all its slices are there; its manifest row. After an
    interrupt (``interrupted``), a file whose only fault is slices not yet done is
    ``interrupted``, not ``failed``: ``--resume`` continues it."""
    row = _row(plan, settings)
    if plan.error is not None or plan.status.startswith("skipped"):
        return row
    errors = [
        f"slice {i}: {failed[(plan.input, i)]}" for i in plan.slices if (plan.input, i) in failed
    ]
    missing = [i for i in plan.slices if not plan.part(i).exists()]
    mine = [figures[(plan.input, i)] for i in plan.slices if (plan.input, i) in figures]
    row["seconds"] = round(sum(f["seconds"] for f in mine), 1)
    if errors or missing:
        row["status"] = "failed"
        row["error"] = "; ".join(errors) or f"slices without a result: {missing}"
        if interrupted and not errors:
            row["status"] = "interrupted"
            row["error"] += ": interrupted; --resume continues from the slices done"
        return row
    try:
        merge_parts([plan.part(i) for i in plan.slices], plan.output, overwrite=True)
    except ValueError as err:  # parts made with other settings: kept, reported
        row["status"], row["error"] = "failed", str(err)
        return row
    shutil.rmtree(plan.parts, ignore_errors=True)
    row["status"] = "done"
    with h5py.File(plan.output, "r") as f:
        medians = ("noise_std_estimate", "data_residual", *HOLDOUT_SCORES)
        for key in (*medians, "holdout_guard"):
            if key in f.attrs:
                vals = [v for v in json.loads(f.attrs[key]) if v is not None]
                if key == "holdout_guard":  # how many slices the guard replaced or warned
                    row["holdout_guarded"] = int(sum(vals))
                else:
                    row[key] = float(np.median(vals)) if vals else None
        recon = read_reconstruction(f, str(plan.output))
        zero = f["zero_filled"][()] if "zero_filled" in f else None
    # fastMRI evaluate.py's per-volume metrics over the slices reconstructed
    job = _job(plan.input, {**settings, "prior": "unused"})
    row.update(job.volume_metrics(plan.slices, recon, zero))
    if nifti:
        from diffrecon.io.nifti import export_nifti

        export_nifti(plan.output, plan.output.parent, overwrite=True)  # checked in plan_files
    return row


def write_manifest(out: Path, rows: list[dict[str, Any]]) -> None:
    """``manifest.csv`` and ``manifest.json`` in ``out`` (atomically, replacing old ones)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_file(out / "manifest.csv", overwrite=True) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    with atomic_file(out / "manifest.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(rows, indent=2, default=str) + "\n")
