"""Domain-randomised training patches from the MNI tissue maps (the SynthSeg recipe, 2-D).

The realistic contrasts of :mod:`diffrecon.data.mni` all come from one template, so a prior
trained on them alone learns one anatomy and three intensity orderings. Here the template's
tissue maps are only the *layout*: every patch draws fresh intensities per tissue class
(grey matter, white matter, fluid-like and fat-like non-brain tissue, background, in any
order), a random affine and an elastic deformation, a multiplicative bias field, smooth
in-class texture, partial-volume blur and a random loss of resolution along one axis
(Billot et al., SynthSeg, 2023). The classes are soft (probabilities), so partial volume at
tissue edges comes from the maps themselves. The held-out axial slab of
:mod:`diffrecon.data.mni` is never sampled.

No acquisition noise is added: the diffusion loss adds the noise, and a prior that learned
noisy images as typical would paint noise into its posterior mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from diffrecon.data.mni import (
    ORIENTATIONS,
    PatchSampler,
    _allowed_rows,
    load_template,
    smooth_phase,
)


@lru_cache(maxsize=1)
def tissue_classes() -> np.ndarray:
    """Soft class maps ``(4, X, Y, Z)`` float32: grey matter, white matter, dark (fluid,
    bone) and bright (fat, scalp) non-brain tissue; background is one minus their sum."""
    v = load_template()
    t1, gm, wm = v["t1"], v["gm"], v["wm"]
    head = (t1 > 0.05).astype(np.float32)
    other = np.clip(1.0 - gm - wm, 0.0, 1.0) * head
    t1n = np.clip(t1 / max(float(np.percentile(t1[head > 0], 99.5)), 1e-6), 0.0, 1.0)
    return np.stack([gm * head, wm * head, other * (1 - t1n), other * t1n]).astype(np.float32)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, nodes: int) -> np.ndarray:
    """A smooth zero-mean random field of unit scale: cubic upsampling of a coarse grid."""
    coarse = rng.normal(size=(nodes, nodes))
    return ndimage.zoom(coarse, (shape[0] / nodes, shape[1] / nodes), order=3, mode="nearest")[
        : shape[0], : shape[1]
    ]


def _slice_of(classes: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """``(4, rows, cols)`` class maps of one slice, oriented like :func:`mni.get_slice`."""
    if orientation == "axial":
        s = classes[:, :, :, index].transpose(0, 2, 1)
    elif orientation == "coronal":
        s = classes[:, :, index, :].transpose(0, 2, 1)
    else:
        s = classes[:, index, :, :].transpose(0, 2, 1)
    return s[:, ::-1]


@dataclass
class SynthPatchSampler(PatchSampler):
    """Complex patches ``(2, size, size)``: a fraction ``synth_fraction`` domain-randomised
    (module docstring), the rest the realistic contrasts of :class:`mni.PatchSampler`.

    One RNG drives both branches, so ``get_state``/``set_state`` resume training exactly.
    """

    synth_fraction: float = 0.5
    max_displacement: float = 3.0

    def patch(self) -> np.ndarray:
        if self.rng.random() >= self.synth_fraction:
            return super().patch()
        return self.synth_patch()

    def synth_patch(self) -> np.ndarray:
        """One domain-randomised patch ``(2, size, size)``, magnitude at most 1."""
        rng, s = self.rng, self.size
        classes = tissue_classes()
        for _ in range(50):
            orientation = ORIENTATIONS[rng.integers(3)]
            maps = _slice_of(
                classes, orientation, int(rng.choice(self._slice_indices(orientation)))
            )
            coords = self._coordinates(maps.shape[1:])
            allowed = _allowed_rows(orientation)
            if allowed is not None:
                rows = np.round(coords[0]).astype(int)
                near = np.concatenate([rows - 1, rows, rows + 1])  # interpolation neighbours
                near = near[(near >= 0) & (near < allowed.size)]
                if not allowed[near].all():
                    continue  # the deformed patch would read the held-out slab
            probs = np.stack(
                [ndimage.map_coordinates(m, coords, order=1, mode="constant") for m in maps]
            ).reshape(4, s, s)
            if probs.sum(0).mean() >= self.min_foreground:
                break
        else:  # no acceptable layout in 50 tries (only with extreme settings): a real patch
            return super().patch()
        mag = self._intensities(probs)
        return self.channels(mag * np.exp(1j * smooth_phase(mag.shape, rng)))

    def _coordinates(self, shape: tuple[int, int]) -> np.ndarray:
        """Source coordinates ``(2, size*size)`` of a random affine plus elastic warp."""
        rng, s = self.rng, self.size
        theta = rng.uniform(0, 2 * np.pi)
        scale = np.exp(rng.uniform(-0.25, 0.25, size=2))
        shear = rng.uniform(-0.15, 0.15)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        affine = rot @ np.array([[scale[0], shear], [0.0, scale[1]]])
        grid = np.mgrid[0:s, 0:s].reshape(2, -1).astype(np.float64) - (s - 1) / 2
        half = 0.75 * s
        centre = np.array([rng.uniform(half, shape[0] - half), rng.uniform(half, shape[1] - half)])
        amp = rng.uniform(0, self.max_displacement)
        disp = np.stack([_smooth_field((s, s), rng, 5) for _ in range(2)]).reshape(2, -1)
        return centre[:, None] + affine @ grid + amp * disp

    def _intensities(self, probs: np.ndarray) -> np.ndarray:
        """Random class intensities, texture, bias field, blur and resolution loss."""
        rng, s = self.rng, self.size
        mu = rng.uniform(0.0, 1.0, size=4)
        mu /= max(float(mu.max()), 1e-6)
        background = rng.uniform(0.0, 0.03)
        texture = 1.0 + rng.uniform(0, 0.1) * _smooth_field((s, s), rng, 12)
        img = np.tensordot(mu, probs, axes=1) * texture
        img = img + background * np.clip(1.0 - probs.sum(0), 0.0, 1.0)
        img = img * np.exp(rng.uniform(0, 0.3) * _smooth_field((s, s), rng, 4))
        img = ndimage.gaussian_filter(img, rng.uniform(0.0, 1.0))
        if rng.random() < 0.3:  # thick slices / low resolution along one axis
            axis = int(rng.integers(2))
            factor = rng.uniform(1.0, 2.5)
            zoom = [1.0, 1.0]
            zoom[axis] = 1.0 / factor
            small = ndimage.zoom(img, zoom, order=1)
            img = ndimage.zoom(small, (s / small.shape[0], s / small.shape[1]), order=1)[:s, :s]
        img = np.clip(img, 0.0, None) ** rng.uniform(0.8, 1.25)
        return img / max(1.0, float(img.max())) * rng.uniform(0.6, 1.0)
