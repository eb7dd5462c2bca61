"""Real anatomy: diffrecon's posterior mean against classical reconstructions (issue 12).

Cases are real MR images that are available offline, re-simulated as multicoil k-space:
- ``brain-sigpy``: the shared real 8-coil brain scan (``shared/data/real``). Its SigPy
  L1-wavelet image (from the real undersampled data) is the truth, re-simulated fully sampled
  with the scan's own (uncropped) ESPIRiT maps and its own estimated noise level.
- ``brain-dipy``: a real T1 coronal brain slice shipped in the ``dipy`` wheel
  (``dipy/data/files/t1_coronal_slice.npy``, BSD-3-Clause), 256x256, skull-stripped.
- ``shoulder``: a real 1.5 T T1 spin-echo shoulder image shipped in ``pydicom-data``
  (``MR2_UNCR.dcm``, MIT), 1024x1024 averaged down to 256x256.
- ``abdomen``: a real contrast-enhanced abdominal MR image shipped in ``pydicom-data``
  (``MR-SIEMENS-DICOM-WithOverlays.dcm``, MIT), 484x484 resampled to 256x256.
- ``head-axial``, ``head-sagittal``: whole-head slices of the MNI T1 template (skull and
  scalp kept; the axial one from the slab the shipped prior never saw) cropped so the head
  fills the phase-encode field of view edge to edge, 192 columns: 8 ACS lines at 8x. Where
  objects fill the phase field of view, one set of ESPIRiT maps is wrong at the edges.
- ``brain-far-coils``: the dipy brain with 12 coils on a ring four times the field of view,
  so their maps are almost collinear (little parallel-imaging information).

The magnitude images get a smooth random phase and are multiplied by coil sets of 8 to 20
coils (birdcage rings with random radius, smooth random per-coil perturbations, normalised to
unit sum of squares), complex Gaussian noise is added, and the fastMRI target is the RSS of
the fully sampled noisy coil images. fastMRI random column masks: 4x (centre fraction 0.08)
and 8x (0.04).

Rows: zero-filled; SigPy L1-wavelet on the same ESPIRiT maps with lambda chosen on the truth
from a grid (an upper bound for what a tuned L1 gives: the truth is not known in practice);
BART ``ecalib`` + ``pics -l1`` with lambda chosen the same way (when ``bart`` is on PATH);
each sampler preset. PSNR/SSIM on the magnitude with ``data_range = truth.max()``; seconds
are wall time on this machine; NFE is denoiser evaluations per draw.

Every row is also scored against the noise-free object (``psnr_clean``, ``ssim_clean``; the
grids' ``oracle_clean_*``: the setting best on it), since the RSS target carries its one
noise realisation and a noise floor in the background; sampler rows also score ``|E x|``
(``*_abs_mean``) beside the default ``E |x|``, and ``coverage_clean`` their intervals.

Rows are cached in ``bench/results/real_anatomy.jsonl`` (delete it or pass ``--fresh`` to
redo), so an interrupted run resumes. Writes ``bench/results/real_anatomy.csv``, a PNG grid
per case in ``docs/img/real_anatomy_*.png`` and each row's image under
``bench/results/real_anatomy_images/`` (not committed; ``bench/truth_scores.py`` scores them
against the three truths).

Set-up: ``pip install -e ".[bench]"`` (dipy, pydicom-data) and, for the BART rows,
``apt-get install -y bart``. Run: ``python bench/real_anatomy.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_csv

from diffrecon import metrics
from diffrecon.adapt import AdaptSettings
from diffrecon.data.mni import smooth_phase
from diffrecon.jobs import ReconstructionJob
from diffrecon.mri.baseline import l1_wavelet_baseline
from diffrecon.mri.coils import espirit_maps
from diffrecon.mri.holdout import holdout_score, holdout_split
from diffrecon.mri.mapsets import choose_maps
from diffrecon.mri.masks import cartesian_mask
from diffrecon.mri.preprocess import estimate_noise_std, prepare_slice
from diffrecon.mri.sparsity import l1_wavelet_fista
from diffrecon.mri.transforms import rss
from diffrecon.mri.validation import L1_GRID
from diffrecon.operators.fft import fft2c, ifft2c
from diffrecon.operators.mri import MulticoilMRI
from diffrecon.priors import load

RESULTS = Path("bench/results")
IMG = Path("docs/img")
IMAGES = RESULTS / "real_anatomy_images"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
ACCELERATIONS = ((4, 0.08), (8, 0.04))
# order fixes each case's seed
CASES = (
    "brain-sigpy",
    "brain-dipy",
    "shoulder",
    "abdomen",
    "head-axial",
    "head-sagittal",
    "brain-far-coils",
)
HEAD_WIDTH = 192  # phase-encode columns of the whole-head cases: 8 ACS lines at 8x (0.04)
DEFAULT_PRESETS = ("daps-mri", "daps-fast", "pigdm-20", "zaps-20", "stsl-20")
L1_LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
BART_LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


# ----------------------------------------------------------------------------- sources
def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package!r} is missing: pip install -e '.[bench]'")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Area-averaged (anti-aliased) resampling to ``size x size``, square-cropped first."""
    from skimage.transform import resize

    h, w = img.shape
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return resize(img, (size, size), anti_aliasing=True, order=1)


