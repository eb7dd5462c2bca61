"""Posterior fidelity of each sampler against the exact Gaussian posterior.

The exact case of the test suite (16x16 complex image, 4 coils, 3x equispaced columns,
non-stationary Gaussian prior, noise 0.02). For each sampler and step budget: RMS z-score of
the draws' mean against the exact posterior mean (in posterior std units; Monte-Carlo error
alone gives about 1/sqrt(draws)), median std ratio (sampled / exact), NFE and wall time.
Prints a table and writes CSV (default bench/results/posterior_fidelity.csv).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _results import write_csv

from diffrecon import reconstruct
from diffrecon.testing import fidelity, gaussian_mri_problem

BUDGETS = [
    # (sampler, label, settings, NFE per draw)
    (
        "daps",
        "DAPS 20x2, 30 LD",
        dict(steps=20, sigma_min=0.01, lr=4e-4, lr_min_ratio=0.05, langevin_steps=30, ode_steps=2),
        40,
    ),
    (
        "daps",
        "DAPS 60x2, 60 LD",
        dict(steps=60, sigma_min=0.01, lr=4e-4, lr_min_ratio=0.05, langevin_steps=60, ode_steps=2),
        120,
    ),
    (
        "daps",
        "DAPS 200x5, 100 LD (1K)",
        dict(
            steps=200, sigma_min=0.01, lr=4e-4, lr_min_ratio=0.05, langevin_steps=100, ode_steps=5
        ),
        1000,
    ),
    ("dps", "DPS 100", dict(steps=100, sigma_min=0.01, zeta=0.3), 100),
    ("dps", "DPS 1000", dict(steps=1000, sigma_min=0.01, zeta=0.3), 1000),
    ("pigdm", "PiGDM 20", dict(steps=20, sigma_min=0.01), 20),
    ("pigdm", "PiGDM 100", dict(steps=100, sigma_min=0.01), 100),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--draws", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="only the cheaper budgets")
    ap.add_argument("--csv", type=Path, default=Path("bench/results/posterior_fidelity.csv"))
    args = ap.parse_args()
    p = gaussian_mri_problem()
    y = p.y.to(torch.complex64)
    rows = []
    print(f"{'sampler':<26} {'NFE':>5} {'zRMS':>7} {'std ratio':>10} {'seconds':>8}")
    for sampler, label, kw, nfe in BUDGETS:
        if args.quick and nfe >= 1000:
            continue
        t0 = time.perf_counter()
        post = reconstruct(
            y,
            p.operator,
            p.prior,
            sampler=sampler,
            draws=args.draws,
            noise_std=p.noise_std,
            seed=0,
            batch_size=args.draws,
            sigma_max=100.0,
            **kw,
        )
        secs = time.perf_counter() - t0
        z, r = fidelity(post.draws, p)
        rows.append(
            {
                "sampler": label,
                "nfe": nfe,
                "z_rms": z,
                "std_ratio": r,
                "seconds": secs,
                "draws": args.draws,
            }
        )
        print(f"{label:<26} {nfe:>5} {z:>7.3f} {r:>10.3f} {secs:>8.1f}", flush=True)
    write_csv(args.csv, rows)
    print(f"written {args.csv}")


if __name__ == "__main__":
    main()
