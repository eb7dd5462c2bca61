"""Writing HDF5 files safely: a unique temporary name in the output folder, renamed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffrecon.io.atomic import OutputExistsError, atomic_file

__all__ = ["OutputExistsError", "refuse_external_data", "write_atomic_h5"]


def write_atomic_h5(
    path: Path,
    datasets: dict[str, np.ndarray],
    attrs: dict[str, Any],
    compress: tuple[str, ...] = ("draws",),
    overwrite: bool = False,
) -> Path:
    """Write an h5 file through a unique temporary name renamed at the end (see
    :mod:`diffrecon.io.atomic`): an interrupted write leaves no output, and an existing file
    is kept unless ``overwrite``. Datasets named in ``compress`` are gzip-compressed in
    per-image chunks."""
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        for name, arr in datasets.items():
            if name in compress:
                chunks = (1,) * (arr.ndim - 2) + tuple(arr.shape[-2:])
                f.create_dataset(
                    name, data=arr, chunks=chunks, compression="gzip", compression_opts=4
                )
            else:
                f.create_dataset(name, data=arr)
        for k, v in attrs.items():
            f.attrs[k] = v
    return path


def refuse_external_data(f: h5py.File, label: str) -> None:
    """Refuse an HDF5 file that reads data from elsewhere: external links, virtual datasets
    and external raw storage can point at any file on the machine (or a FIFO that blocks
    forever), so a reader of untrusted files must not follow them. Also refuses groups
    where datasets are expected to be read (every top-level member is checked)."""
    for name in f:
        link = f.get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            raise ValueError(
                f"{label}: '{name}' is an external link to {link.filename}; "
                "refusing to read data from outside the file"
            )
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                raise ValueError(
                    f"{label}: '{name}' is a virtual dataset; refusing to read "
                    "data from outside the file"
                )
            if obj.external:
                raise ValueError(
                    f"{label}: '{name}' keeps its data in external files; "
                    "refusing to read data from outside the file"
                )


def decoded_attrs(obj: h5py.File | h5py.Dataset | h5py.Group) -> dict[str, Any]:
    """An HDF5 object's attributes with byte strings decoded (h5py returns ``bytes`` for
    fixed-length strings, ``str`` for variable-length ones)."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in obj.attrs.items()}
