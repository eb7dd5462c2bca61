"""Batch throughput (issue 14): slices per minute in-process and on a local Dask cluster.

Eight small simulated fastMRI files (2 slices of 64x64, 4 coils) reconstructed with
``daps-fast`` and 4 draws: in this process, ``workers=1`` and ``workers=2``. The Dask
overhead per task is the difference from in-process per slice at one worker (cluster start
and per-worker prior loading are reported apart). Prints a table; writes
``bench/results/batch.csv``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _results import write_csv

from diffrecon.batch import reconstruct_files
from diffrecon.data.simulate import simulate_fastmri


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for i in range(args.files):
            simulate_fastmri(
                d / "in" / f"f{i}.h5", slices=(100, 104), size=(64, 64), coils=4, seed=i
            )
        settings = dict(prior="brain-mri-default", sampler="daps-fast", draws=args.draws)
        for workers in args.workers:
            starts = []
            t0 = time.perf_counter()
            out = reconstruct_files(
                [d / "in"],
                d / f"out{workers}",
                workers=workers or None,
                on_start=lambda n, dash, s=starts: s.append(time.perf_counter()),
                **settings,
            )
            total = time.perf_counter() - t0
            work = time.perf_counter() - starts[0]
            slices = sum(r["slices"] for r in out)
            task = sum(r["seconds"] for r in out) / slices
            rows.append(
                {
                    "mode": f"workers={workers}" if workers else "in-process",
                    "slices": slices,
                    "total_s": round(total, 1),
                    "startup_s": round(starts[0] - t0, 1),
                    "slices_per_min": round(60 * slices / work, 1),
                    "task_s": round(task, 2),
                }
            )
            print(rows[-1], flush=True)
    base = 60 / rows[0]["slices_per_min"]  # in-process seconds per slice
    for r in rows:
        per_slice = 60 / r["slices_per_min"]
        r["speed_up"] = round(base / per_slice, 2)
        if r["mode"] == "workers=1":  # same parallelism as in-process: the Dask overhead
            r["overhead_pct"] = round(100 * (per_slice - base) / base, 1)
    write_csv(Path("bench/results/batch.csv"), rows)


if __name__ == "__main__":
    main()
