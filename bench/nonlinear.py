"""DAPS's nonlinear headline tasks end to end with the shipped prior (issue 15).

Held-out MNI brain slices (64x64, the magnitude as a real image: channel 0, channel 1 zero)
with the shipped default prior (`brain-mri-default`, trained on complex images whose phase is
smooth, so a real image is in its range):

- **Phase retrieval**: 4x oversampled Fourier amplitude (each side zero-padded by half the
  size: `PhaseRetrieval(4.0)`), noise 0.05 (DAPS's setting, on images whose 99.5th percentile
  is 1). DAPS-1K with the reference's phase-retrieval step (`daps-1k-pr`), 4 restarts, the
  one that fits the data best kept, as the paper does. Baseline: Fienup's HIO (beta 0.9)
  with error-reduction polishing, support (the unpadded square) and non-negativity known, 4
  random starts, best fit kept. Phase retrieval cannot tell an image from its 180-degree
  rotation (same amplitude), so PSNR/SSIM are taken up to that twin (best of the two), for
  every method alike.
- **HDR**: `clip(2 x, -1, 1)` plus noise 0.05; DAPS-1K with the reference's HDR step
  (`daps-1k-hdr`), one run. Baseline: clipping-aware inversion, `y / 2` where unclipped and
  a harmonic (Laplace) fill of the clipped pixels from their unclipped surroundings, held to
  at least the clip level 0.5 (what the data say of them).

Prints a table, writes `bench/results/nonlinear.csv` and `docs/img/nonlinear.png`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_csv

from diffrecon import metrics, reconstruct
from diffrecon.data.mni import heldout_slices
from diffrecon.operators import HDR, PhaseRetrieval
from diffrecon.priors import load

NOISE = 0.05


def images(n: int) -> torch.Tensor:
    """``n`` held-out slices as real 2-channel images (magnitude, zero), 64x64."""
    sl = heldout_slices(size=64)[:: max(1, 12 // n)][:n].double()
    mag = sl.pow(2).sum(1).sqrt()
    return torch.stack([mag, torch.zeros_like(mag)], dim=1)


def score(truth: torch.Tensor, est: torch.Tensor, twin: bool) -> tuple[float, float]:
    """PSNR/SSIM of channel 0 (the magnitude image), up to the 180-degree twin if asked."""
    t = truth[0:1].double()
    cands = [est[0:1].double()]
    if twin:
        cands.append(torch.flip(est[0:1].double(), dims=(-2, -1)))
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


def harmonic_fill(y: torch.Tensor, alpha: float, iters: int = 2000) -> torch.Tensor:
    """Clipping-aware inversion of channel 0: ``y / alpha`` where unclipped; clipped pixels by
    Jacobi iterations of Laplace's equation from the unclipped ones, kept >= 1 / alpha."""
    v = y[0].double() / alpha
    clipped = y[0].abs() >= 1.0 - 1e-6
    x = v.clone()
    for _ in range(iters):
        p = torch.nn.functional.pad(x[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
        avg = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]) / 4
        x = torch.where(clipped, torch.maximum(avg, v.sign() * 1.0 / alpha), v)
    return torch.stack([x, torch.zeros_like(x)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="override DAPS-1K's 200 levels")
    args = ap.parse_args()
    prior = load("brain-mri-default")
    xs = images(args.images)
    rows, panels = [], []
    pr, hdr = PhaseRetrieval(4.0), HDR(2.0)
    over = {} if args.steps is None else {"steps": args.steps}
    for j, x in enumerate(xs):
        g = torch.Generator().manual_seed(j)
        x1 = x[None].float()
        for task, op, preset in (
            ("phase retrieval", pr, "daps-1k-pr"),
            ("HDR", hdr, "daps-1k-hdr"),
        ):
            clean = op(x1)
            y = clean + NOISE * torch.randn(clean.shape, generator=g)
            twin = task == "phase retrieval"
            t0 = time.perf_counter()
            if twin:
                base = hio(pr, y, x.shape[-2:], starts=args.restarts, iters=500, seed=j)
                base_name = "HIO + ER (4 starts)"
            else:
                base = harmonic_fill(y[0], hdr.alpha)
                base_name = "clipping-aware inversion"
            t_base = time.perf_counter() - t0
            t0 = time.perf_counter()
            runs = args.restarts if twin else 1
            post = reconstruct(
                y, op, prior, sampler=preset, draws=runs, noise_std=NOISE, seed=j,
                shape=tuple(x.shape), **over,
            )  # fmt: skip
            fits = [float((op(d[None].float()) - y).norm()) for d in post.draws]
            daps_x = post.draws[int(np.argmin(fits))]
            t_daps = time.perf_counter() - t0
            for name, est, secs in ((base_name, base, t_base), (preset, daps_x, t_daps)):
                ps, ss = score(x, est, twin)
                fit = float((op(est[None].float()) - y).norm() / (NOISE * y.numel() ** 0.5))
                rows.append(
                    {"task": task, "image": j, "method": name, "psnr": ps, "ssim": ss,
                     "data_fit": fit, "seconds": secs}
                )  # fmt: skip
                print(f"{task:>15} img {j} {name:>26} PSNR {ps:6.2f} SSIM {ss:.3f} "
                      f"fit {fit:5.2f} {secs:6.1f}s", flush=True)  # fmt: skip
            if j == 0:
                panels.append((task, x[0], y[0, 0], base[0], daps_x[0], base_name, preset, twin))
    write_csv(Path("bench/results/nonlinear.csv"), rows)
    for task in ("phase retrieval", "HDR"):
        sel = [r for r in rows if r["task"] == task]
        for m in dict.fromkeys(r["method"] for r in sel):
            rs = [r for r in sel if r["method"] == m]
            print(f"{task:>15} {m:>26} mean PSNR {np.mean([r['psnr'] for r in rs]):6.2f} "
                  f"SSIM {np.mean([r['ssim'] for r in rs]):.3f}")  # fmt: skip
    plot(panels)


def _closest_twin(e: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``e`` or its 180-degree rotation, whichever is closer to ``truth``."""
    f = torch.flip(e, dims=(-2, -1))
    return f if (f - truth).norm() < (e - truth).norm() else e


def plot(panels) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 4, figsize=(10, 2.7 * len(panels)))
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
