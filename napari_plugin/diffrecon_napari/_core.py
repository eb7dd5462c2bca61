"""Everything the plugin does, without Qt or napari: layers from files, the reconstruction
request the widget fills in (the same call the CLI makes), a streaming runner, writers.

Layer data are napari "layer data tuples" ``(data, kwargs, layer_type)``; napari is never
imported here, so this module is tested headlessly.
"""

from __future__ import annotations

import queue
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]

# Samplers offered in the widget. C-ΠGDM is left out: its noisy extension needs
# A A^H = c I, which multicoil SENSE does not have, and k-space data are always noisy.
SAMPLERS = (
    "daps-mri",
    "daps-fast",
    "daps-1k",
    "zaps-20",
    "stsl-20",
    "pigdm-20",
    "pigdm-100",
    "dps-1k",
)
META = "diffrecon"


class Cancelled(Exception):
    """Raised inside the sampler's step callback when the user cancels."""


# -- reading ---------------------------------------------------------------------------------
def h5_kind(path: str | Path) -> str | None:
    """``"kspace"`` (a fastMRI file), ``"result"`` (a diffrecon result file) or None."""
    import h5py

    p = Path(path)
    if p.suffix.lower() not in (".h5", ".hdf5") or not p.is_file():
        return None
    try:
        with h5py.File(p, "r") as f:
            if "kspace" in f:
                return "kspace"
            return "result" if "reconstruction" in f else None
    except OSError:
        return None


def read_fastmri_layers(path: str | Path) -> list[LayerData]:
    """k-space as log-magnitude (coil RSS of ``|k|``) and the zero-filled RSS image, one
    plane per slice."""
    import torch

    from diffrecon.io.fastmri import open_fastmri
    from diffrecon.mri.transforms import center_crop, rss
    from diffrecon.operators.fft import ifft2c

    p = Path(path)
    fm = open_fastmri(p)
    logk, zf = [], []
    for i in range(fm.num_slices):
        k = fm.kspace(i, crop_readout=True)
        k = k[None] if k.ndim == 2 else k  # single-coil files
        logk.append(np.log(np.sqrt((np.abs(k) ** 2).sum(0)) + 1e-12 * float(np.abs(k).max())))
        img = rss(ifft2c(torch.from_numpy(k)), dim=0)
        size = (min(fm.recon_size[0], img.shape[-2]), min(fm.recon_size[1], img.shape[-1]))
        zf.append(center_crop(img, size).numpy())
    meta = {
        "path": str(p),
        "num_slices": fm.num_slices,
        "recon_size": list(fm.recon_size),
        "has_mask": fm.mask is not None,
        "has_target": fm.target(0) is not None,
    }
    return [
        (
            np.stack(logk).astype(np.float32),
            {
                "name": f"{p.stem} k-space (log|k|)",
                "colormap": "gray",
                "metadata": {META: {**meta, "kind": "kspace"}},
            },
            "image",
        ),
        (
            np.stack(zf).astype(np.float32),
            {
                "name": f"{p.stem} zero-filled",
                "colormap": "gray",
                "metadata": {META: {**meta, "kind": "zero_filled"}},
            },
            "image",
        ),
    ]


def read_result_layers(path: str | Path) -> list[LayerData]:
    """A diffrecon result file as its mean (gray) and std (magma) layers."""
    from diffrecon.io.results import read_results

    path = Path(path)
    res = read_results(path)
    meta = {
        "path": str(path),
        "kind": "result",
        "attrs": res.attrs,
        "slice_indices": res.slice_indices.tolist(),
    }
    return [
        (
            res.reconstruction,
            {
                "name": f"{path.stem} mean",
                "colormap": "gray",
                "metadata": {META: {**meta, "role": "mean"}},
            },
            "image",
        ),
        (
            res.std,
            {
                "name": f"{path.stem} std",
                "colormap": "magma",
                "metadata": {META: {**meta, "role": "std"}},
            },
            "image",
        ),
    ]


def is_dicom(path: str | Path) -> bool:
    p = Path(path)
    if p.is_dir():
        return any(q.suffix.lower() == ".dcm" for q in p.iterdir())
    return p.suffix.lower() == ".dcm" and p.is_file()


