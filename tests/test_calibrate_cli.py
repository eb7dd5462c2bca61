"""`diffrecon calibrate` and calibrated intervals end to end on tiny files: the JSON, the
intervals in result files, DICOM and napari, and every refusal."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pydicom
import pytest

from diffrecon.calibration_run import diagram_path
from diffrecon.cli import CORRELATION_WARN, SCALE_WARN, main
from diffrecon.io.results import read_results

RUN = ["--sampler", "daps-fast", "--steps", "2", "--draws", "3", "--quiet"]


def _calibrate(tmp_path, kfile, bundle, *extra):
    out = tmp_path / "cal.json"
    args = ["calibrate", str(kfile), "-o", str(out), "--prior", str(bundle), *RUN]
    return main([*args, "--interval-level", "0.5", *extra]), out


def test_calibrate_then_reconstruct_with_calibrated_intervals(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    rc, cal_path = _calibrate(tmp_path, tiny_kspace_file, tiny_bundle)
    assert rc == 0, capsys.readouterr().err
    cap = capsys.readouterr()
    line = cap.out
    assert "2 slices" in line and "lambda" in line
    cal = json.loads(cal_path.read_text())
    # a large scale or a std that does not track the error is said (issue 28 #14)
    corr = cal["report"]["std_error_correlation"]["foreground"]
    weak = cal["lambda"] > SCALE_WARN or corr < CORRELATION_WARN
    assert ("the std says little about where the errors are" in cap.err) == weak
    assert cal["format"] == "diffrecon-calibration" and cal["level"] == 0.5
    assert cal["valid_for"]["draws"] == 3 and cal["valid_for"]["prior"] == "tiny"
    assert cal["calibration_slices"] == 2 and cal["lambda"] > 0
    rep = cal["report"]
    assert set(rep["gaussian"]["foreground"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert set(rep["quantile"]["foreground"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert diagram_path(cal_path).stat().st_size > 1000

    base = ["reconstruct", str(tiny_kspace_file), "--prior", str(tiny_bundle), *RUN]
    out = tmp_path / "rec"
    assert main([*base, "-o", str(out), "--calibration", str(cal_path)]) == 0
    res = read_results(out / "tiny.h5")
    assert res.calibrated and res.interval_level == 0.5
    assert res.lower.shape == res.reconstruction.shape == res.std_calibrated.shape
    assert (res.lower <= res.reconstruction).all() and (res.reconstruction <= res.upper).all()
    half = (res.upper - res.reconstruction)[res.lower > 0]
    assert np.all(half > 0)
    assert res.attrs["calibration_lambda"] == cal["lambda"]
    assert res.attrs["std_relative_mc_error"] == 1 / np.sqrt(4)

    # exported and read back with the interval bounds
    dcm = tmp_path / "dcm"
    assert main(["export-dicom", str(out / "tiny.h5"), str(dcm)]) == 0
    descriptions = {pydicom.dcmread(p).SeriesDescription for p in dcm.rglob("*.dcm")}
    assert "diffrecon 50% interval lower (calibrated)" in descriptions
    from diffrecon_napari import _io

    names = [kw["name"] for _, kw, _ in _io.get_reader(str(out / "tiny.h5"))(str(out / "tiny.h5"))]
    assert "lower 50% (calibrated) · tiny" in names and "upper 50% (calibrated) · tiny" in names

    # a calibration made for other settings is refused before any work, naming the mismatch
    other = tmp_path / "other"
    assert (
        main(
            [
                *base[:-5],
                "--draws",
                "4",
                "--steps",
                "2",
                "--sampler",
                "daps-fast",
                "-o",
                str(other),
                "--calibration",
                str(cal_path),
                "--quiet",
            ]
        )
        == 2
    )
    assert "draws is 4" in capsys.readouterr().err and not other.exists()


def test_uncalibrated_intervals_come_from_the_draws(tmp_path, tiny_kspace_file, tiny_bundle):
    out = tmp_path / "rec"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*args, *RUN, "--slices", "0", "--interval-level", "0.8"]) == 0
    res = read_results(out / "tiny.h5")
    assert not res.calibrated and res.interval_level == 0.8 and res.std_calibrated is None
    assert (res.lower <= res.upper).all()


def test_calibrate_refuses_what_cannot_give_a_truth(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    masked = tmp_path / "masked.h5"
    with h5py.File(tiny_kspace_file) as src, h5py.File(masked, "w") as f:
        for k in src:
            f.create_dataset(k, data=src[k][()])
        f.create_dataset("mask", data=np.ones(src["kspace"].shape[-1], bool))
    assert _calibrate(tmp_path, masked, tiny_bundle)[0] == 2
    assert "'mask' dataset" in capsys.readouterr().err
    zeroed = tmp_path / "zeroed.h5"
    with h5py.File(tiny_kspace_file) as src, h5py.File(zeroed, "w") as f:
        for k in src:
            data = src[k][()]
            if k == "kspace":
                data[..., ::3] = 0
            f.create_dataset(k, data=data)
    assert _calibrate(tmp_path, zeroed, tiny_bundle)[0] == 2
    assert "zero phase-encode columns" in capsys.readouterr().err
    rc, out = _calibrate(tmp_path, tiny_kspace_file, tiny_bundle, "--draws", "1")
    assert rc == 2 and "needs a std" in capsys.readouterr().err
    rc, out = _calibrate(tmp_path, tiny_kspace_file, tiny_bundle, "--level", "0.9")
    assert rc == 2 and "cannot guarantee 90%" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    args = [
        "reconstruct",
        str(tiny_kspace_file),
        "-o",
        str(tmp_path / "r"),
        "--prior",
        str(tiny_bundle),
        "--calibration",
        str(bad),
        *RUN,
    ]
    assert main(args) == 2 and "not a diffrecon-calibration" in capsys.readouterr().err


def test_a_fitted_score_calibrates_and_a_run_uses_its_features(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    rc, cal_path = _calibrate(tmp_path, tiny_kspace_file, tiny_bundle, "--score", "fitted")
    assert rc == 0, capsys.readouterr().err
    cal = json.loads(cal_path.read_text())
    weights = cal["score"]["weights"]
    assert set(weights) == {"within", "between", "l1_distance", "holdout_residual", "edge"}
    assert cal["calibration_slices"] == 1  # the weights took the other slice
    base = ["reconstruct", str(tiny_kspace_file), "--prior", str(tiny_bundle), *RUN]
    out = tmp_path / "rec"
    assert main([*base, "-o", str(out), "--calibration", str(cal_path)]) == 0
    res = read_results(out / "tiny.h5")
    assert res.calibrated and res.l1_image is not None and res.holdout_residual is not None
    from diffrecon.uncertainty.conformal import Calibration
    from diffrecon.uncertainty.score import score_features

    c = Calibration.from_dict(cal)
    feats = score_features(
        res.reconstruction[0], res.std[0], None, None, res.l1_image[0], res.holdout_residual[0]
    )
    lo, hi = c.interval(res.reconstruction[0], res.std[0], feats)
    assert np.allclose(res.lower[0], lo, rtol=1e-5, atol=1e-7)
    assert np.allclose(res.upper[0], hi, rtol=1e-5, atol=1e-7)
    # a score that needs the hold-out maps is refused for a run without them
    assert (
        main([*base, "-o", str(tmp_path / "x"), "--calibration", str(cal_path), "--no-holdout"])
        == 2
    )
    assert "hold-out" in capsys.readouterr().err


def test_calibrate_on_dask_workers_fits_what_the_in_process_run_fits(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    """``calibrate --workers`` reconstructs the slices on the batch path and fits the same
    calibration; its scratch folder is gone afterwards (issue 28 #14). Without --quiet each
    slice is named in the log (no bar: stderr is not a terminal)."""
    rc, here = _calibrate(tmp_path, tiny_kspace_file, tiny_bundle)
    assert rc == 0
    capsys.readouterr()
    (tmp_path / "dask").mkdir()
    out = tmp_path / "dask" / "cal.json"
    loud = [a for a in RUN if a != "--quiet"]
    args = ["calibrate", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*args, *loud, "--interval-level", "0.5", "--workers", "1"]) == 0
    log = capsys.readouterr().out
    assert "tiny.h5 slice 0" in log and "tiny.h5 slice 1" in log
    a, b = json.loads(here.read_text()), json.loads(out.read_text())
    assert a["calibration_slices"] == b["calibration_slices"] == 2
    assert b["lambda"] == pytest.approx(a["lambda"], rel=1e-3)  # Dask's rounding (docs)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cal.json", diagram_path(out).name]
    assert main([*args, *RUN, "--workers", "0", "--overwrite"]) == 2
