"""Coil maps for objects that fill the phase field of view, chosen per slice on held-out
k-space.

One set of ESPIRiT maps assumes the sensitivities are smooth across the periodic field of
view. When the object fills (or wraps) the phase-encode field of view they are not: the
coil nearest one edge sees the object there strongly and across the boundary weakly. The
first ESPIRiT eigenvalue then drops below 1 near the edges and its eigenvector is wrong
there; the aliasing of those pixels spreads the error along the phase direction (on
whole-head MNI slices at 8x, L1-wavelet on such maps came out 5 dB *below* zero-filled).
The second ESPIRiT set holds what the first misses (soft-SENSE, Uecker et al. 2014).

A diffusion prior describes one image, not one per set, so :func:`collapsed_maps` turns
the two sets into one: a classical two-set reconstruction (L1-wavelet, both sets weighted
by their eigenvalue to the power ``p``) gives per pixel the coil images
``sum_s S_s x_s``, and their directions are the maps (the one-set SENSE model that agrees
with the two-set fit). :func:`choose_maps` lets the held-out k-space choose between the
plain ESPIRiT maps and the collapsed ones, every candidate built from the fit samples
only; the chosen variant is then rebuilt from all the samples.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from diffrecon.mri.coils import espirit_sets, phase_reference
from diffrecon.mri.holdout import HoldoutSplit
from diffrecon.mri.nlinv import nlinv
from diffrecon.mri.preprocess import PreparedSlice
from diffrecon.mri.sparsity import l1_wavelet_fista
from diffrecon.mri.validation import L1_GRID, tune_l1
from diffrecon.operators.mri import MulticoilMRI, SoftSENSE

# "soft-sense-p": two ESPIRiT sets weighted by their eigenvalues to the power p, collapsed
MAP_VARIANTS = ("espirit", "soft-sense-1", "soft-sense-2")
COLLAPSE_ITERS = 60  # FISTA iterations of the two-set reconstruction
# a two-set variant replaces ESPIRiT when its held-out score is this much lower (relative).
# Narrower than the finish's margin: the candidates are deterministic L1 images on one
# split, not draws, and on the 13 bench cases measured the lowest score had the highest
# PSNR every time (differences of 1.3% and 1.5% still meant +0.5 and +1.9 dB; ties within
# 0.2% were ties in PSNR too): docs/validation.md
MAPS_MARGIN = 0.005
# how a run gets its maps when none are given: ESPIRiT's variants chosen on the L1 image
# ("espirit"), NLINV's ("nlinv"), or both compared by the posterior on held-out k-space
COIL_MAPS = ("auto", "espirit", "nlinv")
# NLINV replaces ESPIRiT's variant when the posterior's held-out score with its maps is this
# much lower (relative): the run-to-run spread of a few-draw score, as the finish's margin
MAPS_POSTERIOR_MARGIN = 0.02


@dataclass(frozen=True)
class MapsChoice:
    """What the hold-out measured for each coil-map variant of a slice."""

    variant: str  # the one chosen (a name of MAP_VARIANTS)
    scores: dict[str, float]  # self-tuned L1's held-out score with each variant's maps
    l1_lambda: float  # the L1 weight chosen with the chosen maps
    seconds: float


def collapsed_maps(
    prepared: PreparedSlice,
    power: float,
    lam: float,
    iters: int = COLLAPSE_ITERS,
    sets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One set of unit-norm maps ``(coils, H, W)`` from two ESPIRiT sets of ``prepared``'s
    calibration region, weighted by eigenvalue ** ``power``, through a two-set L1-wavelet
    reconstruction of ``prepared``'s data (weight ``lam``, as :data:`~diffrecon.mri.
    validation.L1_GRID`); where that reconstruction is empty (background) the first set.
    ``sets``: :func:`~diffrecon.mri.coils.espirit_sets` of the region when the caller has
    them (they come from the ACS alone, the same for the fit samples and all of them)."""
    if prepared.calib_region is None:
        raise ValueError("two-set maps need the calibration region ESPIRiT used")
    if sets is None:
        sets = espirit_sets(prepared.y[0], prepared.calib_region, noise_std=prepared.noise_std)
    vecs, eig = sets
    weighted = vecs * eig[:, None].pow(power).to(vecs.dtype)
    op = SoftSENSE(weighted, prepared.mask)
    x = l1_wavelet_fista(op, prepared.y, lam, iters=iters)[0]  # (2 * sets, H, W)
    images = torch.complex(x[0::2], x[1::2])  # (sets, H, W)
    coil = (weighted * images[:, None]).sum(0)  # (coils, H, W)
    norm = coil.abs().pow(2).sum(0, keepdim=True).sqrt()
    found = norm > 1e-3 * float(norm.max())
    maps = torch.where(found, coil / norm.clamp_min(1e-30), vecs[0])
    return phase_reference(maps).to(torch.complex64).contiguous()


