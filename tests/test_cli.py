"""The command line end to end on a tiny simulated file; every bad input exits 2, writes
nothing."""

from __future__ import annotations

import h5py
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from diffrecon.cli import main
from diffrecon.io.dicom import quantise
from diffrecon.io.results import read_results

FAST = ["--steps", "3", "--draws", "2", "--quiet"]


def test_reconstruct_end_to_end(tmp_path, tiny_kspace_file, tiny_bundle, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "reconstruct",
            str(tiny_kspace_file),
            "-o",
            str(out),
            "--prior",
            str(tiny_bundle),
            "--slices",
            "1",
            "--save-draws",
            "--quantiles",
            "0.1,0.9",
            *FAST,
        ]
    )
    assert rc == 0
    line = capsys.readouterr().out
    assert "tiny.h5: 1 slice(s)" in line and "PSNR" in line and "zero-filled" in line
    res = read_results(out / "tiny.h5")
    assert res.reconstruction.shape == (1, 40, 32) and res.std.shape == (1, 40, 32)
    assert res.draws.shape == (1, 2, 40, 32) and res.quantiles.shape == (1, 2, 40, 32)
    assert res.attrs["prior"] == "tiny" and res.attrs["seed"] == 0
    assert np.isfinite(res.reconstruction).all() and (res.std >= 0).all()
    # a second run refuses to overwrite, then overwrites when asked
    again = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*again, *FAST]) == 2
    assert "exists" in capsys.readouterr().err
    assert main([*again, "--overwrite", "--slices", "0", *FAST]) == 0


def _bad_files(tmp_path, good):
    (tmp_path / "text.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "nokspace.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((2, 4, 4)))
    with h5py.File(tmp_path / "rank.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))
    with h5py.File(good) as src, h5py.File(tmp_path / "nan.h5", "w") as f:
        k = src["kspace"][()]
        k[0, 0, 0, 0] = np.nan
        f.create_dataset("kspace", data=k)
    return tmp_path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "no such file"),
        ("text", "not an HDF5 file"),
        ("nokspace", "no 'kspace' dataset"),
        ("rank", "kspace must be"),
        ("nan", "NaN"),
        ("sampler", "unknown sampler"),
        ("accel", "impossible"),
        ("adapt", "unknown adaptation setting"),
        ("adapt-holdout", "--adapt needs the hold-out check"),
        ("priors-one", "--priors needs two priors or more"),
        ("priors-twice", "give the priors once"),
        ("priors-draws", "needs --draws 4 or more"),
    ],
)
def test_bad_input_exit_2_and_nothing_written(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys, case, message
):
    d = _bad_files(
        tmp_path / "in" if (tmp_path / "in").mkdir() is None else tmp_path, tiny_kspace_file
    )
    path = {
        "missing": d / "missing.h5",
        "text": d / "text.h5",
        "nokspace": d / "nokspace.h5",
        "rank": d / "rank.h5",
        "nan": d / "nan.h5",
    }.get(case, tiny_kspace_file)
    extra = {
        "sampler": ["--sampler", "magic"],
        "accel": ["--accel", "30"],
        "adapt": ["--adapt", "ranks=3"],
        "adapt-holdout": ["--adapt", "--no-holdout"],
        "priors-one": ["--priors", str(tiny_bundle)],
        "priors-twice": ["--priors", "brain-mri-default,mri-synth"],
        "priors-draws": ["--priors", f"{tiny_bundle},adapted", "--draws", "3"],
    }.get(case, [])
    out = tmp_path / "out"
    rc = main(
        ["reconstruct", str(path), "-o", str(out), "--prior", str(tiny_bundle), *FAST, *extra]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_unknown_prior_is_bad_input(tmp_path, tiny_kspace_file, capsys):
    assert (
        main(
            [
                "reconstruct",
                str(tiny_kspace_file),
                "-o",
                str(tmp_path / "o"),
                "--prior",
                "no-such-prior",
                *FAST,
            ]
        )
        == 2
    )
    assert "no prior bundle" in capsys.readouterr().err


def test_info(tiny_kspace_file, capsys):
    assert main(["info", str(tiny_kspace_file)]) == 0
    out = capsys.readouterr().out
    assert "kspace" in out and "multicoil: 2 slices" in out and "acquired columns" in out


def test_export_dicom_round_trip(tmp_path, tiny_kspace_file, tiny_bundle):
    out = tmp_path / "out"
    assert (
        main(
            [
                "reconstruct",
                str(tiny_kspace_file),
                "-o",
                str(out),
                "--prior",
                str(tiny_bundle),
                "--save-draws",
                *FAST,
            ]
        )
        == 0
    )
    ref = get_testdata_file("MR_small.dcm")
    dcm_dir = tmp_path / "dicom"
    assert (
        main(["export-dicom", str(out / "tiny.h5"), str(dcm_dir), "--reference", ref, "--draws"])
        == 0
    )
    res = read_results(out / "tiny.h5")
    ref_ds = pydicom.dcmread(ref)
    series_uids, study_uids = set(), set()
    for name, vol in (("mean", res.reconstruction), ("std", res.std), ("draw001", res.draws[:, 1])):
        files = sorted((dcm_dir / name).glob("*.dcm"))
        assert len(files) == vol.shape[0]
        for i, fpath in enumerate(files):
            ds = pydicom.dcmread(fpath)
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.InstanceNumber == i + 1
            assert ds.PatientID == ref_ds.PatientID and ds.PatientName == ref_ds.PatientName
            values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            step = float(ds.RescaleSlope)
            assert np.abs(values - vol[i]).max() <= 0.5 * step + 1e-6 * abs(vol[i]).max()
            series_uids.add((name, ds.SeriesInstanceUID))
            study_uids.add(ds.StudyInstanceUID)
    assert len(study_uids) == 1 and study_uids == {ref_ds.StudyInstanceUID}
    assert len({uid for _, uid in series_uids}) == 3


def test_quantise_constant_image():
    pix, slope, intercept = quantise(np.full((3, 3), 2.5))
    assert pix.max() == 0 and intercept == 2.5 and slope == 1.0


def test_summary_line_reports_fastmri_volume_metrics(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    """The printed PSNR/SSIM/NMSE are evaluate.py's for the slices as one volume (data range
    the target volume's max, both cropped to the target's square), recomputed here from the
    result file and the target."""
    import re

    from diffrecon import metrics
    from diffrecon.mri.transforms import evaluation_view

    out = tmp_path / "out"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*args, "--steps", "3", "--draws", "2"]) == 0
    line = capsys.readouterr().out
    res = read_results(out / "tiny.h5")
    with h5py.File(tiny_kspace_file) as f:
        target = f["reconstruction_rss"][()][res.slice_indices]
    target, recon = evaluation_view(target, res.reconstruction)
    want = metrics.evaluate(target, recon)
    got = re.search(r"volume PSNR ([\d.]+) dB SSIM ([\d.]+) NMSE ([\d.]+)", line)
    assert got is not None, line
    assert float(got.group(1)) == pytest.approx(want["psnr"], abs=0.006)
    assert float(got.group(2)) == pytest.approx(want["ssim"], abs=6e-5)
    assert float(got.group(3)) == pytest.approx(want["nmse"], abs=6e-5)
    # per-slice averages would differ: the volume's data range is not each slice's
    per_slice = np.mean([metrics.psnr(t, r) for t, r in zip(target, recon, strict=True)])
    assert abs(per_slice - want["psnr"]) > 1e-3


