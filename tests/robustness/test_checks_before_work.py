"""Bad input is refused before any work, in one line with exit 2, and nothing is written:
argument ranges, devices, every selected slice, oversized slices, HDF5 files that read other
files, groups where datasets belong, unreadable DICOM references (issue 13)."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

from diffrecon.cli import main

RUN = ["--slices", "0:2", "--steps", "2", "--draws", "2", "--sampler", "daps-fast", "--quiet"]


def _copy(src, dst, edit=None):
    with h5py.File(src) as s, h5py.File(dst, "w") as d:
        for k in s:
            d.create_dataset(k, data=s[k][()])
        for k, v in s.attrs.items():
            d.attrs[k] = v
        if edit is not None:
            edit(d)
    return dst


def _reconstruct(inp, out, bundle, *extra):
    return main(["reconstruct", str(inp), "-o", str(out), "--prior", str(bundle), *RUN, *extra])


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--seed", str(2**63)], r"--seed must lie in \[0, 2\*\*63\)"),
        (["--seed", "-1"], r"--seed must lie in"),
        (["--device", "cuda:7"], "not available here \\(devices: cpu"),
        (["--device", "warp-drive"], "is not a device name"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--max-pixels", "100"], "above the limit of 100 \\(--max-pixels\\)"),
    ],
)
def test_bad_arguments_are_refused_before_work(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys, extra, match
):
    out = tmp_path / "out"
    assert _reconstruct(tiny_kspace_file, out, tiny_bundle, *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(match, err), err
    assert not out.exists()


def test_all_zero_kspace_is_named_as_such_before_work(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    """Not "the mask samples nothing": the data are empty (issue 28 #8e)."""

    def zero(d):
        k = d["kspace"][()]
        del d["kspace"]
        d.create_dataset("kspace", data=np.zeros_like(k))

    bad = _copy(tiny_kspace_file, tmp_path / "zero.h5", zero)
    out = tmp_path / "out"
    assert _reconstruct(bad, out, tiny_bundle) == 2
    err = capsys.readouterr().err
    assert "all zeros: there is nothing to reconstruct" in err and err.count("\n") == 1
    assert not out.exists()


def test_nan_in_a_later_slice_is_found_before_the_first_is_reconstructed(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    def poison(d):
        k = d["kspace"][()]
        k[1, 0, 0, 0] = np.nan
        del d["kspace"]
        d.create_dataset("kspace", data=k)

    bad = _copy(tiny_kspace_file, tmp_path / "bad.h5", poison)
    out = tmp_path / "out"
    assert _reconstruct(bad, out, tiny_bundle) == 2
    assert "slice 1 contains NaN" in capsys.readouterr().err
    assert not out.exists()


def test_files_that_read_other_files_are_refused(tmp_path, tiny_kspace_file, tiny_bundle, capsys):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("x", data=np.ones(4, np.float32))

    def external_link(d):
        del d["reconstruction_rss"]
        d["reconstruction_rss"] = h5py.ExternalLink(str(secret), "x")

    def virtual(d):
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float32)
        layout[:] = h5py.VirtualSource(str(secret), "x", shape=(4,))
        d.create_virtual_dataset("mask", layout)

    def external_storage(d):
        raw = tmp_path / "raw.bin"
        raw.write_bytes(np.ones(4, np.float32).tobytes())
        d.create_dataset("mask", shape=(4,), dtype=np.float32, external=[(str(raw), 0, 16)])

    for i, (edit, match) in enumerate(
        [
            (external_link, "external link"),
            (virtual, "virtual dataset"),
            (external_storage, "external files"),
        ]
    ):
        f = _copy(tiny_kspace_file, tmp_path / f"f{i}.h5", edit)
        assert _reconstruct(f, tmp_path / "out", tiny_bundle) == 2
        assert match in capsys.readouterr().err
    assert main(["info", str(tmp_path / "f0.h5")]) == 2


def test_maps_targets_and_bundles_never_read_other_files_or_fifos(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    """Every reader refuses what the k-space reader refuses: --maps files with external
    links, evaluate's targets with them, and FIFOs as --maps or bundle files (which would
    block forever) (issue 28 #8)."""
    import os
    import shutil

    from diffrecon.evaluation import score_file
    from diffrecon.io.arrays import read_maps
    from diffrecon.priors import load
    from diffrecon.priors.checkpoints import PriorLoadError

    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f.create_dataset("x", data=np.ones((4, 40, 32), np.complex64))
    linked = tmp_path / "maps.h5"
    with h5py.File(linked, "w") as f:
        f["maps"] = h5py.ExternalLink(str(secret), "x")
    with pytest.raises(ValueError, match="external link"):
        read_maps(linked, (4, 40, 32), 2)
    fifo = tmp_path / "maps.npy"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_maps(fifo, (4, 40, 32), 2)
    target = _copy(
        tiny_kspace_file,
        tmp_path / "t.h5",
        lambda d: (
            d.__delitem__("reconstruction_rss"),
            d.__setitem__("reconstruction_rss", h5py.ExternalLink(str(secret), "x")),
        ),
    )
    with pytest.raises(ValueError, match="external link"):
        score_file(tmp_path / "unused.h5", target)
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    for name in ("model.safetensors", "config.json"):
        real = bundle / name
        real.rename(tmp_path / name)
        os.mkfifo(real)
        with pytest.raises(PriorLoadError, match="not a regular file"):
            load(bundle)
        real.unlink()
        (tmp_path / name).rename(real)


def test_groups_and_empty_axes_are_named(tmp_path, tiny_kspace_file, tiny_bundle, capsys):
    def group(d):
        d.create_group("mask")

    f = _copy(tiny_kspace_file, tmp_path / "g.h5", group)
    assert main(["info", str(f)]) == 2
    assert "'mask' is a group, not a dataset" in capsys.readouterr().err
    with h5py.File(tmp_path / "empty.h5", "w") as d:
        d.create_dataset("kspace", shape=(0, 4, 16, 16), dtype=np.complex64)
    assert _reconstruct(tmp_path / "empty.h5", tmp_path / "out", tiny_bundle) == 2
    assert "empty axis" in capsys.readouterr().err


def test_an_unreadable_dicom_reference_is_refused_before_export(
    tmp_path, tiny_kspace_file, tiny_bundle, capsys
):
    out = tmp_path / "out"
    assert _reconstruct(tiny_kspace_file, out, tiny_bundle) == 0
    fake = tmp_path / "ref.dcm"
    fake.write_text("not dicom")
    dcm = tmp_path / "dcm"
    assert main(["export-dicom", str(out / "tiny.h5"), str(dcm), "--reference", str(fake)]) == 2
    assert "not a readable DICOM file" in capsys.readouterr().err
    assert not dcm.exists()


def test_a_result_without_slices_is_refused_by_the_exporters(tmp_path, capsys):
    """Issue 28 #8e: export-dicom of a 0-slice result crashed with an IndexError."""
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("reconstruction", data=np.zeros((0, 8, 8), np.float32))
        f.create_dataset("std", data=np.zeros((0, 8, 8), np.float32))
    for cmd in ("export-dicom", "export-nifti"):
        assert main([cmd, str(empty), str(tmp_path / cmd)]) == 2
        err = capsys.readouterr().err
        assert "holds no slices" in err and "Traceback" not in err
        assert not (tmp_path / cmd).exists() or not any((tmp_path / cmd).iterdir())


def test_a_dicom_series_without_instance_numbers_reads_in_file_order(tmp_path):
    """Issue 28 #8e: the napari DICOM reader raised AttributeError without InstanceNumber."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from diffrecon.io.dicom import read_dicom_series

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
        ds.Rows = ds.Columns = 4
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.PixelData = np.full((4, 4), i, np.uint16).tobytes()
        ds.save_as(folder / f"im{i}.dcm", enforce_file_format=True)
    stack, meta = read_dicom_series(folder)
    assert stack.shape == (3, 4, 4) and [float(p[0, 0]) for p in stack] == [0, 1, 2]
    assert meta["SeriesInstanceUID"] == "" and meta["instances"] == 3
    one, _ = read_dicom_series(folder / "im1.dcm")  # no series UID: the file alone
    assert one.shape == (1, 4, 4)
    with pytest.raises(ValueError, match="no .dcm files"):
        read_dicom_series(tmp_path)
