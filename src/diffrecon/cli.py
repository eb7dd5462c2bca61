"""The ``diffrecon`` command line. Exit codes: 0 success, 2 bad input, 1 failure.

Bad input (missing or non-HDF5 file, no ``kspace``, wrong rank, NaN k-space, unknown sampler,
impossible acceleration, an output that exists without ``--overwrite``) is reported in one
line before any work starts, and nothing is written.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffrecon.io.atomic import check_writable_folder, refuse_overwriting_inputs
from diffrecon.io.fastmri import MAX_PIXELS
from diffrecon.mri.holdout import DEFAULT_FRACTION
from diffrecon.mri.mapsets import COIL_MAPS
from diffrecon.mri.masks import MASK_KINDS
from diffrecon.mri.validation import FINISHES
from diffrecon.priors.bundles import available
from diffrecon.priors.checkpoints import FORMATS as PRIOR_FORMATS
from diffrecon.samplers.registry import MRI_DEFAULT, mri_warning, offered_for_mri

PRIOR_DEFAULT = "brain-mri-default"


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default, unless the text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "default" not in text
            and not any(default is v for v in (None, False, argparse.SUPPRESS))
            and not isinstance(default, list | tuple)
        ):
            text += " (default: %(default)s)"
        return text


def _term(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences, carriage returns
    in a file name) shown as escapes instead of acting on the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _parser() -> argparse.ArgumentParser:
    from diffrecon._version import __version__

    # the docstring's reStructuredText literals read as plain quotes in a terminal
    text = (__doc__ or "").replace("``", "`")
    p = argparse.ArgumentParser(prog="diffrecon", description=text, formatter_class=_Help)
    p.add_argument("-V", "--version", action="version", version=f"diffrecon {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, formatter_class=_Help, **k)  # type: ignore[method-assign]

    rec = sub.add_parser("reconstruct", help="posterior reconstruction of fastMRI files")
    rec.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        help="fastMRI .h5 files, folders (searched for *.h5) or .txt lists of paths",
    )
    rec.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    _run_options(rec)
    rec.add_argument(
        "--maps",
        type=Path,
        default=None,
        help="coil maps instead of ESPIRiT's: .npy or .h5 (dataset 'maps'), complex "
        "(coils, H, W) or (slices, coils, H, W), H after the readout crop",
    )
    rec.add_argument(
        "--save-draws", action="store_true", help="also write every draw's magnitude (gzip)"
    )
    rec.add_argument("--quantiles", default=None, help="e.g. 0.05,0.5,0.95")
    rec.add_argument(
        "--interval-level",
        type=float,
        default=0.9,
        help="central interval written as lower/upper (default 0.9; from the draws' "
        "quantiles, or calibrated with --calibration)",
    )
    rec.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="a calibration.json from `diffrecon calibrate` for the same settings",
    )
    rec.add_argument(
        "--format",
        choices=["h5", "nifti"],
        default="h5",
        help="nifti: also write mean, std and intervals as OUT/<name>_<map>.nii.gz with an "
        "affine from the header (the .h5 result, which carries the provenance, is always "
        "written)",
    )
    rec.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    rec.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (bars are off anyway when stderr is not a terminal); the "
        "one summary line per file stays, warnings and errors go to stderr",
    )
    rec.add_argument(
        "--workers",
        type=int,
        default=None,
        help="start a local Dask cluster of N one-thread worker processes (batch mode)",
    )
    rec.add_argument(
        "--gpus",
        default=None,
        help="one worker process per GPU, each pinned with CUDA_VISIBLE_DEVICES (batch mode): "
        "ids such as 0,1 or 'all'",
    )
    rec.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler (any cluster: SLURM, Kubernetes, ...)",
    )
    rec.add_argument(
        "--resume",
        action="store_true",
        help="skip finished outputs and redo only the slices an interrupted run did not persist",
    )
    rec.add_argument(
        "--retries", type=int, default=1, help="retries of a failing slice (batch mode)"
    )

    cal = sub.add_parser(
        "calibrate",
        help="fit calibrated intervals on fully sampled files with a reference image",
    )
    cal.add_argument("inputs", nargs="+", type=Path, help="fully sampled fastMRI .h5 files")
    cal.add_argument("-o", "--out", type=Path, required=True, help="calibration .json")
    _run_options(cal)
    cal.add_argument(
        "--interval-level",
        "--level",
        dest="level",
        type=float,
        default=0.9,
        help="interval level (reconstruct's --interval-level; --level is the old spelling)",
    )
    cal.add_argument(
        "--score",
        choices=("std", "fitted"),
        default="std",
        help="what the interval scales: the std of the draws, or a score fitted to the "
        "errors from the within- and between-prior spread, the distance to the self-tuned "
        "L1 image, the back-projected hold-out residual and the mean's gradient (weights "
        "fitted on half the slices, the scale on the other half; needs the hold-out check; "
        "docs/uncertainty.md) (default: %(default)s)",
    )
    cal.add_argument(
        "--workers",
        type=int,
        default=None,
        help="reconstruct the calibration slices on a local Dask cluster of N one-thread "
        "worker processes (as reconstruct --workers), then fit",
    )
    cal.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler to reconstruct the calibration slices on",
    )
    cal.add_argument("--overwrite", action="store_true", help="replace an existing file")
    cal.add_argument("--quiet", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="describe a fastMRI or result .h5 file")
    info.add_argument("file", type=Path, help="a fastMRI k-space file or a diffrecon result")

    dcm = sub.add_parser("export-dicom", help="write a result file as DICOM series")
    dcm.add_argument("result", type=Path, help="a diffrecon result file")
    dcm.add_argument("out", type=Path, help="output folder (one series per map)")
    dcm.add_argument(
        "--parametric-maps",
        action="store_true",
        help="write the std, interval bounds and spreads as DICOM Parametric Maps (float "
        "values, derived from the mean's MR images; needs highdicom) instead of MR images "
        "with rescale (docs/cli.md: which viewers read which)",
    )
    dcm.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="DICOM file whose patient/study fields are copied",
    )
    dcm.add_argument("--draws", action="store_true", help="also export each draw")
    dcm.add_argument(
        "--overwrite", action="store_true", help="replace existing series folders whole"
    )

    ev = sub.add_parser(
        "evaluate",
        help="fastMRI challenge metrics of result files against targets (as evaluate.py)",
    )
    ev.add_argument("targets", type=Path, help="folder of fastMRI files holding the targets")
    ev.add_argument("predictions", type=Path, help="folder of diffrecon result files")
    ev.add_argument(
        "--challenge",
        choices=["multicoil", "singlecoil"],
        default="multicoil",
        help="which target to read: reconstruction_rss (multicoil) or reconstruction_esc",
    )
    ev.add_argument("--acquisition", default=None, help="only volumes of this acquisition")
    ev.add_argument("--csv", type=Path, default=None, help="also write per-volume figures")

    nii = sub.add_parser("export-nifti", help="write a result file's maps as NIfTI volumes")
    nii.add_argument("result", type=Path, help="a diffrecon result file")
    nii.add_argument("out", type=Path, help="output folder (<name>_<map>.nii.gz)")
    nii.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="DICOM file whose orientation and position place slice 0",
    )
    nii.add_argument("--overwrite", action="store_true", help="replace existing files")

    demo = sub.add_parser("demo", help="reconstruct a simulated brain slice with the default prior")
    demo.add_argument(
        "-o", "--out", type=Path, default=Path("out/demo"), help="folder for demo.h5 and demo.png"
    )
    demo.add_argument("--draws", type=int, default=4, help="posterior draws")
    demo.add_argument(
        "--steps", type=int, default=None, help="noise levels (default: the preset's)"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")

    tr = sub.add_parser("train-prior", help="train an EDM denoiser prior (MONAI UNet)")
    tr.add_argument("out", type=Path, help="output bundle folder (resumes from its checkpoint)")
    tr.add_argument(
        "--data",
        default="mni",
        help="'mni' (built-in template, realistic contrasts), 'synth' (the template's tissue "
        "maps with domain randomisation, mixed with 'mni' patches) or a slices .h5 from "
        "datasets/fastmri_slices.py",
    )
    tr.add_argument(
        "--synth-fraction",
        type=float,
        default=0.5,
        help="with --data synth: the fraction of domain-randomised patches",
    )
    tr.add_argument(
        "--init",
        default=None,
        help="start from this bundle's weights (fine-tuning; same --channels), e.g. "
        "brain-mri-default",
    )
    tr.add_argument("--steps", type=int, default=5000, help="optimiser steps")
    tr.add_argument("--minutes", type=float, default=None, help="stop after this wall time")
    tr.add_argument("--patch", type=int, default=64, help="training patch size (pixels)")
    tr.add_argument("--batch", type=int, default=8, help="patches per step")
    tr.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    tr.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    tr.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=[32, 64, 64],
        help="UNet channels per level (default: 32 64 64)",
    )
    tr.add_argument("--seed", type=int, default=0, help="patch and initialisation seed")
    tr.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
    tr.add_argument("--name", default=None, help="bundle name (default: folder name)")
    tr.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _run_options(p: argparse.ArgumentParser) -> None:
    """The reconstruction settings ``reconstruct`` and ``calibrate`` share (one spelling)."""
    p.add_argument(
        "--sampler",
        default=MRI_DEFAULT,
        help=f"preset validated for MRI: {', '.join(offered_for_mri())}; other presets and "
        "sampler names (daps-1k, dps-1k, pigdm-20, zaps-20, stsl-20, ...) run with a warning",
    )
    p.add_argument(
        "--draws",
        type=int,
        default=8,
        help="posterior draws per slice: their mean is the reconstruction, their spread the "
        "std and intervals (the cost grows linearly; 2 or more for a std)",
    )
    p.add_argument("--accel", type=float, default=4.0, help="retrospective undersampling factor")
    p.add_argument(
        "--center-fraction",
        type=float,
        default=0.08,
        help="fully sampled centre columns of a retrospective mask, as a fraction",
    )
    p.add_argument(
        "--mask-type",
        choices=list(MASK_KINDS),
        default="auto",
        help="auto (default): the file's own sampling when it is already undersampled (its "
        "mask dataset or its empty columns), else a fastMRI random mask seeded by the file "
        "name; random/equispaced: always retrospective; file: the file's mask dataset",
    )
    p.add_argument("--slices", default=None, help="e.g. 10:14 or 3,5 (default: all)")
    p.add_argument(
        "--prior",
        default=PRIOR_DEFAULT,
        help=f"a shipped prior's name ({', '.join(available())}), a bundle or diffusers "
        "folder, or a checkpoint file "
        "(.pt/.pth/.safetensors; EDM/InverseBench, guided-diffusion ADM or score_sde NCSN++) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--priors",
        default=None,
        metavar="A,B[,...]",
        help="draw under several priors in one run and report where they disagree: the draws "
        "are split among them (not multiplied), the std is that of all the draws, and the "
        "result gains std_within (the spread under one prior) and std_between (the priors' "
        "disagreement). The first is the main prior (it replaces --prior); 'adapted' stands "
        "for it adapted to each slice (implies --adapt). Needs 2 draws per prior",
    )
    p.add_argument(
        "--prior-format",
        default="auto",
        choices=list(PRIOR_FORMATS),
        help="the prior's family (default: recognised from the files)",
    )
    p.add_argument(
        "--prior-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting the checkpoint does not record, repeatable: data_scale / data_shift "
        "(x_net = scale * x + shift, the network's value range), sigma_data (edm), "
        "num_head_channels, num_heads, beta_start, beta_end (adm), ch_mult, "
        "num_res_blocks, attn_resolutions, image_size, sigma_max (ncsnpp)",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="the network's arithmetic: bfloat16 runs its convolutions under bf16 autocast, "
        "about twice as fast where the hardware has it (CPUs with AVX512-BF16 or AMX, GPUs "
        "from compute capability 8.0); auto (default): bfloat16 there, float32 elsewhere "
        "(docs/benchmarks.md has its effect on the results)",
    )
    p.add_argument(
        "--adapt",
        nargs="?",
        const="",
        default=None,
        metavar="KEY=VALUE,...",
        help="adapt the prior to each slice before drawing (LoRA adapters fitted to part of "
        "the measured k-space, stopped by the held-out part; needs the hold-out check and a "
        "learned prior; adds about a minute per 256x256 slice on 2 CPU cores). Optional "
        "settings: rank, levels, steps, lr, sigma_max_data, sigma_min_data, tv, patience, "
        "scope (slice, or volume: adapt once per file, on its middle slice, for all its "
        "slices) (docs/priors.md)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampler seed: same seed, same numbers")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="noise levels of the sampler's schedule, replacing the preset's (daps-mri: 30 "
        "levels, daps-fast: 15, daps-mri-100: 100; each one denoiser call and an exact "
        "data-consistency draw, solved row by row for column masks, by up to 50 "
        "conjugate-gradient iterations for 2-D masks); fewer is faster and less accurate "
        "(default: the preset's)",
    )
    p.add_argument(
        "--noise-std",
        type=float,
        default=None,
        help="k-space noise std per real component (default: estimated)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="draws computed together: more is faster on a GPU and needs more memory; the "
        "draws' random numbers do not depend on it (default: up to 16, halved on CUDA "
        "out-of-memory)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help="refuse k-space slices holding more values (coils x H x W) than this, before "
        "reading them (default: 64 coils of 1024 x 1024)",
    )
    p.add_argument(
        "--no-crop-readout",
        action="store_true",
        help="keep a 2x oversampled readout instead of cropping to the recon size",
    )
    p.add_argument(
        "--finish",
        choices=list(FINISHES),
        default="auto",
        help="auto: a posterior that predicts held-out k-space clearly worse than a self-tuned "
        "L1-wavelet image is replaced by the hybrid finish (warned); holdout: the hold-out "
        "always chooses raw or hybrid; raw: the raw posterior (still checked)",
    )
    p.add_argument(
        "--coil-maps",
        choices=list(COIL_MAPS),
        default="auto",
        help="how coil maps are estimated when --maps is not given: auto: one-set ESPIRiT, "
        "its two-set variant and NLINV's joint fit each get a short posterior run on the fit "
        "samples, and the clearly better predictor of the held-out k-space replaces the L1 "
        "image's choice (ESPIRiT without a hold-out); espirit: ESPIRiT's variants only "
        "(chosen on an L1 image); nlinv: NLINV's only",
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=DEFAULT_FRACTION,
        help="share of the measured lines outside the ACS held out to check each slice",
    )
    p.add_argument("--no-holdout", action="store_true", help="skip the hold-out check")


def _job_settings(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """ReconstructionJob keywords (all but the input) from the shared options."""
    from diffrecon.adapt import AdaptSettings
    from diffrecon.jobs import ADAPTED
    from diffrecon.mri.masks import MaskSpec
    from diffrecon.priors.checkpoints import parse_options

    prior, others = args.prior, ()
    if args.priors is not None:
        names = [n.strip() for n in args.priors.split(",") if n.strip()]
        if len(names) < 2:
            raise BadInput(f"--priors needs two priors or more, got {args.priors!r}")
        if names[0] == ADAPTED:
            raise BadInput("--priors: the first is the main prior; 'adapted' is it adapted")
        if args.prior != PRIOR_DEFAULT and args.prior != names[0]:
            raise BadInput(
                f"--prior {args.prior} and --priors {args.priors}: give the priors once "
                "(the first of --priors is the main one)"
            )
        prior, others = names[0], tuple(names[1:])
        if ADAPTED in others and args.adapt is None:
            args.adapt = ""
    return dict(
        prior=prior,
        spread_priors=others,
        prior_format=args.prior_format,
        prior_options=parse_options(args.prior_option),
        sampler=args.sampler,
        steps=args.steps,
        slices=args.slices,
        mask=MaskSpec(args.accel, args.center_fraction, args.mask_type),
        draws=args.draws,
        seed=args.seed,
        noise_std=args.noise_std,
        device=args.device,
        batch_size=args.batch_size,
        crop_readout=not args.no_crop_readout,
        holdout=not args.no_holdout,
        holdout_fraction=args.holdout_fraction,
        finish=args.finish,
        coil_maps=args.coil_maps,
        precision=args.precision,
        adapt=None if args.adapt is None else AdaptSettings.parse(args.adapt),
        max_pixels=args.max_pixels,
        command="diffrecon " + " ".join(map(shlex.quote, sys.argv[1:])),
        **extra,
    )


class BadInput(ValueError):
    """Reported as one line with exit code 2."""


def _output_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The reconstruct command's output keywords for a job: quantiles, kept draws, the
    interval level and its calibration (the job applies the interval rule), user maps."""
    from diffrecon.calibration_run import read_calibration

    try:
        levels = tuple(float(q) for q in args.quantiles.split(",")) if args.quantiles else ()
    except ValueError as err:
        raise BadInput(f"--quantiles must be numbers like 0.05,0.95, got {args.quantiles}") from err
    calibration = None if args.calibration is None else read_calibration(args.calibration)
    return dict(
        quantile_levels=levels,
        keep_draws=args.save_draws,
        interval_level=args.interval_level,
        calibration=calibration,
        maps=args.maps,
    )


