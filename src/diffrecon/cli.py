"""The ``diffrecon`` command line. Exit codes: 0 success, 2 bad input, 1 failure.

Bad input (missing or non-HDF5 file, no ``kspace``, wrong rank, NaN k-space, unknown sampler,
impossible acceleration, an output that exists without ``--overwrite``) is reported in one
line before any work starts, and nothing is written.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffrecon.io.atomic import check_writable_folder, refuse_overwriting_inputs
from diffrecon.io.fastmri import MAX_PIXELS
from diffrecon.samplers.registry import MRI_DEFAULT, mri_warning, offered_for_mri


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


def _parser() -> argparse.ArgumentParser:
    from diffrecon._version import __version__

    p = argparse.ArgumentParser(prog="diffrecon", description=__doc__, formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"diffrecon {__version__}")
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
    rec.add_argument("--quiet", action="store_true", help="no progress bars or summary")
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
    cal.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    cal.add_argument("--overwrite", action="store_true", help="replace an existing file")
    cal.add_argument("--quiet", action="store_true", help="no progress bars")

    info = sub.add_parser("info", help="describe a fastMRI or result .h5 file")
    info.add_argument("file", type=Path)

    dcm = sub.add_parser("export-dicom", help="write a result file as DICOM series")
    dcm.add_argument("result", type=Path)
    dcm.add_argument("out", type=Path)
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
    ev.add_argument("--challenge", choices=["multicoil", "singlecoil"], default="multicoil")
    ev.add_argument("--acquisition", default=None, help="only volumes of this acquisition")
    ev.add_argument("--csv", type=Path, default=None, help="also write per-volume figures")

    nii = sub.add_parser("export-nifti", help="write a result file's maps as NIfTI volumes")
    nii.add_argument("result", type=Path)
    nii.add_argument("out", type=Path, help="output folder (<name>_<map>.nii.gz)")
    nii.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="DICOM file whose orientation and position place slice 0",
    )
    nii.add_argument("--overwrite", action="store_true", help="replace existing files")

    demo = sub.add_parser("demo", help="reconstruct a simulated brain slice with the default prior")
    demo.add_argument("-o", "--out", type=Path, default=Path("out/demo"))
    demo.add_argument("--draws", type=int, default=4)
    demo.add_argument("--steps", type=int, default=None)
    demo.add_argument("--quiet", action="store_true")

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


def _shipped_priors() -> list[str]:
    """The bundles inside the package, listed without importing torch (for --help)."""
    shipped = Path(__file__).parent / "priors" / "shipped"
    return sorted(d.name for d in shipped.iterdir() if (d / "config.json").exists())


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
        choices=["auto", "random", "equispaced", "file"],
        default="auto",
        help="auto (default): the file's own sampling when it is already undersampled (its "
        "mask dataset or its empty columns), else a fastMRI random mask seeded by the file "
        "name; random/equispaced: always retrospective; file: the file's mask dataset",
    )
    p.add_argument("--slices", default=None, help="e.g. 10:14 or 3,5 (default: all)")
    p.add_argument(
        "--prior",
        default="brain-mri-default",
        help=f"a shipped prior's name ({', '.join(_shipped_priors())}), a bundle or diffusers "
        "folder, or a checkpoint file "
        "(.pt/.pth/.safetensors; EDM/InverseBench, guided-diffusion ADM or score_sde NCSN++) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--prior-format",
        default="auto",
        choices=["auto", "bundle", "edm", "adm", "ncsnpp", "monai", "diffusers"],
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
    p.add_argument("--seed", type=int, default=0, help="sampler seed: same seed, same numbers")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="noise levels of the sampler's schedule, replacing the preset's (daps-mri: 50 "
        "levels, each 2 denoiser calls and 50 data-consistency steps); fewer is faster and "
        "less accurate (default: the preset's)",
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


def _job(path: Path, args: argparse.Namespace, **extra: Any) -> Any:
    """The job the shared options describe for one input."""
    from diffrecon.jobs import ReconstructionJob

    return ReconstructionJob(path, **_job_settings(args, **extra))


def _job_settings(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """ReconstructionJob keywords (all but the input) from the shared options."""
    from diffrecon.mri.masks import MaskSpec
    from diffrecon.priors.checkpoints import parse_options

    return dict(
        prior=args.prior,
        prior_format=args.prior_format,
        prior_options=parse_options(args.prior_option),
        sampler=args.sampler,
        overrides={} if args.steps is None else {"steps": args.steps},
        slices=args.slices,
        mask=MaskSpec(args.accel, args.center_fraction, args.mask_type),
        draws=args.draws,
        seed=args.seed,
        noise_std=args.noise_std,
        device=args.device,
        batch_size=args.batch_size,
        crop_readout=not args.no_crop_readout,
        max_pixels=args.max_pixels,
        command="diffrecon " + " ".join(map(shlex.quote, sys.argv[1:])),
        **extra,
    )


class BadInput(ValueError):
    """Reported as one line with exit code 2."""


def _output_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The reconstruct command's output keywords for a job: quantiles, kept draws, the
    interval level and its calibration, user maps (checked here, one spelling)."""
    from diffrecon.calibration_run import read_calibration

    try:
        levels = tuple(float(q) for q in args.quantiles.split(",")) if args.quantiles else ()
    except ValueError as err:
        raise BadInput(f"--quantiles must be numbers like 0.05,0.95, got {args.quantiles}") from err
    calibration = None if args.calibration is None else read_calibration(args.calibration)
    level = args.interval_level
    if calibration is not None:
        if level != 0.9 and level != calibration.level:
            raise BadInput(
                f"--interval-level {level} differs from the calibration's {calibration.level}"
            )
        level = calibration.level
    return dict(
        quantile_levels=levels,
        keep_draws=args.save_draws,
        interval_level=level if args.draws >= 2 else None,
        calibration=calibration,
        maps=args.maps,
    )


