"""Low-rank adapters and test-time adaptation of a prior (issue 25), on priors whose exact
posterior is known."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from diffrecon import reconstruct
from diffrecon.adapt import AdaptSettings, adapt_prior, adaptation_levels
from diffrecon.mri import cartesian_mask
from diffrecon.mri.holdout import holdout_split
from diffrecon.operators import MulticoilMRI
from diffrecon.priors import GaussianPrior, load
from diffrecon.priors.learned import from_module
from diffrecon.priors.lora import add_lora, lora_parameters, merged, set_enabled, with_lora
from diffrecon.testing import coil_maps

SIZE, SD, NOISE = 24, 0.2, 0.05


def pattern() -> torch.Tensor:
    """A fixed random image ``(1, 1, SIZE, SIZE)``: a prior mean with energy on every
    k-space column, so held-out lines see where the mean is wrong."""
    return torch.randn(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(7))


class GaussianNet(torch.nn.Module):
    """The exact ``x0`` denoiser of ``N(w * pattern, SD^2 I)``, plus a correction convolution
    (zero, or none without ``correction``). ``w`` lives in a 1x1 convolution of the
    pattern, so adapters can move the mean; the correction lets them change how much the
    denoiser trusts its input."""

    def __init__(self, weight: float, correction: bool = True) -> None:
        super().__init__()
        self.register_buffer("pattern", pattern())
        self.mean = torch.nn.Conv2d(1, 2, 1, bias=False)
        self.corr = torch.nn.Conv2d(2, 2, 3, padding=1, bias=False) if correction else None
        with torch.no_grad():
            self.mean.weight.fill_(weight)
            if self.corr is not None:
                self.corr.weight.zero_()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        m = self.mean(self.pattern)
        gain = SD**2 / (SD**2 + sigma.reshape(-1, 1, 1, 1) ** 2)
        out = m + gain * (x - m)
        return out + self.corr(x - m) if self.corr is not None else out


def gaussian_prior_net(weight: float, correction: bool = True):
    net = GaussianNet(weight, correction)
    return from_module(net, "x0-ve", sigma_data=SD, sigma_min=0.002, sigma_max=80.0)


@dataclass
class Problem:
    op: MulticoilMRI
    y: torch.Tensor
    mask: torch.Tensor
    parts: tuple  # fit (twice: trajectory and loss) and held-out samples: (operator, data)

    def exact(self, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean and std under ``N(weight * pattern, SD^2 I)``."""
        n = 2 * SIZE * SIZE
        mean = (weight * pattern()[0]).expand(2, SIZE, SIZE).double()
        gp = GaussianPrior(mean, SD**2 * torch.eye(n, dtype=torch.float64))
        op64 = MulticoilMRI(self.op.maps.to(torch.complex128), self.mask)
        pm, cov = gp.posterior(op64, self.y.to(torch.complex128), NOISE)
        return pm.float(), cov.diagonal().reshape(2, SIZE, SIZE).sqrt().float()


def problem(weight: float, seed: int = 0, signal: bool = True) -> Problem:
    """A 24x24 complex image from ``N(weight * pattern, SD^2 I)`` (or nothing,
    ``signal=False``), 4 coils, a 2x random column mask, noise ``NOISE``; its fit and
    held-out samples."""
    g = torch.Generator().manual_seed(seed)
    maps = coil_maps(SIZE, 4).to(torch.complex64)
    mask = torch.as_tensor(cartesian_mask(SIZE, 2.0, 0.17, seed=seed + 1).mask)
    op = MulticoilMRI(maps, mask)
    x = weight * pattern() + SD * torch.randn(1, 2, SIZE, SIZE, generator=g)
    clean = op(x) if signal else torch.zeros_like(op(x))
    noise = NOISE * torch.complex(*torch.randn(2, *clean.shape, generator=g))
    y = clean + noise * mask.expand(SIZE, SIZE)
    split = holdout_split(mask, seed, fraction=0.25)
    assert split is not None

    def part(m: torch.Tensor):
        return MulticoilMRI(maps, m), y * m.expand(SIZE, SIZE)

    return Problem(op, y, mask, (*part(split.fit), *part(split.fit), *part(split.held)))


