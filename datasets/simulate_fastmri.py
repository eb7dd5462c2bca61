"""Write a simulated multicoil fastMRI-format file from held-out MNI slices."""

from __future__ import annotations

import argparse

from diffrecon.data.simulate import simulate_fastmri


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--contrast", default="t2", choices=["t1", "t2", "pd"])
    ap.add_argument("--slices", type=int, nargs="+", default=[100, 104, 108])
    ap.add_argument("--size", type=int, nargs=2, default=[192, 160])
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--noise", type=float, default=0.003)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = simulate_fastmri(
        args.out,
        contrast=args.contrast,
        slices=tuple(args.slices),
        size=tuple(args.size),
        coils=args.coils,
        noise_level=args.noise,
        seed=args.seed,
    )
    print(f"wrote {p}")


if __name__ == "__main__":
    main()