def _dicom(name: str) -> np.ndarray:
    import pydicom

    return pydicom.dcmread(_package_file("data_store", "data", name)).pixel_array.astype(float)


def whole_head(orientation: str, index: int) -> np.ndarray:
    """A whole-head MNI T1 slice (skull and scalp kept) cropped so the head fills the
    phase-encode (last) axis edge to edge, resized to :data:`HEAD_WIDTH` columns."""
    from scipy.ndimage import zoom

    from diffrecon.data.mni import get_slice

    mag = get_slice("t1", orientation, index)
    cols = np.flatnonzero((mag > 0.05).any(0))
    rows = np.flatnonzero((mag > 0.05).any(1))
    mag = mag[max(rows[0] - 4, 0) : rows[-1] + 5, cols[0] : cols[-1] + 1]
    return zoom(mag, HEAD_WIDTH / mag.shape[1], order=1)


def magnitude_source(name: str) -> np.ndarray:
    if name in ("brain-dipy", "brain-far-coils"):
        img = np.load(_package_file("dipy", "data", "files", "t1_coronal_slice.npy"))
    elif name == "shoulder":
        img = _resize(_dicom("MR2_UNCR.dcm"), 256)
    elif name == "abdomen":
        img = _resize(_dicom("MR-SIEMENS-DICOM-WithOverlays.dcm"), 256)
    elif name == "head-axial":
        img = whole_head("axial", 104)  # in mni.HELDOUT_Z: never trained on
    elif name == "head-sagittal":
        img = whole_head("sagittal", 98)
    else:
        raise ValueError(name)
    img = np.clip(img, 0, None)
    return img / np.percentile(img, 99.5)


def coil_set(
    coils: int, shape: tuple[int, int], rng: np.random.Generator, radius: float | None = None
) -> np.ndarray:
    """Birdcage rings (two rings when more than 8 coils) with a random radius (or
    ``radius``), each coil multiplied by a smooth random complex perturbation; unit sum of
    squares per pixel."""
    import sigpy.mri

    per_ring = coils if coils <= 8 else coils // 2
    r = rng.uniform(1.1, 1.5) if radius is None else radius
    maps = sigpy.mri.birdcage_maps((coils, *shape), r=r, nzz=per_ring)
    for c in range(coils):
        amp = np.exp(0.3 * smooth_phase(shape, rng, strength=1.0))
        maps[c] *= amp * np.exp(1j * smooth_phase(shape, rng, strength=0.5))
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    return maps.astype(np.complex64)


