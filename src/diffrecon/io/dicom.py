"""DICOM: export of result files (one MR Image series per map: mean, std, intervals, draws;
``DERIVED\\SECONDARY``) and reading a series back.

Pixels are uint16 with ``RescaleSlope``/``RescaleIntercept`` so a viewer shows the stored
float values (within half a quantisation step). Study/series/instance UIDs are consistent
(one study per export, one series per map, one instance per slice or draw); patient and
study fields are copied from a reference DICOM when one is given. With ``parametric_maps``
the std, interval and spread maps are DICOM Parametric Maps instead (float32, through
highdicom), derived from the mean's MR images.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from diffrecon._version import __version__
from diffrecon.io.atomic import OutputExistsError, atomic_folder, refuse_overwriting_inputs
from diffrecon.io.geometry import Geometry, geometry
from diffrecon.io.results import read_results

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
COPIED_FIELDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "FrameOfReferenceUID",
    "PatientPosition",
)


def quantise(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(uint16 pixels, slope, intercept)`` with ``pixels * slope + intercept ~ img``."""
    lo, hi = float(np.min(img)), float(np.max(img))
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    pix = np.clip(np.round((img - lo) / slope), 0, 65535).astype(np.uint16)
    return pix, slope, lo


def window(vol: np.ndarray, from_zero: bool) -> tuple[float, float]:
    """``(centre, width)`` of a display window over the volume: the 0.5th to 99.5th
    percentile (from 0 for maps that start at 0, such as the std), never of zero width."""
    hi = float(np.percentile(vol, 99.5))
    lo = 0.0 if from_zero else float(np.percentile(vol, 0.5))
    width = max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    return lo + width / 2, width


def _dataset(
    img: np.ndarray,
    series_uid: str,
    study: dict,
    series_number: int,
    instance: int,
    description: str,
    geo: Geometry | None = None,
    slice_index: int = 0,
    win: tuple[float, float] | None = None,
):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    now = dt.datetime.now()
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in study.items():
        if key != "PatientPosition":
            setattr(ds, key, value)
    ds.Modality = "MR"
    # MR Image module: a derived research reconstruction, acquisition details unknown here
    ds.ScanningSequence = "RM"  # research mode
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = ""
    ds.EchoTime = ""
    ds.EchoTrainLength = ""
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = study.get("PatientPosition", "")  # type 2C: the reference's, or empty
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Manufacturer = "diffrecon"
    ds.SoftwareVersions = __version__
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    ds.PatientOrientation = ""  # type 2 in the General Image module: present, may be empty
    ds.Laterality = ""  # type 2C in General Series: present, empty (not a paired organ known)
    geo = geo or Geometry()
    ds.PixelSpacing = [f"{v:.6g}" for v in geo.pixel_spacing]
    ds.SliceThickness = f"{geo.thickness:.6g}"
    ds.ImageOrientationPatient = [f"{v:.6g}" for v in geo.orientation]
    ds.ImagePositionPatient = [f"{v:.6g}" for v in geo.position(slice_index)]
    if win is not None:
        ds.WindowCenter, ds.WindowWidth = f"{win[0]:.6g}", f"{win[1]:.6g}"
        ds.WindowCenterWidthExplanation = "0.5-99.5 percentile of the series"
        ds.VOILUTFunction = "LINEAR_EXACT"  # file units are often far below 1
    pix, slope, intercept = quantise(img)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pix.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:.10g}"
    ds.RescaleIntercept = f"{intercept:.10g}"
    ds.RescaleType = "US"
    ds.PixelData = pix.tobytes()
    return ds


# the maps that --parametric-maps writes as Parametric Map objects (the mean and the draws
# stay MR images: they are images, and the maps reference them as their source)
PARAMETRIC = ("std", "lower", "upper", "std_calibrated", "std_between")
# UCUM's arbitrary unit: the maps are in the reconstruction's own intensity units
ARBITRARY_UNIT = ("[arb'U]", "UCUM", "arbitrary unit")


