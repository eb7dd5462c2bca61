"""Coil maps for objects that fill the phase field of view: two ESPIRiT sets, the two-set
(soft-SENSE) operator, their collapse to one set, and the hold-out's choice."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy.mri
import torch

from diffrecon.data.mni import get_slice
from diffrecon.mri.coils import calibration_region, espirit_maps, espirit_sets
from diffrecon.mri.holdout import holdout_split
from diffrecon.mri.mapsets import (
    MAP_VARIANTS,
    MAPS_POSTERIOR_MARGIN,
    choose_maps,
    collapsed_maps,
    posterior_pick,
    rebuilt,
)
from diffrecon.mri.masks import cartesian_mask
from diffrecon.mri.preprocess import prepare_slice
from diffrecon.mri.sparsity import l1_wavelet_fista
from diffrecon.operators import MulticoilMRI, SoftSENSE, fft2c


def _head(fill: bool, seed: int = 0, coils: int = 8):
    """A whole-head axial MNI slice, 2x downsampled: cropped so the head fills the phase
    (last) axis, or padded so it sits inside it; coils close to the field of view."""
    rng = np.random.default_rng(seed)
    mag = get_slice("t1", "axial", 70)[::2, ::2]
    cols = np.flatnonzero((mag > 0.05).any(0))
    mag = mag[:, cols[0] : cols[-1] + 1] if fill else np.pad(mag, ((0, 0), (16, 16)))
    mag = mag / np.percentile(mag, 99.5)
    yy, xx = np.mgrid[-1 : 1 : mag.shape[0] * 1j, -1 : 1 : mag.shape[1] * 1j]
    img = mag * np.exp(1j * (0.6 * xx - 0.4 * yy))
    maps = sigpy.mri.birdcage_maps((coils, *mag.shape), r=1.2, nzz=coils)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    k = fft2c(torch.from_numpy((maps * img).astype(np.complex64))).numpy()
    k += 0.01 * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
    return k.astype(np.complex64), np.abs(img)


def _l1_error(prepared, truth: np.ndarray) -> float:
    x = l1_wavelet_fista(prepared.operator, prepared.y, 1e-3, iters=80)
    mag = np.asarray(prepared.to_file(x[0].pow(2).sum(0).sqrt()))
    return float(np.linalg.norm(mag - truth) / np.linalg.norm(truth))


def test_espirit_sets_lead_with_the_one_set_maps_and_order_their_eigenvalues():
    k, _ = _head(fill=False)
    mask = cartesian_mask(k.shape[-1], 4.0, 0.12, seed=0).mask
    y = k * mask.numpy()
    region = calibration_region(np.broadcast_to(mask.numpy(), k.shape[-2:]))
    sets, eig = espirit_sets(y, region)
    one = espirit_maps(y, region=region, crop=0.0)
    assert sets.shape == (2, *k.shape) and eig.shape == (2, *k.shape[-2:])
    assert bool((eig[0] >= eig[1]).all()) and float(eig.min()) >= 0 and float(eig.max()) <= 1
    agree = (sets[0].conj() * one).sum(0).abs()
    assert float(agree[eig[0] > 0.9].min()) > 0.99
    assert torch.allclose(sets.abs().pow(2).sum(1), torch.ones_like(eig), atol=1e-4)


def test_soft_sense_with_an_empty_second_set_is_sense():
    k, _ = _head(fill=False)
    maps = espirit_maps(k, calib_width=16, crop=0.0)
    mask = cartesian_mask(k.shape[-1], 4.0, 0.12, seed=0).mask
    two = SoftSENSE(torch.stack([maps, torch.zeros_like(maps)]), mask)
    x = torch.randn(1, 4, *k.shape[-2:])
    assert torch.allclose(two(x), MulticoilMRI(maps, mask)(x[:, :2]), atol=1e-6)
    with pytest.raises(ValueError, match="sets, coils, H, W"):
        SoftSENSE(maps, mask)


def test_the_hold_out_chooses_two_set_maps_where_the_head_fills_the_phase_field_of_view():
    """One-set ESPIRiT maps are wrong at the edges of a head that fills the phase field of
    view; the collapsed two-set maps fix it, and the hold-out sees that without the truth.
    Where the head sits inside the field of view, plain ESPIRiT is kept."""
    k, truth = _head(fill=True)
    mask = cartesian_mask(k.shape[-1], 4.0, 0.1, seed=1).mask
    prepared = prepare_slice(k, mask)
    split = holdout_split(prepared.mask, seed=0)
    scoring, final, choice = choose_maps(prepared, split)
    assert choice.variant in MAP_VARIANTS[1:]
    assert choice.scores[choice.variant] < 0.9 * choice.scores["espirit"]
    assert final.maps_source.startswith(choice.variant) and scoring.maps_source == final.maps_source
    assert not torch.equal(scoring.maps, final.maps)  # fit samples only vs all of them
    # every variant's fit-sample slice is kept for the posterior's comparison, and any
    # variant can be rebuilt from all the samples (the chosen one is ``final``)
    assert set(choice.scoring) == set(MAP_VARIANTS) and choice.rival == "espirit"
    assert torch.equal(rebuilt(prepared, choice, choice.variant).maps, final.maps)
    assert rebuilt(prepared, choice, "espirit") is prepared
    # measured: 0.087 against 0.092 since ESPIRiT cuts at the noise edge (the bound was
    # 0.93 before, when the one-set maps kept less of the calibration's signal)
    assert _l1_error(final, truth) < 0.97 * _l1_error(prepared, truth)
    maps = collapsed_maps(prepared, 1.0, 1e-3)
    assert torch.allclose(maps.abs().pow(2).sum(0), torch.ones(k.shape[-2:]), atol=1e-4)

    k, _ = _head(fill=False)
    prepared = prepare_slice(k, cartesian_mask(k.shape[-1], 4.0, 0.1, seed=1).mask)
    split = holdout_split(prepared.mask, seed=0)
    scoring, final, choice = choose_maps(prepared, split)
    assert choice.variant == "espirit" and final is prepared and scoring is prepared
    assert choice.rival == min(MAP_VARIANTS[1:], key=choice.scores.__getitem__)


def test_the_posterior_replaces_the_l1_choice_of_maps_only_by_a_margin_on_the_excess():
    """Scores compare by their error beyond the noise (``score^2 - 1``): at 4x-like scores
    near 1 a 2% lower score is a 14% lower excess (abdomen 4x: 1.135 against 1.156) and
    wins; a lower excess within the margin, or any score when the incumbent is at the
    noise already, keeps the incumbent; unknown scores are skipped."""
    assert posterior_pick({"espirit": 1.156, "two_set": 1.135, "nlinv": 1.149}, "espirit") == (
        "two_set"
    )
    e = 1.5**2 - 1
    close = (1 + e * (1 - 0.5 * MAPS_POSTERIOR_MARGIN)) ** 0.5  # lower, within the margin
    far = (1 + e * (1 - 2 * MAPS_POSTERIOR_MARGIN)) ** 0.5
    assert posterior_pick({"espirit": 1.5, "nlinv": close}, "espirit") == "espirit"
    assert posterior_pick({"espirit": 1.5, "nlinv": far, "two_set": close}, "espirit") == "nlinv"
    assert posterior_pick({"espirit": far, "two_set": 1.5}, "two_set") == "espirit"
    assert posterior_pick({"espirit": 1.001, "nlinv": 0.999}, "espirit") == "espirit"
    assert posterior_pick({"espirit": 1.5, "nlinv": None}, "espirit") == "espirit"
