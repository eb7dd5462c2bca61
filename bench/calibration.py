"""Calibrated intervals with the learned default prior, on held-out brain slices.

Fully sampled 8-coil fastMRI-format files are simulated from the held-out MNI slab (never seen
by the default prior): even slices of T1/T2/PD contrast for calibration, odd slices for the
test. Both are undersampled 4x (fastMRI random mask, centre fraction 0.08) and reconstructed
with the default preset. `diffrecon calibrate`'s fit (conformal risk control) is made on the
calibration slices; on the test slices the script measures the foreground coverage of
  - the calibrated 90% interval,
  - the draws' own 5-95% quantile interval (uncalibrated),
  - mean +- 1.645 std (uncalibrated),
and the std-error correlation. Per-slice results are cached (bench/results/calib_cache/), so
an interrupted run resumes where it stopped. Writes bench/results/calibration.json (+ .png),
bench/results/calibration_test.csv and docs/img/calibration_reliability.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_csv

from diffrecon.calibration_run import reliability_diagram
from diffrecon.data.simulate import simulate_fastmri
from diffrecon.jobs import ReconstructionJob
from diffrecon.mri.masks import MaskSpec
from diffrecon.mri.transforms import center_crop
from diffrecon.priors import load
from diffrecon.uncertainty import calibrate, coverage_report
from diffrecon.uncertainty.conformal import foreground

RESULTS = Path("bench/results")
CACHE = RESULTS / "calib_cache"
QUANTILES = (0.025, 0.05, 0.1, 0.25, 0.75, 0.9, 0.95, 0.975)


# held-out slices: 19 for calibration (the fewest for which a 90% guarantee costs at most
# 5 points of extra coverage), 6 interleaved ones for the test
SPLITS = {
    "cal": {"t2": tuple(range(96, 112, 2)), "pd": tuple(range(96, 112, 2)), "t1": (96, 102, 108)},
    "test": {"t2": (97, 103, 109), "pd": (99, 105, 111)},
}


def files(size: tuple[int, int], split: str) -> list[Path]:
    """One simulated file per contrast of a split (192 x 160 holds the whole head: the
    phase-encode field of view must not cut the object, or ESPIRiT's maps fail)."""
    out = []
    for i, (contrast, z) in enumerate(SPLITS[split].items()):
        path = RESULTS / f"calib_{split}_{contrast}_{size[0]}x{size[1]}.h5"
        if not path.exists():
            simulate_fastmri(path, contrast=contrast, slices=z, size=size, seed=10 + i)
        out.append(path)
    return out


def slice_results(path: Path, prior, args) -> list[dict[str, np.ndarray]]:
    """Mean, std, quantiles and truth of each slice (cached per slice)."""
    job = ReconstructionJob(
        path,
        prior=prior,
        sampler=args.sampler,
        mask=MaskSpec(4.0, 0.08, "random"),
        draws=args.draws,
        batch_size=args.draws,
        quantile_levels=QUANTILES,
        interval_level=None,
        seed=0,
    )
    job.check_input()
    out = []
    for idx in job.slice_indices:
        cache = CACHE / f"{path.stem}_{idx}_{args.sampler}_{args.draws}.npz"
        if cache.exists():
            out.append(dict(np.load(cache)))
            continue
        t0 = time.perf_counter()
        res = job.run_slice(idx)
        tgt = torch.from_numpy(job.input.target(idx))
        item = {
            "truth": center_crop(tgt, res.mean.shape).numpy().astype(np.float64),
            "mean": res.mean.astype(np.float64),
            "std": res.std.astype(np.float64),
            "quantiles": res.quantiles.astype(np.float64),
            "seconds": np.array(time.perf_counter() - t0),
            "psnr": np.array(res.metrics["psnr"]),
        }
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **item)
        print(f"{path.name} slice {idx}: {float(item['seconds']):.0f} s", flush=True)
        out.append(item)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, nargs=2, default=[192, 160])
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--sampler", default="daps-mri")
    ap.add_argument("--level", type=float, default=0.9)
    args = ap.parse_args()
    prior = load("brain-mri-default")
    size = tuple(args.size)
    cal_items = [r for p in files(size, "cal") for r in slice_results(p, prior, args)]
    test_items = [r for p in files(size, "test") for r in slice_results(p, prior, args)]

    def unpack(items, key):
        return [it[key] for it in items]

    valid_for = {"prior": prior.name, "preset": args.sampler, "draws": args.draws}
    cal = calibrate(
        unpack(cal_items, "truth"),
        unpack(cal_items, "mean"),
        unpack(cal_items, "std"),
        args.level,
        valid_for,
        "bench",
    )
    report_cal = coverage_report(
        unpack(cal_items, "truth"),
        unpack(cal_items, "mean"),
        unpack(cal_items, "std"),
        unpack(cal_items, "quantiles"),
        QUANTILES,
    )
    report_test = coverage_report(
        unpack(test_items, "truth"),
        unpack(test_items, "mean"),
        unpack(test_items, "std"),
        unpack(test_items, "quantiles"),
        QUANTILES,
    )
    rows = []
    for i, it in enumerate(test_items):
        fg = foreground(it["truth"])
        qi, qj = QUANTILES.index(0.05), QUANTILES.index(0.95)
        q_in = (it["truth"] >= it["quantiles"][qi]) & (it["truth"] <= it["quantiles"][qj])
        err = np.abs(it["truth"] - it["mean"])
        g_in = err <= 1.645 * it["std"]
        rows.append(
            {
                "slice": i,
                "psnr": float(it["psnr"]),
                "calibrated_90": cal.foreground_coverage(it["truth"], it["mean"], it["std"]),
                "quantile_90": float(q_in[fg].mean()),
                "gaussian_90": float(g_in[fg].mean()),
                "std_error_corr": float(np.corrcoef(it["std"][fg], err[fg])[0, 1]),
                "seconds": float(it["seconds"]),
            }
        )
    write_csv(RESULTS / "calibration_test.csv", rows)
    cal.report = {
        **report_cal,
        "test": report_test,
        "calibrated_foreground_coverage_mean": float(np.mean([r["calibrated_90"] for r in rows])),
    }
    (RESULTS / "calibration.json").write_text(json.dumps(cal.as_dict(), indent=2) + "\n")
    reliability_diagram(RESULTS / "calibration.png", cal)
    shutil.copy(RESULTS / "calibration.png", Path("docs/img/calibration_reliability.png"))
    fg = report_test["gaussian"]["foreground"]
    qg = report_test["quantile"]["foreground"]
    print(f"calibration: {cal.slices} slices, lambda {cal.lam:.3f}")
    print(f"test ({len(rows)} slices, foreground):")
    print(f"  calibrated 90%: {np.mean([r['calibrated_90'] for r in rows]):.3f}")
    print(f"  draws' 5-95% quantiles: {qg['0.9']:.3f}; mean +- 1.645 std: {fg['0.9']:.3f}")
    print(
        f"  std-error correlation {report_test['std_error_correlation']['foreground']:.3f}, "
        f"RMS std / RMS error {report_test['rms_std_over_rms_error']['foreground']:.3f}"
    )
    print(f"  seconds per slice {np.mean([r['seconds'] for r in rows]):.1f}")


if __name__ == "__main__":
    main()
