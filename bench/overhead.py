"""Sampler overhead: wall time / (NFE x one denoiser call), the cost of everything that is not
the network. Target for DAPS at batch 16 on CPU: under 1.10.

Denoiser: an EDM-preconditioned MONAI DiffusionModelUNet (channels 32-64-64, one residual
block, random weights: cost, not quality, is measured) on 2-channel 64x64 images; operator:
8-coil MulticoilMRI with a 4x column mask. DAPS runs a few annealing levels with the DAPS-1K
per-level work (5 ODE steps, 100 Langevin steps); the ratio is per level, so fewer levels
measure the same thing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from monai.networks.nets import DiffusionModelUNet

from diffrecon.api import draw_generators
from diffrecon.mri import cartesian_mask
from diffrecon.operators import MulticoilMRI
from diffrecon.priors import EDMDenoiser
from diffrecon.samplers import daps, dps, karras_sigmas, pigdm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--channels", type=int, nargs=3, default=(32, 64, 64))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)  # weights only; samplers get their own generators
    unet = (
        DiffusionModelUNet(
            spatial_dims=2,
            in_channels=2,
            out_channels=2,
            num_res_blocks=1,
            channels=tuple(args.channels),
            attention_levels=(False, False, False),
            norm_num_groups=32,
        )
        .to(args.device)
        .eval()
    )
    for p in unet.parameters():
        p.requires_grad_(False)
    denoiser = EDMDenoiser(lambda x, c: unet(x, c), sigma_data=0.5)
    size, b = args.size, args.batch
    rng = np.random.default_rng(0)
    maps = torch.from_numpy(
        (rng.normal(size=(8, size, size)) + 1j * rng.normal(size=(8, size, size))).astype(
            np.complex64
        )
    )
    op = MulticoilMRI(
        maps / maps.abs().pow(2).sum(0).sqrt(), cartesian_mask(size, 4, 0.08, seed=0).mask
    ).to(args.device)
    x = torch.randn(b, 2, size, size, device=args.device)
    y = op(x)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    with torch.no_grad():
        for _ in range(3):  # warm-up: allocator and oneDNN primitive caches
            denoiser(x, 1.0)
        sync()
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            denoiser(x, 1.0)
            sync()
            times.append(time.perf_counter() - t0)
    t_call = float(np.median(times))
    n_par = sum(p.numel() for p in unet.parameters()) / 1e6
    print(
        f"device={args.device} batch={b} size={size} UNet {tuple(args.channels)} "
        f"({n_par:.1f}M params): one denoiser call {1000 * t_call:.1f} ms"
    )

    gens = draw_generators(0, b, args.device)
    cases = [
        (
            "daps (5 ODE, 100 LD)",
            daps,
            karras_sigmas(args.levels, 0.1, 100.0),
            dict(noise_std=0.01, ode_steps=5, langevin_steps=100, lr=1e-4),
            5 * args.levels,
            False,
        ),
        ("pigdm", pigdm, karras_sigmas(10, 0.01, 80.0), dict(noise_std=0.01), 10, True),
        ("dps", dps, karras_sigmas(10, 0.01, 80.0), dict(zeta=1.0), 10, True),
    ]
    for name, fn, sigmas, kw, nfe, needs_grad in cases:
        t0 = time.perf_counter()
        with torch.set_grad_enabled(needs_grad):
            fn(denoiser, op, y, sigmas, generator=gens, **kw)
        sync()
        secs = time.perf_counter() - t0
        note = "" if not needs_grad else " (one call = forward only; these also backpropagate)"
        print(
            f"{name:<22} NFE {nfe:>3}  {secs:7.2f} s  overhead ratio "
            f"{secs / (nfe * t_call):.3f}{note}"
        )


if __name__ == "__main__":
    main()
