"""Inputs are never lost: no write onto an input, whole-series DICOM exports, unique
temporary files that killed writers do not leave behind (issue 13, data loss)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from diffrecon.cli import main
from diffrecon.io.atomic import (
    OutputExistsError,
    atomic_file,
    atomic_folder,
    remove_stale_partials,
)

RUN = ["--slices", "1", "--steps", "2", "--draws", "2", "--sampler", "daps-fast", "--quiet"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def copy_of_input(tmp_path, tiny_kspace_file):
    folder = tmp_path / "r" / "f1"
    folder.mkdir(parents=True)
    dst = folder / "good3.h5"
    dst.write_bytes(tiny_kspace_file.read_bytes())
    return dst


def test_reconstruct_never_writes_onto_its_input(copy_of_input, tiny_bundle, capsys):
    before = _digest(copy_of_input)
    sneaky = copy_of_input.parent / ".." / "f1"  # the input's own folder, by another name
    args = ["reconstruct", str(copy_of_input), "-o", str(sneaky), "--prior", str(tiny_bundle)]
    assert main([*args, *RUN, "--overwrite"]) == 2
    assert "refusing to write over an input" in capsys.readouterr().err
    assert _digest(copy_of_input) == before
    link = copy_of_input.parent.parent / "link"
    link.symlink_to(copy_of_input.parent, target_is_directory=True)
    assert main([*args[:3], str(link), *args[4:], *RUN, "--overwrite"]) == 2
    assert _digest(copy_of_input) == before


def test_calibrate_never_writes_onto_its_input(copy_of_input, tiny_bundle, capsys):
    before = _digest(copy_of_input)
    args = ["calibrate", str(copy_of_input), "-o", str(copy_of_input), "--prior", str(tiny_bundle)]
    assert main([*args, "--draws", "2", "--steps", "2", "--overwrite", "--quiet"]) == 2
    assert "refusing to write over an input" in capsys.readouterr().err
    assert _digest(copy_of_input) == before


def test_calibrate_checks_its_diagram_like_any_output(copy_of_input, tiny_bundle, capsys):
    """The reliability diagram beside ``-o`` is an output too: an existing one is kept
    without --overwrite, and an input image of that name is never replaced (issue 28 #5)."""
    from diffrecon.calibration_run import diagram_path

    out = copy_of_input.parent / "scan.json"
    diagram = diagram_path(out)
    diagram.write_bytes(b"an earlier diagram")
    args = ["calibrate", str(copy_of_input), "-o", str(out), "--prior", str(tiny_bundle)]
    run = ["--draws", "2", "--steps", "2", "--quiet"]
    assert main([*args, *run]) == 2
    assert "reliability.png exists: pass --overwrite" in capsys.readouterr().err
    assert diagram.read_bytes() == b"an earlier diagram" and not out.exists()
    # an input named like the diagram: refused, even with --overwrite
    diagram.write_bytes(copy_of_input.read_bytes())
    before = _digest(diagram)
    args[1] = str(diagram)
    assert main([*args, *run, "--overwrite"]) == 2
    assert "refusing to write over an input" in capsys.readouterr().err
    assert _digest(diagram) == before
    # scan.png beside -o scan.json is not the diagram's name any more
    assert diagram.name == "scan.reliability.png"


def test_evaluate_never_writes_its_csv_over_a_file_it_scores(tmp_path, copy_of_input, capsys):
    """``--csv`` naming a target (or result) inside the folders is refused (issue 28 #8a)."""
    targets = copy_of_input.parent
    before = _digest(copy_of_input)
    args = ["evaluate", str(targets), str(targets), "--csv", str(copy_of_input)]
    assert main(args) == 2
    assert "refusing to write over an input" in capsys.readouterr().err
    assert _digest(copy_of_input) == before


def test_a_manifest_that_is_a_link_is_replaced_not_followed(copy_of_input, tiny_bundle, tmp_path):
    """``OUT/manifest.csv`` as a symlink to another file: the link is replaced by the new
    manifest, its target left as it was (issue 28 #6)."""
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "precious.csv"
    elsewhere.write_text("keep me\n")
    (out / "manifest.csv").symlink_to(elsewhere)
    args = ["reconstruct", str(copy_of_input), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*args, *RUN, "--no-holdout"]) == 0
    assert elsewhere.read_text() == "keep me\n"
    assert (
        not (out / "manifest.csv").is_symlink() and "status" in (out / "manifest.csv").read_text()
    )


