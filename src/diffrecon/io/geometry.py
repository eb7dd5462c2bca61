"""Where reconstructed slices lie in the scanner: one geometry for DICOM and NIfTI exports.

Spacing and thickness come from the ISMRMRD header (recon field of view over matrix, which
the job records in the result file as ``pixel_spacing_mm`` and ``slice_thickness_mm``);
orientation and origin from a reference DICOM when one is given, else axial at 0. DICOM
patient coordinates are LPS; :func:`affine_ras` gives the NIfTI (RAS) affine of the same
geometry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Where the slices lie: pixel spacing ``(row, column)`` and slice thickness in mm,
    the orientation (row and column direction cosines) and the first slice's position."""

    pixel_spacing: tuple[float, float] = (1.0, 1.0)
    thickness: float = 1.0
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # axial
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    from_header: bool = False

    def position(self, slice_index: int) -> list[float]:
        """``ImagePositionPatient`` of a slice: the origin moved ``slice_index`` slice
        thicknesses along the normal of the orientation."""
        o = np.asarray(self.orientation, dtype=np.float64)
        normal = np.cross(o[:3], o[3:])
        return [float(v) for v in np.asarray(self.origin) + slice_index * self.thickness * normal]


def geometry(attrs: dict[str, Any], reference: Any = None) -> Geometry:
    """The export's geometry: spacing and thickness from the result file (the ISMRMRD
    header's field of view over matrix), orientation and origin from a reference DICOM that
    has them; documented defaults otherwise (1 mm, axial, origin 0)."""
    spacing = _json(attrs.get("pixel_spacing_mm"))
    thickness = _json(attrs.get("slice_thickness_mm"))
    g = Geometry()
    if isinstance(spacing, list) and len(spacing) == 2:
        g = replace(g, pixel_spacing=(float(spacing[0]), float(spacing[1])), from_header=True)
    if isinstance(thickness, int | float) and thickness > 0:
        g = replace(g, thickness=float(thickness))
    if reference is not None:
        if "ImageOrientationPatient" in reference:
            g = replace(g, orientation=tuple(float(v) for v in reference.ImageOrientationPatient))
        if "ImagePositionPatient" in reference:
            g = replace(g, origin=tuple(float(v) for v in reference.ImagePositionPatient))
        if not g.from_header and "PixelSpacing" in reference:
            g = replace(g, pixel_spacing=tuple(float(v) for v in reference.PixelSpacing))
    _check_geometry(g)
    return g


def _check_geometry(g: Geometry) -> None:
    """Refuse a geometry no image can have, naming where it came from (a NIfTI or DICOM
    writer would otherwise fail deep inside, or write a volume no viewer can place)."""
    where = "the result's header" if g.from_header else "the --reference DICOM"
    sp = np.asarray(g.pixel_spacing, dtype=np.float64)
    if sp.shape != (2,) or not (np.isfinite(sp).all() and (sp > 0).all()):
        raise ValueError(f"{where}: pixel spacing {tuple(sp)} is not two positive numbers")
    if not (np.isfinite(g.thickness) and g.thickness > 0):
        raise ValueError(f"slice thickness {g.thickness} is not a positive number")
    o = np.asarray(g.orientation, dtype=np.float64)
    if o.shape != (6,) or not np.isfinite(o).all():
        raise ValueError(f"the --reference DICOM: orientation {tuple(o)} is not six numbers")
    row, col = o[:3], o[3:]
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 1e-3 or np.linalg.norm(
        np.cross(row, col)
    ) < 1e-3 * np.linalg.norm(row) * np.linalg.norm(col):
        raise ValueError(
            f"the --reference DICOM: orientation {tuple(o)} is degenerate (its row and "
            "column directions must be non-zero and not parallel)"
        )
    if not np.isfinite(np.asarray(g.origin, dtype=np.float64)).all():
        raise ValueError(f"the --reference DICOM: position {tuple(g.origin)} is not finite")


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def affine_ras(geo: Geometry) -> np.ndarray:
    """The NIfTI affine (RAS+, mm) of a volume stored as ``data[i, j, k] = image[k, j, i]``
    (column, row, slice): DICOM's LPS frame flipped in x and y."""
    o = np.asarray(geo.orientation, dtype=np.float64)
    row_dir, col_dir = o[:3], o[3:]  # along a row (column index), down a column (row index)
    normal = np.cross(row_dir, col_dir)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * geo.pixel_spacing[1]
    lps[:3, 1] = col_dir * geo.pixel_spacing[0]
    lps[:3, 2] = normal * geo.thickness
    lps[:3, 3] = geo.origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