def test_zero_initialised_adapters_leave_the_network_unchanged():
    prior = load("brain-mri-default")
    x = torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.3, 2.0])
    adapted = with_lora(prior, rank=4)
    assert torch.equal(adapted(x, s), prior(x, s))
    params = lora_parameters(adapted.net)
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for p in prior.net.parameters())
    assert all(p.requires_grad is False for p in adapted.net.parameters() if p not in set(params))


def test_merged_adapters_compute_the_same_function():
    net = GaussianNet(0.1)
    lora = add_lora(net, rank=2)
    with torch.no_grad():
        for p in lora_parameters(lora):
            p.normal_()
    x = torch.randn(3, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    s = torch.tensor([0.1, 0.5, 1.0])
    folded = merged(lora)
    assert torch.allclose(folded(x, s), lora(x, s), atol=1e-5)
    assert not torch.allclose(lora(x, s), net(x, s))
    set_enabled(lora, False)
    assert torch.equal(lora(x, s), net(x, s))
    assert not any(p.requires_grad for p in folded.parameters())


def test_adapters_refuse_bad_ranks_and_exact_priors():
    with pytest.raises(ValueError, match="rank"):
        add_lora(GaussianNet(0.0), rank=0)
    with pytest.raises(ValueError, match="learned prior"):
        with_lora(GaussianPrior(torch.zeros(1, 2, 2), torch.eye(4)), rank=2)  # type: ignore[arg-type]


def test_settings_parse_and_refuse():
    s = AdaptSettings.parse("rank=8, steps=2, lr=0.002")
    assert (s.rank, s.steps, s.lr) == (8, 2, 0.002)
    assert AdaptSettings.parse("") == AdaptSettings()
    with pytest.raises(ValueError, match="unknown adaptation"):
        AdaptSettings.parse("ranks=3")
    with pytest.raises(ValueError, match="key=value"):
        AdaptSettings.parse("rank")
    with pytest.raises(ValueError, match="positive integer"):
        AdaptSettings.parse("levels=0")
    assert AdaptSettings.parse("scope=volume").scope == "volume"
    with pytest.raises(ValueError, match="scope must be one of slice, volume"):
        AdaptSettings.parse("scope=file")
    levels = adaptation_levels(AdaptSettings(levels=4), 0.5)
    assert levels[0] == pytest.approx(0.5) and levels[-2] == pytest.approx(0.025)
    assert levels[-1] == 0.0 and all(a > b for a, b in zip(levels, levels[1:], strict=False))


def adapt(prior, p: Problem, seed: int, **settings):
    g = torch.Generator().manual_seed(seed)
    s = AdaptSettings(**({"levels": 8, "steps": 4} | settings))
    return adapt_prior(prior, *p.parts, NOISE, s, generator=g)


def test_adaptation_moves_a_misplaced_prior_toward_the_exact_posterior():
    p = problem(weight=0.6)
    wrong = gaussian_prior_net(0.0, correction=False)
    adapted, report = adapt(wrong, p, 3, lr=0.01)
    assert report.accepted, report.reason
    assert report.score_adapted < report.score_base
    learned = float(adapted.net.mean.weight.mean())
    assert learned > 0.25, learned  # from 0.0 toward 0.6
    exact, _ = p.exact(0.6)
    before = reconstruct(p.y, p.op, wrong, "daps-mri", draws=4, noise_std=NOISE, seed=0).mean
    after = reconstruct(p.y, p.op, adapted, "daps-mri", draws=4, noise_std=NOISE, seed=0).mean
    err_before = float((before - exact).pow(2).mean().sqrt())
    err_after = float((after - exact).pow(2).mean().sqrt())
    assert err_after < 0.6 * err_before, (err_before, err_after)


def test_kept_adapters_rebuild_the_adapted_prior_elsewhere(tmp_path):
    """What a volume shares: the kept adapters, saved and loaded, merged into a fresh copy
    of the base prior, give the adapted network's outputs; a refusal shares the base."""
    from diffrecon.adapt import SharedAdaptation, apply_adapters

    p = problem(weight=0.6)
    wrong = gaussian_prior_net(0.0, correction=False)
    adapted, report = adapt(wrong, p, 3, lr=0.01)
    assert report.accepted and report.adapters
    shared = SharedAdaptation.of_report(7, report)
    shared.save(tmp_path / "a.pt")
    back = SharedAdaptation.load(tmp_path / "a.pt")
    assert (back.slice, back.accepted, back.kept_level) == (7, True, report.kept_level)
    x = torch.randn(2, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    s = torch.tensor([0.05, 0.4])
    rebuilt = back.prior(gaussian_prior_net(0.0, correction=False), 4)
    assert torch.allclose(rebuilt(x, s), adapted(x, s), atol=1e-6)
    assert not torch.allclose(rebuilt(x, s), wrong(x, s), atol=1e-3)
    with pytest.raises(ValueError, match="do not fit"):
        apply_adapters(wrong, 2, report.adapters)
    refused = SharedAdaptation(3, False, None, 1.0, "refused")
    refused.save(tmp_path / "r.pt")
    assert SharedAdaptation.load(tmp_path / "r.pt").prior(wrong, 4) is wrong


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_adaptation_with_a_correct_prior_keeps_the_posterior_spread(seed):
    # the default settings; a learning rate 10x larger widened one of these by 25%
    p = problem(weight=0.3, seed=seed)
    g = torch.Generator().manual_seed(4)
    adapted, _ = adapt_prior(gaussian_prior_net(0.3), *p.parts, NOISE, generator=g)
    _, exact_std = p.exact(0.3)
    post = reconstruct(p.y, p.op, adapted, "daps-mri", draws=16, noise_std=NOISE, seed=0)
    assert post.draws is not None
    ratio = float((post.draws.std(0) / exact_std).median())
    assert 0.85 <= ratio <= 1.15, ratio


class MemoryNet(torch.nn.Module):
    """A zero-mean white Gaussian denoiser plus a free image made from fixed random codes
    (zero): the only thing adapters can change is that image, i.e. they can only memorise."""

    def __init__(self, codes: int = 64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(8)
        self.register_buffer("codes", torch.randn(1, codes, SIZE, SIZE, generator=g))
        self.free = torch.nn.Conv2d(codes, 2, 1, bias=False)
        torch.nn.init.zeros_(self.free.weight)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        gain = SD**2 / (SD**2 + sigma.reshape(-1, 1, 1, 1) ** 2)
        return gain * x + self.free(self.codes)


def test_the_held_out_stop_refuses_to_fit_noise():
    p = problem(weight=0.0, signal=False, seed=2)
    prior = from_module(MemoryNet(), "x0-ve", sigma_data=SD, sigma_min=0.002, sigma_max=80.0)
    out, report = adapt(prior, p, 5, steps=8, lr=0.1)
    assert report.levels_run < 8 or not report.accepted, report  # the held-out stops it
    if not report.accepted:
        assert out is prior


def test_adaptation_refuses_what_it_cannot_adapt():
    p = problem(weight=0.0)
    exact = GaussianPrior(torch.zeros(2, SIZE, SIZE), torch.eye(2 * SIZE * SIZE))
    with pytest.raises(ValueError, match="learned prior"):
        adapt_prior(exact, *p.parts, NOISE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise level"):
        adapt_prior(gaussian_prior_net(0.0), *p.parts, 0.0)
