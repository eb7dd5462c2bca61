"""Batch reconstruction (diffrecon.batch): inputs, one task per slice in-process or on Dask,
bit-identical results, resume after an interruption, failures reported per file."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from diffrecon.batch import collect_inputs, reconstruct_files
from diffrecon.cli import main
from diffrecon.data.simulate import simulate_fastmri
from diffrecon.io.results import read_results


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    for i in range(2):
        simulate_fastmri(d / "in" / f"f{i}.h5", slices=(100, 104), size=(40, 32), coils=4, seed=i)
    return d / "in"


def _settings(bundle):
    return dict(prior=str(bundle), sampler="daps-fast", overrides={"steps": 2}, draws=2, seed=0)


def test_inputs_from_files_folders_and_lists(tmp_path, folder):
    (folder / "sub").mkdir(exist_ok=True)
    lst = tmp_path / "list.txt"
    lst.write_text(f"# validation\n{folder / 'f0.h5'}\n\n")
    assert [p.name for p in collect_inputs([folder])] == ["f0.h5", "f1.h5"]
    assert collect_inputs([lst]) == [folder / "f0.h5"]
    with pytest.raises(ValueError, match="same name"):
        collect_inputs([folder, lst])
    with pytest.raises(ValueError, match="no .h5 files"):
        collect_inputs([folder / "sub"])


def test_local_cluster_equals_the_in_process_run(tmp_path, folder, tiny_bundle):
    local = reconstruct_files([folder], tmp_path / "a", **_settings(tiny_bundle))
    dask = reconstruct_files([folder], tmp_path / "b", workers=2, **_settings(tiny_bundle))
    assert [r["status"] for r in local] == [r["status"] for r in dask] == ["done", "done"]
    for name in ("f0.h5", "f1.h5"):
        a, b = read_results(tmp_path / "a" / name), read_results(tmp_path / "b" / name)
        assert np.array_equal(a.reconstruction, b.reconstruction)
        assert np.array_equal(a.std, b.std) and a.slice_indices.tolist() == [0, 1]
        assert len(json.loads(a.attrs["data_residual"])) == 2
    rows = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert {r["status"] for r in rows} == {"done"} and rows[0]["psnr"] > 0
    assert (tmp_path / "a" / "manifest.csv").read_text().startswith("input,output,status")
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]


def test_resume_redoes_only_the_missing_slices(tmp_path, folder, tiny_bundle):
    out = tmp_path / "out"
    seen = []

    def interrupt(name, idx, figures, error):
        seen.append((name, idx))
        raise KeyboardInterrupt  # killed after the first persisted slice

    with pytest.raises(KeyboardInterrupt):
        reconstruct_files([folder / "f0.h5"], out, on_slice=interrupt, **_settings(tiny_bundle))
    assert (out / ".f0.h5.parts" / "slice0000.h5").exists() and not (out / "f0.h5").exists()
    with pytest.raises(ValueError, match="exists"):  # a finished output is not redone
        reconstruct_files([folder / "f0.h5"], tmp_path / "x", **_settings(tiny_bundle))
        reconstruct_files([folder / "f0.h5"], tmp_path / "x", **_settings(tiny_bundle))
    again = []
    rows = reconstruct_files(
        [folder / "f0.h5"],
        out,
        resume=True,
        on_slice=lambda n, i, f, e: again.append(i),
        **_settings(tiny_bundle),
    )
    assert again == [1] and rows[0]["status"] == "done"
    fresh = reconstruct_files([folder / "f0.h5"], tmp_path / "fresh", **_settings(tiny_bundle))
    assert fresh[0]["status"] == "done"
    np.testing.assert_array_equal(
        read_results(out / "f0.h5").reconstruction,
        read_results(tmp_path / "fresh" / "f0.h5").reconstruction,
    )
    skipped = reconstruct_files([folder / "f0.h5"], out, resume=True, **_settings(tiny_bundle))
    assert skipped[0]["status"] == "skipped (done)"
    # a truncated output is not "done": --resume redoes it (issue 28 #8c)
    data = (out / "f0.h5").read_bytes()
    (out / "f0.h5").write_bytes(data[: len(data) // 3])
    redone = reconstruct_files([folder / "f0.h5"], out, resume=True, **_settings(tiny_bundle))
    assert redone[0]["status"] == "done"
    np.testing.assert_array_equal(
        read_results(out / "f0.h5").reconstruction,
        read_results(tmp_path / "fresh" / "f0.h5").reconstruction,
    )


def test_volume_adaptation_runs_once_per_file_and_a_resume_reuses_it(
    tmp_path, folder, tiny_bundle, adaptations
):
    """``--adapt scope=volume`` in a batch: the prior is adapted once per file (kept in its
    parts folder), a resumed run reuses that adaptation, and the result equals the
    uninterrupted run's."""
    from diffrecon.adapt import AdaptSettings, SharedAdaptation

    calls = adaptations
    settings = {**_settings(tiny_bundle), "adapt": AdaptSettings(levels=2, steps=1, scope="volume")}
    full = reconstruct_files([folder / "f0.h5"], tmp_path / "full", **settings)
    assert full[0]["status"] == "done" and len(calls) == 1
    out = tmp_path / "out"

    def interrupt(name, idx, figures, error):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_files([folder / "f0.h5"], out, on_slice=interrupt, **settings)
    saved = out / ".f0.h5.parts" / "adaptation.pt"
    assert len(calls) == 2 and saved.exists()
    kept = SharedAdaptation.load(saved)
    rows = reconstruct_files([folder / "f0.h5"], out, resume=True, **settings)
    assert rows[0]["status"] == "done" and len(calls) == 2  # not adapted again
    # one saved with other settings (a run stopped before its first slice) is not reused
    stale = tmp_path / "stale" / ".f0.h5.parts" / "adaptation.pt"
    dataclasses.replace(kept, key="other settings").save(stale)
    with pytest.raises(KeyboardInterrupt):  # stopped after its first slice, the new one kept
        reconstruct_files(
            [folder / "f0.h5"], tmp_path / "stale", resume=True, on_slice=interrupt, **settings
        )
    assert len(calls) == 3 and SharedAdaptation.load(stale).key == kept.key
    np.testing.assert_array_equal(
        read_results(out / "f0.h5").reconstruction,
        read_results(tmp_path / "full" / "f0.h5").reconstruction,
    )
    reasons = json.loads(read_results(out / "f0.h5").attrs["holdout_adapt_reason"])
    assert all(r.startswith("shared by the volume: adapted once on slice 1") for r in reasons)
    # a finished file is not extended nor cut by a resume with another selection: refused
    with pytest.raises(ValueError, match=r"holds slices \[0, 1\] and this run selects \[0\]"):
        reconstruct_files([folder / "f0.h5"], out, resume=True, **settings, slices="0")
    # a resume that changes the selection keeps the volume's one adaptation (fitted on the
    # first run's middle slice), so the volume is not drawn under two priors
    simulate_fastmri(tmp_path / "three" / "v.h5", slices=(100, 104, 108), size=(40, 32), coils=4)
    vol, part = tmp_path / "three" / "v.h5", tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        reconstruct_files([vol], part, on_slice=interrupt, **settings)
    assert len(calls) == 4
    assert SharedAdaptation.load(part / ".v.h5.parts" / "adaptation.pt").slice == 1
    rows = reconstruct_files([vol], part, resume=True, **settings, slices="1,2")
    assert rows[0]["status"] == "done" and len(calls) == 4  # middle now 2: not adapted again
    reasons = json.loads(read_results(part / "v.h5").attrs["holdout_adapt_reason"])
    assert len(reasons) == 2
    assert all(r.startswith("shared by the volume: adapted once on slice 1") for r in reasons)


