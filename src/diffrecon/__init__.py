"""diffrecon: image reconstruction by diffusion posterior sampling, with uncertainty."""

__version__ = "0.1.0"

from diffrecon.api import Posterior, reconstruct  # noqa: E402

__all__ = ["Posterior", "__version__", "reconstruct"]
