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

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrecon._version import __version__
from diffrecon.io.fastmri import MAX_PIXELS, FastMRIFile, open_fastmri, parse_slices
from diffrecon.mri.masks import MaskSpec
from diffrecon.mri.preprocess import PreparedSlice, prepare_slice
from diffrecon.mri.transforms import remove_readout_oversampling
from diffrecon.pipeline import reconstruct_prepared
from diffrecon.results import SliceResult, VolumeResult
from diffrecon.samplers.common import StepState
from diffrecon.samplers.registry import MRI_DEFAULT, Preset, resolve
from diffrecon.uncertainty.conformal import Calibration, NonFiniteStdError, std_mc_error

MIN_COLUMNS = 8  # fewer phase-encode columns leave no room for a calibration region


@dataclass(frozen=True)
class ArrayInput:
    """k-space held in memory, laid out as a fastMRI file's ``kspace``: ``(slices, coils, H,
    W)`` complex; ``mask`` ``(W,)`` or ``(H, W)`` when it is already undersampled; ``target``
    ``(slices, h, w)`` reference magnitudes for the metrics; ``readout_crop``: the recon
    size of an oversampled readout (``H`` is then the acquired one, cropped as a file's is).
    Reads like a :class:`~diffrecon.io.fastmri.FastMRIFile`."""

    data: np.ndarray
    name: str = "array"
    mask: np.ndarray | None = None
    target_images: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    readout_crop: int | None = None

    def __post_init__(self) -> None:
        d = np.asarray(self.data)
        if d.ndim != 4 or not np.iscomplexobj(d):
            raise ValueError(f"k-space array must be complex (slices, coils, H, W), got {d.shape}")

    header = None

    @property
    def path(self) -> Path:
        return Path(self.name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def num_slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def recon_size(self) -> tuple[int, int]:
        return self.readout_crop or int(self.data.shape[-2]), int(self.data.shape[-1])

    def kspace(self, index: int, crop_readout: bool = False) -> np.ndarray:
        k = np.asarray(self.data[index], dtype=np.complex64)
        if not np.isfinite(k).all():
            raise ValueError(f"{self.name}: kspace slice {index} contains NaN or inf")
        if crop_readout and self.readout_crop is not None:
            k = remove_readout_oversampling(k, self.readout_crop)
        return k

    def target(self, index: int) -> np.ndarray | None:
        if self.target_images is None:
            return None
        return np.asarray(self.target_images[index], dtype=np.float32)


Source = FastMRIFile | ArrayInput


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

    ``source``: a fastMRI file path or an :class:`ArrayInput`. ``slices``: ``None`` (all), a
    CLI-style string (``"10:14"``, ``"3,5"``) or indices. ``prior``: a shipped name, a bundle
    path, a checkpoint file (``prior_format`` and ``prior_options`` as in
    :func:`~diffrecon.priors.open_prior`) or a loaded denoiser (loaded once by
    :meth:`load_prior`). ``sampler`` and ``overrides``: a preset name and replacements of its
    settings (``steps``...).
    ``noise_std``: k-space noise per real component (default: estimated per slice).
    ``maps``: coil sensitivities instead of ESPIRiT's: an array or a ``.npy`` / ``.h5``
    (dataset ``maps``) file, ``(coils, H, W)`` for every slice or ``(slices, coils, H, W)``
    for each slice of the input (``H`` after the readout crop).
    ``interval_level``: central intervals written beside mean and std (from the draws'
    quantiles, or from ``calibration``, a conformal calibration that must fit the run).
    ``command``: the command line that asked for the job, recorded in the results.
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
    interval_level: float | None = 0.9
    calibration: Calibration | None = None
    maps: str | Path | np.ndarray | None = None
    command: str | None = None
    max_pixels: int = MAX_PIXELS
    mask_used: str = field(default="", init=False, repr=False)  # set with sampling_mask

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
        return resolve(self.sampler, **self.overrides)

    @property
    def kspace_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the slices the sampler sees (after the readout crop)."""
        h, w = self.input.shape[-2:]
        if self.crop_readout and self.input.readout_crop is not None:
            h = self.input.readout_crop
        return int(h), int(w)

    @cached_property
    def sampling_mask(self) -> torch.Tensor:
        """The mask every slice of the input is sampled with (built once)."""
        f = self.input
        padding = f.header.padding if f.header is not None else None
        measured = None
        if self.mask.kind == "auto" and f.mask is None:
            # columns the file measured (exactly zero elsewhere): prospective undersampling
            k = f.kspace(self.slice_indices[0])
            measured = np.abs(k).sum(axis=(0, 1)) > 0
        m = self.mask.build(
            self.kspace_shape, f.mask, padding, file_name=f.path.name, measured=measured
        )
        kind = self.mask.kind
        if kind == "auto":
            kind = "file" if f.mask is not None else "random"
            if (
                measured is not None
                and m.shape == measured.shape
                and np.array_equal(m.numpy(), measured)
            ):
                kind = "measured"
        self.mask_used = f"{kind} (auto)" if self.mask.kind == "auto" else kind
        return m

    @cached_property
    def user_maps(self) -> np.ndarray | None:
        """The user's coil maps as an array, checked against the slices' shape."""
        if self.maps is None:
            return None
        m = self.maps
        if isinstance(m, str | Path):
            p = Path(m)
            if p.suffix == ".npy":
                m = np.load(p, allow_pickle=False)
            elif p.suffix in (".h5", ".hdf5"):
                import h5py

                with h5py.File(p, "r") as f:
                    if "maps" not in f:
                        raise ValueError(f"{p}: no 'maps' dataset")
                    m = f["maps"][()]
            else:
                raise ValueError(f"--maps must be a .npy or .h5 file, got {p.name}")
        m = np.asarray(m)
        shape = self.input.shape
        want = (shape[1] if len(shape) == 4 else 1, *self.kspace_shape)
        if not np.iscomplexobj(m) or m.shape[-3:] != want or m.ndim not in (3, 4):
            raise ValueError(
                f"coil maps must be complex (coils, H, W) = {want} or (slices, {want[0]}, "
                f"{want[1]}, {want[2]}), got {m.dtype} {m.shape}"
            )
        if m.ndim == 4 and m.shape[0] != self.input.num_slices:
            raise ValueError(
                f"coil maps hold {m.shape[0]} slices, the input {self.input.num_slices}"
            )
        if not np.isfinite(m).all():
            raise ValueError("the coil maps contain NaN or inf")
        return m

    def maps_for(self, index: int) -> np.ndarray | None:
        m = self.user_maps
        return m if m is None or m.ndim == 3 else m[index]

    @property
    def prior_name(self) -> str:
        p = self.prior
        return str(p) if isinstance(p, str | Path) else str(getattr(p, "name", type(p).__name__))

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
        level = self.interval_level
        if level is not None and not 0 < level < 1:
            raise ValueError(f"--interval-level must lie in (0, 1), got {level}")
        if self.calibration is not None and self.draws < 2:
            raise ValueError("calibrated intervals need a std: use --draws 2 or more")

    def check_calibration(self) -> None:
        """Refuse a calibration made for another prior, sampler, mask, draws or version
        (after the prior is loaded: its name counts)."""
        if self.calibration is not None:
            why = self.calibration.mismatch(self.calibration_key())
            if why is not None:
                raise ValueError(f"the calibration does not fit this run: {why}")

    def calibration_key(self) -> dict[str, Any]:
        """What a calibration of this run's intervals depends on (and must match)."""
        return {
            "prior": self.prior_name,
            "preset": self.sampler,
            "settings": self.preset.settings(),
            "acceleration": self.mask.acceleration,
            "center_fraction": self.mask.center_fraction,
            "mask_type": self.mask.kind,
            "draws": self.draws,
            "diffrecon_version": __version__,
        }

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
        """Load the prior if it is a name or path (once); returns the denoiser."""
        if isinstance(self.prior, str | Path):
            from diffrecon.priors import open_prior

            self.prior = open_prior(
                self.prior, self.prior_format, device=self.device, **self.prior_options
            )
        return self.prior

    def validate(self) -> ReconstructionJob:
        """Check everything before any work (see :meth:`check_input`) and load the prior."""
        self.check_input()
        self.load_prior()
        self.check_calibration()
        return self

    # -- the work ---------------------------------------------------------------------------
    def prepare(self, index: int) -> PreparedSlice:
        """Slice ``index`` read, masked and preprocessed (coil maps, scale, noise estimate)."""
        maps = self.maps_for(index)
        crop = self.input.readout_crop if self.crop_readout else None
        if crop is None or maps is not None:
            k = self.input.kspace(index, crop_readout=self.crop_readout)
            return prepare_slice(k, self.sampling_mask, noise_std=self.noise_std, maps=maps)
        # ESPIRiT calibrates on the whole acquired readout; the sampler sees the crop
        full = self.input.kspace(index, crop_readout=False)
        k = remove_readout_oversampling(full, crop)
        return prepare_slice(k, self.sampling_mask, noise_std=self.noise_std, calib_kspace=full)

    def run_slice(
        self,
        index: int,
        on_step: Callable[[StepState], None] | None = None,
        on_batch: Callable[[SliceResult], None] | None = None,
        prepared: PreparedSlice | None = None,
    ) -> SliceResult:
        """Reconstruct slice ``index`` of the input (``on_batch`` sees running summaries);
        ``prepared``: its :meth:`prepare` output when the caller already has it."""
        f = self.input
        prepared = self.prepare(index) if prepared is None else prepared
        try:
            return reconstruct_prepared(
                prepared,
                self.load_prior(),
                sampler=self.preset,
                draws=self.draws,
                seed=self.seed,
                out_size=f.recon_size,
                target=f.target(index),
                quantile_levels=self.quantile_levels,
                keep_draws=self.keep_draws,
                device=self.device,
                batch_size=self.batch_size,
                interval_level=self.interval_level,
                calibration=self.calibration,
                callback=on_step,
                on_batch=on_batch,
            )
        except NonFiniteStdError as err:
            raise NonFiniteStdError(f"{f.path.name} slice {index}: {err}") from err

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
        from diffrecon import metrics
        from diffrecon.mri.transforms import center_crop

        targets = [self.input.target(i) for i in indices]
        if not targets or any(t is None for t in targets):
            return {}
        size = tuple(recon.shape[-2:])
        tgt = np.stack(
            [
                center_crop(torch.from_numpy(np.asarray(t, np.float32)), size).numpy()
                for t in targets
            ]
        )
        out = metrics.evaluate(tgt, recon)
        if zero_filled is not None:
            out.update(
                {f"{k}_zero_filled": v for k, v in metrics.evaluate(tgt, zero_filled).items()}
            )
        return out

    def volume(self, results: list[SliceResult]) -> VolumeResult:
        """The selected slices' results, with the result-file attributes."""
        return VolumeResult(list(results), list(self.slice_indices), self.attrs(results))

    def attrs(self, results: list[SliceResult]) -> dict[str, Any]:
        """Result-file attributes: what was run, on what, with which prior, mask and noise."""
        prov = [r.provenance for r in results if r.provenance is not None]
        record = prov[0].record.as_dict() if prov else {}
        f = self.input
        return {
            "sampler": record.get("sampler", self.preset.sampler),
            "preset": self.sampler,
            "settings": record.get("settings", self.preset.settings()),
            "seed": self.seed,
            "draws": self.draws,
            "prior": self.prior_name,
            "diffrecon_version": __version__,
            "acceleration": self.mask.acceleration,
            "center_fraction": self.mask.center_fraction,
            "mask_type": self.mask_used_kind(),
            "input": str(f.path),
            # geometry from the ISMRMRD header, for DICOM and NIfTI exports
            "pixel_spacing_mm": list(f.header.pixel_spacing_mm)
            if f.header is not None and f.header.pixel_spacing_mm is not None
            else None,
            "slice_thickness_mm": f.header.slice_thickness_mm if f.header is not None else None,
            "patient_id": f.attrs.get("patient_id"),
            "acquisition": f.attrs.get("acquisition"),
            "noise_std_estimate": [p.noise_std_estimate for p in prov] or None,
            "noise_std_used": [p.noise_std_used for p in prov] or None,
            "data_residual": [p.data_residual for p in prov] or None,
            "intensity_scale": [p.intensity_scale for p in prov] or None,
            "quantile_levels": list(self.quantile_levels) or None,
            "interval_level": self.interval_level if self.draws >= 2 else None,
            "calibrated": self.calibration is not None,
            "calibration_lambda": None if self.calibration is None else self.calibration.lam,
            # relative Monte-Carlo error of a std from `draws` draws (Gaussian: 1/sqrt(2(n-1)))
            "std_relative_mc_error": std_mc_error(self.draws),
            "command": self.command,
        }
