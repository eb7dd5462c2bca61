"""Coil-combined complex training slices from a folder of fastMRI multicoil files."""

from __future__ import annotations

import argparse

from diffrecon.data.slices import build_fastmri_slices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--calib-width", type=int, default=24)
    ap.add_argument("--skip-edge-slices", type=int, default=0)
    args = ap.parse_args()
    n = build_fastmri_slices(args.folder, args.out, args.calib_width, args.skip_edge_slices)
    print(f"wrote {n} slices to {args.out}")


if __name__ == "__main__":
    main()
