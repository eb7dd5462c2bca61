"""DICOM that viewers and PACS accept: geometry from the ISMRMRD header or a reference,
display windows, and dciodvfy (Debian dicom3tools) finds no error."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from diffrecon.io.dicom import Geometry, export_dicom, geometry, window
from diffrecon.io.fastmri import parse_header
from diffrecon.io.results import write_results
from diffrecon.results import SliceResult, VolumeResult

HEADER = b"""<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
<encodedSpace><matrixSize><x>640</x><y>320</y><z>1</z></matrixSize>
<fieldOfView_mm><x>440</x><y>220</y><z>5</z></fieldOfView_mm></encodedSpace>
<reconSpace><matrixSize><x>320</x><y>320</y><z>1</z></matrixSize>
<fieldOfView_mm><x>220</x><y>224</y><z>5</z></fieldOfView_mm></reconSpace>
<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>319</maximum>
<center>160</center></kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"""


def _result(tmp_path, attrs):
    rng = np.random.default_rng(0)
    slices = [
        SliceResult(
            (1e-4 * rng.random((24, 20))).astype(np.float32),
            (1e-5 * rng.random((24, 20))).astype(np.float32),
            4,
        )
        for _ in range(3)
    ]
    return write_results(tmp_path / "r.h5", VolumeResult(slices, [4, 5, 6], attrs))


def test_header_geometry_is_field_of_view_over_matrix():
    h = parse_header(HEADER)
    assert h.pixel_spacing_mm == pytest.approx((220 / 320, 224 / 320))
    assert h.slice_thickness_mm == 5.0
    # a header without a field of view still parses; the geometry is then unknown
    bare = HEADER.replace(b"<fieldOfView_mm><x>220</x><y>224</y><z>5</z></fieldOfView_mm>", b"")
    assert parse_header(bare).pixel_spacing_mm is None


def test_export_carries_geometry_window_and_passes_dciodvfy(tmp_path):
    attrs = {"pixel_spacing_mm": [0.6875, 0.7], "slice_thickness_mm": 5.0}
    files = export_dicom(_result(tmp_path, attrs), tmp_path / "dcm")
    mean = [pydicom.dcmread(f) for f in files if f.parent.name == "mean"]
    ds = mean[1]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert [float(v) for v in ds.PixelSpacing] == [0.6875, 0.7]
    assert float(ds.SliceThickness) == 5.0
    # default orientation (axial), slices one thickness apart by their index in the file
    z = [float(d.ImagePositionPatient[2]) for d in mean]
    assert z == [20.0, 25.0, 30.0]
    # a window over the stored values (file units, far below 1: LINEAR_EXACT)
    stored = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    assert 0 < width < 2e-4 and stored.min() < centre < stored.max()
    assert ds.VOILUTFunction == "LINEAR_EXACT" and "Laterality" in ds
    std = pydicom.dcmread(next(f for f in files if f.parent.name == "std"))
    low_edge = float(std.WindowCenter) - float(std.WindowWidth) / 2
    assert low_edge == pytest.approx(0, abs=1e-4 * float(std.WindowWidth))  # std: from 0
    if shutil.which("dciodvfy") is None:
        if os.environ.get("DIFFRECON_REQUIRE_DCIODVFY"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is required here")
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    for f in files:
        run = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line]
        assert not errors, f"{f}: {errors}"


def test_reference_gives_orientation_and_origin(tmp_path):
    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
    g = geometry({"slice_thickness_mm": 2.0}, ref)
    assert g.orientation == tuple(float(v) for v in ref.ImageOrientationPatient)
    assert g.position(0) == pytest.approx([float(v) for v in ref.ImagePositionPatient])
    normal = np.cross(np.asarray(g.orientation[:3]), np.asarray(g.orientation[3:]))
    np.testing.assert_allclose(np.subtract(g.position(3), g.position(0)), 6.0 * normal)
    # no header spacing: the reference's; neither: 1 mm (documented default)
    assert g.pixel_spacing == tuple(float(v) for v in ref.PixelSpacing)
    assert geometry({}) == Geometry()


def test_window_is_robust_and_never_empty():
    vol = np.r_[np.zeros(10), np.linspace(0, 1, 1000), 1e6]  # one hot pixel
    c, w = window(vol, from_zero=False)
    assert c + w / 2 < 2 and w > 0.9
    assert window(np.zeros(5), from_zero=True)[1] > 0


def test_a_geometry_no_image_can_have_is_refused_naming_its_source():
    """Zero or NaN spacing in the result, a degenerate --reference: one clear error, not
    nibabel's HeaderDataError (issue 28 #8e)."""
    for bad in ("[0, 0]", "[NaN, 1]"):
        with pytest.raises(ValueError, match="result's header: pixel spacing"):
            geometry({"pixel_spacing_mm": bad})
    ref = pydicom.Dataset()
    ref.ImageOrientationPatient = [1, 0, 0, 1, 0, 0]  # parallel row and column directions
    with pytest.raises(ValueError, match="--reference DICOM: orientation .* degenerate"):
        geometry({}, ref)
    assert geometry({"pixel_spacing_mm": "[0.5, 0.7]"}).pixel_spacing == (0.5, 0.7)


def test_parametric_maps_hold_the_float_maps_and_pass_dciodvfy(tmp_path):
    """``--parametric-maps``: the std and interval bounds as DICOM Parametric Maps (float32
    frames, real-world value mapping, derived from the mean's MR images) that read back to
    the stored values slice for slice, and dciodvfy finds no error (issue 28 #17)."""
    from diffrecon.io.dicom import read_dicom_series
    from diffrecon.io.results import read_results

    rng = np.random.default_rng(1)
    mean = [(1e-4 * rng.random((24, 20))).astype(np.float32) for _ in range(3)]
    slices = [
        SliceResult(m, 0.1 * m, 4, lower=0.8 * m, upper=1.3 * m, interval_level=0.9) for m in mean
    ]
    attrs = {"pixel_spacing_mm": [0.6875, 0.7], "slice_thickness_mm": 5.0, "interval_level": 0.9}
    h5 = write_results(tmp_path / "r.h5", VolumeResult(slices, [4, 5, 6], attrs))
    files = export_dicom(h5, tmp_path / "dcm", parametric_maps=True)
    res = read_results(h5)
    by = {f.parent.name: f for f in files}
    assert sorted(by) == ["lower", "mean", "std", "upper"]
    for name in ("std", "lower", "upper"):
        pm = pydicom.dcmread(by[name])
        assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
        assert int(pm.NumberOfFrames) == 3 and "FloatPixelData" in pm
        back, _ = read_dicom_series(by[name])
        np.testing.assert_array_equal(back, getattr(res, name))  # exact: float32 stored
    mean_series, _ = read_dicom_series(tmp_path / "dcm" / "mean")  # still an MR series
    np.testing.assert_allclose(mean_series, res.reconstruction, atol=2e-9)
    if shutil.which("dciodvfy") is None:
        if os.environ.get("DIFFRECON_REQUIRE_DCIODVFY"):
            pytest.fail("dciodvfy (Debian package dicom3tools) is required here")
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    for name in ("std", "lower"):
        run = subprocess.run(["dciodvfy", str(by[name])], capture_output=True, text=True)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line]
        assert not errors, f"{name}: {errors}"
