"""npe2 reader, writer and sample-data entry points (thin wrappers over the Qt-free modules)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffrecon_napari import _readers, _writers
from diffrecon_napari._layers import LayerData


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """A reader for fastMRI / diffrecon result ``.h5`` files, NIfTI and DICOM, else None."""
    from diffrecon.io.dicom import is_dicom

    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    kind = _readers.h5_kind(path)
    if kind == "kspace":
        return _readers.read_fastmri_layers
    if kind == "result":
        return _readers.read_result_layers
    if _readers.is_nifti(path):
        return _readers.read_nifti_layers
    if is_dicom(path):
        return _readers.read_dicom_layers
    return None


def write_h5(path: str, layer_data: list[Any]) -> list[str]:
    return _writers.write_h5(path, layer_data)


def write_dicom(path: str, layer_data: list[Any]) -> list[str]:
    return _writers.write_dicom(path, layer_data)


def demo_kspace_path() -> Path:
    """The demo k-space (simulated from held-out MNI slices), cached per user."""
    from diffrecon.data.simulate import simulate_fastmri

    cache = Path(tempfile.gettempdir()) / "diffrecon-napari"
    cache.mkdir(exist_ok=True)
    path = cache / "demo_kspace.h5"
    if not path.exists():
        simulate_fastmri(path, slices=(104,), size=(192, 160))
    return path


def demo_kspace() -> list[LayerData]:
    """The demo k-space (held-out MNI slice, 8 coils, fastMRI format) as layers."""
    return _readers.read_fastmri_layers(demo_kspace_path())
