"""DAPS's nonlinear headline tasks end to end, in the reference code's settings (issues 15, 27).

Held-out MNI brain slices (64x64, the magnitude as a real image: channel 0, channel 1 zero;
99.5th percentile 1, so they play the reference's [0, 1] images), noise 0.05, DAPS-1K (200
levels x 5 ODE steps, 100 Langevin steps per level) with two priors: the shipped default
(`brain-mri-default`, trained on complex images whose phase is smooth, so a real image is in
its range) and an exact Gaussian prior (`gaussian_prior`: mean and covariance of the training
axial slices at 64x64, one channel), whose denoiser is exact, so its rows show the sampler
alone.

`--setting reference` (default) runs the DAPS reference code's settings
(`configs/task/*.yaml`, `commands/pixel_ffhq.sh`):

- **Phase retrieval**: `oversample 2.0` (each side zero-padded by a quarter of the size:
  `PhaseRetrieval(2.0)`); the likelihood width fixed at `tau = 0.01` whatever the noise (the
  reference's data term is `||A(x) - y||^2 / tau^2`, i.e. a Gaussian of standard deviation
  `0.01 / sqrt(2)` in our convention); Langevin step 5e-5; 4 runs.
- **HDR**: the reference clips `2 x` on images in [-1, 1]; ours are in [0, 1], so the operator
  is `clip(2 (2 x - 1), -1, 1)` (both ends clip); `tau` as above, step 2e-5, one run.

`--setting 4x` is the bench as first run (issue 15): 4x oversampling, the likelihood width
equal to the noise (0.05), HDR as `clip(2 x)` on [0, 1].

The reference keeps, per image, the best of its runs **by PSNR against the truth**
(`posterior_sample.py`, `eval.py`: the reported figure is the per-image maximum over runs).
No user can do that. This bench keeps the run that fits the measurement best (truth-free,
what a diffrecon user can do) and prints the reference's oracle choice beside it, labelled
as an upper bound, and the mean over runs. Phase retrieval cannot tell an image from its
180-degree rotation or from its negative (same amplitude), so PSNR/SSIM are taken up to
those (best of the four), for every method alike; shifts are not ambiguities here, because
the padding fixes where the image may be non-zero.

Baselines: Fienup's HIO (beta 0.9) with error-reduction polishing, support (the unpadded
square) and non-negativity known, 4 random starts, the best fit kept; for HDR the
clipping-aware inversion: the unclipped pixels inverted, the clipped ones filled harmonically
(Laplace) from their unclipped surroundings, held beyond the clip level (what the data say
of them).

Prints a table, writes `bench/results/nonlinear.csv` and `docs/img/nonlinear.png`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_csv

from diffrecon import metrics, reconstruct
from diffrecon.data.mni import CONTRASTS, HELDOUT_Z, get_slice, heldout_slices
from diffrecon.operators import HDR, PhaseRetrieval
from diffrecon.operators.base import Operator
from diffrecon.priors import GaussianPrior, load

NOISE = 0.05
SIZE = 64
# the reference's likelihood width and per-task Langevin steps (configs/task/*.yaml)
REF_TAU = 0.01 / math.sqrt(2.0)
SETTINGS = {
    "reference": {"oversample": 2.0, "tau": REF_TAU, "centred_hdr": True},
    "4x": {"oversample": 4.0, "tau": None, "centred_hdr": False},
}


class CentredHDR(Operator):
    """``clip(alpha (2 x - 1), -1, 1)``: the reference's HDR on [-1, 1] images, for [0, 1]
    images (both ends clip)."""

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = float(alpha)
        super().__init__(None, None)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.alpha * (2.0 * x - 1.0), -1.0, 1.0)


def images(n: int) -> torch.Tensor:
    """``n`` held-out slices as real 2-channel images (magnitude, zero), 64x64."""
    sl = heldout_slices(size=SIZE)[:: max(1, 12 // n)][:n].double()
    mag = sl.pow(2).sum(1).sqrt()
    return torch.stack([mag, torch.zeros_like(mag)], dim=1)


def gaussian_prior(size: int = SIZE) -> GaussianPrior:
    """An exact prior for the magnitude images: the mean and covariance of every training
    axial slice (outside the held-out slab, all contrasts, and their left-right mirrors),
    centre-cropped like the test images, plus 1e-3 of the mean variance on the diagonal."""
    rows = []
    for c in CONTRASTS:
        for z in range(20, 189 - 20):
            if HELDOUT_Z[0] - 2 <= z < HELDOUT_Z[1] + 2:
                continue  # the held-out slab and a margin
            mag = get_slice(c, "axial", z)
            top, left = (mag.shape[0] - size) // 2, (mag.shape[1] - size) // 2
            crop = mag[top : top + size, left : left + size].astype(np.float64)
            rows += [crop.ravel(), crop[:, ::-1].ravel()]
    x = torch.from_numpy(np.stack(rows))
    mean = x.mean(0)
    cov = torch.cov(x.T)
    cov += 1e-3 * float(cov.diagonal().mean()) * torch.eye(cov.shape[0], dtype=cov.dtype)
    return GaussianPrior(mean.reshape(1, size, size), cov)


def score(truth: torch.Tensor, est: torch.Tensor, twin: bool) -> tuple[float, float]:
    """PSNR/SSIM of channel 0 (the magnitude image), up to the 180-degree twin and the sign
    if asked (phase retrieval's ambiguities)."""
    t = truth[0:1].double()
    cands = [est[0:1].double()]
    if twin:
        cands.append(torch.flip(cands[0], dims=(-2, -1)))
        cands += [-c for c in cands]
    best = max(cands, key=lambda c: metrics.psnr(t, c, maxval=float(t.max())))
    return metrics.psnr(t, best, maxval=float(t.max())), metrics.ssim(
        t, best, maxval=float(t.max())
    )


def hio(op: PhaseRetrieval, y: torch.Tensor, shape, starts: int, iters: int, seed: int):
    """Fienup's hybrid input-output then error reduction on the padded grid, support and
    non-negativity known; the start that fits ``y`` best."""
    from diffrecon.operators.fft import fft2c, ifft2c

    h, w = shape
    ph, pw = op.pads(h, w)
    amp = y[0, 0].double()  # channel 0 carries the image
    support = torch.zeros(amp.shape, dtype=torch.bool)
    support[ph : ph + h, pw : pw + w] = True
    g = torch.Generator().manual_seed(seed)
    best, best_err = None, float("inf")
    for _ in range(starts):
        x = torch.rand(amp.shape, generator=g, dtype=torch.float64) * support
        for it in range(iters):
            k = fft2c(torch.complex(x, torch.zeros_like(x)))
            xp = ifft2c(amp * torch.exp(1j * k.angle())).real
            ok = support & (xp >= 0)
            if it < int(0.9 * iters):  # HIO
                x = torch.where(ok, xp, x - 0.9 * xp)
            else:  # error reduction
                x = torch.where(ok, xp, torch.zeros_like(xp))
        err = float((fft2c(torch.complex(x, torch.zeros_like(x))).abs() - amp).norm())
        if err < best_err:
            best, best_err = x[ph : ph + h, pw : pw + w].clone(), err
    return torch.stack([best, torch.zeros_like(best)])


def harmonic_fill(y: torch.Tensor, alpha: float, centred: bool, iters: int = 2000):
    """Clipping-aware inversion of channel 0 of ``clip(alpha u, -1, 1)`` (``u = 2 x - 1`` if
    ``centred``, else ``x``): ``u = y / alpha`` where unclipped; clipped pixels by Jacobi
    iterations of Laplace's equation from the unclipped ones, held at or beyond the clip
    level on their side."""
    u0 = y[0].double() / alpha
    hi, lo = y[0] >= 1.0 - 1e-6, y[0] <= -1.0 + 1e-6
    u = u0.clone()
    for _ in range(iters):
        p = torch.nn.functional.pad(u[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
        avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4
        fill = torch.where(lo, avg.clamp_max(-1 / alpha), u0)
        u = torch.where(hi, avg.clamp_min(1 / alpha), fill)
    x = (u + 1) / 2 if centred else u
    return torch.stack([x, torch.zeros_like(x)])


def daps_runs(y, op, prior, preset, runs, seed, shape, tau, over):
    """``runs`` DAPS draws; each draw's data residual in noise units."""
    kw = dict(over) if tau is None else {**over, "tau": tau}
    post = reconstruct(
        y, op, prior, sampler=preset, draws=runs, noise_std=NOISE, seed=seed, shape=shape, **kw
    )
    fits = [float((op(d[None].float()) - y).norm() / (NOISE * y.numel() ** 0.5))
            for d in post.draws]  # fmt: skip
    return post.draws, fits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--setting", choices=tuple(SETTINGS), default="reference")
    ap.add_argument("--priors", nargs="+", default=["shipped", "gaussian"],
                    choices=("shipped", "gaussian"))  # fmt: skip
    ap.add_argument("--tasks", nargs="+", default=["pr", "hdr"], choices=("pr", "hdr"))
    ap.add_argument("--steps", type=int, default=None, help="override DAPS-1K's 200 levels")
    ap.add_argument("--out", default="bench/results/nonlinear.csv")
    args = ap.parse_args()
    setting = SETTINGS[args.setting]
    priors = {}
    if "shipped" in args.priors:
        priors["shipped"] = load("brain-mri-default")
    if "gaussian" in args.priors:
        t0 = time.perf_counter()
        priors["gaussian"] = gaussian_prior()
        print(f"Gaussian prior built in {time.perf_counter() - t0:.0f} s", flush=True)
    xs = images(args.images)
    pr = PhaseRetrieval(setting["oversample"])
    hdr = CentredHDR(2.0) if setting["centred_hdr"] else HDR(2.0)
    over = {} if args.steps is None else {"steps": args.steps}
    tasks = [t for t in (("phase retrieval", pr, "daps-1k-pr"), ("HDR", hdr, "daps-1k-hdr"))
             if {"phase retrieval": "pr", "HDR": "hdr"}[t[0]] in args.tasks]  # fmt: skip
    rows, panels = [], []

    def add(task, j, x, method, prior_name, est, secs, twin, y, op, **extra):
        ps, ss = score(x, est, twin)
        fit = float((op(est[None].float()) - y).norm() / (NOISE * y.numel() ** 0.5))
        rows.append({"setting": args.setting, "task": task, "image": j, "method": method,
                     "prior": prior_name, "psnr": ps, "ssim": ss, "data_fit": fit,
                     "seconds": secs, **extra})  # fmt: skip
        print(f"{task:>15} img {j} {method:>34} {prior_name:>8} PSNR {ps:6.2f} SSIM {ss:.3f} "
              f"fit {fit:5.2f} {secs:6.1f}s", flush=True)  # fmt: skip
        return ps

    for j, x in enumerate(xs):
        g = torch.Generator().manual_seed(j)
        for task, op, preset in tasks:
            clean = op(x[None].float())
            y = clean + NOISE * torch.randn(clean.shape, generator=g)
            twin = task == "phase retrieval"
            t0 = time.perf_counter()
            if twin:
                base = hio(pr, y, x.shape[-2:], starts=args.restarts, iters=500, seed=j)
                base_name = f"HIO + ER ({args.restarts} starts)"
            else:
                base = harmonic_fill(y[0], hdr.alpha, setting["centred_hdr"])
                base_name = "clipping-aware inversion"
            add(task, j, x, base_name, "-", base, time.perf_counter() - t0, twin, y, op)
            runs = args.restarts if twin else 1
            shown = None
            for pname, prior in priors.items():
                chans = 1 if pname == "gaussian" else 2
                yp, opx = y[:, :chans], op
                t0 = time.perf_counter()
                draws, fits = daps_runs(yp, opx, prior, preset, runs, j, (chans, SIZE, SIZE),
                                        setting["tau"], over)  # fmt: skip
                secs = time.perf_counter() - t0
                if chans == 1:  # the Gaussian prior models channel 0 only
                    draws = [torch.cat([d, torch.zeros_like(d)]) for d in draws]
                draws = [d.double() for d in draws]
                best = draws[int(np.argmin(fits))]
                add(task, j, x, f"{preset} best fit of {runs}", pname, best, secs, twin, y, op)
                if runs > 1:
                    psnrs = [score(x, d, twin)[0] for d in draws]
                    oracle = draws[int(np.argmax(psnrs))]
                    add(task, j, x, f"{preset} best PSNR of {runs} (oracle)", pname, oracle, secs,
                        twin, y, op)  # fmt: skip
                    rows[-1]["mean_psnr_over_runs"] = float(np.mean(psnrs))
                    print(f"{'':>15}       mean PSNR over the {runs} runs {np.mean(psnrs):6.2f}")
                if shown is None:
                    shown = (best, f"{preset} ({pname})")
            if j == 0 and shown is not None:
                panels.append((task, x[0], y[0, 0], base[0], shown[0][0], base_name, shown[1],
                               twin))  # fmt: skip
    write_csv(Path(args.out), rows)
    print(f"\nsetting {args.setting}: means over {len(xs)} images")
    for task, _, _ in tasks:
        sel = [r for r in rows if r["task"] == task]
        for key in dict.fromkeys((r["method"], r["prior"]) for r in sel):
            rs = [r for r in sel if (r["method"], r["prior"]) == key]
            mean = {k: np.mean([r[k] for r in rs]) for k in ("psnr", "ssim", "data_fit")}
            print(f"{task:>15} {key[0]:>34} {key[1]:>8} PSNR {mean['psnr']:6.2f} "
                  f"SSIM {mean['ssim']:.3f} fit {mean['data_fit']:5.2f}")  # fmt: skip
    plot(panels)


def _closest_twin(e: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``e`` or its 180-degree rotation, whichever is closer to ``truth``."""
    f = torch.flip(e, dims=(-2, -1))
    return f if (f - truth).norm() < (e - truth).norm() else e


def plot(panels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 4, figsize=(10, 2.7 * len(panels)), squeeze=False)
    for row, (task, truth, meas, base, est, bname, preset, twin) in zip(axes, panels, strict=True):
        if twin:  # show each estimate in the twin orientation closest to the truth
            base, est = _closest_twin(base, truth), _closest_twin(est, truth)
            meas = torch.log1p(meas)
        for ax, img, title in zip(
            row,
            (truth, meas, base, est),
            ("truth", f"{task}: data" + (" (log)" if twin else ""), bname, preset),
            strict=True,
        ):
            ax.imshow(img.numpy(), cmap="gray")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    Path("docs/img").mkdir(parents=True, exist_ok=True)
    fig.savefig("docs/img/nonlinear.png", dpi=110)


if __name__ == "__main__":
    main()
