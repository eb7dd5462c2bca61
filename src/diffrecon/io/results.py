"""Result files: one h5 per input that fastMRI's ``evaluate.py`` reads as it is.

``reconstruction`` (slices, H, W) float32 posterior mean of the magnitude, at the input's
slice count (attribute ``input_slices``) even for a subset of slices, whose other slices
are NaN (``evaluate.py`` reads whole volumes: it scores such a volume ``nan``, never a
shape error; :func:`read_reconstruction` returns the reconstructed ones); every other
per-slice dataset holds the reconstructed slices only, in ``slice_indices`` order;
``reconstruction_complex`` (slices, H, W) complex64 the complex posterior mean (for phase
work and SigPy/BART pipelines); ``std`` the posterior std of the magnitude; optional
``draws`` (slices, n, H, W, gzip, chunked per image) and
``quantiles`` (slices, q, H, W) with attribute ``quantile_levels``; ``lower`` / ``upper``
(slices, H, W) the central interval at attribute ``interval_level`` (attribute
``calibrated``: from a conformal calibration, with ``std_calibrated``, or from the draws'
quantiles); ``mask`` (the sampling mask used) and ``maps`` (slices, coils, H, W, the coil
maps the operator used, gzip); ``zero_filled`` (slices, H, W) ``|A^H y|``; with several
priors (attribute ``priors``), ``std_within`` and ``std_between`` (slices, H, W): the std
under one prior and the priors' disagreement; with the hold-out check, ``l1_image`` (the
self-tuned L1-wavelet image) and ``holdout_residual`` (where the held-out lines are
mispredicted, back-projected), the score's prior-free features; ``slice_indices``;
file attributes: the :class:`~diffrecon.results.RunRecord` field by field (sampler, its
settings as JSON, seed, prior, version, the mask used...) and per-slice provenance lists.
This module is the one writer of result files (a whole volume, or merged one-slice parts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffrecon.io.h5 import decoded_attrs, refuse_external_data, write_atomic_h5
from diffrecon.results import PER_SLICE_ATTRS, RunRecord, VolumeResult

# datasets with one entry per slice (stacked along axis 0 when parts are merged)
STACKED = (
    "reconstruction",
    "reconstruction_complex",
    "std",
    "slice_indices",
    "draws",
    "quantiles",
    "lower",
    "upper",
    "std_calibrated",
    "std_within",
    "std_between",
    "l1_image",
    "holdout_residual",
    "maps",
    "zero_filled",
)
COMPRESSED = ("draws", "maps")
SPREAD = ("std_within", "std_between")  # with several priors
EVIDENCE = ("l1_image", "holdout_residual")  # with the hold-out check


class ResultFileError(ValueError):
    """A file that is not a usable diffrecon result file; the message names the problem."""


@dataclass
class Results:
    """A result file as read back."""

    reconstruction: np.ndarray
    std: np.ndarray
    slice_indices: np.ndarray
    attrs: dict[str, Any]
    draws: np.ndarray | None = None
    quantiles: np.ndarray | None = None
    quantile_levels: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    std_calibrated: np.ndarray | None = None
    std_within: np.ndarray | None = None  # with several priors: the std under one prior
    std_between: np.ndarray | None = None  # and the priors' disagreement
    l1_image: np.ndarray | None = None  # with the hold-out check: the self-tuned L1 image
    holdout_residual: np.ndarray | None = None  # and the back-projected hold-out residual
    mask: np.ndarray | None = None
    maps: np.ndarray | None = None
    reconstruction_complex: np.ndarray | None = None  # complex posterior mean, file units
    zero_filled: np.ndarray | None = None  # |A^H y|, the zero-filled image, file units

    @property
    def record(self) -> RunRecord:
        """The run record the file's attributes hold, field by field."""
        return RunRecord.from_attrs(self.attrs)

    @property
    def interval_level(self) -> float | None:
        v = self.attrs.get("interval_level")
        return None if v is None or self.lower is None else float(v)

    @property
    def calibrated(self) -> bool:
        return bool(self.attrs.get("calibrated", False)) and self.lower is not None