def _jobs(args: argparse.Namespace) -> list[Any]:
    """One validated job per input, sharing one loaded prior; nothing runs or is written
    before every input has passed."""
    from diffrecon.priors import open_prior
    from diffrecon.priors.checkpoints import parse_options

    extra = _output_settings(args)
    check_writable_folder(args.out)
    jobs, seen = [], set()
    for path in args.inputs:
        out = args.out / path.name
        refuse_overwriting_inputs([args.out, out], [*args.inputs, args.maps, args.calibration])
        if out in seen:
            raise BadInput(f"two inputs named {path.name} would write the same output")
        seen.add(out)
        job = _job(path, args, **extra)
        job.check_settings()
        if out.exists() and not args.overwrite:
            raise BadInput(f"{out} exists: pass --overwrite to replace it")
        if getattr(args, "format", "h5") == "nifti" and not args.overwrite:
            nii = args.out / f"{out.stem}_mean.nii.gz"
            if nii.exists():
                raise BadInput(f"{nii} exists: pass --overwrite to replace it")
        job.check_input()
        jobs.append(job)
    prior = open_prior(
        args.prior, args.prior_format, device=args.device, **parse_options(args.prior_option)
    )
    for job in jobs:
        job.prior = prior
        job.check_calibration()
    return jobs


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


def _batch_mode(args: argparse.Namespace) -> bool:
    """Several inputs, folders, list files, a cluster or --resume: the batch path."""
    return bool(
        args.workers
        or args.gpus
        or args.scheduler
        or args.resume
        or len(args.inputs) > 1
        or any(p.is_dir() or p.suffix == ".txt" for p in args.inputs)
    )


