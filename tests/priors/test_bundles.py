"""Bundles: round trip, clear errors, safe loading, user models, the shipped default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from diffrecon.priors import (
    PriorLoadError,
    available,
    from_module,
    load,
    load_monai_ddpm,
)
from diffrecon.priors.bundles import load_state_dict


def test_round_trip_same_outputs(tiny_bundle):
    a = load(tiny_bundle)
    b = load(tiny_bundle)
    x = torch.randn(2, 2, 12, 10, generator=torch.Generator().manual_seed(0))
    out = a(x, 0.5)
    assert out.shape == x.shape  # 12x10 is padded to the network's multiple and cropped
    assert torch.equal(out, b(x, torch.tensor([0.5, 0.5])))
    assert a.name == "tiny" and a.sigma_data == 0.5


def test_corrupted_and_mismatched_bundles(tiny_bundle, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    (bad / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(PriorLoadError, match="does not match the SHA-256"):
        load(bad)
    cfg = json.loads((bad / "config.json").read_text())
    del cfg["weights_sha256"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PriorLoadError, match="not a valid safetensors file"):
        load(bad)
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_bundle, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["architecture"]["kwargs"]["channels"] = [16, 16]
    cfg["architecture"]["kwargs"]["norm_num_groups"] = 8
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PriorLoadError, match="do not fit the bundle's architecture"):
        load(wrong)
    (wrong / "config.json").unlink()
    with pytest.raises(PriorLoadError, match="config.json is missing"):
        load(wrong)
    with pytest.raises(PriorLoadError, match="no prior bundle"):
        load("not-a-bundle")


def test_weights_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.zeros(2), "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(PriorLoadError, match="weights_only"):
        load_state_dict(tmp_path / "evil.pt")
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "ok.pt")
    assert torch.equal(load_state_dict(tmp_path / "ok.pt")["w"], torch.ones(2))
    (tmp_path / "model.pkl").write_bytes(b"x")
    with pytest.raises(PriorLoadError, match="unsupported weights format"):
        load_state_dict(tmp_path / "model.pkl")


def test_monai_ddpm_state_dict_and_declared_module(tmp_path):
    from monai.networks.nets import DiffusionModelUNet

    arch = {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [8, 8],
        "attention_levels": [False, False],
        "num_res_blocks": 1,
        "norm_num_groups": 8,
    }
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = DiffusionModelUNet(
            **{**arch, "channels": (8, 8), "attention_levels": (False, False)}
        )
    from safetensors.torch import save_file

    save_file(unet.state_dict(), str(tmp_path / "ddpm.safetensors"))
    prior = load_monai_ddpm(tmp_path / "ddpm.safetensors", arch, prediction="epsilon")
    x = torch.randn(1, 1, 8, 8)
    sigma = float(prior._den.sigmas[500])
    # eps-VP by hand: z = x / sqrt(1 + s^2), x0 = x - s * eps(z, t)
    with torch.no_grad():
        eps = unet(x / (1 + sigma**2) ** 0.5, timesteps=torch.tensor([500.0]))
    assert torch.allclose(prior(x, sigma), x - sigma * eps, atol=1e-5)
    same = from_module(_Wrap(unet), "eps-vp")
    assert torch.allclose(same(x, sigma), prior(x, sigma), atol=1e-6)
    with pytest.raises(PriorLoadError, match="parameterisation"):
        from_module(unet, "score")


class _Wrap(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, z, t):
        return self.unet(z, timesteps=t)


@pytest.mark.parametrize("name", ["brain-mri-default", "mri-synth"])
def test_shipped_priors_denoise_heldout_slices(name):
    from diffrecon.data.mni import heldout_slices

    assert name in available()
    prior = load(name)
    clean = heldout_slices(size=96, step=8)
    g = torch.Generator().manual_seed(0)
    for sigma in (0.05, 0.1, 0.2):
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        with torch.no_grad():
            den = prior(noisy, sigma)
        mse_in = float((noisy - clean).pow(2).mean())
        mse_out = float((den - clean).pow(2).mean())
        # brain-mri-default leaves 6.7% / 4.2% / 2.8% of the noise power at these sigmas;
        # 20% (a 7 dB gain) is the regression guard
        print(f"{name} sigma={sigma}: {mse_out / mse_in:.3f} of the noise power left")
        assert mse_out < 0.2 * mse_in, (sigma, mse_in, mse_out)


def test_training_learns_a_gaussian_denoiser(tmp_path):
    """A few hundred steps on samples of a known Gaussian: the learned D approaches the exact
    one (far closer than the identity or the prior mean)."""
    from diffrecon.priors import GaussianPrior
    from diffrecon.priors.bundles import load as load_bundle
    from diffrecon.priors.train import train_prior

    n = 8
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    pts = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1).double()
    cov = 0.25 * torch.exp(-((pts[:, None] - pts[None]) ** 2).sum(-1) / 8.0)
    cov = torch.block_diag(cov, cov) + 1e-3 * torch.eye(2 * n * n, dtype=torch.float64)
    prior = GaussianPrior(torch.zeros(2, n, n, dtype=torch.float64), cov)
    gen = torch.Generator().manual_seed(1)

    def batch(k):
        return prior.sample(k, generator=gen).float()

    arch = {"channels": [16, 16], "attention_levels": [False, False], "norm_num_groups": 8}
    train_prior(
        tmp_path / "g",
        batch,
        steps=300,
        batch_size=16,
        lr=2e-3,
        ema_decay=0.95,
        arch=arch,
        progress=False,
        checkpoint_every=1000,
        bundle_config={"name": "gauss"},
    )
    learned = load_bundle(tmp_path / "g")
    x0 = prior.sample(64, generator=torch.Generator().manual_seed(2)).float()
    for sigma in (0.1, 0.3):
        x = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
        exact = prior(x, sigma).float()
        with torch.no_grad():
            got = learned(x, sigma)
        err = float((got - exact).pow(2).mean())
        err_identity = float((x - exact).pow(2).mean())
        print(
            f"sigma={sigma}: learned-vs-exact MSE {err:.5f}, identity-vs-exact {err_identity:.5f}"
        )
        assert err < 0.25 * err_identity
    assert np.isfinite(
        json.loads((tmp_path / "g" / "config.json").read_text())["training"]["final_loss_ema100"]
    )


def test_training_resumes_exactly(tmp_path):
    """4 steps + resume to 6 equals 6 straight steps: model, EMA, optimiser, data and noise
    RNG states all come back from the checkpoint."""
    from safetensors.torch import load_file

    from diffrecon.data.patches import PatchSource
    from diffrecon.priors.train import train_prior

    class Source(PatchSource):
        def patch(self):
            return self.channels(self.flip_rotate(self.rng.normal(size=(8, 8)) + 0j))

    arch = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8}

    def run(folder, steps):
        src = Source(seed=5)  # on resume, train_prior restores its RNG state from the checkpoint
        train_prior(
            folder,
            src.batch,
            steps=steps,
            batch_size=2,
            arch=arch,
            progress=False,
            checkpoint_every=100,
            data_state=src.get_state,
            set_data_state=src.set_state,
        )

    with torch.random.fork_rng():
        torch.set_num_threads(1)
        run(tmp_path / "a", 4)
        run(tmp_path / "a", 6)
        run(tmp_path / "b", 6)
    wa = load_file(str(tmp_path / "a" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["training"]["steps_done"] == 6


def _bundle_copy(src, dst, edit_config=None, weights=None):
    import json
    import shutil

    shutil.copytree(src, dst)
    if edit_config is not None:
        cfg = json.loads((dst / "config.json").read_text())
        cfg = edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    if weights is not None:
        (dst / "model.safetensors").write_bytes(weights)
    return dst


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: [c], "must be a JSON object, got list"),
        (lambda c: {**c, "sigma_min": 90.0}, "sigma_min 90.0 must be below sigma_max"),
        (lambda c: {**c, "sigma_data": -1}, "sigma_data must be a positive finite number"),
        (
            lambda c: {
                **c,
                "architecture": {
                    **c["architecture"],
                    "kwargs": {**c["architecture"]["kwargs"], "channels": [4096, 4096]},
                },
            },
            r"each of channels must be an integer in \[1, 1024\]",
        ),
        (
            lambda c: {
                **c,
                "architecture": {
                    **c["architecture"],
                    "kwargs": {**c["architecture"]["kwargs"], "evil": 1},
                },
            },
            "unknown architecture settings",
        ),
    ],
)
def test_bundle_configs_are_validated_before_anything_is_built(tmp_path, tiny_bundle, edit, match):
    from diffrecon.priors import PriorLoadError, load

    bad = _bundle_copy(tiny_bundle, tmp_path / "bad", edit)
    with pytest.raises(PriorLoadError, match=match):
        load(bad)


def test_weights_are_checked_against_the_recorded_digest_and_the_architecture(
    tmp_path, tiny_bundle
):
    import torch
    from safetensors.torch import save_file

    from diffrecon.priors import PriorLoadError, load

    assert "weights_sha256" in __import__("json").loads((tiny_bundle / "config.json").read_text())
    raw = (tiny_bundle / "model.safetensors").read_bytes()
    tampered = _bundle_copy(tiny_bundle, tmp_path / "t", weights=raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(PriorLoadError, match="does not match the SHA-256"):
        load(tampered)
    other = tmp_path / "other.safetensors"
    save_file({"unet.conv_in.weight": torch.zeros(3), "extra.bias": torch.zeros(1)}, str(other))

    def drop_digest(c):
        c.pop("weights_sha256")
        return c

    renamed = _bundle_copy(tiny_bundle, tmp_path / "r", drop_digest, weights=other.read_bytes())
    with pytest.raises(
        PriorLoadError, match=r"missing keys: unet.conv_in.conv.bias.*unexpected keys: extra"
    ):
        load(renamed)


def test_the_shipped_bundle_records_its_weights_digest():
    import hashlib
    import json

    from diffrecon.priors.bundles import shipped_dir

    d = shipped_dir() / "brain-mri-default"
    cfg = json.loads((d / "config.json").read_text())
    assert (
        cfg["weights_sha256"] == hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    )


def test_bfloat16_precision_keeps_float32_output_close_to_float32(tiny_bundle):
    """bf16 autocast changes the network's arithmetic, not the interface: float32 out, odd
    sizes still padded and cropped, close to the float32 denoiser; bad names refused."""
    from diffrecon.priors import load

    prior = load(str(tiny_bundle))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # MONAI zero-initialises the output layer: give it weights
        for p in prior.net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    x = torch.randn(2, 2, 10, 14, generator=g)
    sigma = torch.full((2,), 0.3)
    ref = prior(x, sigma)
    low = prior.with_precision("bfloat16")(x, sigma)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert float((low - ref).norm() / ref.norm()) < 0.05
    assert not torch.equal(low, ref)  # the autocast took effect
    with pytest.raises(ValueError, match="precision must be one of"):
        prior.with_precision("float16")
    torch.testing.assert_close(prior(x, sigma), ref)  # the original is unchanged
