"""napari layer data for diffrecon results, and back: no Qt, no napari import.

Layer data are napari "layer data tuples" ``(data, kwargs, layer_type)``. Result layers carry
the job's result-file attributes in ``metadata["diffrecon"]["attrs"]``, so a file written
from napari records the same provenance as one written by the CLI.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffrecon.results import SliceResult, VolumeResult

LayerData = tuple[Any, dict[str, Any], str]
META = "diffrecon"


def image(data: Any, name: str, colormap: str, meta: dict[str, Any]) -> LayerData:
    """One image layer tuple with diffrecon metadata."""
    return (data, {"name": name, "colormap": colormap, "metadata": {META: meta}}, "image")


def layer_name(what: str, source: str = "") -> str:
    """``"mean · file1000001, slice 3"``: what the layer shows first, then where it comes
    from, so napari's layer list, which shortens long names in the middle, keeps the what."""
    return f"{what} · {source}" if source else what


def result_layers(
    result: SliceResult,
    attrs: dict[str, Any],
    slice_index: int,
    final: bool,
    target: np.ndarray | None = None,
    source: str = "",
) -> list[LayerData]:
    """Layers for a (running or final) slice result, named ``what · source``
    (:func:`layer_name`): std (magma), the draws when kept, the between-prior spread and
    interval width of a final result (:func:`spread_layers`), the zero-filled image and the
    mask the run used, ``|error|`` for a final result when a ``target`` (cropped alike) is
    given, on the std's colormap and limits, and the mean (gray) last, so it is on top."""
    meta = {
        "attrs": attrs,
        "metrics": result.metrics,
        "slice_indices": [slice_index],
        "draws_done": result.draws_done,
        "final": final,
    }
    out = [image(result.std, layer_name("std", source), "magma", {**meta, "role": "std"})]
    if result.draws is not None:
        out.append(
            image(result.draws, layer_name("draws", source), "gray", {**meta, "role": "draws"})
        )
    if final:
        out += spread_layers(result, meta, source)
    if result.zero_filled is not None:
        name = layer_name("zero-filled", source)
        out.append(image(result.zero_filled, name, "gray", {**meta, "role": "zero_filled"}))
    if final and result.provenance is not None:
        prov = result.provenance
        m = np.asarray(prov.mask, dtype=np.float32)
        if m.ndim == 1:  # columns: shown over the k-space rows
            rows = prov.maps_used.shape[-2] if prov.maps_used is not None else 1
            m = np.broadcast_to(m, (rows, m.shape[0]))
        name = layer_name("mask", source)
        out.append(image(np.ascontiguousarray(m), name, "gray", {**meta, "role": "mask"}))
    if final and target is not None:
        error = np.abs(result.mean - target)
        out.append(image(error, layer_name("|error|", source), "magma", {**meta, "role": "error"}))
        # std and |error| on one colour scale, so they compare by eye
        top = float(max(np.max(result.std), np.max(error))) or 1.0
        for _data, kwargs, _ in out:
            if kwargs["metadata"][META]["role"] in ("std", "error"):
                kwargs["contrast_limits"] = [0.0, top]
    out.append(image(result.mean, layer_name("mean", source), "gray", {**meta, "role": "mean"}))
    return out


