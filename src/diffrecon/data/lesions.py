"""Pathology the prior never saw: lesions inserted into an image before k-space is simulated.

A trained prior knows healthy anatomy; what a reader most needs from an uncertainty map is
where the reconstruction of something it has not seen may be wrong. :func:`insert_lesions`
puts bright and dark blobs and rims (3 to 20 pixels across, contrast 5% to 60% of the local
tissue) inside the tissue of an image, reproducibly from a seed, and returns where it put
them, so a bench can ask of each lesion: is it kept in the posterior mean, does the interval
cover it, does the uncertainty rise inside it (see ``bench/uncertainty_maps.py``).

The lesion multiplies the image by ``1 + s c p(r)`` (``s`` +1 bright, -1 dark; ``c`` the
contrast; ``p`` a disc or a ring profile with a one-pixel soft edge), so its contrast is
relative to the tissue it sits in and a complex image keeps its phase. The input is never
modified (the MNI slices are cached and shared), and pixels outside the lesions are left
exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("bright-blob", "dark-blob", "bright-rim", "dark-rim")


@dataclass(frozen=True)
class Lesion:
    """One inserted lesion: centre (row, column), diameter in pixels, kind (one of
    :data:`KINDS`), contrast (fraction of the local tissue, signed by its kind) and the
    tissue level around it (the median magnitude of its footprint before insertion)."""

    center: tuple[float, float]
    diameter: float
    kind: str
    contrast: float
    tissue: float


@dataclass
class LesionImage:
    """An image with lesions: ``image`` (the input's shape and dtype), ``labels`` (H, W)
    int32 (0: untouched, ``k``: lesion ``k - 1``'s footprint) and the lesions."""

    image: np.ndarray
    labels: np.ndarray
    lesions: list[Lesion]


def _profile(dist: np.ndarray, radius: float, rim: bool) -> np.ndarray:
    """A disc (or a ring of width ``max(1, radius / 3)``) with a one-pixel linear edge."""
    disc = np.clip(radius + 0.5 - dist, 0.0, 1.0)
    if not rim:
        return disc
    inner = max(radius - max(1.0, radius / 3.0), 0.0)
    return disc * np.clip(dist - inner + 0.5, 0.0, 1.0)


def insert_lesions(
    image: np.ndarray,
    count: int,
    seed: int,
    *,
    diameters: tuple[float, float] = (3.0, 20.0),
    contrasts: tuple[float, float] = (0.05, 0.6),
    kinds: tuple[str, ...] = KINDS,
    tissue_fraction: float = 0.2,
    keep_out: np.ndarray | None = None,
    max_tries: int = 2000,
) -> LesionImage:
    """``count`` non-overlapping lesions inside the tissue of ``image`` ``(H, W)`` (real or
    complex; tissue: magnitude above ``tissue_fraction`` of its 99th percentile, every
    pixel of the footprint).

    Diameters and contrasts are drawn uniformly from their ranges, kinds uniformly from
    ``kinds``; ``keep_out`` (H, W) bool marks pixels no lesion may touch. The same seed gives
    the same lesions. Raises ``ValueError`` when the tissue has no room for them.
    """
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"insert_lesions needs one (H, W) image, got shape {img.shape}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be among {', '.join(KINDS)}, got {list(kinds)}")
    lo, hi = diameters
    if not 1.0 <= lo <= hi:
        raise ValueError(f"diameters must satisfy 1 <= low <= high, got {diameters}")
    if not 0.0 < contrasts[0] <= contrasts[1]:
        raise ValueError(f"contrasts must satisfy 0 < low <= high, got {contrasts}")
    mag = np.abs(img).astype(np.float64)
    tissue = mag > tissue_fraction * np.percentile(mag, 99)
    if keep_out is not None:
        keep = np.asarray(keep_out, dtype=bool)
        if keep.shape != img.shape:
            raise ValueError(f"keep_out {keep.shape} does not match the image {img.shape}")
        tissue &= ~keep
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(img.shape, dtype=np.float64)
    candidates = np.argwhere(tissue)
    factor = np.ones(img.shape, dtype=np.float64)
    labels = np.zeros(img.shape, dtype=np.int32)
    lesions: list[Lesion] = []
    tries = 0
    while len(lesions) < count:
        tries += 1
        if tries > max_tries or candidates.size == 0:
            raise ValueError(
                f"no room for {count} lesions of {lo:g}-{hi:g} pixels in this image's tissue "
                f"(placed {len(lesions)})"
            )
        diameter = float(rng.uniform(lo, hi))
        r0, c0 = candidates[rng.integers(len(candidates))].astype(np.float64)
        dist = np.hypot(rows - r0, cols - c0)
        # the footprint, one pixel of margin round it, must lie in free tissue
        foot = dist <= diameter / 2 + 1.0
        if not tissue[foot].all() or labels[foot].any():
            continue
        kind = KINDS[KINDS.index(kinds[int(rng.integers(len(kinds)))])]
        sign = 1.0 if kind.startswith("bright") else -1.0
        contrast = sign * float(rng.uniform(*contrasts))
        prof = _profile(dist, diameter / 2, kind.endswith("rim"))
        factor *= 1.0 + contrast * prof
        labels[foot & (prof > 0)] = len(lesions) + 1
        level = float(np.median(mag[foot]))
        lesions.append(Lesion((float(r0), float(c0)), diameter, kind, contrast, level))
    out = (img * factor).astype(img.dtype) if lesions else img.copy()
    return LesionImage(out, labels, lesions)
