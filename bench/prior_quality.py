"""Quality of the shipped default prior (issue: learned priors), on held-out MNI slices.

1. Denoising PSNR vs sigma (complex 2-channel images, data range = max |x|) against two
   classical baselines: wavelet soft-thresholding (db4, 4 levels, BayesShrink thresholds per
   subband) and Gaussian smoothing with the best width chosen per sigma with the truth
   (an oracle: the baseline's best case).
2. Unconditional samples (ancestral sampler, 100 steps) as a PNG grid.
3. Posterior check: 4x Cartesian multicoil MRI (fastMRI random mask, 8 birdcage coils) on
   held-out slices: DAPS posterior mean vs zero-filled vs SigPy L1-wavelet (PSNR/SSIM on the
   magnitude against the fully sampled RSS target).
Writes bench/results/prior_*.csv and docs/img/prior_*.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pywt
import torch
from _results import write_csv
from scipy.ndimage import gaussian_filter

from diffrecon import metrics
from diffrecon.data.mni import heldout_slices
from diffrecon.data.simulate import simulate_fastmri
from diffrecon.io.arrays import ArrayInput
from diffrecon.io.fastmri import open_fastmri
from diffrecon.jobs import ReconstructionJob
from diffrecon.mri.baseline import l1_wavelet_baseline
from diffrecon.mri.masks import MaskSpec
from diffrecon.mri.preprocess import prepare_slice
from diffrecon.mri.transforms import center_crop, read_slice
from diffrecon.priors import load
from diffrecon.samplers import karras_sigmas
from diffrecon.samplers.unconditional import sample_prior

RESULTS = Path("bench/results")
IMG = Path("docs/img")


def psnr_complex(clean: np.ndarray, est: np.ndarray) -> float:
    peak = float(np.hypot(clean[0], clean[1]).max())
    return float(10 * np.log10(peak**2 / np.mean((clean - est) ** 2)))


def wavelet_denoise(img: np.ndarray, sigma: float) -> np.ndarray:
    out = []
    for ch in img:
        coeffs = pywt.wavedec2(ch, "db4", level=4, mode="periodization")
        new = [coeffs[0]]
        for detail in coeffs[1:]:
            bands = []
            for band in detail:
                sx = np.sqrt(max(band.var() - sigma**2, 1e-12))
                bands.append(pywt.threshold(band, sigma**2 / sx, mode="soft"))
            new.append(tuple(bands))
        out.append(pywt.waverec2(new, "db4", mode="periodization")[: ch.shape[0], : ch.shape[1]])
    return np.stack(out)


def gaussian_oracle(img: np.ndarray, clean: np.ndarray) -> np.ndarray:
    best, best_err = img, np.inf
    for width in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
        cand = np.stack([gaussian_filter(c, width) for c in img])
        err = np.mean((cand - clean) ** 2)
        if err < best_err:
            best, best_err = cand, err
    return best


def denoising(prior, rows: list) -> None:
    clean = heldout_slices(size=160, step=4)
    g = torch.Generator().manual_seed(0)
    print(
        f"{'sigma':>6} {'noisy':>7} {'wavelet':>8} {'gauss*':>7} {'prior':>7}   (PSNR dB, "
        f"{len(clean)} held-out slices)"
    )
    for sigma in (0.02, 0.05, 0.1, 0.2, 0.4):
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        with torch.no_grad():
            den = torch.cat([prior(noisy[i : i + 4], sigma) for i in range(0, len(noisy), 4)])
        c, n, d = clean.numpy(), noisy.numpy(), den.numpy()
        vals = {
            "noisy": np.mean([psnr_complex(c[i], n[i]) for i in range(len(c))]),
            "wavelet": np.mean(
                [psnr_complex(c[i], wavelet_denoise(n[i], sigma)) for i in range(len(c))]
            ),
            "gaussian_oracle": np.mean(
                [psnr_complex(c[i], gaussian_oracle(n[i], c[i])) for i in range(len(c))]
            ),
            "prior": np.mean([psnr_complex(c[i], d[i]) for i in range(len(c))]),
        }
        rows.append({"sigma": sigma, **vals})
        print(
            f"{sigma:>6} {vals['noisy']:7.2f} {vals['wavelet']:8.2f} "
            f"{vals['gaussian_oracle']:7.2f} {vals['prior']:7.2f}",
            flush=True,
        )


def samples_grid(prior, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens = [torch.Generator().manual_seed(i) for i in range(8)]
    with torch.no_grad():
        x = sample_prior(prior, (8, 2, 96, 96), karras_sigmas(100, 0.002, 80.0), generator=gens)
    mag = torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2).numpy()
    fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
    for ax, m in zip(axes.flat, mag, strict=True):
        ax.imshow(m, cmap="gray", vmin=0, vmax=1.2)
        ax.axis("off")
    fig.suptitle("unconditional samples of brain-mri-default (|x|, 96x96, 100 ancestral steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def posterior_check(prior, rows: list, draws: int, steps: int | None) -> None:
    kfile = simulate_fastmri(
        RESULTS / "prior_check_kspace.h5",
        slices=(98, 102, 106, 110),
        size=(192, 160),
        contrast="t2",
        seed=3,
    )
    f = open_fastmri(kfile)
    print(f"{'slice':>5} {'zf PSNR/SSIM':>15} {'L1 PSNR/SSIM':>15} {'DAPS PSNR/SSIM':>16} {'s':>6}")
    for i in range(f.num_slices):
        k, tgt = read_slice(f, i), f.target(i)
        # one mask per slice: seeded by the file name plus the slice number
        mask = MaskSpec(4.0, 0.08, "random").build(k.shape[-2:], file_name=f"{kfile.name}{i}")
        prepared = prepare_slice(k, mask)  # the sampler and the L1 baseline share it
        t0 = time.perf_counter()
        job = ReconstructionJob(
            ArrayInput(k[None], mask=mask.numpy(), target_images=tgt[None]),
            prior=prior,
            sampler="daps-mri",
            steps=steps,
            mask=MaskSpec(kind="file"),
            draws=draws,
            seed=i,
            batch_size=draws,
        )
        res = job.run_slice(0, prepared=prepared)
        secs = time.perf_counter() - t0
        l1 = l1_wavelet_baseline(prepared, lamda=0.005, max_iter=100)
        l1m = center_crop(torch.sqrt(l1[0] ** 2 + l1[1] ** 2), res.mean.shape).numpy()
        l1_scores = metrics.evaluate(center_crop(torch.from_numpy(tgt), res.mean.shape), l1m)
        row = {
            "slice": i,
            "psnr_zf": res.metrics["psnr_zero_filled"],
            "ssim_zf": res.metrics["ssim_zero_filled"],
            "psnr_l1": l1_scores["psnr"],
            "ssim_l1": l1_scores["ssim"],
            "psnr_daps": res.metrics["psnr"],
            "ssim_daps": res.metrics["ssim"],
            "seconds": secs,
            "draws": draws,
        }
        rows.append(row)
        print(
            f"{i:>5} {row['psnr_zf']:7.2f}/{row['ssim_zf']:.3f} {row['psnr_l1']:7.2f}/"
            f"{row['ssim_l1']:.3f} {row['psnr_daps']:8.2f}/{row['ssim_daps']:.3f} {secs:6.1f}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prior", default="brain-mri-default")
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--skip", nargs="*", default=[], choices=["denoise", "samples", "posterior"])
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    IMG.mkdir(parents=True, exist_ok=True)
    prior = load(args.prior)
    if "denoise" not in args.skip:
        rows: list = []
        denoising(prior, rows)
        write_csv(RESULTS / "prior_denoising.csv", rows)
    if "samples" not in args.skip:
        samples_grid(prior, IMG / "prior_samples.png")
        print(f"wrote {IMG / 'prior_samples.png'}")
    if "posterior" not in args.skip:
        rows = []
        posterior_check(prior, rows, args.draws, args.steps)
        write_csv(RESULTS / "prior_posterior_check.csv", rows)


if __name__ == "__main__":
    main()
