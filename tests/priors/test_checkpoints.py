"""Published checkpoint families: our networks have the published key names and shapes
(recorded from the reference code in data/published_keys.json), load from the layouts the
reference code saves, run through a reconstruction, and every unsafe or mismatched file is
refused with a message."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import diffrecon.mri as mri
from diffrecon import reconstruct_kspace
from diffrecon.priors import LearnedPrior, PriorLoadError, from_module, load_checkpoint, open_prior
from diffrecon.priors.families.adm import ADMNetwork, ADMUNet
from diffrecon.priors.families.edm import EDMNetwork, infer_config
from diffrecon.priors.families.ncsnpp import NCSNpp

PUBLISHED = json.loads((Path(__file__).parent / "data" / "published_keys.json").read_text())
FAST = {"sampler": "daps-fast", "steps": 2, "draws": 1, "langevin_steps": 2}


NCSNPP_OPTIONS = {
    "image_size": 32,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 2,
    "attn_resolutions": [8],
}


def _net(name: str) -> torch.nn.Module:
    cfg = dict(PUBLISHED[name]["config"])
    torch.manual_seed(0)
    if name.startswith("ncsnpp"):
        return NCSNpp(cfg.pop("nf"), cfg.pop("channels"), **cfg)
    if name.startswith("edm"):
        cfg.pop("dropout")
        c = cfg.pop("img_channels")
        return EDMNetwork(in_channels=c, out_channels=c, **cfg)
    return ADMNetwork(
        learn_sigma=True,
        in_channels=cfg["in_channels"],
        model_channels=cfg["model_channels"],
        out_channels=cfg["out_channels"],
        num_res_blocks=cfg["num_res_blocks"],
        attention_ds=tuple(cfg["attention_resolutions"]),
        channel_mult=tuple(cfg["channel_mult"]),
        num_head_channels=cfg["num_head_channels"],
        use_scale_shift_norm=cfg["use_scale_shift_norm"],
        resblock_updown=cfg["resblock_updown"],
    )


def _randomise(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Small non-zero weights everywhere (the reference zero-initialises output layers)."""
    g = torch.Generator().manual_seed(1)
    return {
        k: (0.05 * torch.randn(v.shape, generator=g) if "resample_filter" not in k else v)
        for k, v in net.state_dict().items()
    }


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_our_networks_have_the_published_key_names_and_shapes(name):
    net = _net(name)
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    if name.startswith("ncsnpp"):  # the reference also saves its noise table, which we drop
        ours["sigmas"] = PUBLISHED[name]["keys"]["sigmas"]
        # and its EMA lists the trainable parameters in this order
        trainable = [k for k, p in net.named_parameters() if p.requires_grad]
        assert trainable == PUBLISHED[name]["trainable_order"]
    assert ours == PUBLISHED[name]["keys"]
    if name.startswith("edm"):  # and the architecture is read back from them
        shapes = {k: tuple(v) for k, v in PUBLISHED[name]["keys"].items()}
        cfg = infer_config(shapes)
        rebuilt = EDMNetwork(**cfg).state_dict()
        assert {k: list(v.shape) for k, v in rebuilt.items()} == PUBLISHED[name]["keys"]


@pytest.fixture(scope="module")
def slice_(tiny_kspace_file):
    with h5py.File(tiny_kspace_file) as f:
        k = f["kspace"][0]
    return np.asarray(mri.remove_readout_oversampling(k, 32), dtype=np.complex64)


