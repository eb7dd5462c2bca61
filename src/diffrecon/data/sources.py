"""Training data for ``diffrecon train-prior``: a patch source and its description."""

from __future__ import annotations

from typing import Any


def training_source(
    data: str, patch: int, seed: int, synth_fraction: float = 0.5
) -> tuple[Any, dict[str, Any]]:
    """``(source, description)`` for ``--data``: ``"mni"`` (the built-in template with
    realistic contrasts), ``"synth"`` (its tissue maps domain-randomised, a fraction
    ``synth_fraction`` of the patches, the rest ``"mni"``'s) or a slices ``.h5`` from
    ``datasets/fastmri_slices.py``. ``source.batch`` draws patches; ``get_state`` and
    ``set_state`` make training resumable; the description goes into the bundle."""
    if data in ("mni", "synth"):
        from diffrecon.data.mni import HELDOUT_Z, PatchSampler

        held_out = {"held_out_axial_z": list(HELDOUT_Z)}
        if data == "mni":
            text = "MNI ICBM152 2009a sym (nilearn wheel), synthetic T1/T2/PD, smooth random phase"
            return PatchSampler(size=patch, seed=seed), {"source": text, **held_out}
        from diffrecon.data.synth import SynthPatchSampler

        if not 0.0 <= synth_fraction <= 1.0:
            raise ValueError(f"--synth-fraction must lie in [0, 1], got {synth_fraction}")
        text = (
            "MNI ICBM152 2009a sym (nilearn wheel): a fraction "
            f"{synth_fraction} domain-randomised from its tissue maps (SynthSeg recipe: "
            "random class intensities, affine and elastic warps, bias field, texture, blur, "
            "resolution loss), the rest synthetic T1/T2/PD; smooth random phase"
        )
        source = SynthPatchSampler(size=patch, seed=seed, synth_fraction=synth_fraction)
        return source, {"source": text, **held_out}
    from diffrecon.data.slices import SlicePatchSampler

    return SlicePatchSampler(data, size=patch, seed=seed), {"source": str(data)}
