"""Training an EDM-preconditioned denoiser (MONAI ``DiffusionModelUNet``) on image patches.

EDM loss (Karras et al. 2022): ``ln sigma ~ N(P_mean, P_std^2)``, weight
``(sigma^2 + sd^2) / (sigma sd)^2``, loss ``weight * ||D(x + sigma n, sigma) - x||^2``.
EMA weights, bf16 autocast on CUDA, a checkpoint every ``checkpoint_every`` steps from which
training resumes exactly (model, EMA, optimiser, data and noise RNG states), a progress bar,
a wall-clock budget for training in pieces, and a bundle (EMA weights) written at each
checkpoint so a partly trained prior is usable.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffrecon._version import __version__
from diffrecon.io.atomic import atomic_file
from diffrecon.priors.bundles import load as load_bundle
from diffrecon.priors.bundles import save_bundle
from diffrecon.priors.learned import key_mismatch
from diffrecon.priors.unet import DEFAULT_ARCH, MonaiUNet
from diffrecon.priors.wrappers import EDMDenoiser

BatchFn = Callable[[int], torch.Tensor]


def edm_loss(
    denoiser: EDMDenoiser,
    x0: torch.Tensor,
    noise: torch.Tensor,
    log_sigma: torch.Tensor,
) -> torch.Tensor:
    """Mean EDM-weighted denoising loss for clean ``x0``, unit ``noise`` and ``log sigma``."""
    sigma = log_sigma.exp()
    sd = denoiser.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    err = (denoiser(x, sigma) - x0) ** 2
    return (weight.reshape(-1, 1, 1, 1) * err).mean()


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1.0 - decay)
        for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
            be.copy_(bm)


def train_prior(
    out_dir: str | Path,
    batch_fn: BatchFn,
    *,
    steps: int,
    batch_size: int = 8,
    lr: float = 2e-4,
    ema_decay: float = 0.999,
    arch: dict[str, Any] | None = None,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    seed: int = 0,
    device: str = "cpu",
    checkpoint_every: int = 200,
    minutes: float | None = None,
    progress: bool = True,
    bundle_config: dict[str, Any] | None = None,
    data_state: Callable[[], Any] | None = None,
    set_data_state: Callable[[Any], None] | None = None,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or resume) until ``steps`` total steps or ``minutes`` of wall time.

    ``batch_fn(n)`` returns ``n`` clean training images ``(n, C, H, W)``. ``data_state`` /
    ``set_data_state`` save and restore the data source's RNG for exact resumption.
    Writes ``checkpoint.pt`` and the bundle (``config.json``, ``model.safetensors``) into
    ``out_dir``; returns a summary (steps done, last loss, seconds). ``init`` (a bundle
    folder or shipped name with the same architecture) starts model and EMA from its weights
    (fine-tuning); a checkpoint in ``out_dir`` takes precedence, so resuming is unchanged.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    gen = torch.Generator(device="cpu").manual_seed(seed)
    torch_state = torch.random.fork_rng(devices=[])  # model init must not touch the global RNG
    with torch_state:
        torch.manual_seed(seed)
        model = MonaiUNet(arch).to(device)
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step, losses = 0, []
    if init is not None and not ckpt_path.exists():
        weights = load_bundle(init).net.state_dict()
        why = key_mismatch(
            {k: tuple(v.shape) for k, v in model.state_dict().items()},
            {k: tuple(v.shape) for k, v in weights.items()},
        )
        if why is not None:
            raise ValueError(
                f"--init {init}: its network does not match the requested architecture "
                f"({why}); pass the same --channels"
            )
        model.load_state_dict(weights)
        ema.load_state_dict(weights)
    if ckpt_path.exists():
        ck = torch.load(str(ckpt_path), map_location=device, weights_only=True)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["noise_rng"])
        step = int(ck["step"])
        losses = list(ck.get("losses", []))
        if set_data_state is not None and "data_rng" in ck:
            set_data_state(ck["data_rng"])
    denoiser = EDMDenoiser(model, sigma_data=sigma_data)
    use_amp = device.startswith("cuda")
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=step, desc="train-prior", unit="step")
    config = {
        **(bundle_config or {}),
        "architecture": {
            "type": "monai.DiffusionModelUNet",
            "kwargs": {**DEFAULT_ARCH, **(arch or {})},
            "noise_scale": 1000.0,
        },
        "parameterisation": "edm",
        "sigma_data": sigma_data,
        "sigma_min": 0.002,
        "sigma_max": 80.0,
        "diffrecon_version": __version__,
    }

    def checkpoint() -> None:
        state = {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": opt.state_dict(),
            "noise_rng": gen.get_state(),
            "step": step,
            "losses": losses[-2000:],
        }
        if data_state is not None:
            state["data_rng"] = data_state()
        with atomic_file(ckpt_path, overwrite=True) as tmp:
            torch.save(state, str(tmp))
        training = {
            **config.get("training", {}),
            "steps_done": step,
            "final_loss_ema100": float(np.mean(losses[-100:])) if losses else None,
        }
        save_bundle(out, ema, {**config, "training": training})

    model.train()
    while step < steps:
        if minutes is not None and time.perf_counter() - t0 > 60 * minutes:
            break
        x0 = batch_fn(batch_size).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        log_sigma = (p_mean + p_std * torch.randn(batch_size, generator=gen)).to(device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            loss = edm_loss(denoiser, x0, noise, log_sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ema_update(ema, model, ema_decay)
        step += 1
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % checkpoint_every == 0:
            checkpoint()
    checkpoint()
    if bar is not None:
        bar.close()
    return {
        "steps": step,
        "loss": float(np.mean(losses[-100:])) if losses else None,
        "seconds": time.perf_counter() - t0,
    }
