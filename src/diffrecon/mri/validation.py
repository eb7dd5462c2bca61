"""Choosing how a reconstruction finishes from the held-out k-space, never from a truth.

Given a slice, its hold-out split and posterior draws made from the fit samples only,
:func:`validate` measures on the held-out samples (:mod:`diffrecon.mri.holdout`):

- a self-tuned L1-wavelet reconstruction: ``lam`` from :data:`L1_GRID` (relative to the
  largest zero-filled magnitude, as SigPy's), the one that predicts the held-out samples
  best;
- the raw posterior mean, and (when asked or guarded) the hybrid finishing step at each
  ``mu`` of :data:`MU_GRID`
  (every draw pulled toward data consistency and wavelet sparsity:
  :func:`~diffrecon.mri.sparsity.l1_wavelet_fista` with the draw as anchor; ``mu = 0`` is the
  L1 solution);
- the guard: the raw posterior mean's held-out error *beyond the noise* (:func:`excess`)
  is more than :data:`GUARD_RATIO` times the self-tuned L1 image's; then the finish is the
  hybrid that predicts them best (:func:`validate` has the other finishes).

Scores of draw means are corrected to the number of draws of the final run: with ``n``
draws on the fit samples, the spread of their held-out predictions estimates the variance
term, so ``||r_mean||^2 - tr/n + tr/N`` is what an ``N``-draw mean would score (an
unbiased estimate), and a 2-draw check does not favour smoother finishes for their lower
variance alone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from diffrecon.mri.holdout import HoldoutSplit, holdout_score
from diffrecon.mri.preprocess import PreparedSlice
from diffrecon.mri.sparsity import l1_wavelet_fista

L1_GRID = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)  # descending: each solve warm-starts the next
MU_GRID = (3.0, 1.0, 0.3, 0.1, 0.0)  # the hybrid's pull toward the draw (||A||^2 = 1)
FINISHES = ("auto", "holdout", "raw")
MARGIN = 0.02  # relative: held-out scores closer than this are a tie (run-to-run spread)
# the guard compares what each image gets wrong beyond the noise (score^2 - 1), not the
# scores: where the held-out lines carry little signal every image scores near 1 and a
# ratio of scores says nothing. Measured (docs/validation.md): good posteriors had up to
# 2.1 times the L1 image's excess, the failures below zero-filled (8x whole-head slices at
# 14.4 and 19.7 dB, a 10-level run) 3.6 to 87 times; one near-tie (2.8) is caught too.
GUARD_RATIO = 2.5
# excess below this is noise-level agreement (a 2.5% error in the noise estimate moves
# score^2 by 5%): the L1 image's excess is floored at it before the ratio
EXCESS_FLOOR = 0.05
TUNE_ITERS = 40  # FISTA iterations per grid point (warm-started)
FINISH_ITERS = 60  # per hybrid or final L1 solve
CENTRE_ITERS = 100  # the L1 image the hybrids start from (from the zero-filled image)


@dataclass(frozen=True)
class Validation:
    """What the hold-out measured and chose for one slice (all scores in noise units:
    1.0 = the held-out samples predicted as well as the noise allows)."""

    share: float  # held-out share of all the measured lines (points)
    score_posterior: float  # the raw posterior mean (corrected to the final draw count)
    score_l1: float  # the self-tuned L1-wavelet image
    score_finish: float  # the finish chosen
    l1_lambda: float  # the L1 weight chosen (relative to max |A^H y|)
    mu: float | None  # the hybrid's pull chosen; None: the raw posterior
    guard: bool  # the raw posterior lost to the self-tuned L1 beyond the margin
    seconds: float  # what the check cost (the job counts its fit-sample draws in)
    maps: str = "given"  # the coil-map variant the hold-out chose (mri.mapsets), or "given"
    score_espirit: float | None = None  # the self-tuned L1 with one-set ESPIRiT maps
    # --coil-maps auto: the variant the L1 image chose, and the posterior's score with
    # one-set ESPIRiT maps, with the best two-set variant and with NLINV's
    maps_l1: str | None = None
    posterior_espirit: float | None = None
    posterior_two_set: float | None = None
    posterior_nlinv: float | None = None
    adapted: bool | None = None  # the prior was adapted to the slice (None: not asked)
    adapt_level: int | None = None  # the adaptation level whose adapters were kept
    adapt_seconds: float | None = None  # what the adaptation cost
    adapt_reason: str | None = None  # how it ended

    def as_attrs(self) -> dict[str, Any]:
        """Per-slice provenance, every name carrying ``holdout``."""
        return {f"holdout_{k}": v for k, v in asdict(self).items()}

    def describe(self) -> str:
        """One line for summaries and the napari panel."""
        finish = "raw posterior" if self.mu is None else f"hybrid (mu {self.mu:g})"
        maps = ""
        if self.posterior_nlinv is not None and self.posterior_espirit is not None:
            maps = (
                f"; maps {self.maps} (posterior with ESPIRiT's {self.posterior_espirit:.2f}, "
                f"two-set {self.posterior_two_set:.2f}, NLINV's {self.posterior_nlinv:.2f})"
            )
        elif self.score_espirit is not None and self.maps != "espirit":
            maps = f"; maps {self.maps} (ESPIRiT's L1 {self.score_espirit:.2f})"
        adapt = ""
        if self.adapted is not None:
            adapt = "; prior adapted" if self.adapted else "; adaptation refused"
        return (
            f"hold-out (1 = noise level): posterior {self.score_posterior:.2f}, self-tuned "
            f"L1 {self.score_l1:.2f} (lambda {self.l1_lambda:g}); finish: {finish}{maps}{adapt}"
        )

    def warning(self) -> str | None:
        """What the guard says when it fired (else None)."""
        if not self.guard:
            return None
        what = "kept as asked (--finish raw)" if self.mu is None else "replaced by the hybrid"
        return (
            f"the posterior mean predicts held-out k-space worse than a self-tuned L1-wavelet "
            f"image ({self.score_posterior:.2f} vs {self.score_l1:.2f}, 1 = noise level): "
            f"the prior does not fit these data (too few steps, wrong coil maps, anatomy it "
            f"has not seen?); {what}"
        )


def excess(score: float) -> float:
    """The held-out error beyond the noise, in units of the noise energy: ``score^2 - 1``
    (0 for a prediction as good as the noise allows; negative within the noise's spread)."""
    return score * score - 1.0


def guarded(score_posterior: float, score_l1: float) -> bool:
    """Whether the posterior mean predicts the held-out samples so much worse than the
    self-tuned L1 image that it is not trusted: its :func:`excess` above
    :data:`GUARD_RATIO` times the L1 image's (floored at :data:`EXCESS_FLOOR`)."""
    return excess(score_posterior) > GUARD_RATIO * max(excess(score_l1), EXCESS_FLOOR)


def lipschitz(prepared: PreparedSlice) -> float:
    """``||A||^2`` of ``prepared``'s operator, with a 2% safety margin: FISTA's step."""
    return 1.02 * prepared.operator.normal_norm(prepared.zero_filled[None], iters=15)


def l1_image(
    prepared: PreparedSlice, lam: float, norm: float | None = None, iters: int = CENTRE_ITERS
) -> torch.Tensor:
    """The L1-wavelet image ``(1, 2, H, W)`` of ``prepared``'s data at weight ``lam``
    (FISTA from the zero-filled image); ``norm``: its :func:`lipschitz` when known."""
    return l1_wavelet_fista(
        prepared.operator,
        prepared.y,
        lam,
        iters=iters,
        support=prepared.support,
        lipschitz=lipschitz(prepared) if norm is None else norm,
    )


def hybrid_draws(
    prepared: PreparedSlice,
    draws: torch.Tensor,
    lam: float,
    mu: float,
    iters: int = FINISH_ITERS,
    norm: float | None = None,
    centre: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every draw ``(n, 2, H, W)`` pulled toward data consistency and wavelet sparsity:
    ``argmin 1/2 ||A x - y||^2 + lam ||W x||_1 + mu/2 ||x - draw||^2`` (``prepared``'s
    operator and data); ``norm``: its :func:`lipschitz` when the caller has it.

    FISTA starts each draw from the L1 image ``centre`` (:func:`l1_image`, computed when
    not given) plus the draw's deviation from the draws' mean. For ``mu > 0`` the problem
    is strongly convex and the start does not matter; for ``mu = 0`` (the L1 solution) it
    does: structure of a failed posterior that lies in the near-null space of ``A``
    (aliasing, wrong coil maps) would survive any affordable number of iterations started
    from the draw (measured: an 8x whole-head slice ended at 15.9 dB started from the draws,
    at 20.4 dB, the L1 image's, started from it), while the draws' spread around their
    mean is kept."""
    norm = lipschitz(prepared) if norm is None else norm
    centre = l1_image(prepared, lam, norm) if centre is None else centre
    return l1_wavelet_fista(
        prepared.operator,
        prepared.y,
        lam,
        anchor=draws,
        mu=mu,
        iters=iters,
        support=prepared.support,
        lipschitz=norm,
        start=centre + (draws - draws.mean(0, keepdim=True)),
    )


def tune_l1(
    prepared: PreparedSlice,
    split: HoldoutSplit,
    fit: PreparedSlice,
    norm: float | None = None,
    grid: tuple[float, ...] = L1_GRID,
) -> tuple[float, float]:
    """``(lam, score)``: the L1 weight of ``grid`` (descending) whose reconstruction from
    the fit samples predicts the held-out ones best (warm-started from the previous
    weight); ``norm``: the fit operator's :func:`lipschitz` when the caller has it."""
    norm = lipschitz(fit) if norm is None else norm
    best, x = None, None
    for lam in grid:
        x = l1_wavelet_fista(
            fit.operator,
            fit.y,
            lam,
            anchor=x,
            iters=TUNE_ITERS,
            support=fit.support,
            lipschitz=norm,
        )
        score = holdout_score(prepared, split, x)
        if best is None or score < best[1]:
            best = (lam, score)
    assert best is not None
    return best


def validate(
    prepared: PreparedSlice,
    split: HoldoutSplit,
    fit: PreparedSlice,
    draws_fit: torch.Tensor,
    n_final: int,
    finish: str = "auto",
    l1: tuple[float, float] | None = None,
    centre: torch.Tensor | None = None,
    norm: float | None = None,
) -> Validation:
    """Measure the self-tuned L1 and the raw posterior on the held-out samples
    (``draws_fit``: posterior draws from the fit samples ``fit``; scored as the mean of
    ``n_final`` draws) and choose the finish: ``"auto"`` keeps the raw posterior unless the
    guard fires (:func:`guarded`: it loses to the self-tuned L1 beyond :data:`GUARD_RATIO`), then
    the best hybrid of :data:`MU_GRID`; ``"holdout"`` takes whichever of the raw posterior
    and its hybrids predicts the held-out samples best (a hybrid only beyond
    :data:`MARGIN`); ``"raw"`` always keeps the raw posterior (scores still recorded).
    ``l1``: the self-tuned L1's ``(lam, score)`` when the caller has them
    (:func:`~diffrecon.mri.mapsets.choose_maps` does); ``centre``: the L1 image of ``fit``
    at that weight and ``norm``: ``fit``'s :func:`lipschitz`, likewise."""
    if finish not in FINISHES:
        raise ValueError(f"finish must be one of {FINISHES}, got {finish!r}")
    t0 = time.perf_counter()
    norm = lipschitz(fit) if norm is None else norm  # one for the grid and every hybrid
    lam, score_l1 = tune_l1(prepared, split, fit, norm) if l1 is None else l1
    score_raw = holdout_score(prepared, split, draws_fit, n_final)
    guard = guarded(score_raw, score_l1)
    mu, score = None, score_raw
    if finish == "holdout" or (guard and finish == "auto"):
        centre = l1_image(fit, lam, norm) if centre is None else centre
        scores = {
            m: holdout_score(
                prepared,
                split,
                hybrid_draws(fit, draws_fit, lam, m, norm=norm, centre=centre),
                n_final,
            )
            for m in MU_GRID
        }
        best = min(scores, key=scores.get)  # the larger mu on a tie (listed first)
        if guard or scores[best] < score_raw * (1 - MARGIN):
            mu, score = best, scores[best]
    return Validation(
        share=split.fraction,
        score_posterior=score_raw,
        score_l1=score_l1,
        score_finish=score,
        l1_lambda=lam,
        mu=mu,
        guard=guard,
        seconds=time.perf_counter() - t0,
    )