def _gpu_ids(spec: str | None) -> list[str]:
    """``--gpus 0,1`` or ``all`` (every CUDA device here) as GPU ids; refused without CUDA."""
    if not spec:
        return []
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise BadInput("--gpus: no CUDA device here (use --workers for CPU workers)")
    ids = [str(i) for i in range(count)] if spec == "all" else spec.split(",")
    bad = [g for g in ids if not g.strip().isdigit() or int(g) >= count]
    if bad:
        raise BadInput(f"--gpus: {bad} are not among this machine's GPUs 0..{count - 1}")
    return [g.strip() for g in ids]


RESIDUAL_OK = (0.5, 1.5)  # a posterior mean's data residual outside this is warned about


def _check_cluster_args(args: argparse.Namespace) -> None:
    """``--workers`` and ``--scheduler`` (reconstruct, calibrate): N >= 1, not both."""
    if args.workers is not None and args.workers < 1:
        raise BadInput(f"--workers must be >= 1, got {args.workers}")
    if args.workers and args.scheduler:
        raise BadInput("use --workers (a local cluster) or --scheduler (a running one), not both")


def _scheduler_client(args: argparse.Namespace) -> Any:
    """A Dask client of the running scheduler ``--scheduler`` names, or None."""
    if not args.scheduler:
        return None
    from dask.distributed import Client

    return Client(args.scheduler)


