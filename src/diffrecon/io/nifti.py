"""NIfTI export of result files, for research pipelines that live in NIfTI.

One ``.nii.gz`` per map (mean, std, the interval bounds and the calibrated std when the file
has them), float32, the slices of the result file as the third axis in their order, with
the affine of :func:`~diffrecon.io.geometry.affine_ras` (spacing from the ISMRMRD header,
orientation and origin from a reference DICOM or axial at 0). Slice ``k`` of the volume is
``slice_indices[k]`` of the input (recorded in the header's description); a subset of slices
keeps their own positions, offset by their first index. Written atomically, one file each;
existing files are refused unless ``overwrite``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from diffrecon.io.atomic import OutputExistsError, atomic_file, refuse_overwriting_inputs
from diffrecon.io.geometry import affine_ras, geometry
from diffrecon.io.results import read_results


def nifti_path(out_dir: str | Path, stem: str, name: str) -> Path:
    """Where a result's map ``name`` goes: ``OUT/<stem>_<name>.nii.gz``."""
    return Path(out_dir) / f"{stem}_{name}.nii.gz"


def export_nifti(
    result_h5: str | Path,
    out_dir: str | Path,
    reference: str | Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the maps of a result file as ``OUT/<name>_<map>.nii.gz``; returns the paths."""
    import nibabel as nib

    res = read_results(result_h5)
    if res.reconstruction.shape[0] == 0:
        raise ValueError(f"{result_h5} holds no slices: nothing to export")
    ref = None
    if reference is not None:
        import pydicom

        ref = pydicom.dcmread(str(reference), stop_before_pixels=True)
    geo = geometry(res.attrs, ref)
    first = int(res.slice_indices[0]) if len(res.slice_indices) else 0
    affine = affine_ras(geo)
    affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * first  # slice 0 of the file lies at 0
    maps = {"mean": res.reconstruction, "std": res.std}
    for name in ("lower", "upper", "std_calibrated", "std_between"):
        if getattr(res, name) is not None:
            maps[name] = getattr(res, name)
    out = Path(out_dir)
    stem = Path(result_h5).stem
    paths = {name: nifti_path(out, stem, name) for name in maps}
    for name, vol in maps.items():
        if not np.isfinite(vol).all():
            raise ValueError(f"{result_h5}: the {name} map holds NaN or inf; nothing was written")
    refuse_overwriting_inputs(list(paths.values()), [result_h5, reference])
    if not overwrite:
        for p in paths.values():
            if p.exists():
                raise OutputExistsError(f"{p} exists: pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    indices = ",".join(str(int(i)) for i in res.slice_indices)
    for name, vol in maps.items():
        data = np.ascontiguousarray(np.asarray(vol, dtype=np.float32).transpose(2, 1, 0))
        img = nib.Nifti1Image(data, affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        img.header["descrip"] = f"diffrecon {name}; slices {indices}"[:79].encode()
        with atomic_file(paths[name], overwrite=overwrite) as tmp:
            tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6))
    return list(paths.values())