def read_dicom_layers(path: str | Path) -> list[LayerData]:
    """A DICOM series (a folder of ``.dcm`` files, or one file and its folder's series),
    stacked by InstanceNumber, in rescaled units."""
    import pydicom

    p = Path(path)
    files = sorted(p.glob("*.dcm")) if p.is_dir() else [p]
    if not p.is_dir():
        series = pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID
        files = [
            q
            for q in sorted(p.parent.glob("*.dcm"))
            if pydicom.dcmread(q, stop_before_pixels=True).SeriesInstanceUID == series
        ]
    dss = sorted((pydicom.dcmread(q) for q in files), key=lambda d: int(d.InstanceNumber))
    planes = [
        d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1.0))
        + float(getattr(d, "RescaleIntercept", 0.0))
        for d in dss
    ]
    first = dss[0]
    meta = {
        "path": str(p),
        "kind": "dicom",
        "SeriesDescription": str(getattr(first, "SeriesDescription", "")),
        "SeriesInstanceUID": str(first.SeriesInstanceUID),
        "instances": len(dss),
    }
    name = meta["SeriesDescription"] or p.stem
    return [
        (np.stack(planes), {"name": name, "colormap": "gray", "metadata": {META: meta}}, "image")
    ]


# -- the reconstruction request -------------------------------------------------------------
@dataclass
class Request:
    """What the widget collects; :func:`run` turns it into the CLI's call."""

    path: str
    slice_index: int = 0
    acceleration: float = 4.0
    center_fraction: float = 0.08
    mask_kind: str = "random"  # random | equispaced | file
    prior: str = "brain-mri-default"
    sampler: str = "daps-mri"
    steps: int = 0  # 0: the preset's
    draws: int = 8
    batch_size: int = 2  # draws per streamed update
    seed: int = 0
    device: str = "cpu"
    keep_draws: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if not Path(self.path).is_file():
            raise ValueError(f"no k-space file at {self.path!r}")
        if self.draws < 1 or self.batch_size < 1:
            raise ValueError("draws and batch size must be >= 1")
        if self.mask_kind not in ("random", "equispaced", "file"):
            raise ValueError(f"unknown mask type {self.mask_kind!r}")


def run(request: Request, on_step=None, on_batch=None) -> Any:
    """Reconstruct one slice with the CLI's own call (``pipeline.reconstruct_file_slice``:
    same readout crop, mask seed from the file name and prior loading); returns the final
    ``SliceResult``."""
    from diffrecon.io.fastmri import open_fastmri
    from diffrecon.mri.masks import fastmri_seed
    from diffrecon.pipeline import MaskSpec, reconstruct_file_slice
    from diffrecon.priors.bundles import load

    request.check()
    path = Path(request.path)
    f = open_fastmri(path)
    if not 0 <= request.slice_index < f.num_slices:
        raise ValueError(f"slice {request.slice_index} outside 0..{f.num_slices - 1}")
    spec = MaskSpec(
        request.acceleration,
        request.center_fraction,
        request.mask_kind,
        seed=fastmri_seed(path.name),
    )
    hyper = dict(request.extra)
    if request.steps > 0:
        hyper["steps"] = request.steps
    return reconstruct_file_slice(
        f,
        request.slice_index,
        spec,
        load(request.prior, device=request.device),
        sampler=request.sampler,
        draws=request.draws,
        seed=request.seed,
        keep_draws=request.keep_draws,
        device=request.device,
        batch_size=request.batch_size,
        callback=on_step,
        on_batch=on_batch,
        **hyper,
    )


def stream(request: Request, cancel: threading.Event) -> Iterator[tuple[str, Any]]:
    """Run :func:`run` in a background thread and yield its events as they come:
    ``("step", (i, n))``, ``("batch", SliceResult)`` (running summary), then
    ``("done", SliceResult)``; ``("cancelled", None)`` once ``cancel`` is set and the sampler
    reaches its next step; exceptions are re-raised here."""
    events: queue.Queue = queue.Queue()

    def on_step(state: Any) -> None:
        if cancel.is_set():
            raise Cancelled
        events.put(("step", (state.i + 1, state.n)))

    def work() -> None:
        try:
            events.put(("done", run(request, on_step, lambda r: events.put(("batch", r)))))
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


