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
- the guard: the raw posterior mean predicts them worse than the self-tuned L1 image by
  more than :data:`GUARD_MARGIN`; then the finish is the hybrid that predicts them best
  (:func:`validate` has the other finishes).

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
# the guard: the raw posterior mean predicts the held-out samples this much worse than the
# self-tuned L1 image. Wide on purpose: on the demo slice at 4x the posterior mean (28.7 dB)
# scored 1.70 against L1's 1.48 (25.0 dB), while a 10-level run (20.2 dB, below
# zero-filled's 22.3) scored 10.2: the hold-out sees gross failures, not fine differences.
GUARD_MARGIN = 0.25
TUNE_ITERS = 40  # FISTA iterations per grid point (warm-started)
FINISH_ITERS = 60  # per hybrid or final L1 solve


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
        if self.score_espirit is not None and self.maps != "espirit":
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


def lipschitz(prepared: PreparedSlice) -> float:
    """``||A||^2`` of ``prepared``'s operator, with a 2% safety margin: FISTA's step."""
    return 1.02 * prepared.operator.normal_norm(prepared.zero_filled[None], iters=15)


def hybrid_draws(
    prepared: PreparedSlice,
    draws: torch.Tensor,
    lam: float,
    mu: float,
    iters: int = FINISH_ITERS,
    norm: float | None = None,
) -> torch.Tensor:
    """Every draw ``(n, 2, H, W)`` pulled toward data consistency and wavelet sparsity:
    ``argmin 1/2 ||A x - y||^2 + lam ||W x||_1 + mu/2 ||x - draw||^2`` (``prepared``'s
    operator and data; ``mu = 0``: the L1 solution started from each draw); ``norm``: its
    :func:`lipschitz` when the caller has it."""
    return l1_wavelet_fista(
        prepared.operator,
        prepared.y,
        lam,
        anchor=draws,
        mu=mu,
        iters=iters,
        support=prepared.support,
        lipschitz=lipschitz(prepared) if norm is None else norm,
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
) -> Validation:
    """Measure the self-tuned L1 and the raw posterior on the held-out samples
    (``draws_fit``: posterior draws from the fit samples ``fit``; scored as the mean of
    ``n_final`` draws) and choose the finish: ``"auto"`` keeps the raw posterior unless the
    guard fires (it loses to the self-tuned L1 by more than :data:`GUARD_MARGIN`), then
    the best hybrid of :data:`MU_GRID`; ``"holdout"`` takes whichever of the raw posterior
    and its hybrids predicts the held-out samples best (a hybrid only beyond
    :data:`MARGIN`); ``"raw"`` always keeps the raw posterior (scores still recorded).
    ``l1``: the self-tuned L1's ``(lam, score)`` when the caller has them
    (:func:`~diffrecon.mri.mapsets.choose_maps` does)."""
    if finish not in FINISHES:
        raise ValueError(f"finish must be one of {FINISHES}, got {finish!r}")
    t0 = time.perf_counter()
    norm = lipschitz(fit)  # one power iteration for the grid and every hybrid
    lam, score_l1 = tune_l1(prepared, split, fit, norm) if l1 is None else l1
    score_raw = holdout_score(prepared, split, draws_fit, n_final)
    guard = score_raw > score_l1 * (1 + GUARD_MARGIN)
    mu, score = None, score_raw
    if finish == "holdout" or (guard and finish == "auto"):
        scores = {
            m: holdout_score(
                prepared, split, hybrid_draws(fit, draws_fit, lam, m, norm=norm), n_final
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
