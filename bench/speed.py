"""Where the time of one default reconstruction goes (issue 24).

One 256x256, 16-coil slice (a held-out MNI slice zero-padded to 256x256, birdcage coils, 4x
random column mask with 8% ACS), reconstructed by the job the CLI runs (hold-out check, map
choice, fit-sample draws, final draws) with 4 draws in one batch, for each preset named.
The time is split into: preprocessing (noise estimate, intensity scale, ESPIRiT), the map
choice, network forward calls, the exact data step (conjugate gradients, with iterations and
normal-operator applications counted), the hold-out FISTA solves (L1 tuning, hybrids) and the
rest. It also prints the floor (each network call timed alone at its batch size, times the
calls made) and SigPy ESPIRiT + L1-wavelet (100 iterations) on the same slice in the same
run, and the ratios the issue's targets are stated in.

    python bench/speed.py [--presets daps-mri-100:cg daps-mri-100 daps-mri daps-fast:bf16]
                          [--size 256] [--coils 16] [--draws 4]

A preset name may carry one variant (``NAME:VARIANT``, :data:`VARIANTS`): ``cg`` (the data
step by conjugate gradients), ``bf16`` / ``f32`` (the network's precision), ``espirit``
(the check with ESPIRiT's maps only) or ``nocheck`` (no hold-out check).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import diffrecon.jobs as jobs_module
import diffrecon.operators.base as base_module
from diffrecon.data.simulate import simulate_fastmri
from diffrecon.jobs import ReconstructionJob
from diffrecon.mri.baseline import l1_wavelet_recon
from diffrecon.mri.masks import MaskSpec
from diffrecon.operators.mri import MulticoilMRI

RESULTS = Path("bench/results")


class Clock:
    """Seconds and counts per category; ``patch`` wraps a module attribute to time it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[object, str, object]] = []

    def patch(self, module: object, attr: str, category: str) -> None:
        fn = getattr(module, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - t0
                self.counts[category] += 1

        self._undo.append((module, attr, fn))
        setattr(module, attr, timed)

    def restore(self) -> None:
        for module, attr, fn in reversed(self._undo):
            setattr(module, attr, fn)
        self._undo.clear()


def make_file(path: Path, size: int, coils: int) -> Path:
    """A fully sampled ``size`` x ``size`` slice with ``coils`` coils (no readout
    oversampling, so SigPy sees the same k-space as the sampler)."""
    return simulate_fastmri(
        path, slices=(104,), size=(size, size), coils=coils, readout_oversampling=1
    )


@contextmanager
def instrumented(job: ReconstructionJob):
    """Time the job's stages: hooks on the network, wrappers on the stage functions."""
    clock = Clock()
    net = job.load_prior().net
    started: list[float] = []
    calls_by_batch: dict[int, int] = defaultdict(int)

    def pre(_module, args):
        started.append(time.perf_counter())

    def post(_module, args, _out):
        clock.seconds["network"] += time.perf_counter() - started.pop()
        clock.counts["network"] += 1
        calls_by_batch[int(args[0].shape[0])] += 1

    hooks = [net.register_forward_pre_hook(pre), net.register_forward_hook(post)]
    cg_iters = [0]
    cg = base_module.conjugate_gradient

    def counted_cg(apply_a, b, x0=None, **kw):
        def apply(v):
            cg_iters[0] += 1
            return apply_a(v)

        return cg(apply, b, x0, **kw)

    base_module.conjugate_gradient = counted_cg
    clock.patch(base_module.LinearOperator, "solve_damped", "data step")  # row solve or CG
    clock.patch(base_module, "conjugate_gradient", "CG")  # counted, not a category
    clock.patch(jobs_module, "choose_maps", "map choice")
    clock.patch(jobs_module, "validate", "hold-out FISTA")
    clock.patch(jobs_module, "hybrid_draws", "hold-out FISTA")
    try:
        yield clock, calls_by_batch, cg_iters
    finally:
        clock.restore()
        base_module.conjugate_gradient = cg
        for h in hooks:
            h.remove()


def network_call_seconds(job: ReconstructionJob, size: int, batch: int, repeats: int = 3) -> float:
    """Median seconds of one network call at ``batch`` x 2 x size x size (after a warm-up)."""
    prior = job.load_prior()
    x = torch.randn(batch, 2, size, size)
    sigma = torch.full((batch,), 0.5)
    prior(x, sigma)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        prior(x, sigma)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def sigpy_baseline(kfile: Path, mask: np.ndarray, calib: int) -> dict[str, float]:
    """SigPy ESPIRiT (its square calibration) + L1-wavelet, 100 iterations, on the slice."""
    import h5py
    import sigpy.mri

    with h5py.File(kfile, "r") as f:
        k = np.asarray(f["kspace"][0]) * mask
    t0 = time.perf_counter()
    mps = sigpy.mri.app.EspiritCalib(k, calib_width=calib, show_pbar=False).run()
    t1 = time.perf_counter()
    l1_wavelet_recon(torch.from_numpy(k), torch.from_numpy(np.asarray(mps)), max_iter=100)
    t2 = time.perf_counter()
    return {"espirit": t1 - t0, "l1": t2 - t1, "total": t2 - t0}


def profile(kfile: Path, spec: str, draws: int, size: int) -> dict:
    """One default reconstruction of slice 0 under the preset ``spec`` names, timed by stage
    (``NAME:cg``: with the data step solved by conjugate gradients, as before the per-row
    solve for column masks; ``NAME:bf16`` / ``NAME:f32``: the network under bfloat16
    autocast / in float32, otherwise the job's default precision; ``NAME:espirit``: the
    hold-out check with ESPIRiT's maps only, ``--coil-maps espirit``; ``NAME:nocheck``: no
    hold-out check, ``--no-holdout``)."""
    preset, _, variant = spec.partition(":")
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r} in {spec!r} ({', '.join(VARIANTS)})")
    budget = MulticoilMRI.ROW_SOLVE_BYTES
    MulticoilMRI.ROW_SOLVE_BYTES = 0 if variant == "cg" else budget
    try:
        return _profile(kfile, preset, draws, size, VARIANTS[variant]) | {"preset": spec}
    finally:
        MulticoilMRI.ROW_SOLVE_BYTES = budget