def _parametric_map(
    sources: list[Any], vol: np.ndarray, name: str, description: str, number: int
) -> Any:
    """One Parametric Map (a multi-frame float32 object, one frame per slice) of ``vol``
    ``(slices, H, W)``, derived from the mean's MR images ``sources`` (their geometry,
    patient and study), through highdicom."""
    import highdicom as hd

    vol = np.asarray(vol, dtype=np.float32)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=name[:16],
        lut_explanation=description[:64],
        unit=hd.sr.CodedConcept(*ARBITRARY_UNIT),
        value_range=(float(vol.min()), float(vol.max())),
        slope=1.0,
        intercept=0.0,
    )
    centre, width = window(vol, from_zero=name.startswith("std"))
    voi = hd.VOILUTTransformation(
        window_center=centre, window_width=width, voi_lut_function="LINEAR_EXACT"
    )
    pm = hd.pm.ParametricMap(
        sources,
        vol,
        hd.UID(),
        number,
        hd.UID(),
        1,
        manufacturer="diffrecon",
        manufacturer_model_name="diffrecon",
        software_versions=__version__,
        device_serial_number="none",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[voi],
        content_label=name.upper()[:16],
        content_description=description[:64],
    )
    pm.SeriesDescription = description
    pm.Laterality = ""  # type 2C in General Series, as in the MR images
    return pm


def export_dicom(
    result_h5: str | Path,
    out_dir: str | Path,
    reference: str | Path | None = None,
    include_draws: bool = False,
    overwrite: bool = False,
    parametric_maps: bool = False,
) -> list[Path]:
    """Write the mean, std, the interval bounds when the file has them (and optionally the
    draws) of a result file as DICOM series, one folder each; non-finite maps are refused
    before writing. Each series is built in a fresh temporary folder and swapped into place
    whole, so an interrupted export leaves no half series and an earlier export's files are
    never mixed in; existing series folders are refused unless ``overwrite``.

    ``parametric_maps``: the std, interval bounds and spreads (:data:`PARAMETRIC`) as one
    Parametric Map each (``<map>/0001.dcm``, float32 frames with a real-world value mapping,
    the object the standard has for a per-pixel quantity; needs ``highdicom``), derived
    from the mean's MR images; by default every map is an MR image series with rescale,
    which every viewer shows."""
    import pydicom
    from pydicom.uid import generate_uid

    if parametric_maps:
        try:
            import highdicom  # noqa: F401
        except ImportError as err:
            raise ValueError(
                "--parametric-maps needs highdicom: pip install highdicom (or the [dicom] extra)"
            ) from err

    res = read_results(result_h5)
    if res.reconstruction.shape[0] == 0:
        raise ValueError(f"{result_h5} holds no slices: nothing to export")
    out = Path(out_dir)
    study: dict = {
        "PatientName": "Anonymous^",
        "PatientID": str(res.attrs.get("patient_id", "")),
        "StudyInstanceUID": generate_uid(),
        "StudyID": "1",
        "StudyDate": dt.date.today().strftime("%Y%m%d"),
        "StudyTime": "000000",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "PatientBirthDate": "",
        "PatientSex": "",
    }
    ref = None
    if reference is not None:
        ref = pydicom.dcmread(str(reference), stop_before_pixels=True)
        for key in COPIED_FIELDS:
            if key in ref:
                study[key] = ref.data_element(key).value
    study.setdefault("FrameOfReferenceUID", generate_uid())
    geo = geometry(res.attrs, ref)
    indices = [int(i) for i in res.slice_indices]
    series = [
        ("mean", res.reconstruction, "diffrecon posterior mean |x|"),
        ("std", res.std, "diffrecon posterior std of |x|"),
    ]
    if res.lower is not None and res.upper is not None:
        kind = "calibrated" if res.calibrated else "uncalibrated"
        level = f"{res.interval_level:.0%}" if res.interval_level is not None else ""
        series.append(("lower", res.lower, f"diffrecon {level} interval lower ({kind})"))
        series.append(("upper", res.upper, f"diffrecon {level} interval upper ({kind})"))
    if res.std_calibrated is not None:
        series.append(("std_calibrated", res.std_calibrated, "diffrecon calibrated std of |x|"))
    if res.std_between is not None:
        series.append(("std_between", res.std_between, "diffrecon between-prior spread of |x|"))
    if include_draws:
        if res.draws is None:
            raise ValueError(f"{result_h5} holds no draws: reconstruct with --save-draws")
        for d in range(res.draws.shape[1]):
            series.append((f"draw{d:03d}", res.draws[:, d], f"diffrecon posterior draw {d}"))
    for name, vol, _ in series:
        if not np.isfinite(vol).all():
            raise ValueError(f"{result_h5}: the {name} map holds NaN or inf; nothing was written")
    refuse_overwriting_inputs([out, *(out / name for name, _, _ in series)], [result_h5, reference])
    if not overwrite:
        for name, _, _ in series:
            if (out / name).exists():
                raise OutputExistsError(f"{out / name} exists: pass --overwrite to replace it")
    written: list[Path] = []
    mean_images: list[Any] = []  # the sources of the parametric maps
    for number, (name, vol, description) in enumerate(series, start=1):
        series_uid = generate_uid()
        win = window(np.asarray(vol), from_zero=name.startswith("std"))
        with atomic_folder(out / name, overwrite=overwrite) as tmp:
            if parametric_maps and name in PARAMETRIC:
                pm = _parametric_map(mean_images, np.asarray(vol), name, description, number)
                pm.save_as(str(tmp / "0001.dcm"), enforce_file_format=True)
                written.append(out / name / "0001.dcm")
                continue
            for i, img in enumerate(vol):
                ds = _dataset(
                    np.asarray(img, dtype=np.float64),
                    series_uid,
                    study,
                    number,
                    i + 1,
                    description,
                    geo,
                    indices[i],
                    win,
                )
                ds.save_as(str(tmp / f"{i + 1:04d}.dcm"), enforce_file_format=True)
                if name == "mean":
                    mean_images.append(ds)
        written.extend(out / name / f"{i + 1:04d}.dcm" for i in range(len(vol)))
    return written


