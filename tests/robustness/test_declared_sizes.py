"""Files that declare more than they hold, and weights that are not weights, are refused
before anything is read or built (issue 28 #8d): a lazily declared mask, reference image or
coil-map dataset (gigabytes declared, nothing stored), a broadcast view in a checkpoint, NaN
weights, empty array axes; a DataParallel checkpoint (``module.`` prefix) loads."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
import torch

from diffrecon.data.examples import write_example_checkpoints
from diffrecon.data.simulate import simulate_fastmri
from diffrecon.io.arrays import as_kspace, read_maps
from diffrecon.io.fastmri import FastMRIError, open_fastmri
from diffrecon.priors import PriorLoadError, open_prior


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("declared") / "small.h5"
    return simulate_fastmri(path, slices=(100, 104), size=(16, 16), coils=2)


def _with(small, tmp_path, name, shape, dtype="f4"):
    """A copy of ``small`` with dataset ``name`` declared at ``shape`` and never written."""
    out = tmp_path / f"{name}.h5"
    out.write_bytes(small.read_bytes())
    with h5py.File(out, "a") as f:
        if name in f:
            del f[name]
        f.create_dataset(name, shape=shape, dtype=dtype)  # late allocation: nothing stored
    assert out.stat().st_size < 10 * 2**20
    return out


@pytest.mark.parametrize(
    "name, shape, match",
    [
        ("mask", (2**31,), "more than one k-space plane"),
        ("reconstruction_rss", (2, 2**16, 2**16), "above the limit"),
        ("reconstruction_rss", (7, 16, 16), "with the k-space's 2 slices"),
        ("ismrmrd_header", (2**30,), "declares"),
    ],
)
def test_declared_datasets_are_checked_before_they_are_read(small, tmp_path, name, shape, match):
    path = _with(small, tmp_path, name, shape, "S1" if name == "ismrmrd_header" else "f4")
    t0 = time.perf_counter()
    with pytest.raises(FastMRIError, match=match):
        open_fastmri(path)
    assert time.perf_counter() - t0 < 5  # nothing was read


def test_coil_map_files_are_checked_before_they_are_read(tmp_path):
    big = tmp_path / "maps.h5"
    with h5py.File(big, "w") as f:
        f.create_dataset("maps", shape=(64, 64, 1024, 1024), dtype="c8")  # 32 GiB declared
    with pytest.raises(ValueError, match=r"coil maps must be complex \(coils, H, W\)"):
        read_maps(str(big), (2, 16, 16), 2)
    npy = tmp_path / "maps.npy"
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.complex64, shape=(3, 2, 16, 16))
    with pytest.raises(ValueError, match="hold 3 slices, the input 2"):
        read_maps(str(npy), (2, 16, 16), 2)


@pytest.mark.parametrize("shape", [(4, 0, 32), (4, 32, 0), (0, 32, 32)])
def test_empty_kspace_axes_are_named(shape):
    with pytest.raises(ValueError, match="no empty axis|0 phase-encode columns"):
        as_kspace(np.zeros(shape, np.complex64))


@pytest.fixture(scope="module")
def edm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    path, _ = write_example_checkpoints(folder)
    return path, torch.load(path, weights_only=True)["net"]


def test_a_broadcast_view_and_nan_weights_are_refused_at_load(edm, tmp_path):
    _, state = edm
    name = max(state, key=lambda k: state[k].numel())
    viewed = {**state, name: torch.zeros(1).expand(state[name].shape)}
    torch.save(viewed, tmp_path / "view.pt")
    with pytest.raises(PriorLoadError, match="a broadcast view"):
        open_prior(tmp_path / "view.pt")
    nan = {k: v.clone() for k, v in state.items()}
    nan[name].fill_(float("nan"))
    torch.save(nan, tmp_path / "nan.pt")
    with pytest.raises(PriorLoadError, match=f"{name}' holds NaN"):
        open_prior(tmp_path / "nan.pt")


def test_a_state_that_does_not_fit_is_refused_before_the_network_is_built(
    edm, tmp_path, monkeypatch
):
    """Keys and shapes are compared on a network built on the meta device: a file whose
    keys imply a network it does not hold never gets that network's memory."""
    from diffrecon.priors.families import edm as family

    _, state = edm
    devices = []
    real = family.EDMNetwork.__init__

    def spy(self, *a, **k):
        devices.append(torch.empty(0).device.type)
        real(self, *a, **k)

    monkeypatch.setattr(family.EDMNetwork, "__init__", spy)
    broken = dict(state)
    broken.pop(next(k for k in state if k.endswith(".bias")))
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(PriorLoadError, match="does not fit the network"):
        open_prior(tmp_path / "broken.pt")
    assert devices == ["meta"]


def test_a_dataparallel_checkpoint_loads_as_the_plain_one(edm, tmp_path):
    path, state = edm
    torch.save({"net": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pt")
    t0 = time.perf_counter()
    ddp, plain = open_prior(tmp_path / "ddp.pt"), open_prior(path)
    assert time.perf_counter() - t0 < 30
    x, sigma = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0)), 1.0
    with torch.no_grad():
        assert torch.equal(ddp(x, sigma), plain(x, sigma))