@pytest.mark.parametrize(
    ("name", "layout", "suffix"),
    [
        ("edm_dhariwal", "net", ".pt"),  # InverseBench: {'net': EDMPrecond state dict}
        ("edm_ncsnpp", "ema", ".pt"),  # EDM pickle converted with state_dict(), under 'ema'
        ("adm_dds", None, ".pt"),  # guided-diffusion / DDS: the bare UNetModel state dict
        ("adm_dds", None, ".safetensors"),
    ],
)
def test_checkpoint_layouts_load_and_reconstruct(tmp_path, slice_, name, layout, suffix):
    state = _randomise(_net(name))
    path = tmp_path / f"ckpt{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({layout: state, "step": 7} if layout else state, path)
    options = {"num_head_channels": 16} if name.startswith("adm") else {}
    prior = open_prior(path, **options)
    assert isinstance(prior, LearnedPrior) and prior.channels == 2
    assert prior.config["format"] == name.split("_")[0]
    assert prior.config["parameterisation"] == ("edm" if name.startswith("edm") else "eps-vp")
    # the loaded weights are the saved ones
    loaded = prior.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    r = reconstruct_kspace(slice_, prior=prior, seed=0, **FAST)
    assert r.mean.shape == slice_.shape[-2:] and np.isfinite(r.mean).all()


def test_score_sde_checkpoint_loads_its_ema_weights_and_reconstructs(tmp_path, slice_):
    """score_sde / score-MRI layout: {'model': DataParallel state dict with the sigmas table,
    'ema': {'decay', 'num_updates', 'shadow_params'}, 'step'}: the EMA weights are used."""
    net = _net("ncsnpp_scoremri")
    state = _randomise(net)
    model = {"module.sigmas": torch.linspace(378, 0.01, 10)}
    model.update({f"module.{k}": v for k, v in state.items()})
    trainable = [k for k, p in net.named_parameters() if p.requires_grad]
    shadow = [state[k] + 1 for k in trainable]
    ema = {"decay": 0.999, "num_updates": 3, "shadow_params": shadow}
    path = tmp_path / "checkpoint_95.pth"
    torch.save({"model": model, "ema": ema, "step": 95, "optimizer": {"state": {}}}, path)
    prior = open_prior(path, **NCSNPP_OPTIONS)
    loaded = prior.net.state_dict()
    assert prior.config["format"] == "ncsnpp" and prior.config["parameterisation"] == "score-ve"
    assert all(torch.equal(loaded[k], state[k] + 1) for k in trainable)
    assert torch.equal(loaded["all_modules.0.W"], state["all_modules.0.W"])  # fixed, not EMA
    # Tweedie: D(x, sigma) = x + sigma^2 score(x, sigma)
    x, s = torch.rand(1, 2, 32, 32), torch.tensor([0.3])
    torch.testing.assert_close(prior(x, s), x + 0.09 * prior.net(x, s))
    r = reconstruct_kspace(slice_, prior=prior, seed=0, **FAST)
    assert np.isfinite(r.mean).all()
    # an EMA that does not match the model is refused
    ema["shadow_params"] = shadow[:-1]
    torch.save({"model": model, "ema": ema, "step": 95}, path)
    with pytest.raises(PriorLoadError, match="EMA holds"):
        open_prior(path, **NCSNPP_OPTIONS)


def test_adm_learn_sigma_keeps_the_epsilon_half():
    net = _net("adm_dds").eval()
    net.load_state_dict(_randomise(net))
    z, t = torch.randn(1, 2, 32, 32), torch.tensor([500.0])
    full = ADMUNet.forward(net, z, t)  # the whole output: epsilon, then the variance
    assert full.shape[1] == 4
    torch.testing.assert_close(net(z, t), full[:, :2])


