"""The widget's request, turned into the library's :class:`~diffrecon.jobs.ReconstructionJob`
(the CLI's own path), and a streaming runner for napari's ``thread_worker``. No Qt here."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from diffrecon.jobs import DEFAULT_INTERVAL_LEVEL, ReconstructionJob
from diffrecon.mri.masks import MASK_KINDS, MaskSpec
from diffrecon.results import SliceResult
from diffrecon.samplers.registry import MRI_DEFAULT, offered_for_mri
from diffrecon_napari._layers import META, LayerData, result_layers

# What the widget offers: the presets that can run noisy multicoil SENSE data and were
# validated on the real-anatomy benchmark (docs/benchmarks.md); the CLI offers the same.
SAMPLERS = tuple(offered_for_mri())


class Cancelled(Exception):
    """Raised inside the sampler's step callback when the user cancels."""


@dataclass
class Request:
    """What the widget collects: one slice of one file and the reconstruction settings."""

    path: str
    slice_index: int = 0
    acceleration: float = 4.0
    center_fraction: float = 0.08
    mask_kind: str = "auto"  # auto | random | equispaced | file (as the CLI's --mask-type)
    prior: str = "brain-mri-default"  # a shipped name, a bundle or a checkpoint file
    prior_format: str = "auto"
    prior_options: str = ""  # "KEY=VALUE, KEY=VALUE" as the CLI's --prior-option
    sampler: str = MRI_DEFAULT
    steps: int = 0  # 0: the preset's
    draws: int = 8
    batch_size: int = 2  # draws per streamed update
    seed: int = 0
    device: str = "cpu"
    keep_draws: bool = False
    finish: str = "auto"  # the hold-out check's finish, as the CLI's --finish
    coil_maps: str = "auto"  # how coil maps are estimated, as the CLI's --coil-maps
    intervals: bool = False  # 90% interval layers (always with a calibration)
    calibration: str = ""  # a calibration.json from `diffrecon calibrate`, or "" for none
    overrides: dict[str, Any] = field(default_factory=dict)
    all_slices: bool = False  # every slice of the file, shown as volumes that follow the slider
    adapt: str | None = None  # the CLI's --adapt: None off, "" defaults, "rank=8,steps=4"...
    spread_priors: str = ""  # the CLI's --priors beyond the main one: "NAME, NAME" or "adapted"

    def check(self) -> None:
        """The widget's own checks, before the job's."""
        if not Path(self.path).is_file():
            raise ValueError(f"no k-space file at {self.path!r}")
        if self.draws < 1 or self.batch_size < 1:
            raise ValueError("draws and batch size must be >= 1")
        if self.mask_kind not in MASK_KINDS:
            raise ValueError(f"unknown mask type {self.mask_kind!r}")
        self.parsed_prior_options()
        others = self.parsed_spread_priors()
        if "adapted" in others and self.adapt is None:
            raise ValueError("the 'adapted' prior needs adaptation: tick 'adapt the prior'")
        if self.prior in others:
            raise ValueError(f"{self.prior!r} is the main prior already: list the others")

    def parsed_spread_priors(self) -> tuple[str, ...]:
        """The priors beyond the main one that share the draws (the CLI's ``--priors``
        after its first), from ``"NAME, NAME"``."""
        return tuple(p.strip() for p in self.spread_priors.split(",") if p.strip())

    def parsed_prior_options(self) -> dict[str, Any]:
        """``"KEY=VALUE, ..."`` as a dict (:func:`diffrecon.priors.checkpoints.parse_options`)."""
        from diffrecon.priors.checkpoints import parse_options

        return parse_options(filter(None, (p.strip() for p in self.prior_options.split(","))))

    @cached_property
    def job(self) -> ReconstructionJob:
        """The job the CLI would build for the same file, slice and settings: built once, so
        the running reconstruction and the layers it streams share one opened file, one
        calibration and one loaded prior (whose name the layers' attributes record)."""
        from diffrecon.adapt import AdaptSettings
        from diffrecon.calibration_run import read_calibration

        calibration = read_calibration(self.calibration) if self.calibration else None
        return ReconstructionJob(
            self.path,
            prior=self.prior,
            prior_format=self.prior_format,
            prior_options=self.parsed_prior_options(),
            sampler=self.sampler,
            overrides=dict(self.overrides),
            steps=self.steps or None,  # 0: the preset's
            slices=None if self.all_slices else [self.slice_index],
            mask=MaskSpec(self.acceleration, self.center_fraction, self.mask_kind),
            draws=self.draws,
            seed=self.seed,
            keep_draws=self.keep_draws,
            finish=self.finish,
            coil_maps=self.coil_maps,
            device=self.device,
            batch_size=self.batch_size,
            calibration=calibration,
            # with a calibration the job takes its level (ReconstructionJob.interval_level_used)
            interval_level=DEFAULT_INTERVAL_LEVEL if self.intervals else None,
            adapt=None if self.adapt is None else AdaptSettings.parse(self.adapt),
            spread_priors=self.parsed_spread_priors(),
            command="napari diffrecon widget",
        )


