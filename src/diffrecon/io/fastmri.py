"""fastMRI HDF5 files: validation, lazy reading, header geometry, slice selection.

Layout (as the dataset defines it): ``kspace`` complex64 ``(slices, coils, H, W)`` (multicoil)
or ``(slices, H, W)`` (single-coil); optional ``mask`` ``(W,)`` (test files; diffrecon also
accepts a 2-D ``(H, W)`` mask), ``reconstruction_rss`` / ``reconstruction_esc`` targets,
attributes ``acquisition``, ``max``, ``norm``, ``patient_id``, ``acceleration``,
``num_low_frequency`` and the ``ismrmrd_header`` XML. ``H`` is the (2x oversampled) readout,
``W`` the phase-encode axis that column masks act on.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from diffrecon.io.h5 import decoded_attrs, refuse_external_data

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"


class FastMRIError(ValueError):
    """A file that is not a usable fastMRI file; the message names the problem."""


@dataclass(frozen=True)
class Header:
    """Geometry from the ISMRMRD header (fastMRI's ``_retrieve_metadata``)."""

    encoded_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    encoding_center: int
    encoding_max: int  # one past the last acquired phase-encode line
    recon_fov_mm: tuple[float, float, float] | None = None  # reconSpace fieldOfView_mm

    @property
    def pixel_spacing_mm(self) -> tuple[float, float] | None:
        """``(row, column)`` spacing of the recon image: field of view over matrix, readout
        (x, the image rows) first, phase encode (y) second."""
        if self.recon_fov_mm is None or min(self.recon_size[:2]) < 1:
            return None
        return (
            self.recon_fov_mm[0] / self.recon_size[0],
            self.recon_fov_mm[1] / self.recon_size[1],
        )

    @property
    def slice_thickness_mm(self) -> float | None:
        """The recon field of view along z (one slice of a 2-D acquisition)."""
        return None if self.recon_fov_mm is None else self.recon_fov_mm[2]

    @property
    def padding(self) -> tuple[int, int]:
        """``(left, right)``: phase-encode columns ``[left, right)`` were acquired; the rest
        are zero padding (fastMRI's ``padding_left`` / ``padding_right``)."""
        left = self.encoded_size[1] // 2 - self.encoding_center
        return left, left + self.encoding_max


def parse_header(xml: bytes | str) -> Header:
    """Parse the fields fastMRI uses from an ``ismrmrd_header`` XML document."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise FastMRIError(f"ismrmrd_header is not valid XML: {err}") from err

    ns = {"ismrmrd": ISMRMRD_NS}

    def find(*path: str) -> int:
        q = "/".join(f"ismrmrd:{p}" for p in path)
        node = root.find(q, ns)
        if node is None or node.text is None:
            raise FastMRIError(f"ismrmrd_header lacks {'/'.join(path)}")
        return int(node.text)

    enc = tuple(find("encoding", "encodedSpace", "matrixSize", a) for a in "xyz")
    rec = tuple(find("encoding", "reconSpace", "matrixSize", a) for a in "xyz")
    lims = ("encoding", "encodingLimits", "kspace_encoding_step_1")
    fov: tuple[float, float, float] | None = None
    nodes = [
        root.find(f"ismrmrd:encoding/ismrmrd:reconSpace/ismrmrd:fieldOfView_mm/ismrmrd:{a}", ns)
        for a in "xyz"
    ]
    try:  # optional: geometry for DICOM and NIfTI, never needed to reconstruct
        values = tuple(float(n.text) for n in nodes if n is not None and n.text is not None)
        if len(values) == 3 and all(0 < v < 1e4 for v in values):
            fov = values  # type: ignore[assignment]
    except ValueError:
        fov = None
    center, maximum = find(*lims, "center"), find(*lims, "maximum") + 1
    return Header(enc, rec, center, maximum, fov)  # type: ignore[arg-type]


def header_xml(
    encoded: tuple[int, int, int], recon: tuple[int, int, int], center: int, maximum: int
) -> bytes:
    """A minimal valid ISMRMRD header with the fields fastMRI reads (for simulated files)."""

    def size(tag: str, xyz: tuple[int, int, int]) -> str:
        return (
            f"<{tag}><matrixSize><x>{xyz[0]}</x><y>{xyz[1]}</y><z>{xyz[2]}</z></matrixSize>"
            f"<fieldOfView_mm><x>{xyz[0]}</x><y>{xyz[1]}</y><z>1</z></fieldOfView_mm></{tag}>"
        )

    return (
        f'<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader xmlns="{ISMRMRD_NS}">'
        "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
        "</experimentalConditions><encoding><trajectory>cartesian</trajectory>"
        + size("encodedSpace", encoded)
        + size("reconSpace", recon)
        + "<encodingLimits><kspace_encoding_step_1>"
        f"<minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center>"
        "</kspace_encoding_step_1></encodingLimits></encoding></ismrmrdHeader>"
    ).encode()


@dataclass
class FastMRIFile:
    """An open fastMRI file: metadata read eagerly, k-space slices lazily."""

    path: Path
    multicoil: bool
    shape: tuple[int, ...]
    attrs: dict[str, Any]
    header: Header | None
    mask: np.ndarray | None
    targets: list[str] = field(default_factory=list)

    @property
    def num_slices(self) -> int:
        return int(self.shape[0])

    @property
    def readout_crop(self) -> int | None:
        """Recon readout size when the header says the readout is oversampled, else None."""
        h = self.header
        if (
            h is not None
            and h.encoded_size[0] == self.shape[-2]
            and h.recon_size[0] < self.shape[-2]
        ):
            return h.recon_size[0]
        return None

    def kspace(self, index: int) -> np.ndarray:
        """One k-space slice ``(coils, H, W)`` complex64 as stored (single-coil files get
        ``coils=1``); :func:`diffrecon.mri.transforms.read_slice` crops an oversampled
        readout to :attr:`readout_crop`."""
        with h5py.File(self.path, "r") as f:
            k = np.asarray(f["kspace"][index], dtype=np.complex64)
        if not self.multicoil:
            k = k[None]
        if not np.isfinite(k).all():
            raise FastMRIError(f"{self.path.name}: kspace slice {index} contains NaN or inf")
        return k

    def target(self, index: int) -> np.ndarray | None:
        """The reference image of a slice (``reconstruction_rss`` or ``_esc``) if present."""
        if not self.targets:
            return None
        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.targets[0]][index], dtype=np.float32)

    @property
    def recon_size(self) -> tuple[int, int]:
        """Output image size: the header's recon matrix (x, y), fastMRI's 320 x 320 default."""
        if self.header is not None:
            return self.header.recon_size[0], self.header.recon_size[1]
        return (320, 320)


# a generous limit for one slice (coils x H x W): 64 coils of 1024 x 1024
MAX_PIXELS = 64 * 1024 * 1024


def open_fastmri(path: str | Path, max_pixels: int = MAX_PIXELS) -> FastMRIFile:
    """Validate and open a fastMRI file; raises :class:`FastMRIError` with one clear line.

    Refused before any k-space is read: external links, virtual or externally stored
    datasets (they read other files), groups where datasets belong, empty axes, slices
    of more than ``max_pixels`` values (``coils x H x W``), and a mask, reference image or
    header declared larger than the k-space they go with (:func:`_check_sizes`)."""
    p = Path(path)
    if not p.exists():
        raise FastMRIError(f"{p}: no such file")
    if not h5py.is_hdf5(p):
        raise FastMRIError(f"{p}: not an HDF5 file")
    with h5py.File(p, "r") as f:
        if "kspace" not in f:
            raise FastMRIError(f"{p}: no 'kspace' dataset (found: {', '.join(f.keys()) or 'none'})")
        try:
            refuse_external_data(f, str(p))
        except ValueError as err:
            raise FastMRIError(str(err)) from err
        ds = f["kspace"]
        if not isinstance(ds, h5py.Dataset):
            raise FastMRIError(f"{p}: 'kspace' is a group, not a dataset")
        for name in ("ismrmrd_header", "mask", "reconstruction_rss", "reconstruction_esc"):
            if name in f and not isinstance(f[name], h5py.Dataset):
                raise FastMRIError(f"{p}: '{name}' is a group, not a dataset")
        if ds.ndim not in (3, 4):
            raise FastMRIError(
                f"{p}: kspace must be (slices, coils, H, W) or (slices, H, W), got shape {ds.shape}"
            )
        if not np.issubdtype(ds.dtype, np.complexfloating):
            raise FastMRIError(f"{p}: kspace must be complex, got dtype {ds.dtype}")
        if 0 in ds.shape:
            raise FastMRIError(f"{p}: kspace has an empty axis, shape {ds.shape}")
        per_slice = int(np.prod(ds.shape[1:]))
        if per_slice > max_pixels:
            raise FastMRIError(
                f"{p}: a kspace slice {ds.shape[1:]} holds {per_slice} values, above the limit "
                f"of {max_pixels} (--max-pixels); refusing to read it"
            )
        _check_sizes(f, p, ds.shape, max_pixels)
        attrs = decoded_attrs(f)
        header = parse_header(f["ismrmrd_header"][()]) if "ismrmrd_header" in f else None
        mask = np.asarray(f["mask"][()]) > 0 if "mask" in f else None
        targets = [t for t in ("reconstruction_rss", "reconstruction_esc") if t in f]
        return FastMRIFile(p, ds.ndim == 4, tuple(ds.shape), attrs, header, mask, targets)


# the ISMRMRD header is XML of a few kB; anything near this is not one
MAX_HEADER_BYTES = 16 * 1024 * 1024


def _check_sizes(f: h5py.File, p: Path, kshape: tuple[int, ...], max_pixels: int) -> None:
    """Refuse, from the declared shapes alone, datasets that would be read whole and are
    larger than the k-space they go with: a ``mask`` bigger than one ``(H, W)`` plane, a
    reference image with another slice count or a slice above ``max_pixels``, a header
    above :data:`MAX_HEADER_BYTES` (a file can declare 8 GiB and store nothing)."""
    plane = int(np.prod(kshape[-2:]))
    if "mask" in f and f["mask"].size > plane:
        raise FastMRIError(
            f"{p}: 'mask' declares {f['mask'].shape} ({f['mask'].size} values), more than one "
            f"k-space plane {kshape[-2:]}; refusing to read it"
        )
    for name in ("reconstruction_rss", "reconstruction_esc"):
        if name not in f:
            continue
        t = f[name]
        if t.ndim != 3 or t.shape[0] != kshape[0] or 0 in t.shape:
            raise FastMRIError(
                f"{p}: '{name}' must be (slices, H, W) with the k-space's {kshape[0]} slices, "
                f"got {t.shape}"
            )
        if int(np.prod(t.shape[1:])) > max_pixels:
            raise FastMRIError(
                f"{p}: a '{name}' slice {t.shape[1:]} is above the limit of {max_pixels} "
                "values (--max-pixels); refusing to read it"
            )
    if "ismrmrd_header" in f and f["ismrmrd_header"].nbytes > MAX_HEADER_BYTES:
        raise FastMRIError(f"{p}: 'ismrmrd_header' declares {f['ismrmrd_header'].nbytes} bytes")


def parse_slices(spec: str | None, n: int) -> list[int]:
    """``"10:14"``, ``"3"``, ``"0,5,7"`` or ``None`` (all) -> slice indices, checked."""
    if spec is None or spec == "":
        return list(range(n))
    try:
        if ":" in spec:
            parts = [int(p) if p else None for p in spec.split(":")]
            idx = list(range(n))[slice(*parts)]
        else:
            idx = [int(s) for s in spec.split(",")]
    except ValueError as err:
        raise FastMRIError(f"bad slice selection {spec!r}: use e.g. 10:14 or 3,5") from err
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx:
        raise FastMRIError(f"slice selection {spec!r} is outside the file's {n} slices")
    return idx


def describe(path: str | Path) -> list[str]:
    """``diffrecon info``: the datasets, attributes and fastMRI reading of an HDF5 file (a
    k-space or a result file), one line each; external links are listed, never followed.
    A file that is not HDF5, or whose ``kspace`` is unusable, raises :class:`FastMRIError`."""
    p = Path(path)
    if not p.exists():
        raise FastMRIError(f"{p}: no such file")
    if not h5py.is_hdf5(p):
        raise FastMRIError(f"{p}: not an HDF5 file")
    lines = [f"{p}"]
    with h5py.File(p, "r") as f:
        for name in f:
            link = f.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                lines.append(f"  {name:<22} external link to {link.filename}:{link.path}")
                continue
            obj = f[name]
            if isinstance(obj, h5py.Dataset):
                lines.append(f"  {name:<22} {str(obj.shape):<22} {obj.dtype}")
            else:
                lines.append(f"  {name:<22} group")
        lines += [f"  @{k} = {v!r}"[:200] for k, v in f.attrs.items()]
        has_kspace = "kspace" in f
    try:
        fm = open_fastmri(p)
    except FastMRIError:
        if has_kspace:  # meant as k-space, but unusable: say why
            raise
        return [*lines, "  not a fastMRI k-space file (no 'kspace' dataset)"]
    kind = "multicoil" if fm.multicoil else "single-coil"
    lines.append(
        f"  fastMRI {kind}: {fm.num_slices} slices, k-space {fm.shape[-2:]}, "
        f"output size {fm.recon_size}"
    )
    if fm.header is not None:
        h = fm.header
        lines.append(
            f"  header: encoded {h.encoded_size}, recon {h.recon_size}, "
            f"acquired columns [{h.padding[0]}, {h.padding[1]})"
        )
    return lines
