"""Self-validation from the measurement: hold part of the measured k-space out, reconstruct
from the rest, and score how well the held-out samples are predicted.

The standard truth-free check of an MRI reconstruction (zero-shot self-validation, as in
ZS-SSL, Yaman et al. 2022): a reconstruction that invents structure, or whose coil maps
are wrong, predicts samples it did not see worse than one that does not, even when it fits
the samples it saw to the noise level. Here:

- :func:`holdout_split` splits the measured phase-encode lines outside the fully sampled
  centre (ACS) into a fit set and a held-out set (sample points for 2-D masks), seeded;
  the ACS always stays in the fit set (coil maps and the intensity scale come from it);
- :func:`holdout_score` is the held-out residual in units of the noise:
  ``||M_h (A x - y)|| / (sigma sqrt(2 n_h))``, 1.0 as good as the noise allows;
- :meth:`HoldoutSplit.restrict` gives the :class:`~diffrecon.mri.preprocess.PreparedSlice`
  of the fit samples (same maps, scale and noise level), for any reconstruction method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from diffrecon.mri.coils import calibration_region
from diffrecon.mri.preprocess import PreparedSlice
from diffrecon.operators.mri import MulticoilMRI

DEFAULT_FRACTION = 0.15  # of the measured lines (points) outside the ACS
MIN_HELD = 1  # held-out lines (points) at the least
MIN_OUTER = 3  # fewer measured lines (points) outside the ACS: no split, nothing to check


@dataclass(frozen=True)
class HoldoutSplit:
    """Fit and held-out samples of one mask, both shaped like it (``(W,)`` or ``(H, W)``)."""

    fit: torch.Tensor
    held: torch.Tensor

    @property
    def fraction(self) -> float:
        """Held-out share of the measured samples (lines or points)."""
        n_fit, n_held = int(self.fit.sum()), int(self.held.sum())
        return n_held / max(n_fit + n_held, 1)

    def restrict(self, prepared: PreparedSlice) -> PreparedSlice:
        """``prepared`` with only the fit samples: its operator, data and zero-filled image;
        maps, scale and noise level unchanged (they come from the ACS and the edges)."""
        op, y = samples_of(prepared, self.fit)
        return dataclasses.replace(
            prepared, operator=op, y=y, mask=self.fit, zero_filled=op.adjoint(y)[0]
        )


def samples_of(prepared: PreparedSlice, mask: torch.Tensor) -> tuple[MulticoilMRI, torch.Tensor]:
    """The SENSE operator and the data of the samples ``mask`` (a subset of the measured
    ones, shaped like the slice's mask), on ``prepared``'s maps."""
    h, w = prepared.y.shape[-2:]
    m = mask.expand(h, w) if mask.ndim == 1 else mask
    return MulticoilMRI(prepared.maps, mask), prepared.y * m.to(prepared.y.device).to(
        prepared.y.real.dtype
    )


def _acs_columns(mask2d: np.ndarray) -> np.ndarray:
    """Columns ``(W,)`` of the fully sampled centre (none if the centre is not sampled)."""
    acs = np.zeros(mask2d.shape[1], dtype=bool)
    try:
        _, cols = calibration_region(mask2d, min_size=1)
    except ValueError:
        return acs
    acs[cols] = True
    return acs


def holdout_split(
    mask: torch.Tensor, seed: int = 0, fraction: float = DEFAULT_FRACTION
) -> HoldoutSplit | None:
    """Hold out ``fraction`` of the measured lines outside the ACS band of a column mask
    ``(W,)``, or of the measured points outside the ACS rectangle of a 2-D mask ``(H, W)``;
    the choice is random, reproducible from ``seed``; at least :data:`MIN_HELD` line
    (point) is held out, and ``None`` is returned when fewer than :data:`MIN_OUTER` lie
    outside the ACS (nothing to validate with)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the hold-out fraction must lie in (0, 1), got {fraction}")
    m = mask.detach().cpu().numpy().astype(bool)
    # one stream for the split, apart from the sampler's (seeded from the same run seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x401D]))
    if m.ndim == 1:
        acs = _acs_columns(np.broadcast_to(m, (max(16, m.size), m.size)))
        outer = np.flatnonzero(m & ~acs)
    else:
        inside = np.zeros_like(m)
        try:
            rows, cols = calibration_region(m, min_size=1)
            inside[rows, cols] = True
        except ValueError:  # the centre is not sampled: no ACS to keep
            pass
        outer = np.flatnonzero(m & ~inside)
    if outer.size < MIN_OUTER:
        return None
    n_held = max(int(round(fraction * outer.size)), MIN_HELD)
    held = np.zeros(m.size, dtype=bool)
    held[rng.choice(outer, size=n_held, replace=False)] = True
    held = held.reshape(m.shape)
    return HoldoutSplit(torch.from_numpy(m & ~held), torch.from_numpy(held))


def holdout_score(
    prepared: PreparedSlice,
    split: HoldoutSplit,
    images: torch.Tensor,
    n_final: int | None = None,
) -> float | None:
    """How well the mean of ``images`` (``(2, H, W)`` or draws ``(n, 2, H, W)``, scaled
    units) predicts the held-out samples of ``prepared``'s data:
    ``||M_h (A x - y)|| / (sigma sqrt(2 n_h))``, ``n_h`` the held-out complex values; about
    1 for the true image under the noise, above it by how far the prediction misses; None
    without a noise level.

    ``n_final``: score the mean of that many draws instead of the ``n`` given. The spread of
    the draws' predictions estimates the variance term ``tr``, so ``||r_mean||^2 - tr/n +
    tr/n_final`` is an unbiased estimate of what an ``n_final``-draw mean would give (a
    check with 2 draws then does not favour smoother images for their lower variance)."""
    if not prepared.noise_std > 0:
        return None
    d = (images if images.ndim == 4 else images[None]).to(prepared.maps.real.dtype)
    op, y_held = samples_of(prepared, split.held)
    op, y_held = op.to(d.device), y_held.to(d.device)
    mean = d.mean(0, keepdim=True)
    r2 = float((op(mean) - y_held).abs().pow(2).sum())
    n = d.shape[0]
    if n_final is not None and n >= 2:
        spread = float(op(d - mean).abs().pow(2).sum()) / (n - 1)  # tr Cov of one draw
        r2 = max(r2 - spread / n + spread / max(n_final, 1), 0.0)
    m = int(split.held.expand(prepared.y.shape[-2:]).sum()) * prepared.y.shape[1]
    return float(np.sqrt(r2 / (2 * m)) / prepared.noise_std)
