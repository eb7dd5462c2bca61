"""Convert the real 8-coil SigPy tutorial brain k-space (../shared/data/real) to fastMRI format."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffrecon.data.real import convert_sigpy_brain

DEFAULT_SRC = (
    Path(__file__).resolve().parents[2] / "shared/data/real/sigpy_brain_8coil_cartesian_ksp.npy"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", nargs="?", default="out/real/sigpy_brain.h5")
    ap.add_argument("--src", default=str(DEFAULT_SRC))
    args = ap.parse_args()
    print(f"wrote {convert_sigpy_brain(args.src, args.out)}")


if __name__ == "__main__":
    main()
