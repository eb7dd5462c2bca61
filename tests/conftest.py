"""Shared fixtures: the fastMRI reference modules (loaded by file path) and the real data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_KSPACE = SHARED / "data" / "real" / "sigpy_brain_8coil_cartesian_ksp.npy"


def _fastmri_module(relpath: str):
    """Import one file of the fastmri wheel without running its package __init__ (which
    needs pandas, requests and yaml); fastmri is a test-only reference."""
    spec = importlib.util.find_spec("fastmri")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the test reference `fastmri` is not installed; run `make test`")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    mod_spec = importlib.util.spec_from_file_location(f"_fastmri_ref_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fastmri_subsample():
    return _fastmri_module("data/subsample.py")


@pytest.fixture(scope="session")
def fastmri_fftc():
    return _fastmri_module("fftc.py")


@pytest.fixture(scope="session")
def real_kspace() -> np.ndarray:
    if not REAL_KSPACE.exists():
        pytest.skip(f"real data not found at {REAL_KSPACE}")
    return np.load(REAL_KSPACE)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A small random-weight prior bundle: fast enough for end-to-end CLI tests."""
    from diffrecon.priors import save_bundle
    from diffrecon.priors.unet import MonaiUNet

    arch = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8}
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = MonaiUNet(arch)
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(
        path,
        net,
        {
            "name": "tiny",
            "parameterisation": "edm",
            "sigma_data": 0.5,
            "sigma_min": 0.002,
            "sigma_max": 80.0,
            "architecture": {
                "type": "monai.DiffusionModelUNet",
                "kwargs": {**net.arch},
                "noise_scale": 1000.0,
            },
        },
    )
    return path


@pytest.fixture(scope="session")
def tiny_kspace_file(tmp_path_factory):
    from diffrecon.data.simulate import simulate_fastmri

    return simulate_fastmri(
        tmp_path_factory.mktemp("k") / "tiny.h5", slices=(100, 104), size=(40, 32), coils=4
    )


@pytest.fixture
def adaptations(monkeypatch) -> list[int]:
    """Counts the prior adaptations the job runs (one entry per ``adapt_prior`` call)."""
    import diffrecon.jobs as jobs

    calls: list[int] = []
    real = jobs.adapt_prior

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "adapt_prior", counting)
    return calls
