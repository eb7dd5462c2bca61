"""`diffrecon evaluate` agrees with fastMRI's evaluate.py on whole volumes, and scores results
of a slice subset against the same slices of the target."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffrecon.cli import main
from diffrecon.evaluation import evaluate_folder
from diffrecon.io.results import merge_parts, read_results, write_results
from diffrecon.mri import center_crop
from diffrecon.results import SliceResult, VolumeResult


class _Statistics:
    """runstats.Statistics as evaluate.py uses it (mean, sample std)."""

    def __init__(self):
        self.values = []

    def push(self, v):
        self.values.append(float(np.asarray(v).reshape(-1)[0]))

    def mean(self):
        return float(np.mean(self.values))

    def stddev(self):
        return float(np.std(self.values, ddof=1))


@pytest.fixture(scope="module")
def fastmri_evaluate():
    """fastMRI's evaluate.py, its metric functions and loop as they are; its two imports
    that need the whole fastmri package (center_crop) or an absent wheel (runstats) stubbed."""
    import torch

    spec = importlib.util.find_spec("fastmri")
    path = Path(list(spec.submodule_search_locations)[0]) / "evaluate.py"
    transforms = types.SimpleNamespace(
        center_crop=lambda x, shape: center_crop(torch.from_numpy(np.asarray(x)), shape).numpy()
    )
    stubs = {
        "runstats": types.SimpleNamespace(Statistics=_Statistics),
        "fastmri": types.ModuleType("fastmri"),
        "fastmri.data": types.SimpleNamespace(transforms=transforms),
    }
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        mod_spec = importlib.util.spec_from_file_location("_fastmri_evaluate", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


def _volumes(tmp_path, n=3, slices=4):
    rng = np.random.default_rng(0)
    targets, preds = tmp_path / "targets", tmp_path / "preds"
    targets.mkdir()
    preds.mkdir()
    for i in range(n):
        tgt = rng.random((slices, 40, 32)).astype(np.float32) * (1 + i)
        with h5py.File(targets / f"file{i}.h5", "w") as f:
            f["reconstruction_rss"] = tgt
            f.attrs["acquisition"] = "AXT2" if i else "AXFLAIR"
        pred = tgt + rng.normal(scale=0.1 * (1 + i), size=tgt.shape).astype(np.float32)
        vol = VolumeResult(
            [SliceResult(p, np.zeros_like(p), 2) for p in pred], list(range(slices)), {}
        )
        write_results(preds / f"file{i}.h5", vol)
    return targets, preds


def test_whole_volumes_agree_with_fastmri_evaluate(tmp_path, fastmri_evaluate):
    targets, preds = _volumes(tmp_path)
    args = types.SimpleNamespace(
        target_path=targets, predictions_path=preds, acquisition=None, acceleration=None
    )
    ref = fastmri_evaluate.evaluate(args, "reconstruction_rss")
    scores, summary = evaluate_folder(targets, preds)
    assert len(scores) == 3
    # evaluate.py computes in the files' float32, we in float64: equal to float32 rounding
    for ours, theirs in (("nmse", "NMSE"), ("psnr", "PSNR"), ("ssim", "SSIM")):
        assert summary[ours][0] == pytest.approx(ref.means()[theirs], rel=1e-5)
        assert summary[ours][1] == pytest.approx(2 * ref.stddevs()[theirs], rel=1e-4)
    only = evaluate_folder(targets, preds, acquisition="AXFLAIR")[0]
    assert [s.name for s in only] == ["file0.h5"]


def test_a_slice_subset_is_scored_against_the_same_target_slices(tmp_path, fastmri_evaluate):
    targets, preds = _volumes(tmp_path, n=1, slices=5)
    full = h5py.File(preds / "file0.h5", "r")["reconstruction"][()]
    sub = tmp_path / "sub"
    sub.mkdir()
    vol = VolumeResult(
        [SliceResult(full[i], np.zeros_like(full[i]), 2) for i in (1, 3)], [1, 3], {}
    )
    write_results(sub / "file0.h5", vol)
    (score,), _ = evaluate_folder(targets, sub)
    tgt = h5py.File(targets / "file0.h5", "r")["reconstruction_rss"][()][[1, 3]]
    crop = fastmri_evaluate.transforms.center_crop  # to (W, W), as evaluate.py crops
    tgt, pred = crop(tgt, (32, 32)), crop(full[[1, 3]], (32, 32))
    assert score.slices == 2
    assert score.psnr == pytest.approx(fastmri_evaluate.psnr(tgt, pred), rel=1e-5)
    assert score.ssim == pytest.approx(float(fastmri_evaluate.ssim(tgt, pred)[0]), rel=1e-5)


def test_cli_evaluate(tmp_path, capsys):
    targets, preds = _volumes(tmp_path, n=2)
    assert main(["evaluate", str(targets), str(preds), "--csv", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert "2 volume(s): NMSE = " in out and "PSNR = " in out and "+/-" in out
    assert len((tmp_path / "m.csv").read_text().splitlines()) == 3
    # a target without a result is named, not skipped in silence (issue 28 #15)
    shutil.copy(next(targets.glob("*.h5")), targets / "extra.h5")
    assert main(["evaluate", str(targets), str(preds)]) == 0
    assert "1 target(s) have no result: extra.h5" in capsys.readouterr().err
    shutil.rmtree(targets)
    targets.mkdir()
    assert main(["evaluate", str(targets), str(preds)]) == 2  # nothing to compare: refused


def test_the_manifest_scores_as_evaluate_does_on_non_square_images(
    tmp_path, tiny_kspace_file, tiny_bundle
):
    """The run's own metrics (summary line, manifest) crop to the target's square as
    evaluate.py does, so they agree with ``diffrecon evaluate`` on a 40x32 file
    (issue 28 #4)."""
    import json

    out = tmp_path / "out"
    args = ["reconstruct", str(tiny_kspace_file), "-o", str(out), "--prior", str(tiny_bundle)]
    run = ["--steps", "2", "--draws", "2", "--sampler", "daps-fast", "--quiet", "--no-holdout"]
    assert main([*args, *run]) == 0
    row = json.loads((out / "manifest.json").read_text())[0]
    scores, _ = evaluate_folder(tiny_kspace_file.parent, out)
    assert scores[0].slices == 2
    assert row["psnr"] == pytest.approx(scores[0].psnr, abs=1e-6)
    assert row["ssim"] == pytest.approx(scores[0].ssim, abs=1e-6)


def test_a_slice_subset_file_is_read_by_fastmri_evaluate_and_scores_nan(tmp_path, fastmri_evaluate):
    """A subset's ``reconstruction`` is stored at the input's slice count with NaN in the
    slices not reconstructed: fastMRI's evaluate.py reads it without a shape error and
    scores it nan (not a figure that mixes in slices nobody reconstructed), while
    ``diffrecon evaluate``, ``read_results`` and ``merge_parts`` see the subset (issue 28
    #12)."""
    targets, preds = _volumes(tmp_path, n=1, slices=5)
    full = h5py.File(preds / "file0.h5", "r")["reconstruction"][()]
    sub = tmp_path / "sub"
    sub.mkdir()
    picked = [SliceResult(full[i], np.full_like(full[i], 0.5), 2) for i in (3, 1)]
    write_results(sub / "file0.h5", VolumeResult(picked, [3, 1], {"input_slices": 5}))
    with h5py.File(sub / "file0.h5", "r") as f:
        stored = f["reconstruction"][()]
        assert stored.shape == (5, 40, 32) and f["std"].shape == (2, 40, 32)
    assert np.isnan(stored[[0, 2, 4]]).all() and np.array_equal(stored[[3, 1]], full[[3, 1]])
    args = types.SimpleNamespace(
        target_path=targets, predictions_path=sub, acquisition=None, acceleration=None
    )
    ref = fastmri_evaluate.evaluate(args, "reconstruction_rss")  # no shape error
    assert np.isnan(ref.means()["PSNR"])
    res = read_results(sub / "file0.h5")
    assert res.reconstruction.shape == (2, 40, 32)
    assert np.array_equal(res.reconstruction, full[[3, 1]]) and res.std.shape == (2, 40, 32)
    (score,), _ = evaluate_folder(targets, sub)
    assert score.slices == 2 and np.isfinite(score.psnr)
    # one-slice parts are written unpadded and merged into a padded subset
    parts = []
    for i in (1, 3):
        part = tmp_path / f"part{i}.h5"
        one = VolumeResult([SliceResult(full[i], full[i] * 0, 2)], [i], {"input_slices": 5})
        parts.append(write_results(part, one, pad=False))
        assert h5py.File(part, "r")["reconstruction"].shape == (1, 40, 32)
    merged = merge_parts(parts, tmp_path / "merged.h5")
    assert h5py.File(merged, "r")["reconstruction"].shape == (5, 40, 32)
    assert np.array_equal(read_results(merged).reconstruction, full[[1, 3]])
    # a whole volume is stored as it is
    whole = [SliceResult(p, p * 0, 2) for p in full]
    write_results(tmp_path / "whole.h5", VolumeResult(whole, list(range(5)), {"input_slices": 5}))
    assert h5py.File(tmp_path / "whole.h5", "r")["reconstruction"].shape == (5, 40, 32)
