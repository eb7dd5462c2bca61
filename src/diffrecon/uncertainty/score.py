"""A conformal score built from what a run knows, not only from the spread of its draws.

The std of draws under one prior is the spread the data leave given that prior; the errors
that matter at 8x come from the prior itself, where the std stays low. A run knows more:
- ``within``: the std under one prior (the std itself with one prior);
- ``between``: how much several priors disagree (``--priors``; zero with one prior);
- ``l1_distance``: ``|mean - L1|``, the distance of the posterior mean to the self-tuned
  L1-wavelet image (lambda and coil maps chosen on held-out k-space): where a prior-free
  reconstruction of the same data says something else;
- ``holdout_residual``: the held-out k-space lines the fit-sample L1 image mispredicts,
  back-projected to the image and smoothed: where the data are least determined;
- ``edge``: the gradient magnitude of the mean: errors gather at edges (blur, shifted
  boundaries), which a spread of a few draws barely shows.

The draws-derived maps and the L1 distance are smoothed (:data:`SMOOTHING` pixels): a std
from 4 draws has a 40% Monte-Carlo error per pixel, and averaging neighbours trades
resolution the map does not need for a score that ranks pixels by their error (on the
uncertainty bench, Spearman with |error| rose from 0.11 to 0.24 at 4x and from 0.17 to
0.29 at 8x for the std alone, docs/uncertainty.md).

:func:`fit_weights` fits non-negative weights ``w`` of ``score = sum_f w_f feature_f`` to the
|error| of calibration slices (least squares over their foreground, each slice in units of
its own error), and the interval is ``mean +- lam * score`` with ``lam`` from conformal
risk control as for the std. Conformal risk control keeps its guarantee for *any* score
fixed before the calibration slices are seen, so the weights must come from other slices
than ``lam`` (:func:`diffrecon.calibration_run.calibrate_files` fits them on every other
slice and ``lam`` on the rest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

FEATURES = ("within", "between", "l1_distance", "holdout_residual", "edge")
SMOOTHING = 2.0  # pixels (Gaussian sigma) for the within, between and L1-distance maps
FIT_PIXELS = 4000  # foreground pixels per slice used to fit the weights (a seeded subset)


def _scale(mean_or_feature: np.ndarray) -> float:
    return max(float(np.percentile(mean_or_feature, 99)), 1e-30)


def score_features(
    mean: np.ndarray,
    std: np.ndarray,
    std_within: np.ndarray | None = None,
    std_between: np.ndarray | None = None,
    l1_image: np.ndarray | None = None,
    holdout_residual: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The :data:`FEATURES` of one slice ``(H, W)`` from what its result holds (one prior:
    ``within`` is the std and ``between`` zero; without the hold-out check the two
    prior-free features are missing)."""
    from scipy.ndimage import gaussian_filter, sobel

    m = np.asarray(mean, np.float64)

    def smooth(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(np.asarray(a, np.float64), SMOOTHING, mode="reflect")

    out = {
        "within": smooth(std if std_within is None else std_within),
        "between": np.zeros(m.shape) if std_between is None else smooth(std_between),
        # Sobel's kernels weigh a unit step by 4 in each direction: / 8 gives about |grad|
        "edge": gaussian_filter(np.hypot(sobel(m, 0), sobel(m, 1)) / 8, SMOOTHING / 2),
    }
    if l1_image is not None:
        out["l1_distance"] = smooth(np.abs(m - np.asarray(l1_image, np.float64)))
    if holdout_residual is not None:
        out["holdout_residual"] = np.asarray(holdout_residual, np.float64)
    return out


def check_weights(weights: Mapping[str, float], source: str = "score") -> dict[str, float]:
    """Weights of known features, finite and >= 0, not all zero (else ``ValueError``)."""
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"{source}: the score's weights must be a non-empty mapping")
    out = {}
    for name, w in weights.items():
        if name not in FEATURES:
            raise ValueError(f"{source}: unknown score feature {name!r} ({', '.join(FEATURES)})")
        try:
            v = float(w)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: the weight of {name} is not a number: {w!r}") from err
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"{source}: the weight of {name} must be finite and >= 0, got {v}")
        out[name] = v
    if not any(v > 0 for v in out.values()):
        raise ValueError(f"{source}: every weight of the score is zero")
    return out


def score_map(features: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum_f w_f feature_f`` over the weighted features (a feature with weight 0 may be
    missing); every feature ``(H, W)`` in the slice's units."""
    missing = [f for f, w in weights.items() if w != 0 and f not in features]
    if missing:
        raise ValueError(f"the score needs the feature(s) {', '.join(missing)}; this run has none")
    out = None
    for f, w in weights.items():
        if w == 0:
            continue
        term = w * np.asarray(features[f], dtype=np.float64)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("every weight of the score is zero")
    return out


def fit_weights(
    features: Sequence[Mapping[str, np.ndarray]],
    errors: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    names: Sequence[str] = FEATURES,
    seed: int = 0,
) -> dict[str, float]:
    """Non-negative weights of the features ``names`` that best predict ``|error|`` (least
    squares over each slice's ``mask``, a seeded subset of :data:`FIT_PIXELS` pixels per
    slice; the errors and features of each slice divided by the 99th percentile of its
    |error|, so bright slices do not dominate). A feature missing from a slice counts as
    zero there; one that is zero everywhere gets weight 0."""
    from scipy.optimize import nnls

    if not features or len(features) != len(errors) or len(errors) != len(masks):
        raise ValueError("fit_weights needs one feature set, error map and mask per slice")
    rng = np.random.default_rng(seed)
    rows, target = [], []
    for feats, err, mask in zip(features, errors, masks, strict=True):
        idx = np.flatnonzero(np.asarray(mask, bool).ravel())
        if idx.size == 0:
            continue
        if idx.size > FIT_PIXELS:
            idx = rng.choice(idx, FIT_PIXELS, replace=False)
        e = np.asarray(err, np.float64).ravel()
        scale = _scale(np.abs(e[idx]))
        cols = [
            np.asarray(feats[n], np.float64).ravel()[idx] / scale
            if n in feats
            else np.zeros(idx.size)
            for n in names
        ]
        rows.append(np.stack(cols, 1))
        target.append(e[idx] / scale)
    if not rows:
        raise ValueError("no foreground pixels to fit the score's weights on")
    a, b = np.concatenate(rows), np.concatenate(target)
    norms = np.sqrt((a**2).mean(0))
    used = norms > 0
    w = np.zeros(len(names))
    if used.any():
        sol, _ = nnls(a[:, used] / norms[used], b)
        w[used] = sol / norms[used]
    if not (w > 0).any():
        raise ValueError("no feature predicts the error (every fitted weight is zero)")
    return {n: float(v) for n, v in zip(names, w, strict=True)}