def _reconstruct_batch(args: argparse.Namespace) -> int:
    """Reconstruct many files, one task per slice (diffrecon.batch); exit 1 if any failed."""
    from tqdm.auto import tqdm

    from diffrecon.batch import reconstruct_files

    if args.workers is not None and args.workers < 1:
        raise BadInput(f"--workers must be >= 1, got {args.workers}")
    if args.workers and args.scheduler:
        raise BadInput("use --workers (a local cluster) or --scheduler (a running one), not both")
    gpus = _gpu_ids(args.gpus)
    if gpus and (args.workers or args.scheduler):
        raise BadInput("--gpus starts one worker per GPU: not with --workers or --scheduler")
    settings = _job_settings(args, **_output_settings(args))  # --gpus: batch sets cuda
    check_writable_folder(args.out)
    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
    bar = None

    def start(n: int, dashboard: str | None) -> None:
        nonlocal bar
        if dashboard and not args.quiet:
            print(f"Dask dashboard: {dashboard}", flush=True)
        bar = tqdm(total=n, unit="slice", disable=args.quiet)

    def done(name: str, idx: int, figures: Any, error: str | None) -> None:
        if error is not None:
            print(f"diffrecon: {name} slice {idx} failed: {error}", file=sys.stderr)
        if bar is not None:
            bar.update(1)

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
            **settings,
        )
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
    bad = 0
    for row in rows:
        name = Path(row["input"]).name
        if row["status"] in ("done", "skipped (done)"):
            extra = f", PSNR {row['psnr']:.2f} dB" if row.get("psnr") is not None else ""
            print(f"{name}: {row['status']}{extra}")
            if args.format == "nifti" and row["status"] == "done":
                from diffrecon.io.nifti import export_nifti

                export_nifti(row["output"], args.out, overwrite=True)
        else:
            bad += 1
            print(f"diffrecon: {name}: {row['status']}: {row['error']}", file=sys.stderr)
    print(f"{len(rows) - bad} of {len(rows)} inputs done; manifest: {args.out / 'manifest.csv'}")
    return 1 if bad else 0