def run(request: Request, on_step=None, on_batch=None, on_slice=None) -> Any:
    """Validate the request's job and reconstruct its slice (returns the final
    :class:`SliceResult`), or with ``all_slices`` every slice in turn (returns
    ``{index: SliceResult}``; ``on_slice`` sees the finished ones after each)."""
    request.check()
    job = request.job.validate()
    if not request.all_slices:
        return job.run_slice(request.slice_index, on_step=on_step, on_batch=on_batch)
    done: dict[int, SliceResult] = {}
    for index in job.slice_indices:
        done[index] = job.run_slice(index, on_step=on_step)
        if on_slice is not None:
            on_slice(dict(done))
    return done


def stream(request: Request, cancel: threading.Event) -> Iterator[tuple[str, Any]]:
    """Run :func:`run` in a background thread and yield its events as they come:
    ``("step", (i, n))``, ``("batch", SliceResult)`` (running summary), then
    ``("done", SliceResult)``; with ``all_slices``, ``("slice", {index: SliceResult})`` after
    each slice and ``("done", {index: SliceResult})``; ``("cancelled", None)`` once
    ``cancel`` is set and the sampler reaches its next step; exceptions are re-raised here."""
    events: queue.Queue = queue.Queue()

    def on_step(state: Any) -> None:
        if cancel.is_set():
            raise Cancelled
        events.put(("step", (state.i + 1, state.n)))

    def work() -> None:
        try:
            result = run(
                request,
                on_step,
                lambda r: events.put(("batch", r)),
                lambda done: events.put(("slice", done)),
            )
            events.put(("done", result))
        except Cancelled:
            events.put(("cancelled", None))
        except BaseException as exc:  # handed to the consumer
            events.put(("error", exc))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while True:
        kind, value = events.get()
        if kind == "error":
            raise value
        yield kind, value
        if kind in ("done", "cancelled"):
            break
    thread.join()


def request_layers(result: SliceResult, request: Request, final: bool) -> list[LayerData]:
    """:func:`~diffrecon_napari._layers.result_layers` for a request: the job's result-file
    attributes, and the file's target (cropped like the result) for ``|error|``."""
    i = request.slice_index
    return _slice_layers(result, request, i, final, f"{Path(request.path).stem}, slice {i}")


def volume_layers(
    results: dict[int, SliceResult], request: Request, final: bool
) -> list[LayerData]:
    """Layers of an all-slices run: each slice's layers (:func:`request_layers`) stacked along
    the file's slice axis, zero where a slice is not done yet, so the result follows the
    viewer's slice slider beside the k-space; std and ``|error|`` keep one colour scale."""
    import numpy as np

    job = request.job
    n = job.input.num_slices
    source = f"{Path(request.path).stem}, all slices"  # apart from single-slice layers (2-D)
    per = {i: _slice_layers(r, request, i, final, source) for i, r in results.items()}
    first = next(iter(per.values()))
    out = []
    for k, (data, kwargs, kind) in enumerate(first):
        stack = np.zeros((n, *np.shape(data)), dtype=np.float32)
        for i, layers in per.items():
            stack[i] = layers[k][0]
        meta = dict(kwargs["metadata"])
        meta[META] = {**meta[META], "slice_indices": list(range(n)), "done": sorted(per)}
        out.append((stack, {**kwargs, "metadata": meta}, kind))
    limits = [kw for _, kw, _ in out if "contrast_limits" in kw]
    if limits:
        top = max(float(d.max()) for d, kw, _ in out if "contrast_limits" in kw) or 1.0
        for kw in limits:
            kw["contrast_limits"] = [0.0, top]
    return out


def _slice_layers(
    result: SliceResult, request: Request, index: int, final: bool, source: str
) -> list[LayerData]:
    """One slice's layers with that slice's target for ``|error|``."""
    from diffrecon.mri.transforms import crop_target

    job = request.job
    target = job.input.target(index) if final else None
    if target is not None:
        target = crop_target(target, result.mean.shape)
    return result_layers(result, job.attrs([result]), index, final, target, source)