def write_results(
    path: str | Path, volume: VolumeResult, overwrite: bool = False, pad: bool = True
) -> Path:
    """Write one input's :class:`~diffrecon.results.VolumeResult` (atomically). A subset
    of the input's slices is padded to the whole volume in ``reconstruction`` (NaN where not
    reconstructed, :func:`_pad_subset`) unless ``pad`` is False (one-slice parts)."""
    slices = volume.slices
    data: dict[str, np.ndarray] = {
        "reconstruction": np.stack([s.mean for s in slices]).astype(np.float32),
        "std": np.stack([s.std for s in slices]).astype(np.float32),
        "slice_indices": np.asarray(volume.slice_indices, dtype=np.int32),
    }
    if all(s.mean_complex is not None for s in slices):
        # fastMRI's `reconstruction` is a magnitude; the complex mean is for phase work
        data["reconstruction_complex"] = np.stack([s.mean_complex for s in slices]).astype(
            np.complex64
        )
    if all(s.draws is not None for s in slices):
        data["draws"] = np.stack([s.draws for s in slices]).astype(np.float32)
    optional = ("quantiles", "lower", "upper", "std_calibrated", "zero_filled", *SPREAD, *EVIDENCE)
    for name in optional:
        if all(getattr(s, name) is not None for s in slices):
            data[name] = np.stack([getattr(s, name) for s in slices]).astype(np.float32)
    prov = [s.provenance for s in slices]
    if all(p is not None for p in prov):
        # the sampling mask (one per file) and the coil maps (per slice) the operator used
        data["mask"] = np.asarray(prov[0].mask, dtype=bool)
        if all(p.maps_used is not None for p in prov):
            data["maps"] = np.stack([p.maps_used for p in prov]).astype(np.complex64)
    checked = ("reconstruction", "reconstruction_complex", "std", "lower", "upper")
    for name in (*checked, "std_calibrated", *SPREAD, *EVIDENCE):
        if name in data and not np.isfinite(data[name]).all():
            raise ValueError(f"{path}: the {name} map holds NaN or inf; nothing was written")
    flat = flat_attrs(volume.attrs)
    compress = _pad_subset(data, flat) if pad else COMPRESSED
    return write_atomic_h5(Path(path), data, flat, compress=compress, overwrite=overwrite)


def _pad_subset(data: dict[str, np.ndarray], attrs: dict[str, Any]) -> tuple[str, ...]:
    """A slice subset's ``reconstruction`` put at the input's slice count (attribute
    ``input_slices``), NaN in the slices not reconstructed, in place; the datasets to
    compress. fastMRI's ``evaluate.py`` reads whole volumes and stops at a shape mismatch;
    with NaN there it scores such a volume ``nan`` instead of a figure that mixes in slices
    nobody reconstructed (``diffrecon evaluate`` scores the subset)."""
    n, idx = attrs.get("input_slices"), data["slice_indices"]
    if n is None or len(idx) == int(n):
        return COMPRESSED
    rec = data["reconstruction"]
    full = np.full((int(n), *rec.shape[1:]), np.nan, dtype=np.float32)
    full[idx] = rec
    data["reconstruction"] = full
    return (*COMPRESSED, "reconstruction")  # NaN planes cost next to nothing compressed


def read_reconstruction(f: h5py.File, where: str) -> np.ndarray:
    """The reconstructed slices of a result file, in ``slice_indices`` order: a subset's
    ``reconstruction`` is stored at the input's slice count (:func:`_pad_subset`)."""
    rec = f["reconstruction"]
    if "slice_indices" not in f or f["slice_indices"].shape[0] == rec.shape[0]:
        return rec[()]
    idx = np.asarray(f["slice_indices"][()], dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= rec.shape[0]:
        raise ResultFileError(
            f"{where}: slice_indices {idx.tolist()[:8]} do not index the "
            f"{rec.shape[0]} slices of 'reconstruction'"
        )
    return np.stack([rec[int(i)] for i in idx])  # the reconstructed slices only


def flat_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as HDF5 stores them: dicts and lists as JSON, ``None`` left out."""
    return {
        k: (json.dumps(v, sort_keys=True, default=str) if isinstance(v, dict | list) else v)
        for k, v in attrs.items()
        if v is not None
    }


def settings_mismatch(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first run attribute (not per-slice provenance, not the command line) in which two
    results' attributes (as stored, :func:`flat_attrs`) differ, as ``"name: a vs b"``; None
    when they were made with the same settings."""
    for k in sorted(set(a) | set(b)):
        if k == "command" or k in PER_SLICE_ATTRS:
            continue
        x, y = (v.item() if isinstance(v, np.generic) else v for v in (a.get(k), b.get(k)))
        same = (
            np.array_equal(np.asarray(x), np.asarray(y))
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray)
            else x == y
        )
        if not same:
            return f"{k}: {x!r} vs {y!r}"
    return None


def read_attrs(path: str | Path) -> dict[str, Any]:
    """A result file's attributes (strings decoded), without reading its data."""
    with h5py.File(path, "r") as f:
        return decoded_attrs(f)


def read_slice_indices(path: str | Path) -> list[int]:
    """The input slices a result file holds (its ``slice_indices``), without its images."""
    with h5py.File(path, "r") as f:
        if "slice_indices" not in f:
            raise ValueError(f"{path} has no slice_indices: not a diffrecon result file")
        return [int(i) for i in f["slice_indices"][()]]