def _reconstruct(args: argparse.Namespace) -> int | None:
    from tqdm.auto import tqdm

    if _batch_mode(args):
        return _reconstruct_batch(args)

    from diffrecon.io.results import write_results

    jobs = _jobs(args)
    warning = mri_warning(args.sampler)
    if warning is not None:
        print(f"diffrecon: warning: {warning}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        t0 = time.perf_counter()
        results = []
        name = job.input.path.name
        for idx in tqdm(job.slice_indices, desc=name, unit="slice", disable=args.quiet):
            steps_bar = tqdm(desc=f"slice {idx}", unit="step", leave=False, disable=args.quiet)

            def tick(state, steps_bar=steps_bar):
                steps_bar.total = state.n
                steps_bar.update(1)

            results.append(job.run_slice(idx, on_step=tick))
            steps_bar.close()
        volume = job.volume(results)
        out = write_results(args.out / name, volume, overwrite=args.overwrite)
        if args.format == "nifti":
            from diffrecon.io.nifti import export_nifti

            export_nifti(out, args.out, overwrite=args.overwrite)
        msg = f"{name}: {len(results)} slice(s) in {time.perf_counter() - t0:.1f} s"
        zf = [r.zero_filled for r in results]
        m = job.volume_metrics(
            job.slice_indices,
            np.stack([r.mean for r in results]),
            None if any(z is None for z in zf) else np.stack(zf),
        )
        if m:  # fastMRI evaluate.py's per-volume figures, over the slices reconstructed
            msg += f", volume PSNR {m['psnr']:.2f} dB SSIM {m['ssim']:.4f} NMSE {m['nmse']:.4f}"
            if "psnr_zero_filled" in m:
                msg += (
                    f" (zero-filled {m['psnr_zero_filled']:.2f} dB / {m['ssim_zero_filled']:.4f})"
                )
        fits = [r.provenance.data_residual for r in results]
        fits = [f for f in fits if f is not None]
        if fits:
            msg += f", data residual {np.median(fits):.2f} (1: fits to the noise)"
        print(f"{msg} -> {out}")
        bad = [
            i
            for i, r in zip(job.slice_indices, results, strict=True)
            if r.provenance.data_residual is not None
            and not 0.5 <= r.provenance.data_residual <= 1.5
        ]
        if bad:
            print(
                f"diffrecon: warning: {name} slices {bad}: the posterior mean's data residual is "
                "far from the noise level (check the noise estimate, --noise-std, coil maps)",
                file=sys.stderr,
            )


def _calibrate(args: argparse.Namespace) -> None:
    from diffrecon.calibration_run import calibrate_files, write_calibration

    refuse_overwriting_inputs([args.out], [*args.inputs, getattr(args, "maps", None)])
    check_writable_folder(args.out.parent)
    if args.out.exists() and not args.overwrite:
        raise BadInput(f"{args.out} exists: pass --overwrite to replace it")
    if not 0 < args.level < 1:
        raise BadInput(f"--level must lie in (0, 1), got {args.level}")
    jobs = [_job(path, args) for path in args.inputs]

    def report(name: str, idx: int, secs: float) -> None:
        if not args.quiet:
            print(f"{name} slice {idx}: {secs:.1f} s", flush=True)

    cal = calibrate_files(jobs, level=args.level, on_slice=report)
    out = write_calibration(args.out, cal, overwrite=args.overwrite)
    rep = cal.report
    fg = rep["gaussian"]["foreground"]
    print(
        f"{cal.slices} slices, {cal.pixels} foreground pixels in {rep['seconds']:.0f} s: "
        f"uncalibrated mean+-z std covers {fg[str(args.level)]:.1%} at {args.level:.0%} "
        f"(std-error correlation {rep['std_error_correlation']['foreground']:.2f}); "
        f"lambda {cal.lam:.3g} covers {rep['calibrated_foreground_coverage_mean']:.1%} on "
        f"the calibration slices -> {out} and {out.with_suffix('.png')}"
    )


def _info(args: argparse.Namespace) -> None:
    import h5py

    from diffrecon.io.fastmri import FastMRIError, open_fastmri

    p = args.file
    if not p.exists():
        raise BadInput(f"{p}: no such file")
    if not h5py.is_hdf5(p):
        raise BadInput(f"{p}: not an HDF5 file")
    with h5py.File(p, "r") as f:
        print(f"{p}")
        for name in f:
            link = f.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):  # listed, never followed
                print(f"  {name:<22} external link to {link.filename}:{link.path}")
                continue
            obj = f[name]
            if isinstance(obj, h5py.Dataset):
                print(f"  {name:<22} {str(obj.shape):<22} {obj.dtype}")
            else:
                print(f"  {name:<22} group")
        for k, v in f.attrs.items():
            print(f"  @{k} = {v!r}"[:200])
        has_kspace = "kspace" in f
    try:
        fm = open_fastmri(p)
    except FastMRIError as err:
        if has_kspace:  # meant as k-space, but unusable: say why
            raise BadInput(str(err)) from err
        print("  not a fastMRI k-space file (no 'kspace' dataset)")
        return
    kind = "multicoil" if fm.multicoil else "single-coil"
    print(
        f"  fastMRI {kind}: {fm.num_slices} slices, k-space {fm.shape[-2:]}, "
        f"output size {fm.recon_size}"
    )
    if fm.header is not None:
        print(
            f"  header: encoded {fm.header.encoded_size}, recon {fm.header.recon_size}, "
            f"acquired columns [{fm.header.padding[0]}, {fm.header.padding[1]})"
        )


def _evaluate(args: argparse.Namespace) -> None:
    import csv

    from diffrecon.evaluation import evaluate_folder, summary_line

    scores, summary = evaluate_folder(
        args.targets, args.predictions, args.challenge, args.acquisition
    )
    for s in scores:
        print(
            f"{s.name}: {s.slices} slice(s), NMSE {s.nmse:.4g} PSNR {s.psnr:.4g} SSIM {s.ssim:.4g}"
        )
    print(f"{len(scores)} volume(s): {summary_line(summary)}")
    if args.csv is not None:
        from diffrecon.io.atomic import atomic_file

        refuse_overwriting_inputs([args.csv], [args.targets, args.predictions])
        with atomic_file(args.csv, overwrite=True) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "slices", "nmse", "psnr", "ssim", "acquisition"])
            for s in scores:
                w.writerow([s.name, s.slices, s.nmse, s.psnr, s.ssim, s.acquisition or ""])


def _export_nifti(args: argparse.Namespace) -> None:
    from diffrecon.io.nifti import export_nifti

    if not args.result.exists():
        raise BadInput(f"{args.result}: no such file")
    check_writable_folder(args.out)
    _check_reference(args.reference)
    files = export_nifti(args.result, args.out, args.reference, overwrite=args.overwrite)
    print(f"wrote {len(files)} NIfTI files under {args.out}")


