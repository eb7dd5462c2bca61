"""Domain-randomised training data (SynthSeg recipe on the MNI tissue maps) and fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.data import synth
from diffrecon.data.mni import HELDOUT_Z
from diffrecon.data.synth import SynthPatchSampler


def _magnitudes(batch: torch.Tensor) -> np.ndarray:
    return batch.pow(2).sum(1).sqrt().numpy()


def test_synth_patches_are_complex_bounded_and_varied():
    src = SynthPatchSampler(size=32, seed=3, synth_fraction=1.0)
    batch = src.batch(24)
    assert batch.shape == (24, 2, 32, 32) and batch.dtype == torch.float32
    mag = _magnitudes(batch)
    assert np.isfinite(mag).all() and mag.max() <= 1.0 + 1e-5
    # a smooth random phase: the imaginary part is not identically zero
    assert float(batch[:, 1].abs().mean()) > 0.05 * float(batch.abs().mean())
    # random intensities per class: the brightest level differs from patch to patch
    fg = [m[m > 0.05] for m in mag]
    medians = np.array([np.median(f) for f in fg if f.size])
    assert medians.std() > 0.1


def test_synth_sampler_resumes_from_its_state():
    a = SynthPatchSampler(size=16, seed=0, synth_fraction=0.5)
    a.batch(3)
    state = a.get_state()
    expected = a.batch(4)
    b = SynthPatchSampler(size=16, seed=99, synth_fraction=0.5)
    b.set_state(state)
    assert torch.equal(b.batch(4), expected)


def test_synth_patches_never_read_the_held_out_slab(monkeypatch):
    """Class maps that are non-zero only inside the held-out axial slab: every synthetic
    layout (after the affine and elastic warps) must then be empty."""
    classes = synth.tissue_classes()
    only_slab = np.zeros_like(classes)
    lo, hi = HELDOUT_Z
    only_slab[..., lo:hi] = 1.0
    monkeypatch.setattr(synth, "tissue_classes", lambda: only_slab)
    layouts = []
    monkeypatch.setattr(
        SynthPatchSampler, "_intensities", lambda self, probs: layouts.append(probs) or probs[0]
    )
    src = SynthPatchSampler(size=32, seed=1, synth_fraction=1.0, min_foreground=0.0)
    for _ in range(60):
        src.synth_patch()
    assert len(layouts) == 60
    assert max(float(p.max()) for p in layouts) == 0.0
    # the same warps on the real maps do reach tissue (the check is not vacuous)
    monkeypatch.setattr(synth, "tissue_classes", lambda: classes)
    layouts.clear()
    for _ in range(20):
        src.synth_patch()
    assert max(float(p.max()) for p in layouts) > 0.5


def test_fine_tuning_starts_from_the_init_bundle(tmp_path):
    from safetensors.torch import load_file

    from diffrecon.data.patches import PatchSource
    from diffrecon.priors.train import train_prior

    class Source(PatchSource):
        def patch(self):
            return self.channels(self.rng.normal(size=(8, 8)) + 0j)

    arch = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8}
    kw = {"batch_size": 2, "progress": False, "checkpoint_every": 100}
    train_prior(tmp_path / "base", Source(1).batch, steps=3, arch=arch, seed=1, **kw)
    train_prior(
        tmp_path / "tuned",
        Source(2).batch,
        steps=0,
        arch=arch,
        seed=2,
        init=tmp_path / "base",
        **kw,
    )
    base = load_file(str(tmp_path / "base" / "model.safetensors"))
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert all(torch.equal(base[k], tuned[k]) for k in base)
    # without init, seed 2 gives different initial weights: the test can tell them apart
    train_prior(tmp_path / "fresh", Source(2).batch, steps=0, arch=arch, seed=2, **kw)
    fresh = load_file(str(tmp_path / "fresh" / "model.safetensors"))
    assert not all(torch.equal(base[k], fresh[k]) for k in base)
    other = {"channels": [16, 16], "attention_levels": [False, False], "norm_num_groups": 8}
    with pytest.raises(ValueError, match="does not match the requested architecture"):
        train_prior(
            tmp_path / "bad", Source(2).batch, steps=0, arch=other, init=tmp_path / "base", **kw
        )
