"""Distribution-free calibration of posterior intervals: conformal risk control per slice.

The draws give, per pixel, a mean and a std. The interval ``mean +- lam * s`` (``s`` the std,
floored, see :func:`effective_std`) misses pixel ``j`` when its normalised residual
``|x_j - mean_j| / s_j`` exceeds ``lam``. For a slice ``i`` let ``L_i(lam)`` be the fraction of
its foreground pixels missed: a loss in [0, 1], non-increasing in ``lam``. Conformal risk
control (Angelopoulos, Bates, Fisch, Lei, Schuster 2022, "Conformal risk control"; the
image-to-image setting of Angelopoulos et al. 2022, "Image-to-image regression with
distribution-free uncertainty quantification") picks

    lam_hat = inf { lam : n / (n + 1) * mean_i L_i(lam) + 1 / (n + 1) <= alpha }

on ``n`` calibration slices; then for a new slice exchangeable with them,
``E[L_new(lam_hat)] <= alpha``: the expected fraction of its foreground pixels outside the
interval is at most ``alpha``, whatever the prior, sampler or data. The guarantee needs
``n >= 1 / alpha - 1`` slices (9 for 90% intervals); with fewer none is possible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffrecon.uncertainty.score import check_weights, score_map

FORMAT = "diffrecon-calibration"
STD_FLOOR = 1e-3  # the std is floored at this fraction of the slice's 99th-percentile mean
FOREGROUND = 0.1  # foreground: truth above this fraction of the slice's maximum


class NonFiniteStdError(ValueError):
    """A posterior std with NaN or inf: no interval is formed from it."""


def std_mc_error(draws: int) -> float | None:
    """Relative standard error of a std estimated from ``draws`` draws, ``1 / sqrt(2 (n -
    1))`` for Gaussian draws (``None`` below two draws): 8 draws give 27%, 32 give 13%."""
    return None if draws < 2 else 1.0 / math.sqrt(2.0 * (draws - 1))


def effective_std(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The std used to scale intervals: floored at ``STD_FLOOR`` times the slice's 99th
    percentile of ``mean``, so that a pixel with (numerically) zero spread still gets an
    interval of finite relative width. ``mean``/``std``: ``(..., H, W)``, per slice."""
    m = np.asarray(mean, dtype=np.float64)
    s = np.asarray(std, dtype=np.float64)
    if not np.isfinite(s).all():
        raise NonFiniteStdError("the posterior std holds NaN or inf: no interval can be formed")
    scale = np.percentile(m, 99, axis=(-2, -1), keepdims=True)
    return np.maximum(s, STD_FLOOR * np.maximum(scale, 1e-30))


def foreground(truth: np.ndarray) -> np.ndarray:
    """Pixels whose truth exceeds ``FOREGROUND`` times the slice's maximum."""
    t = np.asarray(truth, dtype=np.float64)
    return t > FOREGROUND * t.max(axis=(-2, -1), keepdims=True)