def merge_parts(parts: list[Path], out: Path, overwrite: bool = False) -> Path:
    """One result file from one-slice result files (in slice order), written atomically.

    The run's attributes are merged field by field: per-slice provenance
    (:data:`~diffrecon.results.PER_SLICE_ATTRS`) is concatenated, every other attribute
    must be the same in every part (the command line may differ: a resumed run's is kept
    from the first part); parts made with other settings are refused, naming the field."""
    datasets: dict[str, list[np.ndarray]] = {}
    attrs: dict[str, Any] = {}
    mask = None
    per_slice: dict[str, list[Any]] = {k: [] for k in PER_SLICE_ATTRS}
    for i, part in enumerate(parts):
        with h5py.File(part, "r") as f:
            for name in STACKED:
                if name in f:
                    arr = (
                        read_reconstruction(f, str(part))
                        if name == "reconstruction"
                        else f[name][()]
                    )
                    datasets.setdefault(name, []).append(arr)
            if mask is None and "mask" in f:
                mask = f["mask"][()]
            run = {k: v for k, v in f.attrs.items() if k not in PER_SLICE_ATTRS}
            if i == 0:
                attrs = run
            why = settings_mismatch(attrs, run)
            if why is not None:
                raise ValueError(
                    f"{out.name}: the slice results {Path(parts[0]).name} and "
                    f"{Path(part).name} were made with different settings ({why})"
                )
            for k in PER_SLICE_ATTRS:
                if k in f.attrs:
                    per_slice[k].extend(json.loads(f.attrs[k]))
    data = {k: np.concatenate(v) for k, v in datasets.items() if len(v) == len(parts)}
    if mask is not None:
        data["mask"] = mask
    for k, v in per_slice.items():
        if len(v) == len(parts):
            attrs[k] = json.dumps(v)
    compress = _pad_subset(data, attrs) if "slice_indices" in data else COMPRESSED
    return write_atomic_h5(out, data, attrs, compress=compress, overwrite=overwrite)


def read_results(path: str | Path) -> Results:
    """Read a result file written by :func:`write_results`."""
    p = Path(path)
    if not p.exists() or not h5py.is_hdf5(p):
        raise ResultFileError(f"{p}: not a diffrecon result file (missing or not HDF5)")
    with h5py.File(p, "r") as f:
        if "reconstruction" not in f:
            raise ResultFileError(f"{p}: no 'reconstruction' dataset")
        try:
            refuse_external_data(f, str(p))
        except ValueError as err:
            raise ResultFileError(str(err)) from err
        groups = [k for k in f if not isinstance(f[k], h5py.Dataset)]
        if groups:
            raise ResultFileError(f"{p}: {', '.join(groups)} should be datasets, not groups")
        stored = f["reconstruction"]
        if stored.ndim != 3 or not np.issubdtype(stored.dtype, np.floating):
            raise ResultFileError(
                f"{p}: 'reconstruction' must be real (slices, H, W), "
                f"got {stored.dtype} {stored.shape}"
            )
        rec = read_reconstruction(f, str(p))
        for name in (
            "std",
            "lower",
            "upper",
            "std_calibrated",
            "reconstruction_complex",
            "zero_filled",
            *SPREAD,
            *EVIDENCE,
        ):
            if name in f and f[name].shape != rec.shape:
                raise ResultFileError(
                    f"{p}: '{name}' has shape {f[name].shape}, not the reconstruction's {rec.shape}"
                )
        attrs = decoded_attrs(f)
        n = rec.shape[0]
        return Results(
            reconstruction=rec,
            std=f["std"][()] if "std" in f else np.zeros_like(rec),
            slice_indices=f["slice_indices"][()] if "slice_indices" in f else np.arange(n),
            attrs=attrs,
            draws=f["draws"][()] if "draws" in f else None,
            quantiles=f["quantiles"][()] if "quantiles" in f else None,
            quantile_levels=np.asarray(json.loads(attrs["quantile_levels"]))
            if "quantile_levels" in attrs
            else None,
            lower=f["lower"][()] if "lower" in f else None,
            upper=f["upper"][()] if "upper" in f else None,
            std_calibrated=f["std_calibrated"][()] if "std_calibrated" in f else None,
            std_within=f["std_within"][()] if "std_within" in f else None,
            std_between=f["std_between"][()] if "std_between" in f else None,
            l1_image=f["l1_image"][()] if "l1_image" in f else None,
            holdout_residual=f["holdout_residual"][()] if "holdout_residual" in f else None,
            mask=f["mask"][()] if "mask" in f else None,
            maps=f["maps"][()] if "maps" in f else None,
            reconstruction_complex=f["reconstruction_complex"][()]
            if "reconstruction_complex" in f
            else None,
            zero_filled=f["zero_filled"][()] if "zero_filled" in f else None,
        )
