"""Users' own fastMRI folders -> training slices -> train-prior."""

from __future__ import annotations

import shutil

import h5py

from diffrecon.cli import main
from diffrecon.data.slices import SlicePatchSampler, build_fastmri_slices


def test_build_slices_and_train_on_them(tmp_path, tiny_kspace_file):
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(tiny_kspace_file, folder / "a.h5")
    n = build_fastmri_slices(folder, tmp_path / "slices.h5", calib_width=12)
    assert n == 2
    with h5py.File(tmp_path / "slices.h5") as f:
        s = f["slices"][()]
    assert s.shape == (2, 2, 40, 32)
    mag = (s[:, 0] ** 2 + s[:, 1] ** 2) ** 0.5
    assert 0.9 < float(mag.reshape(2, -1).max(1).min()) < 2.0  # scaled like the default prior
    sampler = SlicePatchSampler(tmp_path / "slices.h5", size=16, seed=0)
    state = sampler.get_state()
    a = sampler.batch(3)
    sampler.set_state(state)
    assert a.shape == (3, 2, 16, 16) and (sampler.batch(3) == a).all()
    rc = main(
        [
            "train-prior",
            str(tmp_path / "bundle"),
            "--data",
            str(tmp_path / "slices.h5"),
            "--steps",
            "2",
            "--patch",
            "16",
            "--batch",
            "2",
            "--channels",
            "8",
            "8",
            "--quiet",
        ]
    )
    assert rc == 0 and (tmp_path / "bundle" / "model.safetensors").exists()
