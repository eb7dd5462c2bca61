"""The ``diffrecon`` command line. Exit codes: 0 success, 2 bad input, 1 failure."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffrecon", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="reconstruct a synthetic multicoil phantom")
    demo.add_argument("-o", "--out", type=Path, default=Path("out/demo"), help="output folder")

    tr = sub.add_parser("train-prior", help="train an EDM denoiser prior (MONAI UNet)")
    tr.add_argument(
        "out", type=Path, help="output bundle folder (resumes if it holds a checkpoint)"
    )
    tr.add_argument(
        "--data",
        default="mni",
        help="'mni' (built-in template) or a slices .h5 from datasets/fastmri_slices.py",
    )
    tr.add_argument("--steps", type=int, default=5000)
    tr.add_argument("--minutes", type=float, default=None, help="stop after this wall time")
    tr.add_argument("--patch", type=int, default=64)
    tr.add_argument("--batch", type=int, default=8)
    tr.add_argument("--lr", type=float, default=2e-4)
    tr.add_argument("--ema", type=float, default=0.999)
    tr.add_argument("--channels", type=int, nargs="+", default=[32, 64, 64])
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="cpu")
    tr.add_argument("--name", default=None, help="bundle name (default: folder name)")
    tr.add_argument("--quiet", action="store_true")
    return p


def _train_prior(args: argparse.Namespace) -> None:
    from diffrecon.priors.train import train_prior

    if args.data == "mni":
        from diffrecon.data.mni import HELDOUT_Z, PatchSampler

        source = PatchSampler(size=args.patch, seed=args.seed)
        dataset = {
            "source": "MNI ICBM152 2009a sym (nilearn wheel), synthetic T1/T2/PD, "
            "smooth random phase",
            "held_out_axial_z": list(HELDOUT_Z),
        }
    else:
        from diffrecon.data.slices import SlicePatchSampler

        source = SlicePatchSampler(args.data, size=args.patch, seed=args.seed)
        dataset = {"source": str(args.data)}
    channels = list(args.channels)
    arch = {"channels": channels, "attention_levels": [False] * len(channels)}
    name = args.name or args.out.name
    summary = train_prior(
        args.out,
        source.batch,
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        ema_decay=args.ema,
        arch=arch,
        seed=args.seed,
        device=args.device,
        minutes=args.minutes,
        progress=not args.quiet,
        data_state=source.get_state,
        set_data_state=source.set_state,
        bundle_config={
            "name": name,
            "data": {
                "channels": 2,
                "complex": True,
                "range": "real/imag in about [-1, 1]",
                "scaling": "magnitude 99.5th percentile = 1",
                **dataset,
            },
            "training": {
                "command": "diffrecon " + " ".join(map(shlex.quote, sys.argv[2:])),
                "patch": args.patch,
                "batch": args.batch,
                "lr": args.lr,
                "ema": args.ema,
                "seed": args.seed,
                "device": args.device,
            },
        },
    )
    print(
        f"trained {summary['steps']} steps, loss {summary['loss']:.4f}, "
        f"{summary['seconds'] / 60:.1f} min -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from diffrecon.demo import run_demo

            run_demo(args.out)
        elif args.command == "train-prior":
            _train_prior(args)
        return 0
    except ValueError as err:
        print(f"diffrecon: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
