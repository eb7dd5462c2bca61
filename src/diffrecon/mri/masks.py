"""Undersampling masks: fastMRI's Cartesian column masks and SigPy's 2-D Poisson disc.

The Cartesian masks reproduce fastMRI's ``RandomMaskFunc`` and ``EquispacedMaskFractionFunc``
draw for draw: the same ``numpy.random.RandomState`` calls in the same order, so a seed (an
int or fastMRI's per-file tuple ``tuple(map(ord, fname))``) gives fastMRI's mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

MaskType = Literal["random", "equispaced"]
MAX_COLUMNS = 65536  # far beyond any MRI matrix; a larger count is a mistake, not a scan


@dataclass(frozen=True)
class CartesianMask:
    """A column mask ``(W,)`` and the number of fully sampled center columns."""

    mask: torch.Tensor
    num_low_frequencies: int

    @property
    def acceleration(self) -> float:
        return self.mask.numel() / max(int(self.mask.sum()), 1)


def _center_columns(num_cols: int, num_low: int) -> np.ndarray:
    mask = np.zeros(num_cols, dtype=bool)
    pad = (num_cols - num_low + 1) // 2
    mask[pad : pad + num_low] = True
    return mask


def _validate(num_cols: int, acceleration: float, center_fraction: float) -> int:
    if isinstance(num_cols, bool) or not isinstance(num_cols, int | np.integer):
        raise ValueError(f"num_cols must be an integer >= 2, got {num_cols!r}")
    if not 2 <= num_cols <= MAX_COLUMNS:
        raise ValueError(f"num_cols must lie in [2, {MAX_COLUMNS}], got {num_cols}")
    if not 0.0 < center_fraction <= 1.0:
        raise ValueError(f"center_fraction must lie in (0, 1], got {center_fraction}")
    num_low = round(num_cols * center_fraction)
    if not acceleration >= 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if num_cols / acceleration <= num_low:
        raise ValueError(
            f"acceleration={acceleration} with center_fraction={center_fraction} is "
            f"impossible: {num_low} center columns leave no outer lines within "
            f"{num_cols}/{acceleration} sampled columns"
        )
    if acceleration > num_cols:
        raise ValueError(f"acceleration={acceleration} exceeds the {num_cols} columns")
    return num_low


def cartesian_mask(
    num_cols: int,
    acceleration: float,
    center_fraction: float,
    kind: MaskType = "random",
    seed: int | Sequence[int] | None = None,
    offset: int | None = None,
) -> CartesianMask:
    """fastMRI column mask over the phase-encode axis (the last axis of k-space).

    ``kind="random"``: center columns plus columns kept with probability chosen so that the
    expected acceleration is ``acceleration`` (``RandomMaskFunc``). ``kind="equispaced"``:
    center plus equally spaced columns adjusted so the total matches ``acceleration``
    exactly (``EquispacedMaskFractionFunc``); ``offset`` fixes the first line.
    """
    num_low = _validate(num_cols, acceleration, center_fraction)
    rng = np.random.RandomState(seed)
    # fastMRI's choose_acceleration draws an index among the configured pairs; with one pair
    # randint(1) draws no random bits but is kept so the stream stays fastMRI's.
    rng.randint(1)
    center = _center_columns(num_cols, num_low)
    if kind == "random":
        prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
        accel = rng.uniform(size=num_cols) < prob
    elif kind == "equispaced":
        adjusted = (acceleration * (num_low - num_cols)) / (num_low * acceleration - num_cols)
        if offset is None:
            offset = rng.randint(0, high=round(adjusted))
        accel = np.zeros(num_cols, dtype=bool)
        accel[np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.uint)] = True
    else:
        raise ValueError(f"kind must be 'random' or 'equispaced', got {kind!r}")
    return CartesianMask(torch.from_numpy(center | accel), num_low)


def fastmri_seed(fname: str) -> tuple[int, ...]:
    """fastMRI's per-file mask seed: the character codes of the file name."""
    return tuple(map(ord, fname))


def poisson_disc_mask(
    shape: tuple[int, int],
    acceleration: float,
    calib: tuple[int, int] = (24, 24),
    seed: int = 0,
) -> torch.Tensor:
    """Variable-density 2-D Poisson-disc mask ``(H, W)`` (``sigpy.mri.poisson``), boolean."""
    import sigpy.mri

    if not acceleration > 1:
        raise ValueError(f"acceleration must be > 1, got {acceleration}")
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape}")
    mask = sigpy.mri.poisson(tuple(shape), acceleration, calib=calib, seed=seed, dtype=np.complex64)
    return torch.from_numpy(np.abs(mask) > 0)


def as_mask(mask: Any, shape: tuple[int, int]) -> torch.Tensor:
    """A sampling mask for k-space of ``shape`` ``(H, W)`` as a bool tensor ``(W,)`` (columns)
    or ``(H, W)``, from numpy, torch or a list, bool or 0/1; singleton axes are dropped, so
    fastMRI's ``(1, 1, W, 1)`` masks are accepted."""
    m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
    m = m.detach().cpu()
    if m.is_complex():
        raise ValueError(f"the mask must be real (bool or 0/1), got {m.dtype}")
    shape_in = tuple(m.shape)
    if m.ndim > 2:
        m = m.reshape([n for n in m.shape if n != 1] or [1])
    h, w = shape
    if tuple(m.shape) not in ((w,), (h, w)):
        raise ValueError(
            f"the mask {shape_in} fits neither the columns ({w},) nor the k-space ({h}, {w})"
        )
    if not bool(torch.isfinite(m.double()).all()):
        raise ValueError("the mask contains NaN or inf")
    m = m != 0
    if not bool(m.any()):
        raise ValueError("the mask samples nothing")
    return m


