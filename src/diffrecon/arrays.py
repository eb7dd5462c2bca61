"""Numpy in, numpy out: one multicoil k-space slice -> posterior summaries, SigPy style.

``diffrecon.mri.reconstruct(kspace, mask, maps)`` is this module's :func:`reconstruct`: it
takes arrays as a SigPy or BART pipeline holds them and returns arrays it can use again,
so no file, job or CLI is needed. It is :func:`~diffrecon.mri.preprocess.prepare_slice`
followed by :func:`~diffrecon.pipeline.reconstruct_prepared`, the path every file takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrecon.mri.masks import as_mask, measured_mask
from diffrecon.mri.preprocess import prepare_slice
from diffrecon.pipeline import reconstruct_prepared
from diffrecon.samplers.registry import MRI_DEFAULT


@dataclass
class MRIReconstruction:
    """Posterior summaries of one slice, in the k-space's own intensity units.

    ``mean``: the complex posterior mean ``(H, W)``; ``magnitude``: the posterior mean of
    ``|x|`` (fastMRI's ``reconstruction``; not ``|mean|``); ``std``: the posterior std of
    ``|x|``; ``draws``: ``(draws, H, W)`` complex, when asked for; ``lower``/``upper``: the
    central interval of ``|x|`` at ``interval_level`` from the draws' quantiles (uncalibrated);
    ``maps`` and ``mask``: what the operator used; ``zero_filled``: ``A^H y``, complex;
    ``noise_std``: the k-space noise estimate per real component, ``data_residual``: about 1
    when the mean fits the data to the noise level.
    """

    mean: np.ndarray
    magnitude: np.ndarray
    std: np.ndarray
    maps: np.ndarray
    mask: np.ndarray
    zero_filled: np.ndarray
    noise_std: float
    data_residual: float | None
    settings: dict[str, Any]
    seconds: float
    draws: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    interval_level: float | None = None


def _as_kspace(kspace: Any) -> np.ndarray:
    """``(coils, H, W)`` complex64 from numpy or torch; a real array with a last axis of 2
    (fastMRI's torch layout, ``(coils, H, W, 2)``) is read as real and imaginary parts."""
    k = kspace.detach().cpu().numpy() if isinstance(kspace, torch.Tensor) else np.asarray(kspace)
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
    return np.asarray(k, dtype=np.complex64)


def reconstruct(
    kspace: Any,
    mask: Any = None,
    maps: Any = None,
    *,
    sampler: str = MRI_DEFAULT,
    draws: int = 8,
    steps: int | None = None,
    seed: int = 0,
    prior: Any = "brain-mri-default",
    device: str = "cpu",
    noise_std: float | None = None,
    keep_draws: bool = False,
    interval_level: float | None = None,
    batch_size: int | None = None,
    **overrides: Any,
) -> MRIReconstruction:
    """Posterior reconstruction of one multicoil slice given as arrays.

    ``kspace``: ``(coils, H, W)`` in fastMRI's layout and FFT convention (centred, orthonormal
    2-D FFT over the last two axes), numpy or torch, readout already cropped to the image
    you want. ``mask``: ``(W,)`` columns or ``(H, W)``, bool or 0/1 (singleton axes such as
    fastMRI's ``(1, 1, W, 1)`` are dropped); ``None``: the non-zero samples of ``kspace``
    (data that is already undersampled). ``maps``: coil sensitivities ``(coils, H, W)``
    (e.g. SigPy's or BART's ESPIRiT maps); ``None``: ESPIRiT on the fully sampled centre.
    ``prior``: a shipped name, a bundle folder, a checkpoint file
    (:func:`~diffrecon.priors.open_prior`), or any ``D(x, sigma)``. ``steps`` and
    ``overrides`` replace preset settings. ``noise_std``: k-space noise per real component
    (default: estimated from the data). Same seed, same numbers.
    """
    k = _as_kspace(kspace)
    shape = k.shape[-2:]
    m = measured_mask(k) if mask is None else as_mask(mask, shape)
    if maps is not None and isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    prepared = prepare_slice(k, m, noise_std=noise_std, maps=maps)
    if isinstance(prior, str | Path):
        from diffrecon.priors import open_prior

        prior = open_prior(prior, device=device)
    if steps is not None:
        overrides["steps"] = steps
    result = reconstruct_prepared(
        prepared,
        prior,
        sampler=sampler,
        draws=draws,
        seed=seed,
        keep_draws=keep_draws,
        device=device,
        batch_size=batch_size,
        interval_level=interval_level,
        **overrides,
    )
    prov = result.provenance
    assert prov is not None and result.mean_complex is not None
    zf = prepared.zero_filled.double() * prepared.scale
    return MRIReconstruction(
        mean=result.mean_complex,
        magnitude=result.mean,
        std=result.std,
        maps=prepared.maps.numpy(),
        mask=prepared.mask.numpy(),
        zero_filled=torch.complex(zf[0], zf[1]).numpy().astype(np.complex64),
        noise_std=prov.noise_std_estimate,
        data_residual=prov.data_residual,
        settings=prov.record.as_dict(),
        seconds=result.seconds,
        draws=result.draws_complex,
        lower=result.lower,
        upper=result.upper,
        interval_level=result.interval_level,
    )