def with_maps(prepared: PreparedSlice, maps: torch.Tensor, source: str) -> PreparedSlice:
    """``prepared`` with other coil maps: its operator and zero-filled image follow."""
    op = MulticoilMRI(maps, prepared.mask)
    return dataclasses.replace(
        prepared,
        operator=op,
        maps=maps,
        maps_source=source,
        zero_filled=op.adjoint(prepared.y)[0],
    )


def _power(variant: str) -> float:
    return float(variant.rsplit("-", 1)[1])


def _near(lam: float) -> tuple[float, ...]:
    """``lam`` and its neighbours in :data:`~diffrecon.mri.validation.L1_GRID`."""
    i = L1_GRID.index(lam)
    return L1_GRID[max(i - 1, 0) : i + 2]


def choose_maps(
    prepared: PreparedSlice, split: HoldoutSplit
) -> tuple[PreparedSlice, PreparedSlice, MapsChoice]:
    """Score each :data:`MAP_VARIANTS` by how well a self-tuned L1-wavelet image with its
    maps, built from the fit samples of ``split``, predicts the held-out ones; a two-set
    variant is chosen only when it beats plain ESPIRiT by more than :data:`MAPS_MARGIN`.
    Returns ``(scoring, final, choice)``: ``scoring`` carries the chosen maps as built
    from the fit samples (for an honest hold-out check of the sampler), ``final`` as
    rebuilt from all the samples (for the reconstruction)."""
    t0 = time.perf_counter()
    fit = split.restrict(prepared)
    lam0, score0 = tune_l1(prepared, split, fit)
    scores = {MAP_VARIANTS[0]: score0}
    lams = {MAP_VARIANTS[0]: lam0}
    scoring = {MAP_VARIANTS[0]: prepared}
    # the held-out lines lie outside the ACS: one eigendecomposition serves every solve
    sets = (
        espirit_sets(prepared.y[0], prepared.calib_region, noise_std=prepared.noise_std)
        if prepared.calib_region
        else None
    )
    for variant in MAP_VARIANTS[1:]:
        maps = collapsed_maps(fit, _power(variant), lam0, sets=sets)
        candidate = with_maps(prepared, maps, prepared.maps_source)
        # the weight near ESPIRiT's choice: maps change the fit more than the sparsity
        lams[variant], scores[variant] = tune_l1(
            candidate, split, split.restrict(candidate), grid=_near(lam0)
        )
        scoring[variant] = candidate
    best = min(scores, key=scores.get)
    if scores[best] >= score0 * (1 - MAPS_MARGIN):
        best = MAP_VARIANTS[0]
    final = prepared
    if best != MAP_VARIANTS[0]:
        maps = collapsed_maps(prepared, _power(best), lams[best], sets=sets)
        final = with_maps(prepared, maps, f"{best} from {prepared.maps_source}")
        scoring[best] = dataclasses.replace(scoring[best], maps_source=final.maps_source)
    seconds = time.perf_counter() - t0
    return scoring[best], final, MapsChoice(best, scores, lams[best], seconds)


def with_nlinv_maps(prepared: PreparedSlice, split: HoldoutSplit | None = None) -> PreparedSlice:
    """``prepared`` with NLINV maps (:func:`~diffrecon.mri.nlinv.nlinv`) fitted to all its
    samples, or with ``split`` to its fit samples only (the hold-out check's maps: unlike
    ESPIRiT's, which come from the ACS alone, NLINV's would otherwise have seen the
    held-out samples)."""
    on = prepared if split is None else split.restrict(prepared)
    found = nlinv(on.y[0], on.mask, prepared.noise_std)
    source = f"nlinv ({found.steps} steps{'' if split is None else ', fit samples'})"
    return with_maps(prepared, found.maps.to(prepared.maps.device), source)