def test_one_file_takes_the_batch_path(tmp_path, tiny_kspace_file, tiny_bundle, monkeypatch):
    """One input goes through diffrecon.batch like many (in-process): parts merged by the
    result files' one writer, a manifest, nothing hidden left behind."""
    import diffrecon.batch as batch

    calls = []
    real = batch.reconstruct_files

    def spy(*a, **k):
        calls.append(k.get("workers"))
        return real(*a, **k)

    monkeypatch.setattr(batch, "reconstruct_files", spy)
    out = tmp_path / "o"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*args, "--slices", "1", *FAST]) == 0
    assert calls == [None] and (out / "manifest.csv").exists()
    res = read_results(out / "tiny.h5")
    assert res.zero_filled.shape == res.reconstruction.shape and (res.zero_filled > 0).any()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # the subset is stored at the file's slice count, as evaluate.py reads volumes (#12)
    with h5py.File(out / "tiny.h5", "r") as f, h5py.File(tiny_kspace_file, "r") as k:
        assert f["reconstruction"].shape[0] == k["kspace"].shape[0] == f.attrs["input_slices"]
        assert np.isnan(f["reconstruction"][0]).all() and res.slice_indices.tolist() == [1]


def test_help_is_plain_text_and_states_the_presets_own_levels(capsys):
    """No reStructuredText markup in any help; --steps says what daps-mri really runs
    (issue 28 #15)."""
    from diffrecon.samplers.registry import PRESETS

    for cmd in ([], ["reconstruct"], ["calibrate"], ["evaluate"], ["demo"], ["train-prior"]):
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        out = capsys.readouterr().out
        assert "``" not in out, cmd
        if cmd == ["reconstruct"]:
            levels = PRESETS["daps-mri"]["steps"]
            assert f"daps-mri: {levels} levels" in " ".join(out.split())
    # every argument of every command says what it is (the formatter adds its default)
    import argparse

    from diffrecon.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        for action in parser._actions:
            assert action.help, (name, action.dest)


def test_escape_sequences_in_a_file_name_do_not_reach_the_terminal(tmp_path, capsys):
    """A file name carrying ESC or CR is shown escaped in errors (issue 28 #8e)."""
    evil = tmp_path / "a\x1b[2Jb\rc.h5"
    evil.write_bytes(b"not hdf5")
    assert main(["reconstruct", str(evil), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "\\x1b[2Jb\\rc.h5" in err


def test_progress_bars_stay_out_of_a_redirected_log(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    """stderr is not a terminal here (captured): no bar, so no carriage returns in a log
    (issue 28 #15); the summary line is still printed."""
    out = tmp_path / "o"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*args, "--slices", "1", "--steps", "2", "--draws", "2", "--no-holdout"]) == 0
    cap = capsys.readouterr()
    assert "\r" not in cap.err and "step/s" not in cap.err and "tiny.h5: 1 slice(s)" in cap.out


def test_reconstruct_with_two_priors_writes_their_spread(tmp_path, tiny_kspace_file, tiny_bundle):
    out = tmp_path / "out"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--slices", "1"]
    rc = main([*args, "--priors", f"{tiny_bundle},{tiny_bundle}", "--steps", "2", "--draws", "4"])
    assert rc == 0
    res = read_results(out / "tiny.h5")
    assert res.std_between.shape == res.std_within.shape == res.reconstruction.shape
    assert res.record.priors == ["tiny", "tiny"] and res.record.draws == 4
    assert res.l1_image is not None and res.holdout_residual is not None