def is_dicom(path: str | Path) -> bool:
    """A ``.dcm`` file, or a folder holding some."""
    p = Path(path)
    if p.is_dir():
        return any(q.suffix.lower() == ".dcm" for q in p.iterdir())
    return p.suffix.lower() == ".dcm" and p.is_file()


def read_dicom_series(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """A DICOM series (a folder of ``.dcm`` files, or one file and the files of its series
    beside it) stacked by InstanceNumber in rescaled units, and a little metadata."""
    import pydicom

    p = Path(path)
    files = sorted(p.glob("*.dcm")) if p.is_dir() else [p]
    if not p.is_dir():
        series = getattr(pydicom.dcmread(p, stop_before_pixels=True), "SeriesInstanceUID", None)
        if series is not None:  # the files of its series beside it; else the file alone
            files = [
                q
                for q in sorted(p.parent.glob("*.dcm"))
                if getattr(pydicom.dcmread(q, stop_before_pixels=True), "SeriesInstanceUID", None)
                == series
            ]
    if not files:
        raise ValueError(f"{p}: no .dcm files")
    dss = [pydicom.dcmread(q) for q in files]
    # InstanceNumber orders the slices when every file has one; else the file names do
    if all(getattr(d, "InstanceNumber", None) not in (None, "") for d in dss):
        dss.sort(key=lambda d: int(d.InstanceNumber))
    planes = [plane for d in dss for plane in _planes(d)]
    shapes = {pl.shape for pl in planes}
    if len(shapes) > 1:
        raise ValueError(f"{p}: the series mixes image sizes {sorted(shapes)}")
    first = dss[0]
    meta = {
        "path": str(p),
        "SeriesDescription": str(getattr(first, "SeriesDescription", "")),
        "SeriesInstanceUID": str(getattr(first, "SeriesInstanceUID", "")),
        "instances": len(dss),
    }
    return np.stack(planes), meta


def _planes(ds: Any) -> list[np.ndarray]:
    """A dataset's images in real units: one plane (rescaled), or the frames of a
    multi-frame object (a Parametric Map) in slice order (ascending along the slice normal)
    through its real-world value mapping or pixel value transformation."""
    pix = ds.pixel_array.astype(np.float32)
    if int(getattr(ds, "NumberOfFrames", 1) or 1) == 1:
        return [
            pix * float(getattr(ds, "RescaleSlope", 1.0))
            + float(getattr(ds, "RescaleIntercept", 0.0))
        ]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else {}
    slope, intercept = 1.0, 0.0
    for seq, s_key, i_key in (
        ("RealWorldValueMappingSequence", "RealWorldValueSlope", "RealWorldValueIntercept"),
        ("PixelValueTransformationSequence", "RescaleSlope", "RescaleIntercept"),
    ):
        if seq in shared:
            item = shared[seq].value[0]
            slope, intercept = float(item.get(s_key, 1.0)), float(item.get(i_key, 0.0))
            break
    frames = list(pix * slope + intercept)
    try:
        rows_cols = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        normal = np.cross(rows_cols[:3], rows_cols[3:])
        pos = [
            float(
                np.dot(np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float), normal)
            )
            for f in ds.PerFrameFunctionalGroupsSequence
        ]
    except (AttributeError, IndexError, KeyError):
        return frames  # no geometry: the stored frame order
    return [frames[i] for i in np.argsort(pos, kind="stable")]
