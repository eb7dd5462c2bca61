"""What the bench scripts share: writing their rows as CSV."""

from __future__ import annotations

import csv
import time
from pathlib import Path


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write ``rows`` (dicts) with the union of their keys as columns, in first-seen order;
    a row without a key leaves its cell empty. Creates the parent folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with p.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return p


def magnitude_scores(image, draw) -> tuple[float, float]:
    """PSNR and SSIM of a draw's magnitude against a complex (2-channel) image's, with the
    truth's maximum as data range (fastMRI's convention)."""
    from diffrecon import metrics

    truth = image.pow(2).sum(0).sqrt()[None]
    mag = draw.pow(2).sum(0).sqrt()[None]
    peak = float(truth.max())
    return metrics.psnr(truth, mag, maxval=peak), metrics.ssim(truth, mag, maxval=peak)


def scored_draw(fn, prior, op, y, sigmas, image, seed: int, **kw) -> tuple[float, float, float]:
    """One draw of sampler ``fn`` for ``y`` with generator seed ``seed``, shaped like the
    complex (2-channel) ``image``: its magnitude's PSNR and SSIM against ``image``, and the
    sampler's wall seconds."""
    import torch

    t0 = time.perf_counter()
    draw = fn(
        prior,
        op,
        y,
        sigmas,
        generator=[torch.Generator().manual_seed(seed)],
        shape=tuple(image.shape),
        **kw,
    )
    secs = time.perf_counter() - t0
    return (*magnitude_scores(image, draw[0]), secs)
