"""Batch throughput (issue 14): slices per minute in-process and on a local Dask cluster.

Eight small simulated fastMRI files (2 slices of 64x64, 4 coils) reconstructed with
``daps-fast`` and 4 draws: in this process (all threads, then one thread), ``workers=1`` and
``workers=2``. The Dask overhead per task is ``workers=1`` against in-process at one thread
(the same parallelism; cluster start and per-worker prior loading are reported apart); peak
resident memory of the process or of the largest worker. Prints a table; writes
``bench/results/batch.csv``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from _results import write_csv

from diffrecon.batch import reconstruct_files
from diffrecon.data.simulate import simulate_fastmri


class PeakRSS:
    """Peak resident memory of this process (``own``) and of its largest child process
    (``children``: Dask workers), sampled every 0.1 s while the block runs."""

    def __enter__(self) -> PeakRSS:
        import psutil

        self.own = self.children = 0
        self._stop = threading.Event()
        me = psutil.Process()

        def sample() -> None:
            while not self._stop.is_set():
                try:
                    self.own = max(self.own, me.memory_info().rss)
                    for c in me.children(recursive=True):
                        self.children = max(self.children, c.memory_info().rss)
                except psutil.Error:
                    pass
                time.sleep(0.1)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
        import torch

        threads = torch.get_num_threads()
        modes = [(w, threads) for w in args.workers]
        if 0 in args.workers:  # the in-process baseline at a worker's one thread
            modes.insert(args.workers.index(0) + 1, (0, 1))
        for workers, n_threads in modes:
            torch.set_num_threads(n_threads if workers == 0 else threads)
            starts = []
            peak = PeakRSS()
            t0 = time.perf_counter()
            with peak:
                out = reconstruct_files(
                    [d / "in"],
                    d / f"out{workers}-{n_threads}",
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
                    "mode": f"workers={workers}"
                    if workers
                    else f"in-process ({n_threads} thread{'s' if n_threads > 1 else ''})",
                    "slices": slices,
                    "total_s": round(total, 1),
                    "startup_s": round(starts[0] - t0, 1),
                    "slices_per_min": round(60 * slices / work, 1),
                    "task_s": round(task, 2),
                    # in-process: this process's peak; workers: the largest worker's peak
                    "peak_rss_mb": round((peak.children if workers else peak.own) / 2**20),
                }
            )
            print(rows[-1], flush=True)
    base = 60 / rows[0]["slices_per_min"]  # in-process seconds per slice, all threads
    one = next(
        (60 / r["slices_per_min"] for r in rows if r["mode"] == "in-process (1 thread)"), None
    )
    for r in rows:
        per_slice = 60 / r["slices_per_min"]
        r["speed_up"] = round(base / per_slice, 2)
        if r["mode"] == "workers=1" and one is not None:
            # one worker of one thread against the same work in-process at one thread: the
            # Dask overhead per task (scheduling, transfer, part files)
            r["overhead_pct"] = round(100 * (per_slice - one) / one, 1)
    write_csv(Path("bench/results/batch.csv"), rows)


if __name__ == "__main__":
    main()
