"""Complex 2-D MRI-like slices from the MNI ICBM152 2009a template shipped inside nilearn.

The template (T1 plus grey/white-matter probability maps, 1 mm, 197x233x189) is read with
nibabel straight from the installed ``nilearn`` wheel, without importing nilearn and
without any download. From the tissue maps we synthesise T1-, T2- and PD-like contrasts,
take slices in the three orientations, and add a smooth random phase (MRI images are
complex). An axial slab is held out: held-out slices share no voxel with training patches.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from diffrecon.data.patches import PatchSource

ORIENTATIONS = ("axial", "coronal", "sagittal")
CONTRASTS = ("t1", "t2", "pd")
# Held-out axial slab (z indices in the 189-slice template): never used for training.
HELDOUT_Z = (96, 112)


def _template_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the MNI template ships with nilearn: pip install nilearn")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@lru_cache(maxsize=1)
def load_template() -> dict[str, np.ndarray]:
    """T1 (scaled to [0, 1]), grey- and white-matter probabilities: float32 (197, 233, 189)."""
    import nibabel

    base = _template_dir()
    vols = {}
    for key in ("t1", "gm", "wm"):
        img = nibabel.load(str(base / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"))
        vol = np.asarray(img.dataobj, dtype=np.float32)
        vols[key] = vol / max(float(vol.max()), 1e-6)
    return vols


@lru_cache(maxsize=1)
def contrast_volumes() -> dict[str, np.ndarray]:
    """Magnitude volumes for each synthetic contrast, each scaled to a 99.5th percentile of 1.

    T1: the template itself. T2 / PD: tissue signal weights (CSF > GM > WM for T2; a flatter
    PD) applied to the GM/WM maps, with the remaining head tissue mapped from its T1
    intensity (dark on T1 = fluid = bright on T2).
    """
    v = load_template()
    t1, gm, wm = v["t1"], v["gm"], v["wm"]
    head = t1 > 0.05
    other = np.clip(1.0 - gm - wm, 0.0, 1.0) * head
    t2 = 0.55 * gm + 0.35 * wm + other * np.clip(1.1 - 0.9 * t1, 0.15, 1.0)
    pd = 0.80 * gm + 0.65 * wm + other * np.clip(0.95 - 0.4 * t1, 0.2, 1.0)
    out = {}
    for name, vol in (("t1", t1), ("t2", t2 * head), ("pd", pd * head)):
        out[name] = (vol / np.percentile(vol[head], 99.5)).astype(np.float32)
    return out


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, strength: float = np.pi):
    """A smooth random phase map: a random low-order polynomial plus a few Gaussian bumps."""
    h, w = shape
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    c = rng.normal(size=6) * np.array([0.3, 0.5, 0.5, 0.3, 0.3, 0.3])
    phase = c[0] + c[1] * xx + c[2] * yy + c[3] * xx * yy + c[4] * xx**2 + c[5] * yy**2
    for _ in range(rng.integers(0, 3)):
        cy, cx = rng.uniform(-1, 1, size=2)
        phase += rng.normal() * 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.3)
    return strength / np.pi * phase


def get_slice(contrast: str, orientation: str, index: int) -> np.ndarray:
    """One magnitude slice (rows = superior->inferior for coronal/sagittal)."""
    vol = contrast_volumes()[contrast]
    if orientation == "axial":
        s = vol[:, :, index].T[::-1]
    elif orientation == "coronal":
        s = vol[:, index, :].T[::-1]
    elif orientation == "sagittal":
        s = vol[index, :, :].T[::-1]
    else:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    return np.ascontiguousarray(s)


def _allowed_rows(orientation: str) -> np.ndarray | None:
    """Rows (image coordinates) of coronal/sagittal slices outside the held-out axial slab."""
    if orientation == "axial":
        return None
    nz = contrast_volumes()["t1"].shape[2]
    z_of_row = nz - 1 - np.arange(nz)  # rows are flipped z
    return ~((z_of_row >= HELDOUT_Z[0]) & (z_of_row < HELDOUT_Z[1]))


@dataclass
class PatchSampler(PatchSource):
    """Random complex training patches ``(2, size, size)`` from the non-held-out template.

    Each patch: random contrast, orientation and slice; intensity scaling and gamma; random
    flips and 90-degree rotations; a smooth random phase; magnitude at most ~1, so real and
    imaginary parts lie in [-1, 1] (``sigma_data`` about 0.5 is a fair choice).
    """

    size: int = 64
    seed: int = 0
    min_foreground: float = 0.2

    def __post_init__(self) -> None:
        PatchSource.__init__(self, self.seed)
        self.shape = contrast_volumes()["t1"].shape

    def _slice_indices(self, orientation: str) -> np.ndarray:
        n = {"axial": self.shape[2], "coronal": self.shape[1], "sagittal": self.shape[0]}[
            orientation
        ]
        idx = np.arange(20, n - 20)  # skip near-empty edge slices
        if orientation == "axial":
            idx = idx[(idx < HELDOUT_Z[0]) | (idx >= HELDOUT_Z[1])]
        return idx

    def patch(self) -> np.ndarray:
        rng = self.rng
        for _ in range(50):
            orientation = ORIENTATIONS[rng.integers(3)]
            img = get_slice(
                CONTRASTS[rng.integers(3)],
                orientation,
                int(rng.choice(self._slice_indices(orientation))),
            )
            rows = _allowed_rows(orientation)
            h, w = img.shape
            s = self.size
            top = int(rng.integers(0, h - s + 1))
            if rows is not None and not rows[top : top + s].all():
                continue  # the patch would touch the held-out slab
            left = int(rng.integers(0, w - s + 1))
            mag = img[top : top + s, left : left + s]
            if (mag > 0.05).mean() < self.min_foreground:
                continue
            break
        mag = np.clip(mag, 0, None) ** rng.uniform(0.8, 1.25) * rng.uniform(0.6, 1.0)
        mag = self.flip_rotate(mag)
        return self.channels(mag * np.exp(1j * smooth_phase(mag.shape, rng)))


def heldout_slices(
    size: int | None = None, contrasts: tuple[str, ...] = CONTRASTS, step: int = 4, seed: int = 1234
) -> torch.Tensor:
    """Complex axial slices ``(N, 2, H, W)`` from the held-out slab (fixed seeded phase),
    center-cropped to ``size`` if given. Never seen in training."""
    rng = np.random.default_rng(seed)
    out = []
    for c in contrasts:
        for z in range(HELDOUT_Z[0], HELDOUT_Z[1], step):
            mag = get_slice(c, "axial", z)
            if size is not None:
                top, left = (mag.shape[0] - size) // 2, (mag.shape[1] - size) // 2
                mag = mag[top : top + size, left : left + size]
            zc = mag * np.exp(1j * smooth_phase(mag.shape, rng))
            out.append(np.stack([zc.real, zc.imag]).astype(np.float32))
    return torch.from_numpy(np.stack(out))
