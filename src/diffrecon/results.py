"""Typed results, one dataclass per level: a slice's summaries with their provenance, a
volume (the slices of one input), and the :class:`RunRecord` that says what was run.

The draw-level summary is :class:`diffrecon.api.Posterior`; these carry what the k-space
job adds (file units, crop, zero-filled image, metrics) and what a result file records.
This module imports nothing of the package: file writers (``io``) and the job share it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

# file attribute names where they differ from the record's field names (kept for old files)
_ATTR_NAME = {"version": "diffrecon_version"}
# what a calibration of a run's intervals depends on: the requested mask, not the one a
# file's own sampling turned it into (calibrations are made on fully sampled files)
_CALIBRATION_FIELDS = {
    "prior": "prior",
    "preset": "preset",
    "settings": "settings",
    "acceleration": "acceleration_requested",
    "center_fraction": "center_fraction",
    "mask_type": "mask_type_requested",
    "draws": "draws",
    "diffrecon_version": "version",
    "finish": "finish",
    "coil_maps": "coil_maps",
    "adapt": "adapt",
    "priors": "priors",
}


@dataclass(frozen=True)
class RunRecord:
    """What one run was, built once by the job: sampler and preset with its settings, seed,
    draws, prior, version, the mask as used (``acceleration``: its actual undersampling;
    ``mask_type``: the kind applied, e.g. ``"measured (auto)"``) beside the one asked for,
    the input and its geometry, the intervals and the command. Result files write it field
    by field as attributes (:meth:`as_attrs`) and read it back (:meth:`from_attrs`); a
    calibration's key is a projection of it (:meth:`calibration_key`)."""

    sampler: str
    preset: str
    settings: dict[str, Any]
    seed: int
    draws: int
    prior: str
    version: str
    acceleration: float | None
    acceleration_requested: float | None
    center_fraction: float | None
    mask_type: str | None
    mask_type_requested: str | None
    input: str | None = None
    input_slices: int | None = None  # the input's slice count (a subset pads to it on disk)
    pixel_spacing_mm: list[float] | None = None
    slice_thickness_mm: float | None = None
    patient_id: str | None = None
    acquisition: str | None = None
    quantile_levels: list[float] | None = None
    interval_level: float | None = None
    calibrated: bool = False
    calibration_lambda: float | None = None
    std_relative_mc_error: float | None = None  # of a std from `draws` draws (Gaussian)
    holdout_fraction: float | None = None  # k-space held out to validate; None: no check
    finish: str | None = None  # "auto": the hold-out chooses raw or hybrid; "raw"
    coil_maps: str | None = None  # "auto", "espirit" or "nlinv"; None: the user's maps
    precision: str | None = None  # the network's arithmetic: "float32" or "bfloat16"
    adapt: dict[str, Any] | None = None  # test-time adaptation settings; None: not adapted
    priors: list[str] | None = None  # the priors that shared the draws; None: one prior
    command: str | None = None

    def as_attrs(self) -> dict[str, Any]:
        """Result-file attributes (``None`` fields are left out by the writer)."""
        return {_ATTR_NAME.get(k, k): v for k, v in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> RunRecord:
        """The record of a result file's attributes (JSON strings decoded); fields an older
        file lacks are ``None`` (``mask_type_requested`` and ``acceleration_requested``
        came later: such files recorded the requested acceleration as ``acceleration``)."""
        import json

        def get(name: str) -> Any:
            v = attrs.get(_ATTR_NAME.get(name, name))
            if isinstance(v, str) and v[:1] in "[{":
                try:
                    return json.loads(v)
                except json.JSONDecodeError:
                    return v
            if isinstance(v, np.generic):
                return v.item()
            return v

        values = {f.name: get(f.name) for f in fields(cls)}
        values["settings"] = values["settings"] or {}
        values["calibrated"] = bool(values["calibrated"])
        return cls(**values)

    def calibration_key(self) -> dict[str, Any]:
        """What a calibration of this run's intervals depends on (and must match)."""
        return {key: getattr(self, name) for key, name in _CALIBRATION_FIELDS.items()}


@dataclass(frozen=True)
class SliceProvenance:
    """How one slice was reconstructed: sampler record, mask, coil maps, scale, noise."""

    # diffrecon.api.SamplerRecord (not imported: typed results sit below the sampler stack):
    # sampler, preset settings, seed, draws, noise level used, version
    record: Any
    mask: np.ndarray  # the sampling mask used, (W,) or (H, W) bool
    maps: str  # how the coil maps were made
    calib_width: int
    intensity_scale: float  # file units per scaled unit
    noise_std_estimate: float  # k-space noise per real component, file units
    noise_std_used: float  # the likelihood's level after the preset's floor, scaled units
    data_residual: float | None = None  # ||y - A mean|| / (noise std sqrt(measured reals))
    maps_used: np.ndarray | None = None  # (coils, H, W) complex64, as the operator used them
    # diffrecon.mri.validation.Validation: what the hold-out measured and chose (or None)
    validation: Any = None


# what the hold-out records per slice (diffrecon.mri.validation.Validation, field by field)
HOLDOUT_ATTRS = (
    "holdout_share",
    "holdout_score_posterior",
    "holdout_score_l1",
    "holdout_score_finish",
    "holdout_l1_lambda",
    "holdout_mu",
    "holdout_guard",
    "holdout_seconds",
    "holdout_maps",
    "holdout_score_espirit",
    "holdout_maps_l1",
    "holdout_posterior_espirit",
    "holdout_posterior_two_set",
    "holdout_posterior_nlinv",
    "holdout_adapted",
    "holdout_adapt_level",
    "holdout_adapt_seconds",
    "holdout_adapt_reason",
)
# per-slice provenance recorded in result files (a list over the file's slices each)
PER_SLICE_ATTRS = (
    "noise_std_estimate",
    "noise_std_used",
    "data_residual",
    "intensity_scale",
    *HOLDOUT_ATTRS,
)


@dataclass
class SliceResult:
    """Summaries of one slice in the file's intensity units, cropped to the output size.

    ``mean``: the posterior mean of the magnitude ``|x|`` (fastMRI's ``reconstruction``);
    ``mean_complex``: the complex posterior mean (its magnitude is not ``mean``); ``std``:
    the posterior std of ``|x|``; ``draws``: the draws' magnitudes and ``draws_complex`` the
    draws, when kept; ``zero_filled``: ``|A^H y|``. A running (partial) result has
    ``draws_done`` below the draws asked for. :attr:`maps`, :attr:`mask`,
    :attr:`noise_std` and :attr:`data_residual` read the provenance."""

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
    # with several priors (the job's spread_priors): the std under one prior, and their
    # disagreement; std_within^2 + std_between^2 is about std^2
    std_within: np.ndarray | None = None
    std_between: np.ndarray | None = None
    # with the hold-out check (diffrecon.mri.evidence): the self-tuned L1-wavelet image and
    # the back-projected hold-out residual, what the data say without a prior
    l1_image: np.ndarray | None = None
    holdout_residual: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    mean_complex: np.ndarray | None = None
    draws_complex: np.ndarray | None = None  # (draws, H, W) complex64, with keep_draws

    @property
    def maps(self) -> np.ndarray | None:
        """The coil maps ``(coils, H, W)`` the operator used (final results)."""
        return None if self.provenance is None else self.provenance.maps_used

    @property
    def mask(self) -> np.ndarray | None:
        """The sampling mask used, ``(W,)`` or ``(H, W)`` bool."""
        return None if self.provenance is None else self.provenance.mask

    @property
    def noise_std(self) -> float | None:
        """The k-space noise estimate per real component, in the k-space's units."""
        return None if self.provenance is None else self.provenance.noise_std_estimate

    @property
    def data_residual(self) -> float | None:
        """About 1 when the mean fits the measured data to the noise level."""
        return None if self.provenance is None else self.provenance.data_residual


@dataclass
class VolumeResult:
    """The reconstructed slices of one input and the attributes its result file records
    (:meth:`RunRecord.as_attrs` and the per-slice provenance lists)."""

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


def volume_attrs(record: RunRecord, slices: list[SliceResult]) -> dict[str, Any]:
    """A volume's result-file attributes: the run record and, per slice, its provenance."""
    prov = [s.provenance for s in slices if s.provenance is not None]
    out = record.as_attrs()
    for name in PER_SLICE_ATTRS:
        if name in HOLDOUT_ATTRS:
            checked = [p.validation.as_attrs() for p in prov if p.validation is not None]
            vals = [c[name] for c in checked] if len(checked) == len(prov) else []
        else:
            vals = [getattr(p, name) for p in prov]
        out[name] = vals or None
    return out
