"""diffrecon: image reconstruction by diffusion posterior sampling, with uncertainty.

``reconstruct`` and ``Posterior`` are loaded on first use, so that importing a light module
(``diffrecon.io.dicom``, ``diffrecon.mri.masks``...) does not load the sampler stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diffrecon._version import __version__

if TYPE_CHECKING:
    from diffrecon.api import Posterior, reconstruct

__all__ = ["Posterior", "__version__", "reconstruct"]


def __getattr__(name: str) -> Any:
    if name in ("Posterior", "reconstruct"):
        from diffrecon import api

        return getattr(api, name)
    raise AttributeError(f"module 'diffrecon' has no attribute {name!r}")