def _step_bar(bars: dict[str, Any], quiet: bool) -> Callable[[Any], None]:
    """The sampler's step callback: a bar of the current slice's steps in ``bars["steps"]``,
    started afresh at each slice's first step (none when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    def step(state: Any) -> None:
        bar = bars.get("steps")
        if bar is None or state.i == 0:
            if bar is not None:
                bar.close()
            bar = bars["steps"] = tqdm(unit="step", leave=False, disable=True if quiet else None)
        bar.total = state.n
        bar.update(1)

    return step


def _reconstruct(args: argparse.Namespace) -> int:
    """Reconstruct files, folders or lists: always :func:`diffrecon.batch.reconstruct_files`
    (in this process unless a cluster is asked for); exit 1 if any input failed."""
    from tqdm.auto import tqdm

    from diffrecon.batch import reconstruct_files

    _check_cluster_args(args)
    gpus = _gpu_ids(args.gpus)
    if gpus and (args.workers or args.scheduler):
        raise BadInput("--gpus starts one worker per GPU: not with --workers or --scheduler")
    settings = _job_settings(args, **_output_settings(args))  # --gpus: batch sets cuda
    check_writable_folder(args.out)
    warning = mri_warning(args.sampler)
    client = _scheduler_client(args)
    bars: dict[str, Any] = {}
    far: dict[str, list[int]] = {}
    checks: dict[str, list[Any]] = {}

    def start(n: int, dashboard: str | None) -> None:
        if warning is not None:
            print(_term(f"diffrecon: warning: {warning}"), file=sys.stderr)
        if dashboard and not args.quiet:
            print(f"Dask dashboard: {dashboard}", flush=True)
        # disable=None: no bar when stderr is not a terminal (a redirected log gets no \r)
        bars["slices"] = tqdm(total=n, unit="slice", disable=True if args.quiet else None)

    step = _step_bar(bars, args.quiet)

    def done(name: str, idx: int, figures: Any, error: str | None) -> None:
        if error is not None:
            print(_term(f"diffrecon: {name} slice {idx} failed: {error}"), file=sys.stderr)
        fit = (figures or {}).get("data_residual")
        if fit is not None and not RESIDUAL_OK[0] <= fit <= RESIDUAL_OK[1]:
            far.setdefault(name, []).append(idx)
        check = (figures or {}).get("holdout")
        if check is not None and check.guard:
            checks.setdefault(name, []).append((idx, check))
        for key in ("steps", "slices"):
            if key == "steps" and key in bars:
                bars.pop(key).close()
            elif key in bars:
                bars[key].update(1)

    try:
        rows = reconstruct_files(
            args.inputs,
            args.out,
            client=client,
            workers=args.workers,
            gpus=gpus,
            resume=args.resume,
            overwrite=args.overwrite,
            retries=args.retries,
            on_start=start,
            on_slice=done,
            on_step=None if args.quiet else step,
            nifti=args.format == "nifti",
            also_read=[p for p in (args.maps, args.calibration) if p is not None],
            **settings,
        )
    finally:
        for bar in bars.values():
            bar.close()
        if client is not None:
            client.close()
    bad = 0
    for row in rows:
        name = Path(row["input"]).name
        if row["status"] == "done":
            print(_term(_summary_line(name, row)))
        elif row["status"] == "skipped (done)":
            print(_term(f"{name}: {row['status']}"))
        else:
            bad += 1
            print(_term(f"diffrecon: {name}: {row['status']}: {row['error']}"), file=sys.stderr)
        for idx, check in checks.get(name, []):
            print(
                _term(f"diffrecon: warning: {name} slice {idx}: {check.warning()}"), file=sys.stderr
            )
        if far.get(name):
            print(
                _term(
                    f"diffrecon: warning: {name} slices {sorted(far[name])}: the posterior "
                    "mean's data residual is far from the noise level (check the noise "
                    "estimate, --noise-std, coil maps)"
                ),
                file=sys.stderr,
            )
    print(
        _term(
            f"{len(rows) - bad} of {len(rows)} inputs done; manifest: {args.out / 'manifest.csv'}"
        )
    )
    return 1 if bad else 0


def _summary_line(name: str, row: dict[str, Any]) -> str:
    """One finished input: slices, time, fastMRI evaluate.py's per-volume figures over the
    slices reconstructed (and zero-filled's), the median data residual, the output."""
    msg = f"{name}: {row['slices']} slice(s) in {row.get('seconds', 0.0):.1f} s"
    if row.get("psnr") is not None:
        msg += f", volume PSNR {row['psnr']:.2f} dB SSIM {row['ssim']:.4f} NMSE {row['nmse']:.4f}"
        if row.get("psnr_zero_filled") is not None:
            zf = f"{row['psnr_zero_filled']:.2f} dB / {row['ssim_zero_filled']:.4f}"
            msg += f" (zero-filled {zf})"
    if row.get("data_residual") is not None:
        msg += f", data residual {row['data_residual']:.2f} (1: fits to the noise)"
    if row.get("holdout_score_posterior") is not None:
        msg += (
            f", hold-out {row['holdout_score_posterior']:.2f} vs self-tuned L1 "
            f"{row['holdout_score_l1']:.2f}"
        )
    return f"{msg} -> {row['output']}"


# calibrate warns when the fitted scale is this large or the std tracks the error this little
SCALE_WARN = 10.0
CORRELATION_WARN = 0.1


def _calibrate(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from diffrecon.calibration_run import calibrate_files, diagram_path, write_calibration
    from diffrecon.jobs import ReconstructionJob

    outputs = [args.out, diagram_path(args.out)]  # the diagram is written too: checked alike
    refuse_overwriting_inputs(outputs, [*args.inputs, getattr(args, "maps", None)])
    check_writable_folder(args.out.parent)
    for out in outputs:
        if out.exists() and not args.overwrite:
            raise BadInput(f"{out} exists: pass --overwrite to replace it")
    if not 0 < args.level < 1:
        raise BadInput(f"--level must lie in (0, 1), got {args.level}")
    _check_cluster_args(args)
    settings = _job_settings(args)
    jobs = [ReconstructionJob(path, **settings) for path in args.inputs]
    bars: dict[str, Any] = {}
    # disable=None: no bar when stderr is not a terminal; the per-slice lines go to the log
    total = sum(len(job.slice_indices) for job in jobs)
    bars["slices"] = tqdm(total=total, unit="slice", disable=True if args.quiet else None)

    def report(name: str, idx: int, secs: float | None) -> None:
        if "steps" in bars:
            bars.pop("steps").close()
        if not args.quiet:
            took = "" if secs is None else f": {secs:.1f} s"
            tqdm.write(_term(f"{name} slice {idx}{took}"))
        bars["slices"].update(1)

    try:
        if args.workers or args.scheduler:
            cal = _calibrate_on_dask(args, jobs, settings, report)
        else:
            step = _step_bar(bars, args.quiet)
            cal = calibrate_files(
                jobs, level=args.level, on_slice=report, score=args.score, on_step=step
            )
    finally:
        for bar in bars.values():
            bar.close()
    out = write_calibration(args.out, cal, overwrite=args.overwrite)
    rep = cal.report
    fg = rep["gaussian"]["foreground"]
    corr = rep["std_error_correlation"]["foreground"]
    if cal.lam > SCALE_WARN or corr < CORRELATION_WARN:
        print(
            f"diffrecon: warning: the intervals needed scaling by {cal.lam:.3g} and the std "
            f"tracks the error with correlation {corr:.2f}: they hold their level on "
            "average, but the std says little about where the errors are (more draws, "
            "another prior?)",
            file=sys.stderr,
        )
    print(
        f"{cal.slices} slices, {cal.pixels} foreground pixels in {rep['seconds']:.0f} s: "
        f"uncalibrated mean+-z std covers {fg[str(args.level)]:.1%} at {args.level:.0%} "
        f"(std-error correlation {rep['std_error_correlation']['foreground']:.2f}); "
        f"lambda {cal.lam:.3g} covers {rep['calibrated_foreground_coverage_mean']:.1%} on "
        f"the calibration slices -> {out} and {diagram_path(out)}"
    )


def _calibrate_on_dask(
    args: argparse.Namespace,
    jobs: list[Any],
    settings: dict[str, Any],
    report: Callable[[str, int, float | None], None],
) -> Any:
    """``calibrate --workers/--scheduler``: the calibration slices reconstructed by the
    batch path (the jobs' settings, the calibration's quantiles) into a scratch folder
    beside ``-o``, removed afterwards, then the same fit as in process."""
    import shutil
    import tempfile
    import time

    from diffrecon.batch import reconstruct_files
    from diffrecon.calibration_run import QUANTILES, calibrate_results, prepare_jobs

    jobs = prepare_jobs(jobs, args.score)  # every check before a worker starts
    client = _scheduler_client(args)
    scratch = Path(tempfile.mkdtemp(prefix=f".{args.out.name}-slices-", dir=args.out.parent))
    try:
        t0 = time.perf_counter()
        rows = reconstruct_files(
            [job.input.path for job in jobs],
            scratch,
            client=client,
            workers=args.workers,
            on_slice=lambda name, idx, _figures, _error: report(name, idx, None),
            **{**settings, "quantile_levels": QUANTILES, "interval_level": None},
        )
        failed = [r for r in rows if r["status"] != "done"]
        if failed:
            name, why = Path(failed[0]["input"]).name, failed[0].get("error")
            raise ValueError(f"{name}: {failed[0]['status']}: {why}; nothing was fitted")
        outputs = {Path(r["input"]).resolve(): Path(r["output"]) for r in rows}
        results = [outputs[Path(job.input.path).resolve()] for job in jobs]
        return calibrate_results(
            jobs, results, args.level, args.score, seconds=time.perf_counter() - t0
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if client is not None:
            client.close()


def _info(args: argparse.Namespace) -> None:
    from diffrecon.io.fastmri import describe

    print("\n".join(describe(args.file)))


def _evaluate(args: argparse.Namespace) -> None:
    from diffrecon.evaluation import evaluate_folder, summary_line, write_scores_csv

    if args.csv is not None:  # before any work
        # the folders and every file in them: --csv must not replace a target or a result
        inputs = [args.targets, args.predictions]
        inputs += [f for d in inputs if Path(d).is_dir() for f in Path(d).iterdir()]
        refuse_overwriting_inputs([args.csv], inputs)
    scores, summary = evaluate_folder(
        args.targets, args.predictions, args.challenge, args.acquisition
    )
    for s in scores:
        print(
            f"{s.name}: {s.slices} slice(s), NMSE {s.nmse:.4g} PSNR {s.psnr:.4g} SSIM {s.ssim:.4g}"
        )
    print(f"{len(scores)} volume(s): {summary_line(summary)}")
    unscored = sorted(
        t.name for t in Path(args.targets).glob("*.h5") if not (args.predictions / t.name).exists()
    )
    if unscored:  # evaluate.py would stop at them; say which were left out
        shown = ", ".join(unscored[:5]) + (" ..." if len(unscored) > 5 else "")
        print(
            _term(f"diffrecon: note: {len(unscored)} target(s) have no result: {shown}"),
            file=sys.stderr,
        )
    if args.csv is not None:
        write_scores_csv(args.csv, scores)


def _export(args: argparse.Namespace) -> None:
    """``export-dicom`` and ``export-nifti``: the result, the output folder and a reference
    DICOM are checked before anything is written."""
    if not args.result.exists():
        raise BadInput(f"{args.result}: no such file")
    check_writable_folder(args.out)
    if args.reference is not None:
        import pydicom

        try:
            pydicom.dcmread(str(args.reference), stop_before_pixels=True)
        except Exception as err:  # any reason it cannot be read is bad input
            raise BadInput(f"--reference {args.reference}: not a readable DICOM file") from err
    if args.command == "export-nifti":
        from diffrecon.io.nifti import export_nifti

        files = export_nifti(args.result, args.out, args.reference, overwrite=args.overwrite)
        print(f"wrote {len(files)} NIfTI files under {args.out}")
        return
    from diffrecon.io.dicom import export_dicom

    files = export_dicom(
        args.result,
        args.out,
        reference=args.reference,
        include_draws=args.draws,
        overwrite=args.overwrite,
        parametric_maps=args.parametric_maps,
    )
    print(f"wrote {len(files)} DICOM files under {args.out}")


def _train_prior(args: argparse.Namespace) -> None:
    from diffrecon.training_run import train_from_options

    options = {k: v for k, v in vars(args).items() if k not in ("command", "out", "quiet")}
    command = "diffrecon " + " ".join(map(shlex.quote, sys.argv[1:]))
    summary = train_from_options(args.out, command=command, progress=not args.quiet, **options)
    print(
        f"trained {summary['steps']} steps, loss {summary['loss']:.4f}, "
        f"{summary['seconds'] / 60:.1f} min -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from diffrecon.io.fastmri import FastMRIError
    from diffrecon.priors import PriorLoadError

    try:
        if args.command == "reconstruct":
            return _reconstruct(args)
        elif args.command == "calibrate":
            _calibrate(args)
        elif args.command == "info":
            _info(args)
        elif args.command in ("export-dicom", "export-nifti"):
            _export(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "demo":
            from diffrecon.demo import run_demo

            run_demo(args.out, draws=args.draws, steps=args.steps, quiet=args.quiet)
        elif args.command == "train-prior":
            _train_prior(args)
        return 0
    except (BadInput, FastMRIError, PriorLoadError, ValueError) as err:
        print(_term(f"diffrecon: error: {err}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        manifest = getattr(stop, "manifest", None)  # a batch's: written before it stopped
        more = "" if manifest is None else f"; manifest: {manifest} (--resume continues)"
        print(_term(f"diffrecon: interrupted{more}"), file=sys.stderr)
        return 130
    except Exception as err:  # a failure, not bad input: one line, exit 1
        print(_term(f"diffrecon: failed: {type(err).__name__}: {err}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
