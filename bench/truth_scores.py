"""Score the saved images of `bench/real_anatomy.py` against three truths, without running
any reconstruction again.

The bench's truth is fastMRI's: the root-sum-of-squares (RSS) of the fully sampled *noisy*
coil images. It carries the noise of its one realisation, and in the background a positive
floor (the RSS of the coils' noise), so it rewards a reconstruction for keeping noise. The
bench's cases are simulated, so the noise-free object is known too (`simulate_case`). This
script prints, per case and row, PSNR (dB) against
- `rss`: the RSS target (the bench's tables),
- `clean`: the noise-free RSS, whole image,
- `object`: the noise-free RSS inside the object only (pixels above 5% of its maximum,
  dilated by 3 pixels), with ``data_range`` the same maximum: how well the anatomy itself
  is reconstructed, whatever a method does with the empty background.

Sampler rows also have their `.abs-mean` image, the magnitude of the complex posterior
mean ``|E x|``, beside the default ``E |x|``. Images come from
`bench/results/real_anatomy_images/` (written by `real_anatomy.py`; not committed).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import ndimage

from diffrecon import metrics

IMAGES = Path("bench/results/real_anatomy_images")
ORDER = (
    "zero-filled",
    "l1-wavelet",
    "bart-pics",
    "l1-holdout",
    "bart-holdout",
    "daps-mri-guarded",
    "daps-mri-guarded.abs-mean",
)


def object_mask(clean: np.ndarray, level: float = 0.05, grow: int = 3) -> np.ndarray:
    """Pixels of the object: above ``level`` of the noise-free maximum, dilated by
    ``grow`` pixels so that its edges count."""
    return ndimage.binary_dilation(clean > level * clean.max(), iterations=grow)


def psnr_in(truth: np.ndarray, image: np.ndarray, inside: np.ndarray) -> float:
    """PSNR over the pixels ``inside``, ``data_range`` the truth's maximum."""
    err = float(np.mean((truth[inside] - image[inside]) ** 2))
    return 10 * np.log10(float(truth.max()) ** 2 / max(err, 1e-30))


def scores(case: str) -> dict[str, dict[str, float]]:
    """``{row: {"rss", "clean", "object"}}`` for every image saved for ``case``."""
    load = {p.name.split("__")[1][:-4]: np.load(p) for p in IMAGES.glob(f"{case}__*.npy")}
    rss, clean = load.pop("truth").astype(np.float64), load.pop("truth-clean").astype(np.float64)
    inside = object_mask(clean)
    out = {"fully sampled (the RSS)": rss}
    out |= {k: v.astype(np.float64) for k, v in load.items() if not k.endswith(".std")}
    return {
        name: {
            "rss": metrics.psnr(rss, im),
            "clean": metrics.psnr(clean, im),
            "object": psnr_in(clean, im, inside),
        }
        for name, im in out.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="*", default=None, help="default: every case saved")
    args = ap.parse_args()
    cases = args.cases or sorted({p.name.split("__")[0] for p in IMAGES.glob("*__truth.npy")})
    print("| case | row | PSNR vs RSS | vs noise-free | inside the object |")
    print("| --- | --- | --- | --- | --- |")
    rank = defaultdict(lambda: len(ORDER), {k: i for i, k in enumerate(ORDER)})
    for case in cases:
        table = scores(case)
        for name in sorted(table, key=lambda k: (rank[k], k)):
            s = table[name]
            print(f"| {case} | {name} | {s['rss']:.2f} | {s['clean']:.2f} | {s['object']:.2f} |")


if __name__ == "__main__":
    main()
