"""Do priors generalise beyond their training anatomy? Denoising the real-anatomy images.

A fast proxy for the real-anatomy benchmark (seconds, not hours): each prior denoises the
four real MR images of ``bench/real_anatomy.py`` (shared brain scan's L1 image, dipy's T1
coronal brain, pydicom-data's shoulder and abdomen), none of which any shipped prior was
trained on, with a smooth random phase as in that bench, at several noise levels. PSNR
(complex, data range max |x|) of ``D(x + sigma n, sigma)``, averaged over 4 noise draws.

Run: ``python bench/prior_generalisation.py --priors brain-mri-default path/to/bundle``.
Writes ``bench/results/prior_generalisation.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _results import write_csv
from real_anatomy import CASES, make_case

from diffrecon.data.mni import smooth_phase
from diffrecon.priors import load

SIGMAS = (0.05, 0.1, 0.2, 0.4)


def clean_image(name: str, seed: int) -> np.ndarray:
    """The case's complex image, magnitude 99.5th percentile 1 (the prior's scaling)."""
    kspace, target, _ = make_case(name, seed)
    rng = np.random.default_rng(100 + seed)
    mag = target / np.percentile(target, 99.5)
    return mag * np.exp(1j * smooth_phase(mag.shape, rng))


def denoise_psnr(prior, img: np.ndarray, sigma: float, repeats: int = 4) -> float:
    x0 = torch.from_numpy(np.stack([img.real, img.imag]).astype(np.float32))[None]
    gen = torch.Generator().manual_seed(0)
    peak = float(np.abs(img).max())
    out = []
    for _ in range(repeats):
        x = x0 + sigma * torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            d = prior(x, torch.tensor([sigma]))
        mse = float((d - x0).pow(2).sum(1).mean())
        out.append(10 * np.log10(peak**2 / mse))
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--priors", nargs="+", default=["brain-mri-default"])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    args = ap.parse_args()
    images = {name: clean_image(name, CASES.index(name)) for name in args.cases}
    rows = []
    for spec in args.priors:
        prior = load(spec)
        label = Path(spec).name
        for sigma in SIGMAS:
            row = {"prior": label, "sigma": sigma}
            for name, img in images.items():
                row[name] = round(denoise_psnr(prior, img, sigma), 2)
            row["mean"] = round(float(np.mean([row[n] for n in images])), 2)
            rows.append(row)
            print(row, flush=True)
    write_csv(Path("bench/results/prior_generalisation.csv"), rows)


if __name__ == "__main__":
    main()
