"""npe2 reader, writer and sample-data entry points (thin wrappers over ``_core``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffrecon_napari import _core


def get_reader(path: str | list[str]) -> Callable[[str], list[_core.LayerData]] | None:
    """A reader for fastMRI / diffrecon result ``.h5`` files and DICOM series, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    kind = _core.h5_kind(path)
    if kind == "kspace":
        return _core.read_fastmri_layers
    if kind == "result":
        return _core.read_result_layers
    if _core.is_dicom(path):
        return _core.read_dicom_layers
    return None


def write_h5(path: str, layer_data: list[Any]) -> list[str]:
    return _core.write_h5(path, layer_data)


def write_dicom(path: str, layer_data: list[Any]) -> list[str]:
    return _core.write_dicom(path, layer_data)


def demo_kspace() -> list[_core.LayerData]:
    """The demo k-space (held-out MNI slice, 8 coils, fastMRI format) as layers."""
    return _core.read_fastmri_layers(_core.demo_kspace_path())