def measured_columns(kspace: np.ndarray) -> np.ndarray:
    """``(W,)`` bool: the phase-encode columns of ``(coils, H, W)`` k-space that hold any
    non-zero sample (unmeasured columns of an undersampled file are exact zeros)."""
    return np.abs(np.asarray(kspace)).sum(axis=(0, 1)) > 0


def measured_mask(kspace: np.ndarray) -> torch.Tensor:
    """The sampling of already undersampled k-space ``(coils, H, W)``: where it is non-zero,
    as columns ``(W,)`` when every row has the same pattern, else ``(H, W)``."""
    m2 = np.abs(np.asarray(kspace)).sum(axis=0) > 0
    if (m2 == m2[:1]).all():
        return torch.from_numpy(m2[0].copy())
    return torch.from_numpy(m2)


MASK_KINDS = ("auto", "random", "equispaced", "file")  # the CLI's --mask-type, napari's


@dataclass(frozen=True)
class MaskSpec:
    """How to undersample a slice: a fastMRI column mask, or ``kind="file"`` for the file's own.

    The seed policy lives here and nowhere else: an explicit ``seed`` wins; without one, a
    mask built for a named file is seeded by the file name as fastMRI does
    (:func:`fastmri_seed`), so every slice of a file, and every run, gets the same mask.
    """

    acceleration: float = 4.0
    center_fraction: float = 0.08
    kind: str = "auto"  # auto | random | equispaced | file
    seed: int | tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(
                f"mask type must be auto, random, equispaced or file, got {self.kind!r}"
            )

    def seed_for(self, file_name: str | None) -> int | tuple[int, ...] | None:
        """The seed a mask for ``file_name`` is drawn with."""
        if self.seed is not None or file_name is None:
            return self.seed
        return fastmri_seed(file_name)

    def build(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The mask of :meth:`resolve` (same arguments), without the kind."""
        return self.resolve(*args, **kwargs)[0]

    def _refuse_undersampled(
        self,
        shape: tuple[int, int],
        file_mask: np.ndarray | None,
        padding: tuple[int, int] | None,
        file_name: str | None,
        measured: np.ndarray | None,
    ) -> None:
        """A retrospective mask on a file that is already undersampled would take columns
        that were never acquired for measured zeros: refused, naming the way out."""
        lo, hi = padding if padding is not None else (0, shape[1])
        cols = None
        if file_mask is not None:
            fm = np.asarray(file_mask, dtype=bool)
            cols = fm if fm.ndim == 1 else fm.any(0)
        elif measured is not None:
            cols = np.asarray(measured, dtype=bool)
        if cols is None or cols.shape != (shape[1],) or cols[lo:hi].all():
            return
        raise ValueError(
            f"--mask-type {self.kind}: {file_name or 'the file'} is already undersampled "
            f"({int(cols[lo:hi].sum())} of {hi - lo} acquired columns measured); a "
            "retrospective mask would take columns that were never acquired for measured "
            "zeros. Use --mask-type auto (keep the file's own sampling)"
        )

    def resolve(
        self,
        shape: tuple[int, int],
        file_mask: np.ndarray | None = None,
        padding: tuple[int, int] | None = None,
        file_name: str | None = None,
        measured: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, str]:
        """Boolean mask ``(W,)`` or ``(H, W)`` for k-space of ``shape``; columns outside the
        acquired ``padding`` range are never sampled (fastMRI zero-pads them).

        ``kind="auto"``: a file that is already undersampled keeps its own sampling: its
        ``mask`` dataset, or else the columns it measured (``measured``: ``(W,)``, False
        where a column is exactly zero) when some acquired column is empty; a fully sampled
        file gets the retrospective random mask. Returns ``(mask, kind applied)``, the kind
        being ``"file (auto)"``, ``"measured (auto)"`` or ``"random (auto)"`` for ``auto``."""
        h, w = shape
        if self.kind == "auto":
            if file_mask is not None:
                return MaskSpec(kind="file").build(shape, file_mask), "file (auto)"
            if measured is not None:
                lo, hi = padding if padding is not None else (0, w)
                cols = np.asarray(measured, dtype=bool)
                if not cols.any():  # not a sampling pattern: no data at all
                    raise ValueError(
                        f"{file_name or 'the file'}: the k-space of its first slice is all "
                        "zeros: there is nothing to reconstruct"
                    )
                if cols.shape == (w,) and not cols[lo:hi].all():
                    return torch.from_numpy(cols.copy()), "measured (auto)"
            m = replace(self, kind="random").build(shape, None, padding, file_name)
            return m, "random (auto)"
        if self.kind != "file":
            self._refuse_undersampled(shape, file_mask, padding, file_name, measured)
        if self.kind == "file":
            if file_mask is None:
                raise ValueError("--mask-type file: the file has no 'mask' dataset")
            m = torch.from_numpy(np.asarray(file_mask, dtype=bool))
            if m.shape not in ((w,), (h, w)):
                raise ValueError(f"the file's mask {tuple(m.shape)} fits neither (W,) nor (H, W)")
            return m, "file"
        m = cartesian_mask(
            w,
            self.acceleration,
            self.center_fraction,
            kind=self.kind,  # type: ignore[arg-type]
            seed=self.seed_for(file_name),
        ).mask
        if padding is not None:
            m = m.clone()
            m[: padding[0]] = False
            m[padding[1] :] = False
        return m, self.kind