def test_a_truncated_part_is_redone_and_a_full_disk_fails_one_file(
    tmp_path, folder, tiny_bundle, monkeypatch
):
    """A part left truncated (a killed writer) is redone on --resume, not a raw HDF5 error;
    an error while writing a file's output fails that file, and the manifest is written
    (issue 28 #8c)."""
    import diffrecon.batch as batch

    out = tmp_path / "out"
    first = reconstruct_files([folder / "f0.h5"], out, **_settings(tiny_bundle))
    part = out / ".f0.h5.parts" / "slice0000.h5"
    part.parent.mkdir()
    part.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    (out / "f0.h5").unlink()
    rows = reconstruct_files([folder / "f0.h5"], out, resume=True, **_settings(tiny_bundle))
    assert rows[0]["status"] == "done" and first[0]["status"] == "done"

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(batch, "merge_parts", full_disk)
    files = [folder / "f0.h5", folder / "f1.h5"]
    rows = reconstruct_files(files, tmp_path / "o2", **_settings(tiny_bundle))
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["error"] == "writing f0.h5: No space left on device"
    assert (tmp_path / "o2" / "manifest.csv").exists()


def test_a_bad_file_and_a_failing_slice_do_not_stop_the_batch(
    tmp_path, folder, tiny_bundle, monkeypatch, capsys
):
    import diffrecon.batch as batch

    bad = tmp_path / "in" / "bad.h5"
    bad.parent.mkdir()
    bad.write_bytes(b"not hdf5")
    out = tmp_path / "out"
    args = ["reconstruct", str(folder), str(bad), "-o", str(out), "--prior", str(tiny_bundle)]
    run = ["--steps", "2", "--draws", "2", "--sampler", "daps-fast", "--quiet"]
    assert main([*args, *run]) == 1
    err = capsys.readouterr().err
    assert "bad.h5: refused: " in err and "not an HDF5 file" in err
    assert read_results(out / "f0.h5").reconstruction.shape[0] == 2
    assert read_results(out / "f1.h5").reconstruction.shape[0] == 2
    rows = {r["input"].split("/")[-1]: r for r in json.loads((out / "manifest.json").read_text())}
    assert rows["bad.h5"]["status"] == "refused" and rows["f0.h5"]["status"] == "done"

    real = batch.run_slice_task
    calls = []

    def flaky(path, settings, index, part):
        calls.append(index)
        if path.endswith("f1.h5") and index == 1:
            raise RuntimeError("worker lost")
        return real(path, settings, index, part)

    monkeypatch.setattr(batch, "run_slice_task", flaky)
    rows = reconstruct_files([folder], tmp_path / "o2", retries=1, **_settings(tiny_bundle))
    by = {r["input"].split("/")[-1]: r for r in rows}
    assert by["f0.h5"]["status"] == "done"
    assert by["f1.h5"]["status"] == "failed" and "worker lost" in by["f1.h5"]["error"]
    assert calls.count(1) == 3  # f0's slice 1 once, f1's slice 1 twice (one retry)
    assert (tmp_path / "o2" / ".f1.h5.parts" / "slice0000.h5").exists()  # kept for --resume


