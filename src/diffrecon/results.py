"""Typed results, one dataclass per level: a slice's summaries with their provenance, and a
volume (the slices of one input) with the file attributes the job built.

The draw-level summary is :class:`diffrecon.api.Posterior`; these carry what the k-space
pipeline adds (file units, crop, zero-filled image, metrics) and what a result file records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from diffrecon.api import SamplerRecord


@dataclass(frozen=True)
class SliceProvenance:
    """How one slice was reconstructed: sampler record, mask, coil maps, scale, noise."""

    record: SamplerRecord  # sampler, preset settings, seed, draws, noise level used, version
    mask: np.ndarray  # the sampling mask used, (W,) or (H, W) bool
    maps: str  # how the coil maps were made
    calib_width: int
    intensity_scale: float  # file units per scaled unit
    noise_std_estimate: float  # k-space noise per real component, file units
    noise_std_used: float  # the likelihood's level after the preset's floor, scaled units
    data_residual: float | None = None  # ||y - A mean|| / (noise std sqrt(measured reals))
    maps_used: np.ndarray | None = None  # (coils, H, W) complex64, as the operator used them


@dataclass
class SliceResult:
    """Magnitude summaries of one slice in the file's intensity units, cropped to the output
    size. A running (partial) result has ``draws_done`` below the draws asked for."""

    mean: np.ndarray
    std: np.ndarray
    draws_done: int
    provenance: SliceProvenance | None = None
    zero_filled: np.ndarray | None = None
    draws: np.ndarray | None = None
    quantiles: np.ndarray | None = None
    lower: np.ndarray | None = None  # central interval at ``interval_level``
    upper: np.ndarray | None = None
    interval_level: float | None = None
    calibrated: bool = False  # True: a conformal calibration, False: the draws' quantiles
    std_calibrated: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    # the complex posterior mean (its magnitude is not ``mean``, the mean of the magnitudes)
    mean_complex: np.ndarray | None = None
    draws_complex: np.ndarray | None = None  # (draws, H, W) complex64, with keep_draws


@dataclass
class VolumeResult:
    """The reconstructed slices of one input and the attributes its result file records."""

    slices: list[SliceResult]
    slice_indices: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.slices or len(self.slices) != len(self.slice_indices):
            raise ValueError(
                f"a volume needs one index per slice, got {len(self.slices)} slices and "
                f"{len(self.slice_indices)} indices"
            )

    def mean_metrics(self) -> dict[str, float]:
        """Per-slice metrics averaged over the volume (empty without a target)."""
        first = self.slices[0].metrics
        if not first:
            return {}
        return {k: float(np.mean([s.metrics[k] for s in self.slices])) for k in first}
