"""The ``diffrecon`` command line. Exit codes: 0 success, 2 bad input, 1 failure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffrecon", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="reconstruct a synthetic multicoil phantom")
    demo.add_argument("-o", "--out", type=Path, default=Path("out/demo"), help="output folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from diffrecon.demo import run_demo

            run_demo(args.out)
        return 0
    except ValueError as err:
        print(f"diffrecon: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
