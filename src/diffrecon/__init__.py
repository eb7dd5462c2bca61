"""diffrecon: image reconstruction by diffusion posterior sampling, with uncertainty.

``reconstruct`` (any operator), ``Posterior`` and ``reconstruct_kspace`` (multicoil
k-space arrays in, a :class:`~diffrecon.results.SliceResult` out) are loaded on first use,
so that importing a light module (``diffrecon.io.dicom``, ``diffrecon.mri.masks``...) does
not load the sampler stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffrecon._version import __version__

if TYPE_CHECKING:
    from diffrecon.api import Posterior, reconstruct
    from diffrecon.jobs import reconstruct_kspace

__all__ = ["Posterior", "__version__", "reconstruct", "reconstruct_kspace"]


def __getattr__(name: str) -> Any:
    if name in ("Posterior", "reconstruct"):
        from diffrecon import api

        return getattr(api, name)
    if name == "reconstruct_kspace":
        from diffrecon.jobs import reconstruct_kspace

        return reconstruct_kspace
    raise AttributeError(f"module 'diffrecon' has no attribute {name!r}")
