"""Files as napari layers: fastMRI k-space, diffrecon result files, DICOM series, NIfTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffrecon_napari._layers import LayerData, image, layer_name, spread_layers


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
            layer_name("k-space (log|k|)", p.stem),
            "gray",
            {**meta, "kind": "kspace"},
        ),
        image(mask2d, layer_name(f"mask ({tag})", p.stem), "gray", {**meta, "kind": "mask"}),
        image(
            np.stack(zf).astype(np.float32),
            layer_name(f"zero-filled ({tag})", p.stem),
            "gray",
            {**meta, "kind": "zero_filled"},
        ),
    ]


def read_result_layers(path: str | Path) -> list[LayerData]:
    """A diffrecon result file as its std (magma), its between-prior spread and interval
    width when it has them (:func:`spread_layers`) and its mean (gray) on top, each named
    ``what · file stem``."""
    from diffrecon.io.results import read_results

    path = Path(path)
    res = read_results(path)
    meta = {
        "path": str(path),
        "kind": "result",
        "attrs": res.attrs,
        "slice_indices": res.slice_indices.tolist(),
    }
    src = path.stem
    layers = [image(res.std, layer_name("std", src), "magma", {**meta, "role": "std"})]
    layers += spread_layers(res, meta, src)
    layers.append(
        image(res.reconstruction, layer_name("mean", src), "gray", {**meta, "role": "mean"})
    )
    return layers  # the mean last: on top


def read_dicom_layers(path: str | Path) -> list[LayerData]:
    """A DICOM series (a folder of ``.dcm`` files, or one file and its series) as one layer."""
    from diffrecon.io.dicom import read_dicom_series

    stack, meta = read_dicom_series(path)
    name = meta["SeriesDescription"] or Path(path).stem
    return [image(stack, name, "gray", {**meta, "kind": "dicom"})]


def is_nifti(path: str | Path) -> bool:
    """A ``.nii`` or ``.nii.gz`` file (by name; nibabel checks the header on reading)."""
    name = Path(path).name.lower()
    return Path(path).is_file() and name.endswith((".nii", ".nii.gz"))


def read_nifti_layers(path: str | Path) -> list[LayerData]:
    """A NIfTI volume (e.g. one map of ``diffrecon export-nifti``) as one layer, slices first
    as napari's slider expects (the exports store ``(W, H, slices)``, NIfTI's x, y, z) and
    scaled by the voxel size in mm; std-like maps on the std's colormap."""
    import nibabel as nib

    p = Path(path)
    img = nib.load(str(p))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ValueError(f"{p}: a {data.ndim}-D NIfTI image; this reader opens 2-D and 3-D ones")
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    zooms += [1.0] * (3 - len(zooms))
    stem = p.name[: -len(".nii.gz")] if p.name.lower().endswith(".nii.gz") else p.stem
    colormap = "magma" if "_std" in stem else "gray"  # <stem>_std, _std_between, ...
    descrip = img.header["descrip"].item().decode("latin-1").rstrip("\x00")
    meta = {"path": str(p), "kind": "nifti", "descrip": descrip}
    layer = image(np.ascontiguousarray(data.transpose(2, 1, 0)), stem, colormap, meta)
    layer[1]["scale"] = [zooms[2], zooms[1], zooms[0]]
    return [layer]