def normalised_residuals(truth: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``|truth - mean| / effective_std`` for one slice ``(H, W)``."""
    return np.abs(np.asarray(truth, np.float64) - mean) / effective_std(mean, std)


def crc_threshold(scores: list[np.ndarray], level: float) -> float:
    """Conformal-risk-control ``lam_hat`` for the per-slice loss "fraction of the slice's
    scores above ``lam``" at risk ``alpha = 1 - level`` (see the module docstring)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = len(scores)
    alpha = 1.0 - level + 1e-12  # 1 - 0.9 is 0.0999...98 in floating point
    if n < math.ceil(1.0 / alpha - 1.0 - 1e-9):
        need = math.ceil(1.0 / alpha - 1.0 - 1e-9)
        raise ValueError(
            f"{n} calibration slice(s) cannot guarantee {level:.0%} intervals: conformal risk "
            f"control needs at least {need} (1 / (1 - level) - 1)"
        )
    sorted_scores = [np.sort(np.asarray(s, np.float64).ravel()) for s in scores]
    if any(s.size == 0 for s in sorted_scores):
        raise ValueError("a calibration slice has no foreground pixels")

    def risk(lam: float) -> float:
        missed = [1.0 - np.searchsorted(s, lam, side="right") / s.size for s in sorted_scores]
        return n / (n + 1) * float(np.mean(missed)) + 1.0 / (n + 1)

    candidates = np.unique(np.concatenate(sorted_scores))
    if risk(float(candidates[-1])) > alpha:  # only the infinite interval is valid
        return math.inf
    lo, hi = 0, len(candidates) - 1  # risk is non-increasing in lam: bisect on the scores
    if risk(0.0) <= alpha:
        return 0.0
    while lo < hi:
        mid = (lo + hi) // 2
        if risk(float(candidates[mid])) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


def coverage_report(
    truths: list[np.ndarray],
    means: list[np.ndarray],
    stds: list[np.ndarray],
    quantiles: list[np.ndarray] | None = None,
    quantile_levels: tuple[float, ...] = (),
    levels: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95),
) -> dict[str, Any]:
    """How well the uncalibrated draws' intervals cover the truth, in the foreground and
    overall: Gaussian ``mean +- z std`` intervals at each level, the draws' own central
    quantile intervals when ``quantiles`` (``(q, H, W)`` per slice at ``quantile_levels``)
    are given, the correlation of std with |error| and RMS std / RMS error."""
    from statistics import NormalDist

    out: dict[str, Any] = {"gaussian": {}, "quantile": {}}
    for region in ("foreground", "all"):
        masks = [
            foreground(t) if region == "foreground" else np.ones(t.shape, bool) for t in truths
        ]
        err = np.concatenate(
            [np.abs(t - m)[k] for t, m, k in zip(truths, means, masks, strict=True)]
        )
        sd = np.concatenate([s[k] for s, k in zip(stds, masks, strict=True)])
        gauss = {}
        for lv in levels:
            z = NormalDist().inv_cdf(0.5 + lv / 2)
            gauss[str(lv)] = float((err <= z * sd).mean())
        out["gaussian"][region] = gauss
        if quantiles is not None:
            qcov = {}
            for lv in levels:
                lo_q, hi_q = round(0.5 - lv / 2, 6), round(0.5 + lv / 2, 6)
                if lo_q not in quantile_levels or hi_q not in quantile_levels:
                    continue
                i, j = quantile_levels.index(lo_q), quantile_levels.index(hi_q)
                inside = np.concatenate(
                    [
                        ((t >= q[i]) & (t <= q[j]))[k]
                        for t, q, k in zip(truths, quantiles, masks, strict=True)
                    ]
                )
                qcov[str(lv)] = float(inside.mean())
            out["quantile"][region] = qcov
        out.setdefault("std_error_correlation", {})[region] = (
            float(np.corrcoef(sd, err)[0, 1]) if sd.std() > 0 and err.std() > 0 else float("nan")
        )
        out.setdefault("rms_std_over_rms_error", {})[region] = float(
            np.sqrt((sd**2).mean()) / max(np.sqrt((err**2).mean()), 1e-30)
        )
    return out


