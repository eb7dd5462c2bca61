"""diffrecon: image reconstruction by diffusion posterior sampling, with uncertainty."""

__version__ = "0.1.0"