def test_unsafe_and_mismatched_checkpoints_are_refused(tmp_path):
    # pickled objects (code) are never unpickled, for every family's layout
    for name, layout in (
        ("edm_dhariwal", "net"),
        ("edm_ncsnpp", "ema"),
        ("adm_dds", None),
        ("ncsnpp_scoremri", "model"),
    ):
        state = _net(name).state_dict()
        payload = (
            {layout: state, "args": argparse.Namespace(lr=1)}
            if layout
            else {**state, "args": argparse.Namespace(lr=1)}
        )
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(PriorLoadError, match="never unpickles"):
            open_prior(path)
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(b"\x80\x04N.")
    with pytest.raises(PriorLoadError, match=r"state_dict\(\)"):
        open_prior(pkl)
    # a key renamed: the message lists the missing and the unexpected key
    state = _net("adm_dds").state_dict()
    state["out.2.bias_renamed"] = state.pop("out.2.bias")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(PriorLoadError, match=r"missing keys: out\.2\.bias; unexpected keys: out"):
        load_checkpoint(path, num_head_channels=16)
    # the wrong family forced, an unknown option, an unknown layout
    torch.save(_net("edm_dhariwal").state_dict(), path)
    with pytest.raises(PriorLoadError, match="not a guided-diffusion UNetModel"):
        load_checkpoint(path, format="adm")
    with pytest.raises(PriorLoadError, match=r"unknown option\(s\) \['num_heads'\]"):
        load_checkpoint(path, num_heads=2)
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(PriorLoadError, match="unknown checkpoint layout"):
        load_checkpoint(path)
    torch.save({"optimizer": {"lr": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(PriorLoadError, match="no state dict of tensors"):
        load_checkpoint(path)


class _Eps(torch.nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(c_in, c_out, 1)

    def forward(self, z, t):
        return self.conv(z)


def test_from_module_refuses_unknown_options_and_takes_learn_sigma(slice_):
    with pytest.raises(PriorLoadError, match=r"unknown option\(s\) \['learn_sgima'\]"):
        from_module(_Eps(2, 4), "eps-vp", learn_sgima=True)
    prior = from_module(_Eps(2, 4), "eps-vp", learn_sigma=True, channels=2)
    x = torch.randn(1, 2, 8, 8)
    assert prior(x, torch.tensor([1.0])).shape == x.shape
    with pytest.raises(ValueError, match="not twice as many"):
        from_module(_Eps(2, 2), "eps-vp", learn_sigma=True)(x, torch.tensor([1.0]))


def test_a_magnitude_prior_on_complex_mri_is_refused_before_any_work(slice_):
    prior = from_module(_Eps(1, 1), "eps-vp", channels=1)
    with pytest.raises(ValueError, match="magnitude .1-channel. prior cannot model complex MR"):
        reconstruct_kspace(slice_, prior=prior, **FAST)


def test_cli_takes_a_checkpoint_with_its_options(tmp_path, tiny_kspace_file):
    from diffrecon.cli import main
    from diffrecon.io.results import read_results

    ckpt = tmp_path / "dds.pt"
    torch.save(_randomise(_net("adm_dds")), ckpt)
    base = ["reconstruct", str(tiny_kspace_file), "--prior", str(ckpt), "--quiet"]
    run = ["--slices", "0", "--steps", "2", "--draws", "1", "--sampler", "daps-fast"]
    opt = ["--prior-option", "num_head_channels=16"]
    assert main([*base, *run, *opt, "-o", str(tmp_path / "out")]) == 0
    res = read_results(tmp_path / "out" / "tiny.h5")
    assert res.attrs["prior"] == "dds" and np.isfinite(res.reconstruction).all()
    # heads that do not divide the attention channels, a malformed or unknown option: exit 2
    # (issue 28 #8d: data_scale=0 was a ZeroDivisionError)
    for bad in ("num_head_channels=48", "bogus", "sigma_data=0.5", "data_scale=0"):
        assert main([*base, *run, "--prior-option", bad, "-o", str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2" / "tiny.h5").exists()


def test_ncsnpp_runs_at_sizes_other_than_its_training_size():
    """Attention is placed by level, so an image of another size (MRI crops vary) runs
    through the same modules instead of misaligning the flat module list."""
    net = _net("ncsnpp_scoremri").eval()  # built for 32x32
    for shape in ((1, 2, 48, 40), (2, 2, 64, 64)):
        out = net(torch.rand(shape), torch.full((shape[0],), 0.5))
        assert out.shape == shape and torch.isfinite(out).all()


def test_a_degenerate_data_scale_is_refused_by_name():
    from diffrecon.priors.wrappers import ScaledDenoiser

    for scale, shift, match in (
        (0.0, 0.0, "data_scale"),
        (float("nan"), 0.0, "data_scale"),
        (1.0, float("inf"), "data_shift"),
    ):
        with pytest.raises(ValueError, match=match):
            ScaledDenoiser(lambda x, s: x, scale, shift)