# NAME:VARIANT -> job settings (``cg`` switches the row solve off instead)
VARIANTS: dict[str, dict] = {
    "": {},
    "cg": {},
    "bf16": {"precision": "bfloat16"},
    "f32": {"precision": "float32"},
    "espirit": {"coil_maps": "espirit"},  # the check with ESPIRiT's maps only (no choice)
    "nocheck": {"holdout": False},  # the sampler alone (--no-holdout)
}


def _profile(kfile: Path, preset: str, draws: int, size: int, settings: dict) -> dict:
    job = ReconstructionJob(
        kfile,
        sampler=preset,
        slices=[0],
        mask=MaskSpec(4.0, 0.08, "random"),
        draws=draws,
        batch_size=draws,
        seed=0,
        **settings,
    ).validate()
    with instrumented(job) as (clock, calls, cg_iters):
        t0 = time.perf_counter()
        prepared = job.prepare(0)
        t_prep = time.perf_counter() - t0
        res = job.run_slice(0, prepared=prepared)
        total = time.perf_counter() - t0
    cg_seconds = clock.seconds.pop("CG", 0.0)  # inside the data step (or pinv calls)
    split = {"preprocessing": t_prep, **clock.seconds}
    split["rest"] = total - sum(split.values())
    floor = sum(n * network_call_seconds(job, size, b) for b, n in calls.items())
    check = res.provenance.validation if res.provenance is not None else None
    return {
        "preset": preset,
        "precision": job.precision_used,
        "draws": draws,
        "total_s": total,
        "split_s": split,
        "network_calls": dict(calls),
        "data_steps": clock.counts["data step"],
        "cg_calls": clock.counts["CG"],
        "cg_seconds": cg_seconds,
        "cg_normal_ops": cg_iters[0],
        "floor_s": floor,
        "mask": prepared.mask.numpy(),
        "calib": prepared.calib_width,
        "psnr": (res.metrics or {}).get("psnr"),
        "ssim": (res.metrics or {}).get("ssim"),
        "finish": None if check is None else check.describe(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["daps-mri"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--coils", type=int, default=16)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS / "speed.jsonl")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        kfile = make_file(Path(tmp) / "speed.h5", args.size, args.coils)
        rows = []
        for p in args.presets:
            rows.append(profile(kfile, p, args.draws, args.size))
            r = rows[-1]
            split = ", ".join(f"{k} {v:.1f}" for k, v in r["split_s"].items())
            print(f"{p}: {r['total_s']:.1f} s ({split}); floor {r['floor_s']:.1f} s", flush=True)
        mask = rows[0]["mask"]
        mask2d = np.broadcast_to(mask, (args.size, args.size))
        ref = sigpy_baseline(kfile, mask2d, rows[0]["calib"])
    print(
        f"\n{args.size}x{args.size}, {args.coils} coils, 4x, {args.draws} draws; SigPy ESPIRiT "
        f"{ref['espirit']:.1f} s + L1-wavelet (100 it) {ref['l1']:.1f} s = {ref['total']:.1f} s"
    )
    cats = ["preprocessing", "map choice", "network", "data step", "hold-out FISTA", "rest"]
    print("| preset | total s | " + " | ".join(cats) + " | floor s | total/floor | total/SigPy |")
    print("|" + " --- |" * (len(cats) + 5))
    for r in rows:
        cells = [f"{r['split_s'].get(c, 0.0):.1f}" for c in cats]
        print(
            f"| {r['preset']} | {r['total_s']:.1f} | " + " | ".join(cells) + f" | "
            f"{r['floor_s']:.1f} | {r['total_s'] / r['floor_s']:.2f} | "
            f"{r['total_s'] / ref['total']:.0f}x |"
        )
    for r in rows:
        per = r["cg_normal_ops"] / max(r["data_steps"], 1)
        print(
            f"{r['preset']}: network calls {r['network_calls']} (batch: calls); data steps "
            f"{r['data_steps']}, CG normal-operator applications {r['cg_normal_ops']} "
            f"({per:.1f} per data step); PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f}; "
            f"{r['finish']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        for r in rows:
            row = {k: v for k, v in r.items() if k != "mask"}
            row.update(
                size=args.size,
                coils=args.coils,
                sigpy_s=ref,
                threads=torch.get_num_threads(),
                date=time.strftime("%Y-%m-%d"),
            )
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
