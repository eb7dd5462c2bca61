"""What the measured k-space says about a slice without any prior: two maps for the
uncertainty score (:mod:`diffrecon.uncertainty.score`).

- the self-tuned L1-wavelet image (lambda and coil maps chosen on held-out k-space by the
  hold-out check, then solved on all the samples): ``|mean - L1|`` is where a prior-free
  reconstruction of the same data disagrees with the posterior mean;
- the hold-out residual: the L1 image made from the fit samples only mispredicts the
  held-out lines by ``r = y_held - A_held x_fit``; ``|A_held^H r|`` (coil-combined by the
  maps, smoothed over a few pixels) shows where in the image the data leave the most
  room, i.e. where lines the reconstruction did not see would have changed it.

Both are magnitudes ``(H, W)`` in the slice's scaled units, computed once per slice (two
FISTA solves of 100 iterations).
"""

from __future__ import annotations

import torch

from diffrecon.mri.holdout import HoldoutSplit, samples_of
from diffrecon.mri.preprocess import PreparedSlice
from diffrecon.mri.validation import l1_image

RESIDUAL_SMOOTHING = 2.0  # pixels (Gaussian sigma) of the back-projected residual
ITERS = 100


def _smooth(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of an ``(H, W)`` image (reflecting edges)."""
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = img[None, None]
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1))
    return x[0, 0]


def evidence_maps(
    scoring: PreparedSlice,
    final: PreparedSlice,
    split: HoldoutSplit,
    lam: float,
    *,
    x_final: torch.Tensor | None = None,
    x_fit: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``{"l1": |L1 image on all samples|, "holdout_residual": smoothed |A_held^H r|}``
    for the hold-out check's ``split`` and L1 weight ``lam`` (``scoring``: the slice with
    the maps built from the fit samples; ``final``: with the maps from all of them).
    ``x_final``, ``x_fit``: those L1 images ``(1, 2, H, W)`` when the caller has solved
    them already (the hold-out check does)."""
    if x_final is None:
        x_final = l1_image(final, lam, iters=ITERS)
    if x_fit is None:
        x_fit = l1_image(split.restrict(scoring), lam, iters=ITERS)
    op_held, y_held = samples_of(scoring, split.held)
    back = op_held.adjoint(y_held - op_held(x_fit.to(y_held.real.dtype)))[0]
    resid = back.pow(2).sum(0).sqrt()
    return {
        "l1": x_final[0].pow(2).sum(0).sqrt(),
        "holdout_residual": _smooth(resid.double(), RESIDUAL_SMOOTHING).to(resid.dtype),
    }
