"""In-memory inputs: k-space arrays laid out as a fastMRI file, and user coil maps.

Files are one way to get arrays (SigPy's ``mri/app.py`` builds its apps from arrays alike):
an :class:`ArrayInput` reads like a :class:`~diffrecon.io.fastmri.FastMRIFile`, so the job
that reconstructs a file reconstructs an array the same way. Nothing here does MRI signal
processing (the readout crop, masks and coil maps are the job's and ``diffrecon.mri``'s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


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

    def kspace(self, index: int) -> np.ndarray:
        """Slice ``index`` ``(coils, H, W)`` complex64 as held (the readout uncropped)."""
        k = np.asarray(self.data[index], dtype=np.complex64)
        if not np.isfinite(k).all():
            raise ValueError(f"{self.name}: kspace slice {index} contains NaN or inf")
        return k

    def target(self, index: int) -> np.ndarray | None:
        if self.target_images is None:
            return None
        return np.asarray(self.target_images[index], dtype=np.float32)


def as_kspace(kspace: Any) -> np.ndarray:
    """``(coils, H, W)`` complex64 from numpy or torch; a real array with a last axis of 2
    (fastMRI's torch layout, ``(coils, H, W, 2)``) is read as real and imaginary parts."""
    if hasattr(kspace, "detach"):  # a torch tensor, without importing torch here
        kspace = kspace.detach().cpu().numpy()
    k = np.asarray(kspace)
    if not np.iscomplexobj(k):
        if k.ndim == 4 and k.shape[-1] == 2:
            k = k[..., 0] + 1j * k[..., 1]
        else:
            raise ValueError(
                f"kspace must be complex (coils, H, W), or real (coils, H, W, 2), got "
                f"{k.dtype} {k.shape}"
            )
    if k.ndim == 2:
        raise ValueError(
            f"kspace must be (coils, H, W), got {k.shape}: add a coil axis for single-coil data"
        )
    if k.ndim != 3 or 0 in k.shape:
        raise ValueError(f"kspace must be (coils, H, W) with no empty axis, got {k.shape}")
    return np.asarray(k, dtype=np.complex64)


def _check_maps(
    dtype: np.dtype, shape: tuple[int, ...], want: tuple[int, int, int], num_slices: int
) -> None:
    """Coil maps' declared type and shape, checked before they are read (a file can
    declare gigabytes)."""
    complex_ = np.issubdtype(dtype, np.complexfloating)
    if not (complex_ and len(shape) in (3, 4) and tuple(shape[-3:]) == tuple(want)):
        raise ValueError(
            f"coil maps must be complex (coils, H, W) = {tuple(want)} or (slices, {want[0]}, "
            f"{want[1]}, {want[2]}), got {dtype} {tuple(shape)}"
        )
    if len(shape) == 4 and shape[0] != num_slices:
        raise ValueError(f"coil maps hold {shape[0]} slices, the input {num_slices}")


def read_maps(source: Any, want: tuple[int, int, int], num_slices: int) -> np.ndarray:
    """User coil maps as an array, checked: ``source`` an array (numpy or torch) or a
    ``.npy`` / ``.h5`` (dataset ``maps``) file holding ``want`` = ``(coils, H, W)`` for
    every slice or ``(slices, coils, H, W)`` for each of the input's ``num_slices``."""
    m = source
    if isinstance(m, str | Path):
        p = Path(m)
        if not p.is_file():  # a FIFO would block the read forever
            raise ValueError(f"--maps {p}: no such file (or not a regular file)")
        if p.suffix == ".npy":  # memory-mapped: the shape is checked before a read
            m = np.load(p, allow_pickle=False, mmap_mode="r")
            _check_maps(m.dtype, m.shape, want, num_slices)
            m = np.asarray(m)
        elif p.suffix in (".h5", ".hdf5"):
            import h5py

            from diffrecon.io.h5 import refuse_external_data

            with h5py.File(p, "r") as f:
                refuse_external_data(f, f"--maps {p}")
                if "maps" not in f or not isinstance(f["maps"], h5py.Dataset):
                    raise ValueError(f"{p}: no 'maps' dataset")
                _check_maps(f["maps"].dtype, f["maps"].shape, want, num_slices)
                m = f["maps"][()]
        else:
            raise ValueError(f"--maps must be a .npy or .h5 file, got {p.name}")
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    m = np.asarray(m)
    _check_maps(m.dtype, m.shape, want, num_slices)
    if not np.isfinite(m).all():
        raise ValueError("the coil maps contain NaN or inf")
    return m
