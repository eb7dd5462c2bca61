"""NIfTI export: the maps as volumes, with an affine that puts every voxel where the DICOM
export puts the same pixel (one geometry, two coordinate conventions)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from diffrecon.cli import main
from diffrecon.io.dicom import export_dicom
from diffrecon.io.nifti import export_nifti
from diffrecon.io.results import read_results, write_results
from diffrecon.results import SliceResult, VolumeResult


def _result(tmp_path):
    rng = np.random.default_rng(1)
    slices = [
        SliceResult(
            rng.random((12, 10)).astype(np.float32),
            rng.random((12, 10)).astype(np.float32),
            4,
            lower=np.zeros((12, 10), np.float32),
            upper=np.ones((12, 10), np.float32),
            interval_level=0.9,
        )
        for _ in range(3)
    ]
    attrs = {"pixel_spacing_mm": [0.5, 0.75], "slice_thickness_mm": 4.0}
    return write_results(tmp_path / "vol.h5", VolumeResult(slices, [7, 8, 9], attrs))


def test_nifti_maps_and_affine_agree_with_the_dicom_export(tmp_path):
    h5 = _result(tmp_path)
    ref = get_testdata_file("MR_small.dcm")  # an oblique-free reference with a real origin
    files = export_nifti(h5, tmp_path / "nii", reference=ref)
    names = sorted(f.name for f in files)
    assert names == [f"vol_{m}.nii.gz" for m in ("lower", "mean", "std", "upper")]
    res = read_results(h5)
    img = nib.load(tmp_path / "nii" / "vol_mean.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.shape == (10, 12, 3)  # (columns, rows, slices)
    np.testing.assert_array_equal(data.transpose(2, 1, 0), res.reconstruction)
    np.testing.assert_allclose(img.header.get_zooms(), (0.75, 0.5, 4.0))
    # voxel (column c, row r, slice k) lies where DICOM puts pixel (r, c) of instance k
    dcm = export_dicom(h5, tmp_path / "dcm", reference=ref)
    for k, path in enumerate(f for f in dcm if f.parent.name == "mean"):
        ds = pydicom.dcmread(path)
        o = np.asarray(ds.ImageOrientationPatient, dtype=float)
        row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
        for r, c in ((0, 0), (11, 3), (5, 9)):
            lps = (
                np.asarray(ds.ImagePositionPatient, float) + o[:3] * c * col_sp + o[3:] * r * row_sp
            )
            ras = lps * [-1, -1, 1]
            np.testing.assert_allclose(img.affine @ [c, r, k, 1], [*ras, 1], atol=1e-4)


def test_reconstruct_format_nifti_and_the_export_command(tmp_path, tiny_kspace_file, tiny_bundle):
    out = tmp_path / "out"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    run = ["--steps", "2", "--draws", "2", "--quiet", "--slices", "0:2"]
    assert main([*args, *run, "--format", "nifti"]) == 0
    assert (out / "tiny.h5").exists()
    mean = nib.load(out / "tiny_mean.nii.gz")
    np.testing.assert_array_equal(
        np.asarray(mean.dataobj).transpose(2, 1, 0), read_results(out / "tiny.h5").reconstruction
    )
    # refused before any work when the NIfTI outputs exist; replaced with --overwrite
    (out / "tiny.h5").unlink()
    assert main([*args, *run, "--format", "nifti"]) == 2 and not (out / "tiny.h5").exists()
    assert main([*args, *run, "--format", "nifti", "--overwrite"]) == 0
    assert main(["export-nifti", str(out / "tiny.h5"), str(tmp_path / "n2")]) == 0
    assert main(["export-nifti", str(out / "tiny.h5"), str(tmp_path / "n2")]) == 2  # exists
    bad = tmp_path / "bad.dcm"
    bad.write_text("no")
    assert (
        main(["export-nifti", str(out / "tiny.h5"), str(tmp_path / "n3"), "--reference", str(bad)])
        == 2
    )
    assert not (tmp_path / "n3").exists()


def test_non_finite_maps_are_refused_and_nothing_is_written(tmp_path):
    import h5py

    h5 = _result(tmp_path)
    with h5py.File(h5, "r+") as f:
        f["std"][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="std map holds NaN"):
        export_nifti(h5, tmp_path / "nii")
    assert not (tmp_path / "nii").exists()
