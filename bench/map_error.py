"""Coil maps against the truth, and what they do to the posterior (issue 29).

For the simulated-coil cases of ``bench/real_anatomy.py`` (same k-space, masks and seeds),
each coil-map estimate is compared with the true simulated maps: the mean, inside the
object (RSS target above 20% of its maximum), of the per-pixel relative error after the
per-pixel phase (maps are defined up to it). Estimates: ESPIRiT with SigPy's fixed 2%
singular-value cut, ESPIRiT cut at the noise edge (the default since issue 29), and NLINV
(``diffrecon.mri.nlinv``, the joint fit of image and maps). With ``--sampler`` each set of
maps, and the true maps, also gets the default sampler's raw posterior mean (``daps-mri``,
the hold-out split without its finish, so the posterior's and the self-tuned L1's held-out
scores are recorded: which of them tells the better maps apart, without the truth).

Writes ``bench/results/map_error.csv``. Run: ``python bench/map_error.py --cases
head-axial-8x brain-dipy-8x --sampler`` (the sampler rows take minutes each on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import real_anatomy
from _results import write_csv
from real_anatomy import ACCELERATIONS, CASES, make_case, preset_row

from diffrecon.mri.coils import espirit_maps
from diffrecon.mri.masks import cartesian_mask
from diffrecon.mri.nlinv import nlinv
from diffrecon.mri.preprocess import prepare_slice
from diffrecon.priors import load

SIMULATED = [c for c in CASES if c != "brain-sigpy"]  # its "true" maps are ESPIRiT's own


def map_error(maps: np.ndarray, truth: np.ndarray, inside: np.ndarray) -> float:
    """Mean over ``inside`` of ``|S e^{i phi} - T| / |T|`` per pixel, ``phi`` the phase of
    ``<S, T>`` there."""
    inner = (maps.conj() * truth).sum(0)
    aligned = maps * np.exp(1j * np.angle(inner))
    err = np.linalg.norm(aligned - truth, axis=0) / np.linalg.norm(truth, axis=0)
    return float(err[inside].mean())


def case_maps(name: str, acc: int) -> tuple[dict, dict[str, np.ndarray], dict]:
    """The case's k-space, mask, target and true maps, and each estimate's maps."""
    kept: dict[str, np.ndarray] = {}
    real = real_anatomy.coil_set

    def spy(*args, **kwargs):
        kept["maps"] = real(*args, **kwargs)
        return kept["maps"]

    real_anatomy.coil_set = spy
    try:
        ci = CASES.index(name)
        k, target, _ = make_case(name, seed=ci)
    finally:
        real_anatomy.coil_set = real
    mask = cartesian_mask(k.shape[-1], acc, dict(ACCELERATIONS)[acc], seed=1000 * ci + acc).mask
    prep = prepare_slice(k, mask)
    y = prep.y[0]
    t0 = time.perf_counter()
    fit = nlinv(y, mask, prep.noise_std)
    estimates = {
        "espirit-2%": espirit_maps(y.numpy(), region=prep.calib_region, crop=0.0).numpy(),
        "espirit-noise-edge": prep.maps.numpy(),
        "nlinv": fit.maps.numpy(),
    }
    info = {"nlinv_steps": fit.steps, "nlinv_seconds": round(time.perf_counter() - t0, 1)}
    data = {"k": k, "mask": mask, "target": target, "truth": kept["maps"], "seed": ci}
    return data, estimates, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    every = [f"{c}-{a}x" for c in SIMULATED for a, _ in ACCELERATIONS]
    ap.add_argument("--cases", nargs="*", default=every, choices=every)
    ap.add_argument("--sampler", action="store_true", help="also the posterior with each")
    ap.add_argument("--draws", type=int, default=2)
    args = ap.parse_args()
    prior = load("brain-mri-default") if args.sampler else None
    rows = []
    for case in args.cases:
        name, acc = case.rsplit("-", 1)
        data, estimates, info = case_maps(name, int(acc[:-1]))
        inside = data["target"] > 0.2 * data["target"].max()
        for label, maps in [*estimates.items(), ("true", data["truth"])]:
            row = {"case": case, "maps": label, "error": map_error(maps, data["truth"], inside)}
            row |= info if label == "nlinv" else {}
            if args.sampler and label != "espirit-2%":
                prep = prepare_slice(data["k"], data["mask"], maps=maps.astype(np.complex64))
                out, _ = preset_row(
                    prep, data["target"], prior, "daps-mri", args.draws, data["seed"],
                    holdout=True, finish="raw", coil_maps="espirit",
                )  # fmt: skip
                row |= {
                    k: out.get(k)
                    for k in ("psnr", "ssim", "holdout_score_posterior", "holdout_score_l1")
                }
            rows.append(row)
            print(row, flush=True)
    write_csv("bench/results/map_error.csv", rows)


if __name__ == "__main__":
    main()