def spread_layers(res: Any, meta: dict[str, Any], source: str = "") -> list[LayerData]:
    """The uncertainty beyond the std of a slice result or a result file (``std``,
    ``std_between``, ``lower``, ``upper``, ``interval_level``, ``calibrated``): the
    between-prior spread (runs with several priors, on the std's limits so the two compare
    by eye) and the interval width ``upper - lower`` as one layer with fixed limits (0 to
    its 99.5th percentile), the bounds themselves kept as hidden layers (what a file written
    back needs); named ``what · source``."""
    std, between, lower, upper = res.std, res.std_between, res.lower, res.upper
    tag = interval_tag(res.interval_level, res.calibrated)
    meta = {**meta, "interval_level": res.interval_level, "calibrated": res.calibrated}
    out = []
    if lower is not None and upper is not None:
        for role, data in (("lower", lower), ("upper", upper)):
            hidden = image(
                data, layer_name(f"{role} {tag}", source), "gray", {**meta, "role": role}
            )
            hidden[1]["visible"] = False
            out.append(hidden)
        width = np.asarray(upper, np.float32) - np.asarray(lower, np.float32)
        name = layer_name(f"{tag} interval width", source)
        layer = image(width, name, "viridis", {**meta, "role": "width"})
        layer[1]["contrast_limits"] = [0.0, float(np.percentile(width, 99.5)) or 1.0]
        out.append(layer)
    if between is not None:
        top = float(np.percentile(std, 99.5)) or 1.0
        name = layer_name("between-prior spread", source)
        layer = image(between, name, "magma", {**meta, "role": "between"})
        layer[1]["contrast_limits"] = [0.0, max(top, float(np.percentile(between, 99.5)))]
        out.append(layer)
    return out


def interval_tag(level: float | None, calibrated: bool) -> str:
    """``"90% (calibrated)"`` or ``"90% (uncalibrated)"``: how layer names say it."""
    kind = "calibrated" if calibrated else "uncalibrated"
    return f"{level:.0%} ({kind})" if level is not None else f"({kind})"


def summary_text(result: SliceResult) -> str:
    """The widget's text panel: draws, time, the intervals' status, PSNR/SSIM when the file
    holds a target, the hold-out check and its warning."""
    m = result.metrics
    lines = [f"{result.draws_done} draws in {result.seconds:.1f} s"]
    if result.lower is not None:
        how = "conformal calibration" if result.calibrated else "the draws' quantiles"
        lines.append(
            f"intervals {interval_tag(result.interval_level, result.calibrated)}: from {how}"
        )
    if m:
        lines.append(f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}")
        lines.append(f"zero-filled: {m['psnr_zero_filled']:.2f} dB, {m['ssim_zero_filled']:.3f}")
    check = None if result.provenance is None else result.provenance.validation
    if check is not None:
        lines.append(check.describe())
        if check.warning() is not None:
            lines.append(f"WARNING: {check.warning()}")
    return "\n".join(lines)


def volume_from_layers(layers: list[LayerData]) -> VolumeResult:
    """The mean/std (and draws) layers of a reconstruction as a volume to write; anything
    else is refused before a file is touched."""
    by_role = {}
    for data, kwargs, _ in layers:
        meta = kwargs.get("metadata", {}).get(META, {})
        if "role" in meta:
            by_role[meta["role"]] = (np.asarray(data), meta)
    if "mean" not in by_role or "std" not in by_role:
        raise ValueError("select the 'mean' and 'std' layers of a diffrecon reconstruction")
    mean, meta = by_role["mean"]
    std = by_role["std"][0]
    draws = by_role["draws"][0] if "draws" in by_role else None
    bounds = [by_role[k][0] if k in by_role else None for k in ("lower", "upper")]
    if None in bounds:
        bounds = [None, None]
    if mean.ndim == 2:
        mean, std = mean[None], std[None]
        draws = None if draws is None else draws[None]
        bounds = [None if b is None else b[None] for b in bounds]
    attrs = dict(meta.get("attrs") or {})
    done = int(meta.get("draws_done") or attrs.get("draws") or 0)
    interval = by_role.get("lower", (None, {}))[1]
    slices = [
        SliceResult(
            mean[i],
            std[i],
            done,
            draws=None if draws is None else draws[i],
            lower=None if bounds[0] is None else bounds[0][i],
            upper=None if bounds[1] is None else bounds[1][i],
            interval_level=interval.get("interval_level"),
            calibrated=bool(interval.get("calibrated", False)),
        )
        for i in range(mean.shape[0])
    ]
    indices = [int(i) for i in meta.get("slice_indices") or range(mean.shape[0])]
    return VolumeResult(slices, indices, attrs)