def make_case(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fully sampled noisy k-space ``(C, H, W)``, its RSS target and what made them."""
    k, target, _, info = simulate_case(name, seed)
    return k, target, info


def simulate_case(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """:func:`make_case`'s k-space, RSS target and record, and the noise-free target: the
    RSS of the coil images before the noise was added (what every method estimates; the
    RSS of the noisy data, fastMRI's target, carries the noise of the one realisation and
    its floor in the background, so it rewards a reconstruction for keeping that noise)."""
    rng = np.random.default_rng(seed)
    if name == "brain-sigpy":
        ksp = np.load(SHARED / "sigpy_brain_8coil_cartesian_ksp.npy")
        mask2d = np.abs(ksp).sum(0) > 0
        maps_real = espirit_maps(ksp, calib_width=24, crop=0.95)
        from diffrecon.mri.baseline import l1_wavelet_recon

        x = l1_wavelet_recon(ksp, maps_real, lamda=0.005, max_iter=100).numpy()
        img = x[0] + 1j * x[1]
        maps = espirit_maps(ksp, calib_width=24, crop=0.0).numpy()
        sigma = estimate_noise_std(ksp, mask2d)
        info = {"source": "shared 8-coil brain scan, re-simulated", "coils": 8}
    else:
        mag = magnitude_source(name)
        img = mag * np.exp(1j * smooth_phase(mag.shape, rng))
        coils = {"shoulder": 16, "abdomen": 20}.get(name, 12)
        # far coils: a ring 4x the field of view, their maps almost collinear
        maps = coil_set(coils, mag.shape, rng, 4.0 if name == "brain-far-coils" else None)
        sigma = 0.01 * float(np.percentile(np.abs(img), 99.5))  # image-domain noise per coil
        info = {"source": name, "coils": coils}
    coil_imgs = torch.from_numpy((maps * img).astype(np.complex64))
    k = fft2c(coil_imgs).numpy()
    k = k + sigma * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape))
    k = k.astype(np.complex64)
    target = rss(ifft2c(torch.from_numpy(k))).numpy().astype(np.float64)
    clean = rss(coil_imgs).numpy().astype(np.float64)
    info["noise_std"] = float(sigma)
    return k, target, clean, info


# ----------------------------------------------------------------------------- methods
class CountingDenoiser:
    """Counts images denoised (batch items), forwarding everything else to the prior."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.images = 0

    def __call__(self, x, sigma):
        self.images += x.shape[0]
        return self.inner(x, sigma)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _score(target: np.ndarray, image: np.ndarray, clean: np.ndarray | None = None) -> dict:
    """PSNR / SSIM against the RSS target and, given ``clean``, against the noise-free one
    (``psnr_clean``, ``ssim_clean``; ``data_range`` each target's maximum)."""
    m = metrics.evaluate(target, image)
    out = {"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4)}
    if clean is not None:
        c = metrics.evaluate(clean, image)
        out |= {"psnr_clean": round(c["psnr"], 3), "ssim_clean": round(c["ssim"], 4)}
    return out


def _clean_oracle(scored: dict) -> dict:
    """Of ``{setting: score}``, the setting best on the noise-free target and its scores
    (``oracle_clean_*``): the oracle's upper bound when the truth is the object itself."""
    if not scored or "psnr_clean" not in next(iter(scored.values())):
        return {}
    key = max(scored, key=lambda k: scored[k]["psnr_clean"])
    return {
        "oracle_clean_setting": key,
        "oracle_clean_psnr": scored[key]["psnr_clean"],
        "oracle_clean_ssim": scored[key]["ssim_clean"],
    }


def l1_row(prepared, target, clean=None) -> tuple[dict, np.ndarray]:
    """SigPy L1-wavelet on our ESPIRiT maps, cropped as SigPy does (0.95) or not, lambda and
    crop both chosen on the truth (the RSS target; ``oracle_clean_*``: on the noise-free
    one)."""
    best, scored = None, {}
    t0 = time.perf_counter()
    for crop in (0.95, 0.0):
        for lam in L1_LAMBDAS:
            img = l1_wavelet_baseline(prepared, lamda=lam, max_iter=100, crop=crop)
            mag = np.hypot(img[0].numpy(), img[1].numpy())
            s = scored[f"lambda {lam:g}, crop {crop}"] = _score(target, mag, clean)
            if best is None or s["psnr"] > best[0]["psnr"]:
                best = (s | {"lambda": lam, "crop": crop}, mag)
    secs = (time.perf_counter() - t0) / (2 * len(L1_LAMBDAS))
    return best[0] | _clean_oracle(scored) | {"seconds": round(secs, 1)}, best[1]


def _write_cfl(path: Path, arr: np.ndarray) -> None:
    path.with_suffix(".hdr").write_text(
        "# Dimensions\n" + " ".join(str(d) for d in arr.shape) + "\n"
    )
    arr.astype(np.complex64).ravel(order="F").tofile(path.with_suffix(".cfl"))


def _read_cfl(path: Path) -> np.ndarray:
    dims = [int(d) for d in path.with_suffix(".hdr").read_text().splitlines()[1].split()]
    data = np.fromfile(path.with_suffix(".cfl"), dtype=np.complex64)
    return data.reshape(dims, order="F")


def bart_row(prepared, target, maps_ours, clean=None) -> tuple[dict, np.ndarray] | None:
    """BART ecalib maps + pics -l1 (lambda on the truth), and how its maps agree with ours."""
    if shutil.which("bart") is None:
        return None
    y = prepared.y[0].numpy()  # (C, H, W), scaled
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        _write_cfl(d / "ksp", np.transpose(y, (1, 2, 0))[:, :, None, :])
        best, scored = None, {}
        t0 = time.perf_counter()
        for crop in ("0.8", "0"):  # ecalib's default crop, and none
            subprocess.run(
                ["bart", "ecalib", "-m1", "-c", crop, str(d / "ksp"), str(d / "maps")],
                check=True,
                capture_output=True,
            )
            if crop == "0":
                maps = _read_cfl(d / "maps").reshape(*y.shape[-2:], y.shape[0], order="F")
            for lam in BART_LAMBDAS:
                subprocess.run(
                    [
                        "bart",
                        "pics",
                        "-S",
                        "-l1",
                        "-r",
                        str(lam),
                        "-i",
                        "100",
                        str(d / "ksp"),
                        str(d / "maps"),
                        str(d / "out"),
                    ],
                    check=True,
                    capture_output=True,
                )
                img = np.abs(_read_cfl(d / "out").reshape(y.shape[-2:])) * prepared.scale
                s = scored[f"lambda {lam:g}, crop {crop}"] = _score(target, img, clean)
                if best is None or s["psnr"] > best[0]["psnr"]:
                    best = (s | {"lambda": lam, "crop": float(crop)}, img)
        secs = (time.perf_counter() - t0) / (2 * len(BART_LAMBDAS))
    sb = np.transpose(maps, (2, 0, 1))
    support = np.sqrt((np.abs(sb) ** 2).sum(0)) > 0.5
    agree = np.abs((np.conj(sb) * maps_ours).sum(0))[support]
    return best[0] | _clean_oracle(scored) | {
        "seconds": round(secs, 1),
        "maps_vs_bart": round(float(agree.mean()), 4),
    }, best[1]


def _bart_pics(d: Path, prepared, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """BART ``ecalib -m1 -c 0`` maps and ``pics -l1`` image of ``prepared``'s data:
    ``(image (H, W), maps (C, H, W))``, both complex."""
    y = prepared.y[0].numpy()
    _write_cfl(d / "ksp", np.transpose(y, (1, 2, 0))[:, :, None, :])
    for cmd in (
        ["ecalib", "-m1", "-c", "0", "ksp", "maps"],
        ["pics", "-S", "-l1", "-r", str(lam), "-i", "100", "ksp", "maps", "out"],
    ):
        subprocess.run(["bart", *cmd], check=True, capture_output=True, cwd=d)
    maps = _read_cfl(d / "maps").reshape(*y.shape[-2:], y.shape[0], order="F")
    return _read_cfl(d / "out").reshape(y.shape[-2:]), np.transpose(maps, (2, 0, 1))


def bart_holdout_row(prepared, target, seed: int, clean=None) -> tuple[dict, np.ndarray] | None:
    """BART ``pics -l1`` with lambda chosen on held-out k-space (no truth): maps and
    images from the fit samples, each image's held-out prediction scored as ours are
    (its intensity fitted on the fit samples, whatever BART's scaling convention), then
    run on all the samples with the lambda chosen: what a BART user could get."""
    if shutil.which("bart") is None:
        return None
    t0 = time.perf_counter()
    split = holdout_split(prepared.mask, seed)
    fit = split.restrict(prepared)
    scores = {}
    with tempfile.TemporaryDirectory() as d:
        for lam in BART_LAMBDAS:
            img, maps = _bart_pics(Path(d), fit, lam)
            maps_t = torch.from_numpy(np.ascontiguousarray(maps))
            x = torch.from_numpy(np.stack([img.real, img.imag]).astype(np.float32))[None]
            pred = MulticoilMRI(maps_t, split.fit)(x)
            a = float((pred.conj() * fit.y).sum().real) / max(float(pred.abs().pow(2).sum()), 1e-30)
            scores[lam] = holdout_score(dataclasses.replace(prepared, maps=maps_t), split, a * x[0])
        lam = min(scores, key=scores.get)
        img, _ = _bart_pics(Path(d), prepared, lam)
    mag = np.abs(img) * prepared.scale  # pics -S: the data's scale
    return _score(target, mag, clean) | {
        "lambda": lam,
        "holdout_score": round(scores[lam], 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }, mag


def holdout_l1_row(prepared, target, seed: int, clean=None) -> tuple[dict, np.ndarray]:
    """L1-wavelet with the coil-map variant and lambda chosen on held-out k-space (no
    truth), then run on all the samples: what a user gets (diffrecon.mri.mapsets.
    choose_maps, FISTA). Also the same FISTA and maps with lambda chosen on the truth from
    the same grid (``oracle_*``), so the hold-out's choice is judged against its own upper
    bound, and the L1 of the one-set ESPIRiT maps (``espirit_psnr``)."""
    t0 = time.perf_counter()
    split = holdout_split(prepared.mask, seed)
    _, final, choice = choose_maps(prepared, split)
    lam, score = choice.l1_lambda, choice.scores[choice.variant]

    def l1(lam_: float, p=final) -> np.ndarray:
        x = l1_wavelet_fista(p.operator, p.y, lam_, iters=100, support=p.support)
        return np.asarray(p.to_file(x[0].pow(2).sum(0).sqrt()))

    image = l1(lam)
    scored = {lam: _score(target, image, clean)}
    row = scored[lam] | {
        "lambda": lam,
        "holdout_score": round(score, 3),
        "maps_chosen": choice.variant,
        "maps_scores": {k: round(v, 3) for k, v in choice.scores.items()},
        "espirit_psnr": _score(target, l1(lam, prepared))["psnr"],
    }
    row["seconds"] = round(time.perf_counter() - t0, 1)
    # the chosen weight's solve is deterministic: the grid reuses it
    scored |= {g: _score(target, l1(g), clean) for g in L1_GRID if g != lam}
    oracle = max(L1_GRID, key=lambda g: scored[g]["psnr"])
    row |= _clean_oracle({g: scored[g] for g in L1_GRID}) | {
        "oracle_lambda": oracle,
        "oracle_psnr": scored[oracle]["psnr"],
        "oracle_ssim": scored[oracle]["ssim"],
    }
    return row, image


def _coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """The share of the truth's foreground (above 10% of its maximum, the intervals' own
    level) inside ``[lower, upper]``."""
    fg = truth > 0.1 * float(truth.max())
    inside = (truth >= lower) & (truth <= upper)
    return round(float(inside[fg].mean()), 4)


def preset_row(prepared, target, prior, preset: str, draws: int, seed: int, clean=None, **job_kw):
    """A preset's posterior mean; ``job_kw``: job settings (default: the raw posterior, no
    hold-out check, as before the guard; ``holdout=True`` gives the guarded default)."""
    # adaptation needs the learned prior itself (its network), so no counting there
    counter = CountingDenoiser(prior) if job_kw.get("adapt") is None else None
    t0 = time.perf_counter()
    job = ReconstructionJob.of_prepared(
        prepared,
        prior=prior if counter is None else counter,
        sampler=preset,
        draws=draws,
        seed=seed,
        precision=None,  # the prior's own, as --precision set it (not the job's "auto")
        **({"holdout": False} | job_kw),
    )
    res = job.run_slice(0, prepared=prepared)
    secs = time.perf_counter() - t0
    # E||mean_N - x||^2 = ||bias||^2 + tr(Cov)/N: what PSNR many more draws would approach
    # (res.std is the unbiased magnitude std of the N draws, so this is an estimate).
    mse = float(np.mean((res.mean - target) ** 2))
    var = float(np.mean(res.std**2))
    bias2 = max(mse - var / draws, 1e-12)
    row = _score(target, res.mean, clean) | {
        "psnr_many_draws": round(10 * np.log10(float(target.max()) ** 2 / bias2), 3),
        "seconds": round(secs, 1),
        "nfe": None if counter is None else counter.images // draws,
        "draws": draws,
        "data_residual": round(res.provenance.data_residual or float("nan"), 3),
        "noise_used": prepared.noise_std,
    }
    if res.mean_complex is not None:  # |E x|: the magnitude of the complex posterior mean
        row |= {
            f"{k}_abs_mean": v for k, v in _score(target, np.abs(res.mean_complex), clean).items()
        }
    if res.lower is not None and res.upper is not None:
        row["coverage"] = _coverage(target, res.lower, res.upper)
        if clean is not None:  # the intervals are for the object, not its noisy RSS
            row["coverage_clean"] = _coverage(clean, res.lower, res.upper)
        row["interval_level"] = res.interval_level
    check = res.provenance.validation
    if check is not None:
        row |= {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in check.as_attrs().items()
        }
    return row, res


# ----------------------------------------------------------------------------- driver
def save_images(case: str, images: dict[str, np.ndarray]) -> None:
    """Each row's image (float32 ``.npy`` under :data:`IMAGES`, not committed), so that a
    metric added later is computed without running the reconstructions again; ``truth``:
    the RSS target, ``truth-clean``: the noise-free one."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name, im in images.items():
        np.save(IMAGES / f"{case}__{name}.npy", np.asarray(im, dtype=np.float32))


def _grid(path: Path, case: str, target, zf, l1, res) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vmax = float(np.percentile(target, 99.5))
    panels = [
        ("truth (RSS)", target, vmax),
        ("zero-filled", zf, vmax),
        ("L1-wavelet (lambda on truth)", l1, vmax),
        ("posterior mean (daps-mri)", res.mean, vmax),
        ("posterior std", res.std, None),
        ("|mean - truth|", np.abs(res.mean - target), vmax / 4),
    ]
    fig, axes = plt.subplots(1, 6, figsize=(18, 3.4))
    for ax, (title, im, vm) in zip(axes, panels, strict=True):
        ax.imshow(im, cmap="gray", vmin=0, vmax=vm)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(case, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    ap.add_argument("--accelerations", nargs="*", type=int, default=[4, 8])
    ap.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS))
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--prior", default="brain-mri-default")
    ap.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16"),
        help="the network's precision (bfloat16: autocast; name the rows with --tag)",
    )
    ap.add_argument("--fresh", action="store_true", help="ignore cached rows")
    ap.add_argument(
        "--redo",
        nargs="*",
        default=[],
        metavar="METHOD",
        help="run these methods again where cached (the new rows are appended; the last wins)",
    )
    ap.add_argument("--tag", default="", help="suffix for the method names (a variant run)")
    ap.add_argument("--table", action="store_true", help="print the cached rows as markdown")
    ap.add_argument(
        "--holdout-finish",
        action="store_true",
        help="also daps-mri with --finish holdout (the hold-out chooses raw or hybrid)",
    )
    ap.add_argument(
        "--guarded",
        action="store_true",
        help="also the rows of issue 29: L1 with lambda from held-out k-space (l1-holdout) and "
        "daps-mri with the hold-out check and guard (daps-mri-guarded, the default now)",
    )
    ap.add_argument(
        "--classical-only",
        action="store_true",
        help="only the rows without a sampler (zero-filled, L1, BART, their hold-out rows)",
    )
    ap.add_argument(
        "--adapt",
        action="store_true",
        help="also the rows of issue 25: daps-mri with the hold-out split and the raw posterior "
        "(daps-mri-checked-raw, the control) and the same with the prior adapted to the slice "
        "(daps-mri-adapt)",
    )
    ap.add_argument(
        "--check-start",
        type=float,
        default=None,
        metavar="SD",
        help="start the hold-out check's fit draws warm at SD sigma_data (the job's "
        "check_start; issue 24); name the rows with --tag",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="annealing levels of the sampler rows (the job's steps; default: the preset's); "
        "name the rows with --tag",
    )
    args = ap.parse_args()
    steps = {} if args.steps is None else {"steps": args.steps}  # job settings of every row
    if args.classical_only:
        args.presets, args.holdout_finish = [], False

    torch.manual_seed(0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    IMG.mkdir(parents=True, exist_ok=True)
    cache_path = RESULTS / "real_anatomy.jsonl"
    if args.fresh and cache_path.exists():
        cache_path.unlink()
    cache = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            r = json.loads(line)
            cache[(r["case"], r["method"])] = r
    if args.table:
        print(markdown(sorted(cache.values(), key=lambda r: (r["case"], r["method"]))))
        return
    prior = load(args.prior).with_precision(args.precision)
    cache = {k: r for k, r in cache.items() if k[1] not in set(args.redo)}

    def record(row: dict) -> None:
        cache[(row["case"], row["method"])] = row
        with cache_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    for name in args.cases:
        ci = CASES.index(name)  # the same data whichever cases a run selects
        kspace, target, clean, info = simulate_case(name, seed=ci)
        h, w = kspace.shape[-2:]
        for acc, cf in ACCELERATIONS:
            if acc not in args.accelerations:
                continue
            case = f"{name}-{acc}x"
            mask = cartesian_mask(w, acc, cf, seed=1000 * ci + acc).mask
            prepared = prepare_slice(kspace, mask)
            base = {
                "case": case,
                **info,
                "size": f"{h}x{w}",
                "acceleration": acc,
                "noise_estimate": prepared.noise_std * prepared.scale,
                "maps": prepared.maps_source,
            }
            zf = prepared.zero_filled_magnitude().numpy()
            save_images(case, {"truth": target, "truth-clean": clean})
            if (case, "zero-filled") not in cache:
                record(base | {"method": "zero-filled"} | _score(target, zf, clean))
                save_images(case, {"zero-filled": zf})
            l1_img = None
            if (case, "l1-wavelet") not in cache or (case, "daps-mri") not in cache:
                row, l1_img = l1_row(prepared, target, clean)
                if (case, "l1-wavelet") not in cache:
                    record(base | {"method": "l1-wavelet"} | row)
                    save_images(case, {"l1-wavelet": l1_img})
            if (case, "bart-pics") not in cache:
                out = bart_row(prepared, target, prepared.maps.numpy(), clean)
                if out is not None:
                    record(base | {"method": "bart-pics"} | out[0])
                    save_images(case, {"bart-pics": out[1]})
            if args.guarded and (case, "l1-holdout") not in cache:
                row, im = holdout_l1_row(prepared, target, ci, clean)
                record(base | {"method": "l1-holdout"} | row)
                save_images(case, {"l1-holdout": im})
            if args.guarded and (case, "bart-holdout") not in cache:
                out = bart_holdout_row(prepared, target, ci, clean)
                if out is not None:
                    record(base | {"method": "bart-holdout"} | out[0])
                    save_images(case, {"bart-holdout": out[1]})
            # rows with the hold-out check: method name -> job settings
            checked: dict[str, dict] = {}
            if args.guarded and not args.classical_only:
                checked["daps-mri-guarded"] = {}
            if args.holdout_finish:
                checked["daps-mri-holdout-finish"] = {"finish": "holdout"}
            if args.adapt:
                checked["daps-mri-checked-raw"] = {"finish": "raw"}
                checked["daps-mri-adapt"] = {"finish": "raw", "adapt": AdaptSettings()}
            for checked_name, settings in checked.items():
                if args.check_start is not None:
                    settings = {**settings, "check_start": args.check_start}
                settings = {**settings, **steps}
                method = checked_name + args.tag
                if (case, method) in cache:
                    continue
                row, res = preset_row(
                    prepared,
                    target,
                    prior,
                    "daps-mri",
                    args.draws,
                    ci,
                    clean=clean,
                    holdout=True,
                    **settings,
                )
                record(base | {"method": method} | row)
                _save_posterior(case, method, res)
            for preset in args.presets:
                method = preset + args.tag
                if (case, method) in cache:
                    continue
                row, res = preset_row(
                    prepared, target, prior, preset, args.draws, seed=ci, clean=clean, **steps
                )
                record(base | {"method": method} | row)
                _save_posterior(case, method, res)
                if preset == "daps-mri" and not args.tag and l1_img is not None:
                    _grid(IMG / f"real_anatomy_{case}.png", case, target, zf, l1_img, res)
    rows = sorted(cache.values(), key=lambda r: (r["case"], r["method"]))
    write_csv(RESULTS / "real_anatomy.csv", rows)
    summary(rows)


def _save_posterior(case: str, method: str, res) -> None:
    """A sampler row's images: the mean of ``|x|``, ``|E x|``, the std of ``|x|``."""
    images = {method: res.mean, f"{method}.std": res.std}
    if res.mean_complex is not None:
        images[f"{method}.abs-mean"] = np.abs(res.mean_complex)
    save_images(case, images)


def markdown(rows: list[dict]) -> str:
    """The results as a markdown table per case (for docs/benchmarks.md)."""
    out = []
    by_case: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["method"]] = r
    order = ["zero-filled", "l1-wavelet", "bart-pics"]
    out.append(
        "| case | method | PSNR (dB) | SSIM | PSNR / SSIM, noise-free truth | s | NFE | notes |"
    )
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for case, methods in by_case.items():
        names = [m for m in order if m in methods] + sorted(m for m in methods if m not in order)
        for m in names:
            r = methods[m]
            notes = []
            if "lambda" in r:
                notes.append(f"lambda {r['lambda']:g}, crop {r.get('crop', '')}")
            if "data_residual" in r:
                notes.append(f"data residual {r['data_residual']}")
            if "oracle_clean_setting" in r:
                notes.append(
                    f"best on the noise-free truth: {r['oracle_clean_psnr']:.2f} "
                    f"({r['oracle_clean_setting']})"
                )
            secs = r.get("seconds", "")
            clean = f"{r['psnr_clean']:.2f} / {r['ssim_clean']:.3f}" if "psnr_clean" in r else ""
            out.append(
                f"| {case} | {m} | {r['psnr']:.2f} | {r['ssim']:.3f} | {clean} | {secs} | "
                f"{r.get('nfe', '')} | {'; '.join(notes)} |"
            )
    return "\n".join(out)


def summary(rows: list[dict]) -> None:
    by_case: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["method"]] = r
    for case, methods in by_case.items():
        print(f"\n{case}")
        for m, r in methods.items():
            print(
                f"  {m:<14} {r['psnr']:6.2f} dB  {r['ssim']:.3f}  {r.get('seconds', ''):>7}s"
                f"  nfe {r.get('nfe', '')}"
            )


if __name__ == "__main__":
    main()