def result_layers(result: Any, request: Request, final: bool) -> list[LayerData]:
    """Layers for a (running or final) ``SliceResult``: mean (gray), std (magma), optional
    draws stack and ``|error|`` when the file holds a target."""
    meta = {
        "role": "mean",
        "request": asdict(request),
        "settings": result.settings,
        "metrics": result.metrics,
        "slice": request.slice_index,
        "final": final,
    }
    out: list[LayerData] = [
        (
            result.mean,
            {"name": "mean", "colormap": "gray", "metadata": {META: {**meta, "role": "mean"}}},
            "image",
        ),
        (
            result.std,
            {"name": "std", "colormap": "magma", "metadata": {META: {**meta, "role": "std"}}},
            "image",
        ),
    ]
    if result.draws is not None:
        out.append(
            (
                result.draws,
                {
                    "name": "draws",
                    "colormap": "gray",
                    "metadata": {META: {**meta, "role": "draws"}},
                },
                "image",
            )
        )
    if final:
        target = _target(request)
        if target is not None:
            import torch

            from diffrecon.mri.transforms import center_crop

            tgt = center_crop(torch.from_numpy(target), result.mean.shape).numpy()
            out.append(
                (
                    np.abs(result.mean - tgt),
                    {
                        "name": "|error|",
                        "colormap": "inferno",
                        "metadata": {META: {**meta, "role": "error"}},
                    },
                    "image",
                )
            )
    return out


def _target(request: Request) -> np.ndarray | None:
    from diffrecon.io.fastmri import open_fastmri

    t = open_fastmri(request.path).target(request.slice_index)
    return None if t is None else np.asarray(t, dtype=np.float32)


def summary_text(result: Any) -> str:
    """The widget's text panel: PSNR/SSIM (when a target exists) and time."""
    m = result.metrics
    lines = [f"{result.settings.get('draws_done', '?')} draws in {result.seconds:.1f} s"]
    if m:
        lines.append(f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}")
        lines.append(f"zero-filled: {m['psnr_zero_filled']:.2f} dB, {m['ssim_zero_filled']:.3f}")
    return "\n".join(lines)


# -- writing ---------------------------------------------------------------------------------
def _slice_results(layers: list[LayerData]) -> tuple[list[Any], list[int], dict[str, Any]]:
    from diffrecon.pipeline import SliceResult

    by_role = {}
    for data, attrs, _ in layers:
        meta = attrs.get("metadata", {}).get(META, {})
        if "role" in meta:
            by_role[meta["role"]] = (np.asarray(data), meta)
    if "mean" not in by_role or "std" not in by_role:
        raise ValueError("select the 'mean' and 'std' layers of a diffrecon reconstruction")
    mean, meta = by_role["mean"]
    std = by_role["std"][0]
    draws = by_role["draws"][0] if "draws" in by_role else None
    if mean.ndim == 2:
        mean, std = mean[None], std[None]
        draws = None if draws is None else draws[None]
    slices = [
        SliceResult(
            mean[i],
            std[i],
            np.zeros_like(mean[i]),
            np.zeros(1, bool),
            draws=None if draws is None else draws[i],
        )
        for i in range(mean.shape[0])
    ]
    indices = meta.get("slice_indices") or [meta.get("slice", 0)]
    request = meta.get("request", {})
    attrs = {
        "source": request.get("path", meta.get("path")),
        "sampler": request.get("sampler"),
        "settings": meta.get("settings"),
        "metrics": meta.get("metrics"),
    }
    return slices, [int(i) for i in indices], attrs


def write_h5(path: str, layers: list[LayerData]) -> list[str]:
    """Write mean/std (and draws) layers as a diffrecon result file (atomic)."""
    from diffrecon.io.results import write_results

    slices, indices, attrs = _slice_results(layers)
    out = write_results(Path(path), slices, indices, attrs, overwrite=True)
    return [str(out)]


def write_dicom(path: str, layers: list[LayerData]) -> list[str]:
    """Write mean/std (and draws) as DICOM series into the folder ``path`` (its suffix
    dropped), through a result file, as ``diffrecon export-dicom`` does."""
    from diffrecon.io.dicom import export_dicom
    from diffrecon.io.results import write_results

    out_dir = Path(path).with_suffix("")
    slices, indices, attrs = _slice_results(layers)  # validate before writing anything
    with tempfile.TemporaryDirectory() as tmp:
        h5 = write_results(Path(tmp) / "result.h5", slices, indices, attrs)
        files = export_dicom(h5, out_dir, include_draws=slices[0].draws is not None)
    return [str(f) for f in files]


def demo_kspace_path() -> Path:
    """The demo k-space (simulated from held-out MNI slices), cached per user."""
    from diffrecon.data.simulate import simulate_fastmri

    cache = Path(tempfile.gettempdir()) / "diffrecon-napari"
    cache.mkdir(exist_ok=True)
    path = cache / "demo_kspace.h5"
    if not path.exists():
        simulate_fastmri(path, slices=(104,), size=(192, 160))
    return path