@dataclass
class Calibration:
    """A fitted interval calibration and what it is valid for."""

    level: float
    lam: float
    valid_for: dict[str, Any]
    slices: int
    pixels: int
    version: str
    report: dict[str, Any] = field(default_factory=dict)
    # the score's weights (diffrecon.uncertainty.score); None: the std alone
    weights: dict[str, float] | None = None

    @property
    def needs_holdout(self) -> bool:
        """Its score uses the hold-out check's prior-free maps."""
        w = self.weights or {}
        return any(w.get(f, 0) > 0 for f in ("l1_distance", "holdout_residual"))

    def score(
        self, std: np.ndarray, features: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """What the interval scales: the std, or the fitted score of ``features``."""
        if self.weights is None:
            return std
        if features is None:
            raise ValueError("this calibration scales a fitted score: give the run's features")
        return score_map(features, self.weights)

    def interval(
        self,
        mean: np.ndarray,
        std: np.ndarray,
        features: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` = ``mean -+ lam * effective_std(score)`` (lower clipped at 0:
        the maps are magnitudes); the score is the std or the fitted one."""
        if not math.isfinite(self.lam):
            raise ValueError("this calibration admits only infinite intervals")
        half = self.lam * effective_std(mean, self.score(std, features))
        return np.maximum(mean - half, 0.0), mean + half

    def foreground_coverage(
        self,
        truth: np.ndarray,
        mean: np.ndarray,
        std: np.ndarray,
        features: Mapping[str, np.ndarray] | None = None,
    ) -> float:
        """The fraction of a slice's foreground pixels inside the calibrated interval (all of
        them when the calibration admits only infinite intervals)."""
        if not math.isfinite(self.lam):
            return 1.0
        lo, hi = self.interval(mean, std, features)
        return float(((truth >= lo) & (truth <= hi))[foreground(truth)].mean())

    def calibrated_std(
        self,
        mean: np.ndarray,
        std: np.ndarray,
        features: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The score rescaled so that ``mean +- z std`` is the calibrated interval at
        ``level`` (``z`` the normal quantile)."""
        from statistics import NormalDist

        z = NormalDist().inv_cdf(0.5 + self.level / 2)
        return self.lam / z * effective_std(mean, self.score(std, features))

    def mismatch(self, run: dict[str, Any]) -> str | None:
        """Why this calibration does not fit a run described like ``valid_for``, or None."""
        for key, want in self.valid_for.items():
            got = run.get(key)
            if _norm(got) != _norm(want):
                return f"{key} is {got!r} but the calibration was made with {want!r}"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "level": self.level,
            "lambda": self.lam,
            "method": "conformal risk control over slices, foreground pixel miscoverage",
            "std_floor": STD_FLOOR,
            "foreground": FOREGROUND,
            "valid_for": self.valid_for,
            "calibration_slices": self.slices,
            "calibration_pixels": self.pixels,
            "diffrecon_version": self.version,
            "report": self.report,
            "score": "std" if self.weights is None else {"weights": self.weights},
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "calibration") -> Calibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{source} is not a {FORMAT} file")
        try:
            cal = cls(
                level=float(d["level"]),
                lam=float(d["lambda"]),
                valid_for=dict(d["valid_for"]),
                slices=int(d["calibration_slices"]),
                pixels=int(d["calibration_pixels"]),
                version=str(d["diffrecon_version"]),
                report=dict(d.get("report", {})),
            )
            score = d.get("score", "std")
            if score != "std":
                if not isinstance(score, dict) or "weights" not in score:
                    raise ValueError(f"score must be 'std' or {{'weights': ...}}, got {score!r}")
                cal.weights = check_weights(score["weights"], source)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{source} lacks or garbles a field: {err}") from err
        # values no fit produces: a negative or non-finite scale inverts or breaks every
        # interval (lower > upper) while the result would say it is calibrated
        if not (math.isfinite(cal.lam) and cal.lam >= 0):
            raise ValueError(f"{source}: lambda must be a finite number >= 0, got {cal.lam}")
        if not 0 < cal.level < 1:
            raise ValueError(f"{source}: level must lie in (0, 1), got {cal.level}")
        if cal.slices < 1 or cal.pixels < 1:
            raise ValueError(f"{source}: it was fitted on no slices or pixels")
        return cal


def _norm(v: Any) -> Any:
    """JSON-comparable form (tuples as lists, floats rounded)."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in sorted(v.items())}
    if isinstance(v, list | tuple):
        return [_norm(x) for x in v]
    if isinstance(v, float):
        return round(v, 10)
    return v


def calibrate(
    truths: list[np.ndarray],
    means: list[np.ndarray],
    stds: list[np.ndarray],
    level: float,
    valid_for: dict[str, Any],
    version: str,
    features: Sequence[Mapping[str, np.ndarray]] | None = None,
    weights: Mapping[str, float] | None = None,
) -> Calibration:
    """Fit ``lam_hat`` on slices ``(H, W)`` with known truth (foreground pixels), for
    intervals ``mean +- lam * std`` or, with ``weights`` (fitted on *other* slices: the
    guarantee needs a score fixed before these are seen), ``mean +- lam * score`` of each
    slice's ``features`` (:mod:`diffrecon.uncertainty.score`)."""
    if not (len(truths) == len(means) == len(stds)) or not truths:
        raise ValueError("calibration needs one truth, mean and std per slice")
    w = None if weights is None else check_weights(weights)
    if w is not None and (features is None or len(features) != len(truths)):
        raise ValueError("a fitted score needs one feature set per calibration slice")
    scores = []
    for i, (t, m, s) in enumerate(zip(truths, means, stds, strict=True)):
        if not np.isfinite(s).all() or not np.isfinite(m).all():
            raise ValueError(f"calibration slice {i}: the posterior mean or std is not finite")
        if w is not None:
            assert features is not None
            s = score_map(features[i], w)
            if not np.isfinite(s).all():
                raise ValueError(f"calibration slice {i}: the score is not finite")
        scores.append(normalised_residuals(t, m, s)[foreground(t)])
    lam = crc_threshold(scores, level)
    return Calibration(
        level, lam, valid_for, len(scores), int(sum(s.size for s in scores)), version, weights=w
    )
