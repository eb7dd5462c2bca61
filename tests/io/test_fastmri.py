"""fastMRI file layout: reading, header geometry, slice selection, atomic result writes."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from diffrecon.io.fastmri import (
    FastMRIError,
    header_xml,
    open_fastmri,
    parse_header,
    parse_slices,
)
from diffrecon.io.h5 import OutputExistsError
from diffrecon.io.results import read_results, write_results
from diffrecon.mri.transforms import center_crop, remove_readout_oversampling
from diffrecon.operators.fft import fft2c, ifft2c
from diffrecon.results import SliceResult, VolumeResult


def _fastmri_like(path, multicoil=True, slices=3, h=64, w=36, with_mask=False):
    """A file laid out like fastMRI's own test fixtures (random k-space, RSS target, attrs)."""
    rng = np.random.default_rng(0)
    shape = (slices, 4, h, w) if multicoil else (slices, h, w)
    k = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        tgt = "reconstruction_rss" if multicoil else "reconstruction_esc"
        f.create_dataset(tgt, data=rng.random((slices, h // 2, h // 2)).astype(np.float32))
        f.create_dataset("ismrmrd_header", data=header_xml((h, w, 1), (h // 2, h // 2, 1), 19, 33))
        if with_mask:
            f.create_dataset("mask", data=(rng.random(w) > 0.5))
            f.attrs["acceleration"] = 4
            f.attrs["num_low_frequency"] = 6
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 1.0
        f.attrs["norm"] = 2.0
        f.attrs["patient_id"] = "abc"
    return k


@pytest.mark.parametrize("multicoil", [True, False])
def test_reads_the_fastmri_layout(tmp_path, multicoil):
    k = _fastmri_like(tmp_path / "f.h5", multicoil=multicoil, with_mask=True)
    f = open_fastmri(tmp_path / "f.h5")
    assert f.multicoil is multicoil and f.num_slices == 3
    assert f.attrs["acquisition"] == "CORPD_FBK" and f.attrs["patient_id"] == "abc"
    assert f.attrs["acceleration"] == 4 and f.mask.dtype == bool and f.mask.shape == (36,)
    got = f.kspace(1)
    assert np.array_equal(got, k[1] if multicoil else k[1][None])
    assert f.target(0).shape == (32, 32) and f.recon_size == (32, 32)
    assert f.targets == (["reconstruction_rss"] if multicoil else ["reconstruction_esc"])


def test_header_geometry_like_fastmri():
    # fastMRI: padding_left = enc_y // 2 - center; padding_right = padding_left + maximum + 1
    h = parse_header(header_xml((640, 372, 1), (320, 320, 1), 176, 351))
    assert h.encoded_size == (640, 372, 1) and h.recon_size == (320, 320, 1)
    assert h.padding == (372 // 2 - 176, 372 // 2 - 176 + 352)
    with pytest.raises(FastMRIError, match="not valid XML"):
        parse_header(b"<unclosed")
    with pytest.raises(FastMRIError, match="lacks encoding"):
        parse_header(b'<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"/>')


def test_bad_files(tmp_path):
    with pytest.raises(FastMRIError, match="no such file"):
        open_fastmri(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(FastMRIError, match="not an HDF5 file"):
        open_fastmri(tmp_path / "text.h5")
    with h5py.File(tmp_path / "nok.h5", "w") as f:
        f.create_dataset("image", data=np.zeros(3))
    with pytest.raises(FastMRIError, match="no 'kspace' dataset"):
        open_fastmri(tmp_path / "nok.h5")
    with h5py.File(tmp_path / "rank.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))
    with pytest.raises(FastMRIError, match="kspace must be"):
        open_fastmri(tmp_path / "rank.h5")
    k = _fastmri_like(tmp_path / "nan.h5")
    with h5py.File(tmp_path / "nan.h5", "a") as f:
        k[0, 0, 0, 0] = np.nan
        f["kspace"][0] = k[0]
    with pytest.raises(FastMRIError, match="NaN"):
        open_fastmri(tmp_path / "nan.h5").kspace(0)


def test_parse_slices():
    assert parse_slices(None, 5) == [0, 1, 2, 3, 4]
    assert parse_slices("1:3", 5) == [1, 2] and parse_slices("0,4", 5) == [0, 4]
    with pytest.raises(FastMRIError, match="outside"):
        parse_slices("7", 5)
    with pytest.raises(FastMRIError, match="bad slice selection"):
        parse_slices("a:b", 5)


def test_readout_oversampling_removal_crops_the_image():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 64, 20, dtype=torch.complex64, generator=g)
    k = fft2c(img).numpy()
    cropped = remove_readout_oversampling(k, 32)
    assert cropped.shape == (2, 32, 20)
    assert np.allclose(
        ifft2c(torch.from_numpy(cropped)).numpy(), center_crop(img, (32, 20)).numpy(), atol=1e-5
    )


def _results(n=2):
    rng = np.random.default_rng(1)
    return [
        SliceResult(
            mean=rng.random((8, 6)).astype(np.float32),
            std=rng.random((8, 6)).astype(np.float32),
            draws_done=3,
            zero_filled=rng.random((8, 6)),
            draws=rng.random((3, 8, 6)).astype(np.float32),
            quantiles=rng.random((2, 8, 6)).astype(np.float32),
        )
        for _ in range(n)
    ]


def test_results_round_trip_and_fastmri_readable(tmp_path):
    res = _results()
    path = write_results(
        tmp_path / "out.h5",
        VolumeResult(
            res,
            [3, 5],
            {
                "sampler": "daps",
                "settings": {"steps": 3},
                "seed": 0,
                "quantile_levels": [0.1, 0.9],
                "prior": "tiny",
            },
        ),
    )
    back = read_results(path)
    assert np.array_equal(back.reconstruction, np.stack([r.mean for r in res]))
    assert back.draws.shape == (2, 3, 8, 6) and back.quantiles.shape == (2, 2, 8, 6)
    assert list(back.slice_indices) == [3, 5] and back.attrs["sampler"] == "daps"
    assert list(back.quantile_levels) == [0.1, 0.9]
    with h5py.File(path) as f:  # what fastMRI's evaluate.py reads
        assert f["reconstruction"].dtype == np.float32 and f["reconstruction"].ndim == 3
        assert f["draws"].compression == "gzip"


def test_existing_output_is_kept_and_interrupted_writes_leave_nothing(tmp_path, monkeypatch):
    path = tmp_path / "out.h5"
    write_results(path, VolumeResult(_results(), [0, 1], {"seed": 0}))
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="exists"):
        write_results(path, VolumeResult(_results(), [0, 1], {"seed": 1}))
    assert path.read_bytes() == before

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", boom)
    with pytest.raises(KeyboardInterrupt):
        write_results(tmp_path / "new.h5", VolumeResult(_results(), [0, 1], {"seed": 0}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]
