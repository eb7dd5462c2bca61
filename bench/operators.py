"""Milliseconds per forward+adjoint of MulticoilMRI vs sigpy.mri.linop.Sense.

16 coils x 320 x 320, column mask at 4x, batch 1 and 8, complex64. SigPy has no batch
dimension, so its batch time is a loop over items. Prints a table; `--csv PATH` saves it.
Target: the torch operator at least as fast as SigPy on CPU (ratio sigpy/torch >= 1).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import sigpy.mri
import torch
from _results import write_csv

from diffrecon.mri import cartesian_mask
from diffrecon.operators import MulticoilMRI


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (plans, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--coils", type=int, default=16)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--csv", default=None)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.coils, args.size, args.size)
    maps = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    mask = cartesian_mask(args.size, 4, 0.08, seed=0).mask
    op = MulticoilMRI(torch.from_numpy(maps), mask).to(args.device)
    sense = sigpy.mri.linop.Sense(maps, weights=np.broadcast_to(mask.numpy(), shape[1:]) * 1.0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    rows = []
    print(
        f"device={args.device} threads={torch.get_num_threads()} coils={args.coils} "
        f"size={args.size}"
    )
    print(f"{'batch':>5} {'torch ms':>10} {'sigpy ms':>10} {'sigpy/torch':>12}")
    for batch in (1, 8):
        x = torch.randn(batch, 2, args.size, args.size, device=args.device)
        z = (x[:, 0] + 1j * x[:, 1]).cpu().numpy()

        def run_torch(x=x):
            op.adjoint(op(x))
            sync()

        def run_sigpy(z=z):
            for item in z:
                sense.H * (sense * item)

        t_torch = _time(run_torch, args.repeats)
        t_sigpy = _time(run_sigpy, args.repeats)
        rows.append(
            {
                "batch": batch,
                "torch_ms": t_torch,
                "sigpy_ms": t_sigpy,
                "ratio": t_sigpy / t_torch,
                "device": args.device,
            }
        )
        print(f"{batch:>5} {t_torch:>10.1f} {t_sigpy:>10.1f} {t_sigpy / t_torch:>12.2f}")
    if args.csv:
        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