def test_the_cli_uses_a_running_scheduler(tmp_path, folder, tiny_bundle, capsys):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        out = tmp_path / "out"
        args = ["reconstruct", str(folder / "f1.h5"), "-o", str(out), "--prior", str(tiny_bundle)]
        run = ["--steps", "2", "--draws", "2", "--sampler", "daps-fast", "--quiet"]
        assert main([*args, *run, "--scheduler", cluster.scheduler_address]) == 0
    assert "1 of 1 inputs done" in capsys.readouterr().out
    assert read_results(out / "f1.h5").reconstruction.shape[0] == 2


def test_a_calibration_for_another_prior_is_refused_before_work(tmp_path, folder, tiny_bundle):
    from diffrecon.uncertainty.conformal import Calibration

    cal = Calibration(0.9, 1.5, {"prior": "someone-elses-prior"}, 2, 100, "0")
    with pytest.raises(ValueError, match="prior is 'tiny' but the calibration was made with"):
        reconstruct_files([folder], tmp_path / "o", calibration=cal, **_settings(tiny_bundle))
    assert not (tmp_path / "o").exists()


def test_resume_after_the_process_is_killed(tmp_path, folder, tiny_bundle):
    """A real kill (SIGKILL) of a running `diffrecon reconstruct` right after its first slice
    is persisted: --resume computes only the other slice, leaves no temporary behind, and
    the output equals a run that was never interrupted."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    args = [str(folder / "f0.h5"), "-o", str(out), "--prior", str(tiny_bundle), "--quiet"]
    slow = ["--sampler", "daps-fast", "--steps", "40", "--draws", "2", "--resume"]
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from diffrecon.cli import main; sys.exit(main())",
         "reconstruct", *args, *slow],
    )  # fmt: skip
    part0 = out / ".f0.h5.parts" / "slice0000.h5"
    deadline = time.monotonic() + 300
    while not part0.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert part0.exists() and not (out / "f0.h5").exists(), "killed too late: slice 1 done"
    again = []
    settings = dict(prior=str(tiny_bundle), sampler="daps-fast", overrides={"steps": 40})
    rows = reconstruct_files(
        [folder / "f0.h5"],
        out,
        resume=True,
        on_slice=lambda n, i, f, e: again.append(i),
        draws=2,
        seed=0,
        **settings,
    )
    assert again == [1] and rows[0]["status"] == "done"
    assert not list(out.rglob("*.partial")) and not (out / ".f0.h5.parts").exists()
    fresh = reconstruct_files([folder / "f0.h5"], tmp_path / "fresh", draws=2, seed=0, **settings)
    assert fresh[0]["status"] == "done"
    np.testing.assert_array_equal(
        read_results(out / "f0.h5").reconstruction,
        read_results(tmp_path / "fresh" / "f0.h5").reconstruction,
    )


def test_resume_with_other_settings_is_refused_instead_of_mixed(tmp_path, folder, tiny_bundle):
    """Slices persisted with --steps 2 are not completed with --steps 3 into one volume;
    the command line alone (-o, --resume) is not a setting."""
    out = tmp_path / "out"

    def interrupt(name, idx, figures, error):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct_files([folder / "f0.h5"], out, on_slice=interrupt, **_settings(tiny_bundle))
    other = {**_settings(tiny_bundle), "overrides": {"steps": 3}}
    with pytest.raises(ValueError, match=r"made with other settings \(settings: "):
        reconstruct_files([folder / "f0.h5"], out, resume=True, **other)
    assert not (out / "f0.h5").exists() and (out / ".f0.h5.parts" / "slice0000.h5").exists()
    rows = reconstruct_files(
        [folder / "f0.h5"], out, resume=True, command="again", **_settings(tiny_bundle)
    )
    assert rows[0]["status"] == "done"
    assert read_results(out / "f0.h5").record.settings["steps"] == 2


def test_merge_refuses_parts_made_with_other_settings(tmp_path):
    from diffrecon.io.results import merge_parts, write_results
    from diffrecon.results import SliceResult, VolumeResult

    z = np.zeros((4, 4), np.float32)

    def part(i, seed):
        vol = VolumeResult([SliceResult(z, z, 2)], [i], {"seed": seed, "command": f"run {i}"})
        return write_results(tmp_path / f"p{i}.h5", vol, overwrite=True)

    parts = [part(0, 0), part(1, 1)]
    with pytest.raises(ValueError, match=r"different settings \(seed: 0 vs 1\)"):
        merge_parts(parts, tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    parts[1] = part(1, 0)
    merged = read_results(merge_parts(parts, tmp_path / "m.h5"))
    assert merged.slice_indices.tolist() == [0, 1] and merged.attrs["command"] == "run 0"


@pytest.mark.parametrize("workers", [None, 1])
def test_ctrl_c_writes_the_manifest_and_resume_continues(tmp_path, folder, tiny_bundle, workers):
    """Ctrl-C (KeyboardInterrupt) after the first slice, in process or on Dask: the batch
    stops, closes its cluster quietly, writes a manifest naming the interrupted inputs,
    keeps the finished slice for --resume, and raises BatchInterrupted (issue 28 #10)."""
    import signal

    from diffrecon.batch import BatchInterrupted, _executor

    def stop(*_):
        raise KeyboardInterrupt

    out = tmp_path / "o"
    # on Dask the other slice is running when the interrupt comes: it must outlast the
    # nanny's 4 s grace before the worker is killed (80 steps did not, once, under CI load)
    slow = {**_settings(tiny_bundle), "overrides": {"steps": 2 if workers is None else 400}}
    with pytest.raises(BatchInterrupted) as caught:
        reconstruct_files([folder / "f0.h5"], out, workers=workers, on_slice=stop, **slow)
    assert caught.value.manifest == out / "manifest.csv"
    (row,) = json.loads((out / "manifest.json").read_text())
    assert row["status"] == "interrupted" and "--resume continues" in row["error"]
    parts = sorted(p.name for p in (out / ".f0.h5.parts").iterdir())
    assert parts, "the finished slice is kept"
    again = []
    rows = reconstruct_files(
        [folder / "f0.h5"], out, resume=True, on_slice=lambda n, i, f, e: again.append(i),
        **slow,
    )  # fmt: skip
    assert rows[0]["status"] == "done" and len(again) == 2 - len(parts)
    if workers:  # the worker processes leave a terminal's Ctrl-C to the batch
        client, cluster = _executor(None, 1)
        try:
            assert set(client.run(lambda: signal.getsignal(signal.SIGINT)).values()) == {
                signal.SIG_IGN
            }
        finally:
            client.close()
            cluster.close()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored here
