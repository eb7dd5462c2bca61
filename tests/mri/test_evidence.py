"""What the data say without a prior: the L1 image and the back-projected hold-out residual."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from diffrecon.mri.evidence import evidence_maps
from diffrecon.mri.holdout import holdout_split
from diffrecon.mri.preprocess import prepare_slice
from diffrecon.operators.mri import MulticoilMRI
from tests.mri.test_holdout import _noisy_slice


def test_the_holdout_residual_lights_up_where_only_the_held_out_lines_disagree():
    """Held-out lines that carry a blob no fit line sees are mispredicted by the fit-sample
    L1 image; back-projected, the residual peaks on the blob (and its aliases)."""
    k, maps, img, mask = _noisy_slice(0.01, 3)
    prep = prepare_slice(k, mask, noise_std=0.01, maps=maps)
    split = holdout_split(prep.mask, seed=0)
    clean = evidence_maps(prep, prep, split, 1e-3)
    h, w = img.shape
    blob = torch.zeros(1, 2, h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    inside = (yy - h // 3) ** 2 + (xx - w // 3) ** 2 <= 9
    blob[0, 0][inside] = 0.5 * float(prep.zero_filled.abs().max())
    extra = MulticoilMRI(prep.maps, split.held)(blob)
    bumped = dataclasses.replace(prep, y=prep.y + extra.to(prep.y.dtype))
    hit = evidence_maps(bumped, bumped, split, 1e-3)
    assert clean["l1"].shape == clean["holdout_residual"].shape == (h, w)
    rise = (hit["holdout_residual"] - clean["holdout_residual"]).numpy()
    assert rise[inside.numpy()].mean() > 3 * np.abs(rise[~inside.numpy()]).mean()
    # the L1 image of all the samples is a reconstruction of the slice: close to the truth
    truth = np.abs(img.numpy()) / prep.scale
    err = np.linalg.norm(clean["l1"].numpy() - truth) / np.linalg.norm(truth)
    assert err < 0.2


def test_given_l1_images_are_used_as_they_are():
    """The hold-out check hands its L1 images over (solved once per slice): the maps are
    those of the images given, and equal to the maps solved here when they are the same."""
    from diffrecon.mri.validation import l1_image

    k, maps, _, mask = _noisy_slice(0.01, 3)
    prep = prepare_slice(k, mask, noise_std=0.01, maps=maps)
    split = holdout_split(prep.mask, seed=0)
    x_final, x_fit = l1_image(prep, 1e-3), l1_image(split.restrict(prep), 1e-3)
    solved = evidence_maps(prep, prep, split, 1e-3)
    given = evidence_maps(prep, prep, split, 1e-3, x_final=x_final, x_fit=x_fit)
    for key in ("l1", "holdout_residual"):
        assert torch.allclose(given[key], solved[key], rtol=1e-4, atol=1e-6)
    other = evidence_maps(prep, prep, split, 1e-3, x_final=2 * x_final, x_fit=0 * x_fit)
    assert torch.allclose(other["l1"], 2 * solved["l1"])
    assert not torch.allclose(other["holdout_residual"], solved["holdout_residual"])
