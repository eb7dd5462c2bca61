"""Training slices from users' own data: coil-combined complex slices of fastMRI folders.

``build_fastmri_slices`` turns every fully sampled multicoil file in a folder into complex
SENSE-combined slices (ESPIRiT maps from the centre of k-space), cropped to the recon size
and scaled so the magnitude's 99.5th percentile is 1 (the default prior's convention), and
stores them as ``slices`` ``(N, 2, H, W)`` float32 in one h5. ``SlicePatchSampler`` draws
random training patches from such a file for ``diffrecon train-prior --data FILE.h5``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from diffrecon.data.patches import PatchSource


def build_fastmri_slices(
    folder: str | Path, out: str | Path, calib_width: int = 24, skip_edge_slices: int = 0
) -> int:
    """Write the coil-combined slices of ``folder/*.h5`` into ``out``; returns the count."""
    from diffrecon.io.fastmri import open_fastmri
    from diffrecon.mri.coils import espirit_maps
    from diffrecon.mri.transforms import center_crop, read_slice
    from diffrecon.operators.fft import ifft2c

    files = sorted(Path(folder).glob("*.h5"))
    if not files:
        raise ValueError(f"no .h5 files in {folder}")
    slices = []
    for path in files:
        f = open_fastmri(path)
        if not f.multicoil:
            continue
        rh, rw = f.recon_size
        for i in range(skip_edge_slices, f.num_slices - skip_edge_slices):
            k = read_slice(f, i)
            maps = espirit_maps(k, calib_width=calib_width)
            img = (maps.conj() * ifft2c(torch.from_numpy(k))).sum(0)
            img = center_crop(img, (min(rh, img.shape[0]), min(rw, img.shape[1])))
            scale = float(np.percentile(img.abs().numpy(), 99.5)) or 1.0
            img = img / scale
            slices.append(np.stack([img.real.numpy(), img.imag.numpy()]).astype(np.float32))
    if not slices:
        raise ValueError(f"no multicoil slices found in {folder}")
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:  # pad to a common size so they stack
        hh = max(s.shape[1] for s in slices)
        ww = max(s.shape[2] for s in slices)
        slices = [np.pad(s, ((0, 0), (0, hh - s.shape[1]), (0, ww - s.shape[2]))) for s in slices]
    with h5py.File(out, "w") as f:
        f.create_dataset("slices", data=np.stack(slices), chunks=(1, *slices[0].shape))
        f.attrs["source"] = str(folder)
    return len(slices)


class SlicePatchSampler(PatchSource):
    """Random patches ``(2, size, size)`` from a slices h5 with flips, rotations and a random
    global phase; resumable through ``get_state``/``set_state``."""

    def __init__(self, path: str | Path, size: int = 64, seed: int = 0) -> None:
        with h5py.File(path, "r") as f:
            if "slices" not in f:
                raise ValueError(
                    f"{path}: no 'slices' dataset (build it with datasets/fastmri_slices.py)"
                )
            self.data = f["slices"][()]
        if self.data.shape[-1] < size or self.data.shape[-2] < size:
            raise ValueError(f"slices {self.data.shape[-2:]} are smaller than the patch {size}")
        self.size = size
        super().__init__(seed)

    def patch(self) -> np.ndarray:
        s = self.data[self.rng.integers(len(self.data))]
        top = int(self.rng.integers(0, s.shape[1] - self.size + 1))
        left = int(self.rng.integers(0, s.shape[2] - self.size + 1))
        z = (
            s[0, top : top + self.size, left : left + self.size]
            + 1j * s[1, top : top + self.size, left : left + self.size]
        )
        z = z * np.exp(1j * self.rng.uniform(0, 2 * np.pi))
        return self.channels(self.flip_rotate(z))