def _check_reference(reference: Path | None) -> None:
    """A --reference must be a readable DICOM (checked before anything is written)."""
    if reference is not None:
        import pydicom

        try:
            pydicom.dcmread(str(reference), stop_before_pixels=True)
        except Exception as err:  # any reason it cannot be read is bad input
            raise BadInput(f"--reference {reference}: not a readable DICOM file") from err


def _export(args: argparse.Namespace) -> None:
    from diffrecon.io.dicom import export_dicom

    if not args.result.exists():
        raise BadInput(f"{args.result}: no such file")
    check_writable_folder(args.out)
    _check_reference(args.reference)
    files = export_dicom(
        args.result,
        args.out,
        reference=args.reference,
        include_draws=args.draws,
        overwrite=args.overwrite,
    )
    print(f"wrote {len(files)} DICOM files under {args.out}")


def _train_prior(args: argparse.Namespace) -> None:
    from diffrecon.priors.train import train_prior

    if args.data == "mni":
        from diffrecon.data.mni import HELDOUT_Z, PatchSampler

        source: Any = PatchSampler(size=args.patch, seed=args.seed)
        dataset = {
            "source": "MNI ICBM152 2009a sym (nilearn wheel), synthetic T1/T2/PD, "
            "smooth random phase",
            "held_out_axial_z": list(HELDOUT_Z),
        }
    elif args.data == "synth":
        from diffrecon.data.mni import HELDOUT_Z
        from diffrecon.data.synth import SynthPatchSampler

        if not 0.0 <= args.synth_fraction <= 1.0:
            raise ValueError(f"--synth-fraction must lie in [0, 1], got {args.synth_fraction}")
        source = SynthPatchSampler(
            size=args.patch, seed=args.seed, synth_fraction=args.synth_fraction
        )
        dataset = {
            "source": "MNI ICBM152 2009a sym (nilearn wheel): a fraction "
            f"{args.synth_fraction} domain-randomised from its tissue maps (SynthSeg recipe: "
            "random class intensities, affine and elastic warps, bias field, texture, blur, "
            "resolution loss), the rest synthetic T1/T2/PD; smooth random phase",
            "held_out_axial_z": list(HELDOUT_Z),
        }
    else:
        from diffrecon.data.slices import SlicePatchSampler

        source = SlicePatchSampler(args.data, size=args.patch, seed=args.seed)
        dataset = {"source": str(args.data)}
    channels = list(args.channels)
    arch = {
        "channels": channels,
        "attention_levels": [False] * len(channels),
        "norm_num_groups": math.gcd(32, *channels),
    }
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
        init=args.init,
        bundle_config={
            "name": args.name or args.out.name,
            "data": {
                "channels": 2,
                "complex": True,
                "range": "real/imag in about [-1, 1]",
                "scaling": "magnitude 99.5th percentile = 1",
                **dataset,
            },
            "training": {
                "command": "diffrecon " + " ".join(map(shlex.quote, sys.argv[1:])),
                "patch": args.patch,
                "batch": args.batch,
                "lr": args.lr,
                "ema": args.ema,
                "seed": args.seed,
                "device": args.device,
                "init": args.init,
            },
        },
    )
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
            return _reconstruct(args) or 0
        elif args.command == "calibrate":
            _calibrate(args)
        elif args.command == "info":
            _info(args)
        elif args.command == "export-dicom":
            _export(args)
        elif args.command == "export-nifti":
            _export_nifti(args)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "demo":
            from diffrecon.demo import run_demo

            run_demo(args.out, draws=args.draws, steps=args.steps, quiet=args.quiet)
        elif args.command == "train-prior":
            _train_prior(args)
        return 0
    except (BadInput, FastMRIError, PriorLoadError, ValueError) as err:
        print(f"diffrecon: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffrecon: interrupted", file=sys.stderr)
        return 1
    except Exception as err:  # a failure, not bad input: one line, exit 1
        print(f"diffrecon: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
