"""The real 8-coil brain acquisition of the SigPy MRI tutorial as a fastMRI-format file.

Source: ``shared/data/real/sigpy_brain_8coil_cartesian_ksp.npy`` (BSD-3-Clause, mikgroup):
complex64 ``(8, 230, 180)``, already Poisson-disc undersampled (~12% kept, 24x24 calibration),
unsampled points exact zeros. There is no fully sampled ground truth, so the file has no
``reconstruction_rss``; the 2-D sampling mask is stored as ``mask`` ``(H, W)``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from diffrecon.io.fastmri import header_xml


def convert_sigpy_brain(src: str | Path, dst: str | Path) -> Path:
    """Write ``dst`` (fastMRI layout, one slice) from the tutorial's ``.npy`` k-space."""
    k = np.load(src)
    if k.ndim != 3 or not np.iscomplexobj(k):
        raise ValueError(f"{src}: expected complex (coils, H, W) k-space, got {k.dtype} {k.shape}")
    mask = np.abs(k).sum(0) > 0
    coils, h, w = k.shape
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(dst, "w") as f:
        f.create_dataset("kspace", data=k[None].astype(np.complex64))
        f.create_dataset("mask", data=mask)
        f.create_dataset("ismrmrd_header", data=header_xml((h, w, 1), (h, w, 1), w // 2, w - 1))
        f.attrs["acquisition"] = "SIGPY_TUTORIAL_BRAIN_8CH_POISSON"
        f.attrs["patient_id"] = "sigpy-tutorial-brain"
        f.attrs["acceleration"] = float(mask.size / mask.sum())
        f.attrs["source"] = "sigpy-mri-tutorial (BSD-3-Clause), already undersampled"
    return dst
