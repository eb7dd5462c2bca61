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
only; the chosen variant is then rebuilt from all the samples (:func:`rebuilt`). The L1
image hides map errors the sampler's exact data step exposes, so ``--coil-maps auto`` then
lets the posterior's held-out score overrule it (:func:`posterior_pick`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from diffrecon.mri.coils import espirit_sets, phase_reference
from diffrecon.mri.holdout import HoldoutSplit
from diffrecon.mri.nlinv import nlinv
from diffrecon.mri.preprocess import PreparedSlice
from diffrecon.mri.sparsity import l1_wavelet_fista
from diffrecon.mri.validation import EXCESS_FLOOR, L1_GRID, excess, tune_l1
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
# ("espirit"), NLINV's ("nlinv"), or ESPIRiT's one-set and best two-set variant and NLINV's
# compared by the posterior on held-out k-space ("auto")
COIL_MAPS = ("auto", "espirit", "nlinv")
# another set of maps replaces the L1 image's choice when the posterior's held-out error
# beyond the noise (excess, score^2 - 1) with them is lower by this share of the choice's
# (floored at validation.EXCESS_FLOOR). Relative to the excess, not the score: where the
# held-out lines carry little signal (4x, excess 0.3) a 14% lower excess is 2% of the score
# and was a 3 dB better posterior (abdomen 4x, docs/validation.md). The finish's 2% score
# spread, measured at score 1.7, is 6% of the excess there: 10% leaves headroom.
MAPS_POSTERIOR_MARGIN = 0.10


@dataclass(frozen=True)
class MapsChoice:
    """What the hold-out measured for each coil-map variant of a slice."""

    variant: str  # the one chosen (a name of MAP_VARIANTS)
    scores: dict[str, float]  # self-tuned L1's held-out score with each variant's maps
    lambdas: dict[str, float]  # the L1 weight chosen with each variant's maps
    seconds: float
    # each variant's slice with its maps built from the fit samples (for the hold-out)
    scoring: dict[str, PreparedSlice] = field(default_factory=dict, repr=False, compare=False)

    @property
    def l1_lambda(self) -> float:
        """The L1 weight chosen with the chosen variant's maps."""
        return self.lambdas[self.variant]

    @property
    def rival(self) -> str:
        """The best variant of the other kind than the one chosen: one-set ESPIRiT when a
        two-set variant was chosen, else the two-set variant with the lower L1 score."""
        if self.variant != MAP_VARIANTS[0]:
            return MAP_VARIANTS[0]
        return min(MAP_VARIANTS[1:], key=self.scores.__getitem__)


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
        candidate = with_maps(prepared, maps, f"{variant} from {prepared.maps_source}")
        # the weight near ESPIRiT's choice: maps change the fit more than the sparsity
        lams[variant], scores[variant] = tune_l1(
            candidate, split, split.restrict(candidate), grid=_near(lam0)
        )
        scoring[variant] = candidate
    best = min(scores, key=scores.get)
    if scores[best] >= score0 * (1 - MAPS_MARGIN):
        best = MAP_VARIANTS[0]
    choice = MapsChoice(best, scores, lams, 0.0, scoring)
    final = rebuilt(prepared, choice, best, sets)
    choice = dataclasses.replace(choice, seconds=time.perf_counter() - t0)
    return scoring[best], final, choice


def rebuilt(
    prepared: PreparedSlice,
    choice: MapsChoice,
    variant: str,
    sets: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> PreparedSlice:
    """``prepared`` (one-set ESPIRiT maps, all the samples) with ``variant``'s maps rebuilt
    from all the samples, at the L1 weight ``choice`` found for it (``sets``: as
    :func:`collapsed_maps`)."""
    if variant == MAP_VARIANTS[0]:
        return prepared
    maps = collapsed_maps(prepared, _power(variant), choice.lambdas[variant], sets=sets)
    return with_maps(prepared, maps, choice.scoring[variant].maps_source)


def posterior_pick(scores: dict[str, float | None], incumbent: str) -> str:
    """The name in ``scores`` (posterior held-out scores of several coil-map candidates)
    to keep: the lowest :func:`~diffrecon.mri.validation.excess`, where it is lower than
    ``incumbent``'s by more than :data:`MAPS_POSTERIOR_MARGIN` of it; else ``incumbent``."""
    known = {k: excess(v) for k, v in scores.items() if v is not None}
    if incumbent not in known:
        return incumbent
    best = min(known, key=known.__getitem__)
    bar = known[incumbent] - MAPS_POSTERIOR_MARGIN * max(known[incumbent], EXCESS_FLOOR)
    return best if known[best] < bar else incumbent


def with_nlinv_maps(prepared: PreparedSlice, split: HoldoutSplit | None = None) -> PreparedSlice:
    """``prepared`` with NLINV maps (:func:`~diffrecon.mri.nlinv.nlinv`) fitted to all its
    samples, or with ``split`` to its fit samples only (the hold-out check's maps: unlike
    ESPIRiT's, which come from the ACS alone, NLINV's would otherwise have seen the
    held-out samples)."""
    on = prepared if split is None else split.restrict(prepared)
    found = nlinv(on.y[0], on.mask, prepared.noise_std)
    source = f"nlinv ({found.steps} steps{'' if split is None else ', fit samples'})"
    return with_maps(prepared, found.maps.to(prepared.maps.device), source)
