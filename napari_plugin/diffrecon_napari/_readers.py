"""Files as napari layers: fastMRI k-space, diffrecon result files, DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffrecon_napari._layers import LayerData, image, spread_layers


def h5_kind(path: str | Path) -> str | None:
    """``"kspace"`` (a fastMRI file), ``"result"`` (a diffrecon result file) or None."""
    import h5py

    p = Path(path)
    if p.suffix.lower() not in (".h5", ".hdf5") or not p.is_file():
        return None
    try:
        with h5py.File(p, "r") as f:
            if "kspace" in f:
                return "kspace"
            return "result" if "reconstruction" in f else None
    except OSError:
        return None


def read_fastmri_layers(path: str | Path) -> list[LayerData]:
    """k-space as log-magnitude (coil RSS of ``|k|``), the sampling mask a default run uses
    (``diffrecon reconstruct``'s: the file's own sampling, or the retrospective 4x mask
    seeded by the file name) and the zero-filled RSS image of that mask, one plane per
    slice: what the reconstruction starts from, not the fully sampled image."""
    import torch

    from diffrecon.jobs import ReconstructionJob
    from diffrecon.mri.transforms import center_crop, rss
    from diffrecon.operators.fft import ifft2c

    p = Path(path)
    job = ReconstructionJob(p)
    fm = job.input
    logk, zf = [], []
    mask = job.sampling_mask.numpy()
    for i in range(fm.num_slices):
        k = job.read_kspace(i)
        logk.append(np.log(np.sqrt((np.abs(k) ** 2).sum(0)) + 1e-12 * float(np.abs(k).max())))
        img = rss(ifft2c(torch.from_numpy(np.where(mask, k, 0))), dim=0)
        size = (min(fm.recon_size[0], img.shape[-2]), min(fm.recon_size[1], img.shape[-1]))
        zf.append(center_crop(img, size).numpy())
    h, w = logk[0].shape
    mask2d = np.broadcast_to(mask, (h, w)).astype(np.float32)
    meta = {
        "path": str(p),
        "num_slices": fm.num_slices,
        "recon_size": list(fm.recon_size),
        "has_mask": fm.mask is not None,
        "has_target": fm.target(0) is not None,
        "mask_used": job.mask_used,
        "acceleration": float(mask2d.size / max(mask2d.sum(), 1)),
    }
    tag = f"{job.mask_used}, {meta['acceleration']:.1f}x"
    return [
        image(
            np.stack(logk).astype(np.float32),
            f"{p.stem} k-space (log|k|)",
            "gray",
            {**meta, "kind": "kspace"},
        ),
        image(mask2d, f"{p.stem} mask ({tag})", "gray", {**meta, "kind": "mask"}),
        image(
            np.stack(zf).astype(np.float32),
            f"{p.stem} zero-filled ({tag})",
            "gray",
            {**meta, "kind": "zero_filled"},
        ),
    ]


def read_result_layers(path: str | Path) -> list[LayerData]:
    """A diffrecon result file as its mean (gray) and std (magma) layers, its between-prior
    spread and interval width when it has them (:func:`spread_layers`)."""
    from diffrecon.io.results import read_results

    path = Path(path)
    res = read_results(path)
    meta = {
        "path": str(path),
        "kind": "result",
        "attrs": res.attrs,
        "slice_indices": res.slice_indices.tolist(),
    }
    layers = [
        image(res.reconstruction, f"{path.stem} mean", "gray", {**meta, "role": "mean"}),
        image(res.std, f"{path.stem} std", "magma", {**meta, "role": "std"}),
    ]
    layers += spread_layers(res, meta, prefix=f"{path.stem} ")
    return layers


def read_dicom_layers(path: str | Path) -> list[LayerData]:
    """A DICOM series (a folder of ``.dcm`` files, or one file and its series) as one layer."""
    from diffrecon.io.dicom import read_dicom_series

    stack, meta = read_dicom_series(path)
    name = meta["SeriesDescription"] or Path(path).stem
    return [image(stack, name, "gray", {**meta, "kind": "dicom"})]
