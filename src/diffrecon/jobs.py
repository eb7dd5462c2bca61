"""One reconstruction job: an input, its slices and every setting, from k-space to results.

A :class:`ReconstructionJob` is the one path from a fastMRI file (or an in-memory k-space
array) to a :class:`~diffrecon.results.VolumeResult`. The CLI, the napari widget and the demo
only parse their input into a job and call it:

- :meth:`~ReconstructionJob.validate` checks everything it can without doing the work
  (input file, slices, sampler and its settings, mask, draws, quantiles, the first slice,
  the prior) and raises ``ValueError`` naming the problem;
- :meth:`~ReconstructionJob.run_slice` reconstructs one slice (readout crop, the mask of
  :class:`~diffrecon.mri.masks.MaskSpec` seeded by the file name, preprocessing, sampling);
- :meth:`~ReconstructionJob.volume` assembles slices with the result-file attributes
  (:meth:`~ReconstructionJob.attrs`), which :func:`diffrecon.io.results.write_results` writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrecon import metrics
from diffrecon._version import __version__
from diffrecon.adapt import AdaptReport, AdaptSettings, SharedAdaptation, adapt_prior
from diffrecon.api import Posterior, posterior_from_draws, reconstruct
from diffrecon.complex import magnitude
from diffrecon.io.arrays import ArrayInput, as_kspace, read_maps
from diffrecon.io.fastmri import MAX_PIXELS, FastMRIFile, open_fastmri, parse_slices
from diffrecon.mri.evidence import evidence_maps
from diffrecon.mri.holdout import (
    DEFAULT_FRACTION,
    HoldoutSplit,
    holdout_score,
    holdout_split,
    samples_of,
)
from diffrecon.mri.mapsets import (
    COIL_MAPS,
    MAP_VARIANTS,
    MapsChoice,
    choose_maps,
    posterior_pick,
    rebuilt,
    with_nlinv_maps,
)
from diffrecon.mri.masks import MaskSpec, as_mask, measured_columns, measured_mask
from diffrecon.mri.preprocess import PreparedSlice, prepare_slice
from diffrecon.mri.transforms import (
    evaluation_view,
    read_slice,
    remove_readout_oversampling,
)
from diffrecon.mri.validation import (
    FINISHES,
    Validation,
    hybrid_draws,
    l1_image,
    lipschitz,
    tune_l1,
    validate,
)
from diffrecon.priors.learned import (
    AUTO_PRECISION,
    PRECISION_CHOICES,
    LearnedPrior,
    resolve_precision,
)
from diffrecon.results import RunRecord, SliceProvenance, SliceResult, VolumeResult, volume_attrs
from diffrecon.samplers.common import StepState
from diffrecon.samplers.registry import (
    MRI_DEFAULT,
    Preset,
    resolve,
    steps_overrides,
    warm_tail,
)
from diffrecon.uncertainty.conformal import Calibration, NonFiniteStdError, std_mc_error
from diffrecon.uncertainty.ensemble import prior_spread, split_counts
from diffrecon.uncertainty.score import score_features

ADAPTED = "adapted"  # in spread_priors: the main prior adapted to each slice
MIN_COLUMNS = 8  # fewer phase-encode columns leave no room for a calibration region


Source = FastMRIFile | ArrayInput
DEFAULT_INTERVAL_LEVEL = 0.9
__all__ = ["ArrayInput", "ReconstructionJob", "check_device", "reconstruct_kspace"]


def _name_of(prior: Any) -> str:
    p = prior
    return str(p) if isinstance(p, str | Path) else str(getattr(p, "name", type(p).__name__))


def _digest(array: np.ndarray) -> str:
    """A short content hash of ``array`` (what a saved adaptation was made with)."""
    a = np.ascontiguousarray(array)
    return hashlib.sha1(str((a.dtype, a.shape)).encode() + a.tobytes()).hexdigest()[:16]


def check_device(device: str | torch.device) -> None:
    """Refuse a device this machine does not have, naming the ones it has."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"--device {device!r} is not a device name (e.g. cpu, cuda:0)") from err
    have = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        have.append("mps")
    ok = (
        dev.type == "cpu"
        or (dev.type == "cuda" and (dev.index or 0) < torch.cuda.device_count())
        or (dev.type == "mps" and "mps" in have)
    )
    if not ok:
        raise ValueError(f"--device {device}: not available here (devices: {', '.join(have)})")


