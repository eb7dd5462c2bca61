"""Export the MNI-derived training slices (non-held-out) to one h5: ``slices`` (N, 2, H, W)."""

from __future__ import annotations

import argparse

import h5py
import numpy as np

from diffrecon.data.mni import CONTRASTS, HELDOUT_Z, get_slice, smooth_phase


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=240, help="pad/crop every slice to this square")
    ap.add_argument("--step", type=int, default=2, help="take every step-th slice")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    out = []
    for contrast in CONTRASTS:
        for orientation, n in (("axial", 189), ("coronal", 233), ("sagittal", 197)):
            for idx in range(20, n - 20, args.step):
                if orientation == "axial" and HELDOUT_Z[0] <= idx < HELDOUT_Z[1]:
                    continue
                mag = get_slice(contrast, orientation, idx)
                canvas = np.zeros((args.size, args.size), np.float32)
                h, w = min(mag.shape[0], args.size), min(mag.shape[1], args.size)
                t, lft = (args.size - h) // 2, (args.size - w) // 2
                mt, ml = (mag.shape[0] - h) // 2, (mag.shape[1] - w) // 2
                canvas[t : t + h, lft : lft + w] = mag[mt : mt + h, ml : ml + w]
                z = canvas * np.exp(1j * smooth_phase(canvas.shape, rng))
                out.append(np.stack([z.real, z.imag]).astype(np.float32))
    with h5py.File(args.out, "w") as f:
        f.create_dataset("slices", data=np.stack(out), chunks=(1, 2, args.size, args.size))
        f.attrs["source"] = f"MNI ICBM152 2009a (nilearn), held-out axial z {HELDOUT_Z} excluded"
    print(f"wrote {len(out)} slices to {args.out}")


if __name__ == "__main__":
    main()
