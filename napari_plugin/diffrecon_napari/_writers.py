"""Reconstruction layers written as a diffrecon result file or DICOM series."""

from __future__ import annotations

import tempfile
from pathlib import Path

from diffrecon.io.atomic import refuse_overwriting_inputs
from diffrecon_napari._layers import LayerData, volume_from_layers


def write_h5(path: str, layers: list[LayerData]) -> list[str]:
    """Write mean/std (and draws) layers as a diffrecon result file (atomic)."""
    from diffrecon.io.results import write_results

    volume = volume_from_layers(layers)
    # napari's save dialog has asked before replacing ``path``; an input never is
    refuse_overwriting_inputs([path], [volume.attrs.get("input")])
    return [str(write_results(Path(path), volume, overwrite=True))]


def write_dicom(path: str, layers: list[LayerData]) -> list[str]:
    """Write mean/std (and draws) as DICOM series into the folder ``path`` (its suffix
    dropped), through a result file, as ``diffrecon export-dicom`` does."""
    from diffrecon.io.dicom import export_dicom
    from diffrecon.io.results import write_results

    out_dir = Path(path).with_suffix("")
    volume = volume_from_layers(layers)  # validate before writing anything
    with tempfile.TemporaryDirectory() as tmp:
        h5 = write_results(Path(tmp) / "result.h5", volume)
        files = export_dicom(
            h5,
            out_dir,
            include_draws=volume.slices[0].draws is not None,
            overwrite=True,  # napari's save dialog has asked; series are replaced whole
        )
    return [str(f) for f in files]