@dataclass
class ReconstructionJob:
    """Everything one reconstruction of one input needs; see the module docstring.

    ``source``: a fastMRI file path or an :class:`~diffrecon.io.arrays.ArrayInput`.
    ``slices``: ``None`` (all), a CLI-style string (``"10:14"``, ``"3,5"``) or indices.
    ``prior``: a shipped name, a bundle path, a checkpoint file (``prior_format`` and
    ``prior_options`` as in :func:`~diffrecon.priors.open_prior`) or a loaded denoiser
    (loaded once by :meth:`load_prior`). ``sampler``, ``steps`` and ``overrides``: a preset
    name, its number of noise levels and other replacements of its settings.
    ``noise_std``: k-space noise per real component (default: estimated per slice).
    ``maps``: coil sensitivities instead of ESPIRiT's: an array or a ``.npy`` / ``.h5``
    (dataset ``maps``) file, ``(coils, H, W)`` for every slice or ``(slices, coils, H, W)``
    for each slice of the input (``H`` after the readout crop).
    ``interval_level``: central intervals written beside mean and std (from the draws'
    quantiles, or from ``calibration``, a conformal calibration that must fit the run; with
    one, the level is the calibration's: see :attr:`interval_level_used`).
    ``holdout``: validate every slice on held-out k-space (``holdout_fraction`` of the
    measured lines outside the ACS, :mod:`diffrecon.mri.holdout`): a short posterior run
    on the fit samples and a self-tuned L1-wavelet image are scored on the held-out ones
    (:mod:`diffrecon.mri.validation`), recorded per slice. ``finish="auto"``: a posterior
    that predicts the held-out samples clearly worse than the L1 image is replaced by the
    best hybrid finishing step (the guard); ``"holdout"``: the hold-out always chooses
    between the raw posterior and its hybrids; ``"raw"``: the raw posterior (still scored).
    ``command``: the command line that asked for the job, recorded in the results.
    ``precision``: the network's arithmetic, ``"float32"`` or ``"bfloat16"`` (learned priors;
    see :meth:`~diffrecon.priors.learned.LearnedPrior.with_precision`); ``"auto"``: bfloat16
    where the device computes it natively, else float32 (priors without a network keep
    their own); ``None``: the prior's own (float32 for a prior loaded by name or path).
    ``adapt``: adapt the prior to each slice before drawing (:mod:`diffrecon.adapt`; settings,
    or ``None`` for no adaptation): LoRA adapters fitted to the hold-out check's fit
    samples, stopped by the held-out ones; needs ``holdout`` and a learned prior. The
    report is recorded per slice with the hold-out's. With ``adapt.scope == "volume"`` the
    prior is adapted once, on the middle selected slice (:meth:`adapt_volume`), and every
    slice draws with it; ``shared_adaptation``: that adaptation when the caller already
    has it (a batch adapts once per file and hands it to every slice's job).
    ``spread_priors``: more priors that share the draws with ``prior`` (names, paths or
    denoisers, or ``"adapted"``: ``prior`` adapted to each slice, which needs ``adapt``;
    ``prior`` itself then draws with its base network). The ``draws`` are split among them
    (:func:`~diffrecon.uncertainty.ensemble.split_counts`, common random numbers: draw ``d``
    of every prior uses the same noise), the mean and ``std`` are those of all the draws,
    and each slice also gets ``std_within`` and ``std_between``
    (:func:`~diffrecon.uncertainty.ensemble.prior_spread`): the spread under one prior and
    the disagreement between the priors.
    ``check_start``: start the hold-out check's fit-sample draws warm at this many
    ``sigma_data`` (:func:`~diffrecon.samplers.registry.warm_tail`: the tail of the
    preset's schedule, from the white-prior posterior mean); ``None`` (the default): from
    pure noise, like the final draws. Measured at 1.5 (``docs/validation.md``, "Cost"): 8
    to 26% off the check, the same result on 8 of 9 bench slices, and another coil-map
    choice, 0.6 dB worse, on the ninth; so not the default.
    """

    source: str | Path | ArrayInput
    prior: Any = "brain-mri-default"
    prior_format: str = "auto"
    prior_options: dict[str, Any] = field(default_factory=dict)
    sampler: str = MRI_DEFAULT
    overrides: dict[str, Any] = field(default_factory=dict)
    slices: str | Sequence[int] | None = None
    mask: MaskSpec = field(default_factory=MaskSpec)
    draws: int = 8
    seed: int = 0
    noise_std: float | None = None
    quantile_levels: tuple[float, ...] = ()
    keep_draws: bool = False
    device: str = "cpu"
    batch_size: int | None = None
    crop_readout: bool = True
    interval_level: float | None = DEFAULT_INTERVAL_LEVEL
    calibration: Calibration | None = None
    maps: str | Path | np.ndarray | None = None
    command: str | None = None
    max_pixels: int = MAX_PIXELS
    steps: int | None = None
    holdout: bool = True
    holdout_fraction: float = DEFAULT_FRACTION
    finish: str = "auto"
    precision: str | None = AUTO_PRECISION
    adapt: AdaptSettings | None = None
    spread_priors: tuple[Any, ...] = ()
    shared_adaptation: SharedAdaptation | None = None
    coil_maps: str = "auto"
    check_start: float | None = None
    mask_used: str = field(default="", init=False, repr=False)  # set with sampling_mask

    @classmethod
    def of_prepared(cls, prepared: PreparedSlice, **settings: Any) -> ReconstructionJob:
        """A job over one already prepared slice (its measured k-space in file units and its
        mask), for benches that prepare a slice once and run several settings on it: pass
        ``prepared`` to :meth:`run_slice` (index 0) so it is not prepared again."""
        k = (prepared.y[0].numpy() * prepared.scale).astype(np.complex64)
        return cls(ArrayInput(k[None], mask=prepared.mask.numpy()), **settings)

    # -- what the settings resolve to (each computed once) ----------------------------------
    @cached_property
    def input(self) -> Source:
        """The opened input (metadata only; slices are read one at a time)."""
        if isinstance(self.source, ArrayInput):
            return self.source
        return open_fastmri(self.source, max_pixels=self.max_pixels)

    @cached_property
    def slice_indices(self) -> list[int]:
        n = self.input.num_slices
        if self.slices is None or isinstance(self.slices, str):
            return parse_slices(self.slices, n)
        idx = [int(i) for i in self.slices]
        if not idx:
            raise ValueError("no slices selected")
        for i in idx:
            if not 0 <= i < n:
                raise ValueError(
                    f"slice {i} is outside the {n} slices of {self.input.path.name} (0..{n - 1})"
                )
        return idx

    @cached_property
    def preset(self) -> Preset:
        return resolve(self.sampler, **{**self.overrides, **steps_overrides(self.steps)})

    @property
    def kspace_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the slices the sampler sees (after the readout crop)."""
        h, w = self.input.shape[-2:]
        if self.crop_readout and self.input.readout_crop is not None:
            h = self.input.readout_crop
        return int(h), int(w)

    def read_kspace(self, index: int) -> np.ndarray:
        """Slice ``index`` as the sampler sees it (readout cropped unless ``crop_readout``
        is off)."""
        return read_slice(self.input, index, self.crop_readout)

    @cached_property
    def sampling_mask(self) -> torch.Tensor:
        """The mask every slice of the input is sampled with (built once)."""
        f = self.input
        padding = f.header.padding if f.header is not None else None
        measured = None
        if self.mask.kind != "file" and f.mask is None:
            # columns the file measured (exactly zero elsewhere): prospective undersampling,
            # kept under auto, refused under a retrospective kind
            measured = measured_columns(f.kspace(self.slice_indices[0]))
        m, self.mask_used = self.mask.resolve(
            self.kspace_shape, f.mask, padding, file_name=f.path.name, measured=measured
        )
        return m

    @cached_property
    def user_maps(self) -> np.ndarray | None:
        """The user's coil maps as an array, checked against the slices' shape."""
        if self.maps is None:
            return None
        shape = self.input.shape
        want = (shape[1] if len(shape) == 4 else 1, *self.kspace_shape)
        return read_maps(self.maps, want, self.input.num_slices)

    def maps_for(self, index: int) -> np.ndarray | None:
        m = self.user_maps
        return m if m is None or m.ndim == 3 else m[index]

    @property
    def prior_name(self) -> str:
        return _name_of(self.prior)

    @property
    def interval_level_used(self) -> float | None:
        """The level of the intervals a run writes (the interval rule, here only): a
        calibration's own level, else ``interval_level``; none with fewer than 2 draws."""
        level = self.calibration.level if self.calibration is not None else self.interval_level
        return level if self.draws >= 2 else None

    # -- checks -----------------------------------------------------------------------------
    def check_settings(self) -> None:
        """Argument ranges and the sampler, without touching the input."""
        if isinstance(self.draws, bool) or not isinstance(self.draws, numbers.Integral):
            raise ValueError(f"draws must be an integer, got {self.draws!r}")
        if self.draws < 1:
            raise ValueError(f"--draws must be >= 1, got {self.draws}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"--seed must lie in [0, 2**63), got {self.seed}")
        check_device(self.device)
        if any(not 0 <= q <= 1 for q in self.quantile_levels):
            raise ValueError(f"--quantiles must lie in [0, 1], got {list(self.quantile_levels)}")
        if self.noise_std is not None and not self.noise_std >= 0:
            raise ValueError(f"--noise-std must be >= 0, got {self.noise_std}")
        # multicoil SENSE: linear, no A A^H = c I; noisy unless both noise and floor are 0
        noisy = not (self.noise_std == 0 and self.preset.noise_floor == 0)
        self.preset.check_kind(linear=True, scalar_gram=False, noisy=noisy, exact_pinv=False)
        if self.finish not in FINISHES:
            raise ValueError(f"--finish must be one of {', '.join(FINISHES)}, got {self.finish!r}")
        if self.coil_maps not in COIL_MAPS:
            raise ValueError(
                f"--coil-maps must be one of {', '.join(COIL_MAPS)}, got {self.coil_maps!r}"
            )
        if self.precision is not None and self.precision not in PRECISION_CHOICES:
            choices = ", ".join(PRECISION_CHOICES)
            raise ValueError(f"--precision must be one of {choices}, got {self.precision!r}")
        if self.check_start is not None and not self.check_start > 0:
            raise ValueError(f"check_start must be > 0 (in sigma_data), got {self.check_start}")
        if not 0 < self.holdout_fraction < 1:
            raise ValueError(f"--holdout-fraction must lie in (0, 1), got {self.holdout_fraction}")
        if self.adapt is not None:
            if not isinstance(self.adapt, AdaptSettings):
                raise ValueError(f"adapt must be AdaptSettings or None, got {self.adapt!r}")
            if not self.holdout:
                raise ValueError(
                    "--adapt needs the hold-out check (its held-out samples stop the "
                    "adaptation); drop --no-holdout"
                )
        if self.spread_priors:
            if ADAPTED in self.spread_priors and self.adapt is None:
                raise ValueError(
                    f"--priors {ADAPTED!r} is the prior adapted to each slice: it needs --adapt"
                )
            k = 1 + len(self.spread_priors)
            if self.draws < 2 * k:
                raise ValueError(
                    f"--priors with {k} priors needs --draws {2 * k} or more (2 per prior, for "
                    f"the within-prior std), got {self.draws}"
                )
        level = self.interval_level
        if level is not None and not 0 < level < 1:
            raise ValueError(f"--interval-level must lie in (0, 1), got {level}")
        if self.calibration is not None:
            if self.draws < 2:
                raise ValueError("calibrated intervals need a std: use --draws 2 or more")
            if level not in (None, DEFAULT_INTERVAL_LEVEL, self.calibration.level):
                raise ValueError(
                    f"--interval-level {level} differs from the calibration's "
                    f"{self.calibration.level}"
                )

    def check_calibration(self) -> None:
        """Refuse a calibration made for another prior, sampler, mask, draws or version
        (after the prior is loaded: its name counts)."""
        if self.calibration is not None:
            why = self.calibration.mismatch(self.calibration_key())
            made_for = self.calibration.valid_for
            if why is None and self.adapt is not None and "adapt" not in made_for:
                why = "this run adapts the prior; the calibration was made without adaptation"
            if why is None and self.spread_priors and "priors" not in made_for:
                why = "this run shares its draws among priors; the calibration was made with one"
            if why is None and not self.holdout and self.calibration.needs_holdout:
                why = "its score uses the hold-out check's maps; this run has --no-holdout"
            made = self.calibration.valid_for.get("acceleration")
            record = self.record
            own = record.mask_type.startswith(("file", "measured"))
            if why is None and own and isinstance(made, int | float) and made > 0:
                # the file's own sampling, not the one asked for: its real acceleration counts
                if abs(record.acceleration - made) > 0.1 * made:
                    why = (
                        f"the file carries its own sampling at {record.acceleration:.1f}x; the "
                        f"calibration was made at {made:g}x"
                    )
            if why is not None:
                raise ValueError(f"the calibration does not fit this run: {why}")

    def calibration_key(self) -> dict[str, Any]:
        """What a calibration of this run's intervals depends on (and must match)."""
        return self.record.calibration_key()

    def check_input(self) -> None:
        """Everything but the prior: settings, input, slices, mask, every selected slice
        finite (so no finished slice is thrown away for a bad later one)."""
        self.check_settings()
        _ = self.slice_indices
        w = self.kspace_shape[1]
        if w < MIN_COLUMNS:
            raise ValueError(f"{self.input.path}: only {w} phase-encode columns")
        _ = self.sampling_mask  # impossible acceleration, a missing file mask -> ValueError
        _ = self.user_maps  # unreadable or misshapen coil maps -> ValueError
        for index in self.slice_indices:  # NaN anywhere: read slice by slice, none kept
            self.input.kspace(index)

    def load_prior(self) -> Any:
        """Load the prior if it is a name or path (once per process and settings: jobs
        share it, see :func:`~diffrecon.priors.checkpoints.shared_prior`)."""
        if isinstance(self.prior, str | Path):
            from diffrecon.priors.checkpoints import shared_prior

            self.prior = shared_prior(
                self.prior, self.prior_format, self.device, self.prior_options
            )
        wanted = self.precision_for(self.prior)
        if wanted is not None and getattr(self.prior, "precision", "float32") != wanted:
            if not callable(getattr(self.prior, "with_precision", None)):
                raise ValueError(
                    f"--precision {self.precision} needs a learned prior (a network); "
                    f"{type(self.prior).__name__} computes in its own precision"
                )
            self.prior = self.prior.with_precision(wanted)  # the shared one unchanged
        if self.adapt is not None and not isinstance(self.prior, LearnedPrior):
            raise ValueError(
                f"--adapt needs a learned prior (a network with layers to adapt); "
                f"{type(self.prior).__name__} has none"
            )
        self.spread_priors = tuple(self._load_other(p) for p in self.spread_priors)
        return self.prior

    def _load_other(self, spec: Any) -> Any:
        """One of ``spread_priors`` loaded (as :meth:`load_prior` loads the main one)."""
        if isinstance(spec, str) and spec == ADAPTED:
            return spec
        if isinstance(spec, str | Path):
            from diffrecon.priors.checkpoints import shared_prior

            spec = shared_prior(spec, "auto", self.device)
        wanted = self.precision_for(spec)
        if wanted is not None and callable(getattr(spec, "with_precision", None)):
            spec = spec.with_precision(wanted)
        return spec

    def precision_for(self, prior: Any) -> str | None:
        """The precision ``prior`` is to compute in: ``precision`` with ``"auto"`` resolved
        for the job's device (bfloat16 where it is native,
        :func:`~diffrecon.priors.learned.native_bfloat16`) and, for a prior without a
        network, its own (None)."""
        if self.precision != AUTO_PRECISION:
            return self.precision
        if not callable(getattr(prior, "with_precision", None)):
            return None
        return resolve_precision(AUTO_PRECISION, self.device)

    @property
    def precision_used(self) -> str | None:
        """The network's precision as recorded: the loaded prior's (None without a network),
        or before loading, ``precision`` resolved as for a network."""
        if not isinstance(self.prior, str | Path):
            return getattr(self.prior, "precision", None)
        if self.precision == AUTO_PRECISION:
            return resolve_precision(AUTO_PRECISION, self.device)
        return self.precision

    @property
    def prior_names(self) -> list[str] | None:
        """Every prior that draws (``None`` for one prior), the main one first."""
        if not self.spread_priors:
            return None
        return [self.prior_name, *(_name_of(p) for p in self.spread_priors)]

    def validate(self) -> ReconstructionJob:
        """Check everything before any work (see :meth:`check_input`) and load the prior."""
        self.check_input()
        self.load_prior()
        self.check_calibration()
        return self

    # -- the work ---------------------------------------------------------------------------
    def prepare(self, index: int) -> PreparedSlice:
        """Slice ``index`` read, masked and preprocessed (coil maps, scale, noise estimate),
        with the output size the results are cropped to."""
        maps = self.maps_for(index)
        crop = self.input.readout_crop if self.crop_readout else None
        common = dict(noise_std=self.noise_std, out_size=self.input.recon_size)
        if self.coil_maps == "nlinv":  # fitted to the samples the sampler sees
            common["coil_maps"] = "nlinv"
        if crop is None or maps is not None or self.coil_maps == "nlinv":
            return prepare_slice(self.read_kspace(index), self.sampling_mask, maps=maps, **common)
        # ESPIRiT calibrates on the whole acquired readout; the sampler sees the crop
        full = self.input.kspace(index)
        k = remove_readout_oversampling(full, crop)
        return prepare_slice(k, self.sampling_mask, calib_kspace=full, **common)

    def run_slice(
        self,
        index: int,
        on_step: Callable[[StepState], None] | None = None,
        on_batch: Callable[[SliceResult], None] | None = None,
        prepared: PreparedSlice | None = None,
    ) -> SliceResult:
        """Reconstruct slice ``index`` of the input: posterior draws at the likelihood level
        ``max(noise estimate, preset's noise floor)``, summarised in the file's units and
        cropped to its output size (``on_batch`` sees running summaries without quantiles,
        intervals or metrics); ``prepared``: its :meth:`prepare` output when the caller
        already has it."""
        t0 = time.perf_counter()
        prepared = self.prepare(index) if prepared is None else prepared
        level = self.interval_level_used
        keep = self.keep_draws or bool(self.quantile_levels)
        tau = self.tau(prepared)

        validation: Validation | None = None

        counts: list[int] | None = None
        evidence: dict[str, torch.Tensor] | None = None

        def summary(post: Posterior, final: bool) -> SliceResult:
            return self._summarise(prepared, post, final, tau, t0, validation, counts, evidence)

        try:
            validation, prepared, prior, evidence = self.validate_slice(prepared, tau, on_step)
            hybrid = validation is not None and validation.mu is not None
            members = self._members(prior)
            counts = split_counts(self.draws, len(members)) if len(members) > 1 else None
            parts = []
            for member, n in zip(members, counts or [self.draws], strict=True):
                parts.append(
                    reconstruct(
                        prepared.y,
                        prepared.operator,
                        member,
                        sampler=self.preset,
                        draws=n,
                        noise_std=tau,
                        seed=self.seed,  # common random numbers across the priors
                        device=self.device,
                        batch_size=self.batch_size,
                        keep_draws=keep
                        or hybrid
                        or counts is not None
                        or (level is not None and self.calibration is None),
                        callback=on_step,
                        on_batch=None
                        if on_batch is None or counts is not None
                        else (lambda p: on_batch(summary(p, False))),
                        support=prepared.support,
                    )
                )
            post = parts[0]
            if counts is not None:
                assert all(p.draws is not None for p in parts)
                record = dataclasses.replace(post.record, draws=self.draws)
                post = posterior_from_draws(torch.cat([p.draws for p in parts]), record)
            if hybrid:  # every draw finished alike, so their spread survives
                assert validation is not None and post.draws is not None
                lam, mu = validation.l1_lambda, float(validation.mu)
                start = None if evidence is None else evidence.get("l1_complex")
                finished = hybrid_draws(prepared, post.draws, lam, mu, centre=start)
                post = posterior_from_draws(finished, post.record)
            result = summary(post, True)
        except NonFiniteStdError as err:
            raise NonFiniteStdError(f"{self.input.path.name} slice {index}: {err}") from err
        target = self.input.target(index)
        if target is not None:
            tgt, mean, zf = evaluation_view(target, result.mean, result.zero_filled)
            ours, zero = metrics.evaluate(tgt, mean), metrics.evaluate(tgt, zf)
            result.metrics = {
                "psnr": ours["psnr"],
                "ssim": ours["ssim"],
                "psnr_zero_filled": zero["psnr"],
                "ssim_zero_filled": zero["ssim"],
            }
        return result

    def validate_slice(
        self,
        prepared: PreparedSlice,
        tau: float,
        on_step: Callable[[StepState], None] | None = None,
    ) -> tuple[Validation | None, PreparedSlice, Any, dict[str, torch.Tensor] | None]:
        """The hold-out check of one prepared slice, the slice to reconstruct, the prior
        to draw with and what the data say without a prior
        (:func:`~diffrecon.mri.evidence.evidence_maps`, for the uncertainty score). With
        ESPIRiT maps the hold-out first chooses the coil-map variant
        (:func:`~diffrecon.mri.mapsets.choose_maps`; the slice returned carries it, rebuilt
        from all the samples); with ``coil_maps="auto"`` that variant then meets NLINV's
        maps: fit-sample draws with each are scored on the held-out samples and the better
        predictor (beyond :data:`~diffrecon.mri.mapsets.MAPS_POSTERIOR_MARGIN`) is kept,
        with its draws. With ``adapt`` the prior is then adapted to the slice
        (:meth:`adapt_to`). Then draws from the fit samples only (a quarter of the
        run's, 2 to 4: two at least, so the score can be corrected to the run's draw
        count), scored against the self-tuned L1 and, where needed, the hybrids. No check
        (None) when it is off, without a noise level, or when too few lines can be held
        out."""
        prior = self.load_prior()
        split = self.split_of(prepared) if self.holdout else "no hold-out check"
        if isinstance(split, str):
            return None, prepared, prior, None
        t0 = time.perf_counter()
        original = prepared
        scoring, prepared, choice = self.maps_choice(prepared, split)
        report, shared = None, None
        if self.adapt is not None and self.adapt.scope == "volume":
            shared = self.volume_adaptation()
            prior = self.shared_prior
        post, by_posterior, espirit = None, {}, choice
        if self.coil_maps == "auto" and choice is not None:
            scoring, prepared, choice, post, by_posterior = self.posterior_maps(
                original, prepared, split, choice, prior, tau, on_step
            )
        if self.adapt is not None and self.adapt.scope != "volume":
            prior, report = self.adapt_to(scoring, split, prior, tau)
            post = None  # drawn again with the adapted prior
        fit = split.restrict(scoring)
        if post is None:
            post = self.fit_draws(scoring, split, prior, tau, on_step)
        # the self-tuned L1 (weight, score) and its images, solved once for the check, the
        # hybrid finish and the evidence maps
        norm = lipschitz(fit)
        l1 = (
            tune_l1(scoring, split, fit, norm)
            if choice is None
            else (choice.l1_lambda, choice.scores[choice.variant])
        )
        x_fit, x_final = l1_image(fit, l1[0], norm), l1_image(prepared, l1[0])
        found = validate(
            scoring, split, fit, post, self.draws, self.finish, l1=l1, centre=x_fit, norm=norm
        )
        maps = {} if espirit is None else {"score_espirit": espirit.scores["espirit"]}
        if choice is not None:  # the ESPIRiT variant kept
            maps["maps"] = choice.variant
        elif prepared.maps_source.startswith("nlinv"):
            maps["maps"] = "nlinv"
        maps |= by_posterior
        if report is not None:
            maps |= {
                "adapted": report.accepted,
                "adapt_level": report.kept_level,
                "adapt_seconds": report.seconds,
                "adapt_reason": report.reason,
            }
        if shared is not None:  # its cost was paid once, on the slice it was fitted on
            maps |= {
                "adapted": shared.accepted,
                "adapt_level": shared.kept_level,
                "adapt_seconds": 0.0,
                "adapt_reason": f"shared by the volume: adapted once on slice {shared.slice} "
                f"({shared.seconds:.1f} s); {shared.reason}",
            }
        evidence = evidence_maps(
            scoring, prepared, split, found.l1_lambda, x_final=x_final, x_fit=x_fit
        )
        evidence["l1_complex"] = x_final  # the hybrid finish starts from it
        # its cost: the map choice, the adaptation, the fit-sample draws and the FISTA solves
        found = dataclasses.replace(found, seconds=time.perf_counter() - t0, **maps)
        return found, prepared, prior, evidence

    def posterior_maps(
        self,
        prepared: PreparedSlice,
        final: PreparedSlice,
        split: HoldoutSplit,
        choice: MapsChoice,
        prior: Any,
        tau: float,
        on_step: Callable[[StepState], None] | None = None,
    ) -> tuple[PreparedSlice, PreparedSlice, MapsChoice | None, torch.Tensor, dict]:
        """``coil_maps="auto"``: fit-sample draws with the maps the L1 image chose
        (``choice`` of :func:`~diffrecon.mri.mapsets.choose_maps` on ``prepared``, one-set
        ESPIRiT; ``final``: its chosen maps from all the samples), with the best variant of the
        other kind (one-set or two-set, :attr:`~diffrecon.mri.mapsets.MapsChoice.rival`)
        and with NLINV's maps, each scored on the held-out samples; another replaces the L1
        image's choice only by :func:`~diffrecon.mri.mapsets.posterior_pick`'s margin.
        Returns ``(scoring, final, choice, draws, scores)``: the kept maps' slice from the
        fit samples and from all of them, ``choice`` with the kept ESPIRiT variant (None
        for NLINV), its draws and the recorded scores."""
        one_set = choice.variant == MAP_VARIANTS[0]
        two_set = choice.rival if one_set else choice.variant
        candidates = {
            "espirit": choice.scoring[MAP_VARIANTS[0]],
            "two_set": choice.scoring[two_set],
            "nlinv": with_nlinv_maps(prepared, split),
        }
        draws = {k: self.fit_draws(p, split, prior, tau, on_step) for k, p in candidates.items()}
        scores = {k: holdout_score(candidates[k], split, d, self.draws) for k, d in draws.items()}
        kept = posterior_pick(scores, "espirit" if one_set else "two_set")
        recorded = {f"posterior_{k}": v for k, v in scores.items()} | {"maps_l1": choice.variant}
        if kept == "nlinv":  # rebuilt from all the samples only when kept
            return candidates[kept], with_nlinv_maps(prepared), None, draws[kept], recorded
        variant = MAP_VARIANTS[0] if kept == "espirit" else two_set
        if variant != choice.variant:
            final = rebuilt(prepared, choice, variant)
        choice = dataclasses.replace(choice, variant=variant)
        return candidates[kept], final, choice, draws[kept], recorded

    def fit_draws(
        self,
        scoring: PreparedSlice,
        split: HoldoutSplit,
        prior: Any,
        tau: float,
        on_step: Callable[[StepState], None] | None = None,
    ) -> torch.Tensor:
        """The hold-out check's posterior draws ``(n, 2, H, W)`` from the fit samples of
        ``scoring`` alone (a quarter of the run's draws, 2 to 4: two at least, so the score
        can be corrected to the run's draw count)."""
        fit = split.restrict(scoring)
        preset = self.preset
        if self.check_start is not None:
            preset = warm_tail(preset, self.check_start)
        post = reconstruct(
            fit.y,
            fit.operator,
            prior,
            sampler=preset,
            draws=min(4, max(2, self.draws // 4)),
            noise_std=tau,
            seed=(self.seed + 1) % 2**63,  # not the final run's first draws
            device=self.device,
            batch_size=self.batch_size,
            keep_draws=True,
            callback=on_step,
            support=fit.support,
        )
        assert post.draws is not None
        return post.draws

    def _members(self, prior: Any) -> list[Any]:
        """The priors that draw for one slice: ``prior`` (from :meth:`validate_slice`,
        adapted when ``adapt`` is on) alone, or the main prior and ``spread_priors``, where
        ``"adapted"`` stands for ``prior`` and the main one then uses its base network."""
        if not self.spread_priors:
            return [prior]
        first = self.load_prior() if ADAPTED in self.spread_priors else prior
        return [first, *(prior if p == ADAPTED else p for p in self.spread_priors)]

    def volume_adaptation(self) -> SharedAdaptation:
        """The volume's one adaptation: ``shared_adaptation``, else :meth:`adapt_volume`
        (once per job)."""
        if self.shared_adaptation is None:
            self.shared_adaptation = self.adapt_volume()
        return self.shared_adaptation

    def adapt_volume(self, index: int | None = None) -> SharedAdaptation:
        """Adapt the prior once for the whole volume, on slice ``index`` (default: the
        middle selected slice), as :meth:`validate_slice` would for that slice alone (the
        coil-map choice first, with ``coil_maps="auto"`` by the base prior's fit-sample
        draws as :meth:`posterior_maps` makes it, then the adaptation on its fit samples,
        stopped by its held-out ones)."""
        assert self.adapt is not None
        if index is None:
            index = self.slice_indices[len(self.slice_indices) // 2]
        prepared = self.prepare(index)
        split = self.split_of(prepared)
        key = self.adaptation_key(index)
        if isinstance(split, str):
            return SharedAdaptation(index, False, None, 0.0, f"not adapted: {split}", None, key)
        scoring, final, choice = self.maps_choice(prepared, split)
        prior, tau = self.load_prior(), self.tau(prepared)
        if self.coil_maps == "auto" and choice is not None:
            scoring = self.posterior_maps(prepared, final, split, choice, prior, tau)[0]
        _, report = self.adapt_to(scoring, split, prior, tau)
        return SharedAdaptation.of_report(index, report, key)

    def tau(self, prepared: PreparedSlice) -> float:
        """The likelihood's noise level for ``prepared``: its noise estimate, at least the
        preset's floor (1% of the image scale by default: an underestimated noise level
        would make the likelihood, and DAPS's Langevin step, needlessly sharp)."""
        return max(prepared.noise_std, self.preset.noise_floor)

    def split_of(self, prepared: PreparedSlice) -> HoldoutSplit | str:
        """The run's hold-out split of ``prepared``'s samples, or why there is none."""
        if not prepared.noise_std > 0:
            return "no noise level"
        split = holdout_split(prepared.mask, self.seed, self.holdout_fraction)
        return "too few lines to hold out" if split is None else split

    @staticmethod
    def maps_choice(
        prepared: PreparedSlice, split: HoldoutSplit
    ) -> tuple[PreparedSlice, PreparedSlice, Any]:
        """``(scoring, prepared, choice)``: with ESPIRiT maps, the variant the hold-out
        chooses (:func:`~diffrecon.mri.mapsets.choose_maps`: the slice it scores on, the
        slice rebuilt from all the samples, the choice); with NLINV maps, the slice with
        NLINV's maps fitted to the fit samples, ``prepared`` and ``None``; otherwise
        ``prepared`` twice and ``None``."""
        if prepared.calib_region is not None and prepared.maps_source.startswith("espirit"):
            return choose_maps(prepared, split)
        if prepared.maps_source.startswith("nlinv"):
            return with_nlinv_maps(prepared, split), prepared, None
        return prepared, prepared, None

    def adaptation_key(self, index: int) -> str:
        """What a volume's one adaptation depends on (a resumed run reuses a saved one only
        when it matches): the run's calibration key (prior, preset and its settings, mask
        request, draws, version, adaptation settings), the precision, the seed and hold-out
        share, the noise level given, the mask and coil maps as used (content hashes), the
        coil-map estimator and the slice it is fitted on."""
        assert self.adapt is not None
        self.load_prior()  # its name, as a run records it
        record = self.record
        maps = self.user_maps
        return json.dumps(
            {
                **record.calibration_key(),
                "precision": record.precision,
                "seed": self.seed,
                "holdout_fraction": self.holdout_fraction,
                "noise_std": self.noise_std,
                "mask": _digest(self.sampling_mask.numpy()),
                "maps": None if maps is None else _digest(maps),
                "crop_readout": self.crop_readout,
                "coil_maps": record.coil_maps,
                "slice": index,
            },
            sort_keys=True,
            default=str,
        )

    @cached_property
    def shared_prior(self) -> Any:
        """The prior with the volume's one adaptation (:meth:`volume_adaptation`), built once
        per job."""
        assert self.adapt is not None
        return self.volume_adaptation().prior(self.load_prior(), self.adapt.rank)

    def adapt_to(
        self, prepared: PreparedSlice, split: HoldoutSplit, prior: Any, tau: float
    ) -> tuple[Any, AdaptReport]:
        """``prior`` adapted to one slice (:func:`~diffrecon.adapt.adapt_prior`): fitted to
        the fit samples, stopped by the held-out ones."""
        assert self.adapt is not None
        dev = torch.device(self.device)
        (op_fit, y_fit), (op_held, y_held) = (
            (op.to(dev), y.to(dev))
            for op, y in (samples_of(prepared, m) for m in (split.fit, split.held))
        )
        g = torch.Generator(device=dev).manual_seed((self.seed + 2) % 2**63)
        support = prepared.support
        return adapt_prior(
            prior,
            op_fit,
            y_fit,
            op_fit,
            y_fit,
            op_held,
            y_held,
            tau,
            self.adapt,
            generator=g,
            support=None if support is None else torch.as_tensor(support),
        )

    def _summarise(
        self,
        prepared: PreparedSlice,
        post: Posterior,
        final: bool,
        tau: float,
        t0: float,
        validation: Validation | None = None,
        counts: list[int] | None = None,
        evidence: dict[str, torch.Tensor] | None = None,
    ) -> SliceResult:
        """Summaries in file units, cropped (partial ones skip quantiles and intervals);
        ``counts``: the draws of each prior when several shared them (final results get
        the within- and between-prior parts of the std); ``evidence``: the hold-out's
        prior-free maps (final results keep them)."""
        to_file, to_complex = prepared.to_file, prepared.to_file_complex
        mag_std = post.magnitude_std
        if mag_std is None or post.count < 2:
            mag_std = torch.zeros_like(post.magnitude_mean)
        mean, std = to_file(post.magnitude_mean), to_file(mag_std)
        kept = post.draws is not None
        quants = lower = upper = std_cal = None
        level = self.interval_level_used if final else None
        if final and self.quantile_levels and kept:
            quants = to_file(post.quantiles(self.quantile_levels, magnitude_of=True))
        within = between = None
        if final and counts is not None and kept:
            mags = to_file(magnitude(post.draws).double())
            within, between = (a.astype(np.float32) for a in prior_spread(mags, counts))
        l1 = resid = None
        if final and evidence is not None:
            l1, resid = (to_file(evidence[k]) for k in ("l1", "holdout_residual"))
        if level is not None and self.calibration is not None:
            cal = self.calibration
            feats = None
            if cal.weights is not None:  # a fitted score: the features it weighs
                feats = score_features(mean, std, within, between, l1, resid)
            lower, upper = (a.astype(np.float32) for a in cal.interval(mean, std, feats))
            std_cal = cal.calibrated_std(mean, std, feats).astype(np.float32)
        elif level is not None and kept:
            lower, upper = (to_file(b) for b in post.intervals(level))
        keep = self.keep_draws and kept
        return SliceResult(
            mean=mean,
            std=std,
            draws_done=post.count,
            mean_complex=to_complex(post.mean),
            draws_complex=to_complex(post.draws) if keep and final else None,
            provenance=SliceProvenance(
                record=post.record,
                mask=prepared.mask.numpy(),
                maps=prepared.maps_source,
                maps_used=prepared.maps.numpy() if final else None,
                calib_width=prepared.calib_width,
                intensity_scale=prepared.scale,
                noise_std_estimate=prepared.noise_std * prepared.scale,
                noise_std_used=tau,
                data_residual=prepared.data_residual(post.mean.float()) if final else None,
                validation=validation if final else None,
            ),
            zero_filled=to_file(magnitude(prepared.zero_filled[None])[0].double()),
            draws=to_file(magnitude(post.draws).double()) if keep else None,
            quantiles=quants,
            lower=lower,
            upper=upper,
            interval_level=level if lower is not None else None,
            calibrated=std_cal is not None,
            std_calibrated=std_cal,
            std_within=within,
            std_between=between,
            l1_image=l1,
            holdout_residual=resid,
            seconds=time.perf_counter() - t0,
        )

    def run(self, on_step: Callable[[StepState], None] | None = None) -> VolumeResult:
        """Validate, then reconstruct every selected slice."""
        self.validate()
        results = [self.run_slice(i, on_step=on_step) for i in self.slice_indices]
        return self.volume(results)

    def mask_used_kind(self) -> str:
        """The mask kind applied: the one asked for, or what ``auto`` resolved to."""
        _ = self.sampling_mask
        return self.mask_used

    def volume_metrics(
        self,
        indices: Sequence[int],
        recon: np.ndarray,
        zero_filled: np.ndarray | None = None,
    ) -> dict[str, float]:
        """fastMRI ``evaluate.py``'s metrics of the slices ``indices`` taken as one volume
        (``data_range`` the target volume's maximum, SSIM averaged over slices), for
        ``recon`` ``(slices, H, W)`` and optionally the zero-filled images (keys with
        ``_zero_filled``); empty when the input has no target."""
        targets = [self.input.target(i) for i in indices]
        if not targets or any(t is None for t in targets):
            return {}
        tgt, recon, *zf = evaluation_view(
            np.stack(targets), recon, *([] if zero_filled is None else [zero_filled])
        )
        out = metrics.evaluate(tgt, recon)
        if zf:
            out.update({f"{k}_zero_filled": v for k, v in metrics.evaluate(tgt, zf[0]).items()})
        return out

    @property
    def record(self) -> RunRecord:
        """What this run is (needs the mask, so the first slice may be read)."""
        m = self.sampling_mask
        f = self.input
        header = f.header
        spacing = header.pixel_spacing_mm if header is not None else None
        return RunRecord(
            sampler=self.preset.sampler,
            preset=self.sampler,
            settings=self.preset.settings(),
            seed=self.seed,
            draws=self.draws,
            prior=self.prior_name,
            version=__version__,
            acceleration=float(m.numel() / max(int(m.sum()), 1)),
            acceleration_requested=self.mask.acceleration,
            center_fraction=self.mask.center_fraction,
            mask_type=self.mask_used,
            mask_type_requested=self.mask.kind,
            input=str(f.path),
            input_slices=f.num_slices,
            # geometry from the ISMRMRD header, for DICOM and NIfTI exports
            pixel_spacing_mm=list(spacing) if spacing is not None else None,
            slice_thickness_mm=header.slice_thickness_mm if header is not None else None,
            patient_id=f.attrs.get("patient_id"),
            acquisition=f.attrs.get("acquisition"),
            quantile_levels=list(self.quantile_levels) or None,
            interval_level=self.interval_level_used,
            calibrated=self.calibration is not None,
            calibration_lambda=None if self.calibration is None else self.calibration.lam,
            # relative Monte-Carlo error of a std from `draws` draws (Gaussian: 1/sqrt(2(n-1)))
            std_relative_mc_error=std_mc_error(self.draws),
            holdout_fraction=self.holdout_fraction if self.holdout else None,
            finish=self.finish,
            coil_maps=None if self.maps is not None else self.coil_maps,
            precision=self.precision_used,
            adapt=None if self.adapt is None else dataclasses.asdict(self.adapt),
            priors=self.prior_names,
            command=self.command,
        )

    def volume(self, results: list[SliceResult]) -> VolumeResult:
        """The selected slices' results, with the result-file attributes."""
        return VolumeResult(list(results), list(self.slice_indices), self.attrs(results))

    def attrs(self, results: list[SliceResult]) -> dict[str, Any]:
        """Result-file attributes: the run record and the slices' provenance."""
        return volume_attrs(self.record, results)


def reconstruct_kspace(
    kspace: Any,
    mask: Any = None,
    maps: Any = None,
    *,
    prior: Any = "brain-mri-default",
    sampler: str = MRI_DEFAULT,
    steps: int | None = None,
    draws: int = 8,
    seed: int = 0,
    noise_std: float | None = None,
    keep_draws: bool = False,
    interval_level: float | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    **overrides: Any,
) -> SliceResult:
    """Posterior reconstruction of one multicoil slice given as arrays: a
    :class:`ReconstructionJob` over an :class:`~diffrecon.io.arrays.ArrayInput`, the path
    every file takes; returns its :class:`~diffrecon.results.SliceResult`.

    ``kspace``: ``(coils, H, W)`` in fastMRI's layout and FFT convention (centred, orthonormal
    2-D FFT over the last two axes), numpy or torch, readout already cropped to the image
    you want. ``mask``: ``(W,)`` columns or ``(H, W)``, bool or 0/1 (singleton axes such as
    fastMRI's ``(1, 1, W, 1)`` are dropped); ``None``: the non-zero samples of ``kspace``
    (data that is already undersampled). ``maps``: coil sensitivities ``(coils, H, W)``
    (e.g. SigPy's or BART's ESPIRiT maps); ``None``: ESPIRiT on the fully sampled centre.
    ``prior``: a shipped name, a bundle folder, a checkpoint file
    (:func:`~diffrecon.priors.open_prior`), or any ``D(x, sigma)``. ``steps`` and
    ``overrides`` replace preset settings. ``noise_std``: k-space noise per real component
    (default: estimated from the data). Same seed, same numbers.

    The result's ``mean`` is the posterior mean of ``|x|``, ``mean_complex`` the complex
    posterior mean, ``draws_complex`` the draws (with ``keep_draws``); ``maps``, ``mask``,
    ``noise_std`` and ``data_residual`` say what was used and how well the mean fits.
    """
    k = as_kspace(kspace)
    m = measured_mask(k) if mask is None else as_mask(mask, k.shape[-2:])
    job = ReconstructionJob(
        ArrayInput(k[None], mask=m.numpy()),
        prior=prior,
        sampler=sampler,
        steps=steps,
        overrides=overrides,
        mask=MaskSpec(kind="file"),
        draws=draws,
        seed=seed,
        noise_std=noise_std,
        keep_draws=keep_draws,
        interval_level=interval_level,
        device=device,
        batch_size=batch_size,
        maps=maps,
        command="diffrecon.reconstruct_kspace",
    )
    return job.validate().run_slice(0)