def test_outputs_follow_the_umask_not_owner_only(tmp_path):
    """Temporaries are made owner-only; outputs get what open()/mkdir() would give under
    the user's umask (group-readable on shared lab servers with umask 022; issue 28 #7)."""
    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "a.h5") as tmp:
            tmp.write_bytes(b"x")
        with atomic_folder(tmp_path / "series") as d:
            (d / "1.dcm").write_bytes(b"x")
        assert (tmp_path / "a.h5").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "series").stat().st_mode & 0o777 == 0o755
        os.umask(0o077)
        with atomic_file(tmp_path / "b.h5") as tmp:
            tmp.write_bytes(b"x")
        assert (tmp_path / "b.h5").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_an_unwritable_output_is_refused_before_any_work(copy_of_input, tiny_bundle, capsys):
    blocker = copy_of_input.parent / "a_file"
    blocker.write_text("x")
    args = ["reconstruct", str(copy_of_input), "-o", str(blocker / "out"), "--prior"]
    assert main([*args, str(tiny_bundle), *RUN]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_export_dicom_replaces_series_whole_and_only_when_asked(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    out = tmp_path / "out"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    assert main([*args, *RUN]) == 0
    result = out / "tiny.h5"
    dcm = tmp_path / "dcm"
    assert main(["export-dicom", str(result), str(dcm)]) == 0
    # a file of an earlier export of another study, left in the series folder
    stale = dcm / "mean" / "0003.dcm"
    stale.write_bytes(b"not ours")
    assert main(["export-dicom", str(result), str(dcm)]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert stale.exists()  # refused: nothing touched
    assert main(["export-dicom", str(result), str(dcm), "--overwrite"]) == 0
    assert sorted(p.name for p in (dcm / "mean").iterdir()) == ["0001.dcm"]
    assert not [p for p in dcm.iterdir() if p.name.startswith(".")]
    assert main(["export-dicom", str(result), str(result), "--overwrite"]) == 2


def test_atomic_file_keeps_the_old_output_on_failure_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.h5"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target, overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    with pytest.raises(OutputExistsError), atomic_file(target):
        pass


def test_concurrent_writers_use_their_own_temporaries(tmp_path):
    """Two writers of one output never share a temporary; one that did not ask to replace
    an output does not clobber the one that finished first."""
    target = tmp_path / "out.h5"
    with pytest.raises(OutputExistsError), atomic_file(target) as a:
        with atomic_file(target, overwrite=True) as b:
            assert a != b and a.exists() and b.exists()
            a.write_text("a")
            b.write_text("b")
    assert target.read_text() == "b"
    assert sorted(tmp_path.iterdir()) == [target]


def test_a_killed_writers_partial_file_is_removed_by_the_next_write(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(done.stdout)
    target = tmp_path / "out.h5"
    stale = tmp_path / f".out.h5.{dead}.abc123.partial"
    stale.write_text("left by kill -9")
    stale_dir = tmp_path / f".out.h5.{dead}.xyz.partial"
    stale_dir.mkdir()
    alive = tmp_path / f".out.h5.{os.getpid()}.def456.partial"
    alive.write_text("a live writer's")
    other = tmp_path / ".other.h5.1.partial"
    other.write_text("another output's")
    with atomic_file(target) as tmp:
        tmp.write_text("new")
    assert not stale.exists() and not stale_dir.exists()
    assert alive.exists() and other.exists() and target.read_text() == "new"
    assert remove_stale_partials(target) == []


def test_atomic_folder_swaps_whole_and_refuses_without_overwrite(tmp_path):
    target = tmp_path / "series"
    with atomic_folder(target) as tmp:
        for i in range(3):
            (tmp / f"{i}.dcm").write_text(str(i))
    with pytest.raises(OutputExistsError):
        with atomic_folder(target):
            pass
    with pytest.raises(RuntimeError), atomic_folder(target, overwrite=True) as tmp:
        (tmp / "0.dcm").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["0.dcm", "1.dcm", "2.dcm"]
    with atomic_folder(target, overwrite=True) as tmp:
        (tmp / "0.dcm").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["0.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]
