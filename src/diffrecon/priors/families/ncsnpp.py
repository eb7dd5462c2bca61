"""score_sde's NCSN++ (continuous VE, Fourier noise embedding, BigGAN residual blocks), written
so its parameter names, shapes and order are those of yang-song/score_sde_pytorch
``models/ncsnpp.py`` (a flat ``all_modules`` list): score-MRI's fastMRI priors load into it.

The network returns the score ``grad log p(x; sigma)`` of the VE process ``x = x0 + sigma
n`` (``scale_by_sigma``: the last layer's output divided by sigma); the denoiser is Tweedie's
``x + sigma^2 score``. Supported: ``resblock_type`` biggan, ``progressive`` none or
output_skip, ``progressive_input`` none, input_skip or residual, FIR or plain resampling.
The defaults are score-MRI's ``fastmri_knee_320_ncsnpp_continuous`` configuration; what the
weights cannot tell (levels, blocks, attention resolutions, pyramid options) is an option.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# score-MRI's configuration (configs/ve/fastmri_knee_320_ncsnpp_continuous.py)
DEFAULTS: dict[str, Any] = {
    "image_size": 320,
    "ch_mult": (1, 2, 2, 2),
    "num_res_blocks": 4,
    "attn_resolutions": (16,),
    "resamp_with_conv": True,
    "fir": True,
    "fir_kernel": (1, 3, 3, 1),
    "skip_rescale": True,
    "progressive": "none",
    "progressive_input": "residual",
    "progressive_combine": "sum",
    "scale_by_sigma": True,
    "centered": False,
}


def _fir(k: tuple[int, ...]) -> torch.Tensor:
    k1 = np.asarray(k, dtype=np.float32)
    k2 = np.outer(k1, k1)
    return torch.from_numpy(k2 / k2.sum())


def upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)):
    """Upsample by zero insertion, pad (``pad[0]`` before, ``pad[1]`` after, both axes;
    negative crops), convolve with the FIR ``k`` per channel, keep every ``down``-th sample."""
    b, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(b, c, h * up, w * up)
        y[..., ::up, ::up] = x
        x = y
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    x = x[..., max(-p0, 0) : x.shape[-2] - max(-p1, 0), max(-p0, 0) : x.shape[-1] - max(-p1, 0)]
    kk = torch.flip(k, [0, 1]).to(x)[None, None].expand(c, 1, *k.shape)
    return F.conv2d(x, kk, groups=c)[..., ::down, ::down]


def upsample_2d(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    k = _fir(kernel) * 4
    p = k.shape[0] - 2
    return upfirdn2d(x, k, up=2, pad=((p + 1) // 2 + 1, p // 2))


def downsample_2d(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    k = _fir(kernel)
    p = k.shape[0] - 2
    return upfirdn2d(x, k, down=2, pad=((p + 1) // 2, p // 2))


def _naive_up(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def _naive_down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(ch // 4, 32), ch, eps=1e-6)


def _conv3(cin: int, cout: int, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=padding)


class NIN(nn.Module):
    """A 1x1 convolution stored as ``W (in, out)`` and ``b``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(cin, cout) / math.sqrt(cin))
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.W) + self.b[None, :, None, None]


class FourierProjection(nn.Module):
    """Gaussian Fourier features of ``log sigma``, sines first; ``W`` is fixed."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(size) * 16, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


class Combine(nn.Module):
    def __init__(self, dim1: int, dim2: int, method: str) -> None:
        super().__init__()
        self.Conv_0 = nn.Conv2d(dim1, dim2, 1)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(x)
        return torch.cat([h, y], dim=1) if self.method == "cat" else h + y


class AttnBlock(nn.Module):
    """Self-attention over pixels, one head, with 1x1 projections."""

    def __init__(self, ch: int, skip_rescale: bool) -> None:
        super().__init__()
        self.GroupNorm_0 = _norm(ch)
        self.NIN_0, self.NIN_1, self.NIN_2, self.NIN_3 = (NIN(ch, ch) for _ in range(4))
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        z = self.GroupNorm_0(x)
        q, k, v = self.NIN_0(z), self.NIN_1(z), self.NIN_2(z)
        a = torch.einsum("bchw,bcij->bhwij", q, k) * c**-0.5
        a = a.reshape(b, h, w, h * w).softmax(dim=-1).reshape(b, h, w, h, w)
        out = x + self.NIN_3(torch.einsum("bhwij,bcij->bchw", a, v))
        return out / math.sqrt(2.0) if self.skip_rescale else out


class FIRConv2d(nn.Module):
    """StyleGAN2's fused FIR downsampling + 3x3 convolution (``weight``, ``bias``)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) / math.sqrt(9 * cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = _fir(self.kernel)
        p = (k.shape[0] - 2) + 2
        x = upfirdn2d(x, k, pad=((p + 1) // 2, p // 2))
        return F.conv2d(x, self.weight, stride=2) + self.bias[None, :, None, None]


class PyramidDown(nn.Module):
    """The input pyramid's downsampling: FIR or average pooling, with a convolution for
    ``progressive_input="residual"``."""

    def __init__(self, cin: int, cout: int, conv: bool, fir: bool, kernel: tuple[int, ...]):
        super().__init__()
        self.conv, self.fir, self.kernel = conv, fir, kernel
        if conv and fir:
            self.Conv2d_0 = FIRConv2d(cin, cout, kernel)
        elif conv:
            self.Conv_0 = _conv3(cin, cout, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv and self.fir:
            return self.Conv2d_0(x)
        if self.conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return downsample_2d(x, self.kernel) if self.fir else _naive_down(x)


class ResBlock(nn.Module):
    """BigGAN residual block with the noise embedding added after the first convolution."""

    def __init__(
        self,
        cin: int,
        temb: int,
        cout: int | None = None,
        up: bool = False,
        down: bool = False,
        fir: bool = True,
        kernel: tuple[int, ...] = (1, 3, 3, 1),
        skip_rescale: bool = True,
    ) -> None:
        super().__init__()
        cout = cout or cin
        self.GroupNorm_0 = _norm(cin)
        self.Conv_0 = _conv3(cin, cout)
        self.Dense_0 = nn.Linear(temb, cout)
        self.GroupNorm_1 = _norm(cout)
        self.Conv_1 = _conv3(cout, cout)
        if cin != cout or up or down:
            self.Conv_2 = nn.Conv2d(cin, cout, 1)
        self.up, self.down, self.fir, self.kernel = up, down, fir, kernel
        self.skip_rescale = skip_rescale

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return upsample_2d(x, self.kernel) if self.fir else _naive_up(x)
        if self.down:
            return downsample_2d(x, self.kernel) if self.fir else _naive_down(x)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self._resample(F.silu(self.GroupNorm_0(x)))
        x = self._resample(x)
        h = self.Conv_0(h) + self.Dense_0(F.silu(temb))[:, :, None, None]
        h = self.Conv_1(F.silu(self.GroupNorm_1(h)))
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class NCSNpp(nn.Module):
    """The network ``score(x, sigma)``; module order as the reference builds it."""

    def __init__(self, nf: int, channels: int, **options: Any) -> None:
        super().__init__()
        o = {**DEFAULTS, **options}
        unknown = sorted(set(o) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown NCSN++ option(s) {unknown}; it takes {sorted(DEFAULTS)}")
        if o["progressive"] not in ("none", "output_skip"):
            raise ValueError("progressive must be 'none' or 'output_skip'")
        if o["progressive_input"] not in ("none", "input_skip", "residual"):
            raise ValueError("progressive_input must be 'none', 'input_skip' or 'residual'")
        self.o = o
        ch_mult, nrb = tuple(o["ch_mult"]), int(o["num_res_blocks"])
        res = [int(o["image_size"]) // 2**i for i in range(len(ch_mult))]
        attn = set(o["attn_resolutions"])
        fir, kernel, skip = bool(o["fir"]), tuple(o["fir_kernel"]), bool(o["skip_rescale"])
        temb = 4 * nf

        def block(cin: int, cout: int | None = None, up: bool = False, down: bool = False):
            return ResBlock(cin, temb, cout, up, down, fir, kernel, skip)

        m: list[nn.Module] = [FourierProjection(nf), nn.Linear(2 * nf, temb), nn.Linear(temb, temb)]
        m.append(_conv3(channels, nf))
        hs_c, cin, pyramid_c = [nf], nf, channels
        for level, mult in enumerate(ch_mult):
            for _ in range(nrb):
                m.append(block(cin, nf * mult))
                cin = nf * mult
                if res[level] in attn:
                    m.append(AttnBlock(cin, skip))
                hs_c.append(cin)
            if level != len(ch_mult) - 1:
                m.append(block(cin, down=True))
                if o["progressive_input"] == "input_skip":
                    m.append(Combine(pyramid_c, cin, o["progressive_combine"]))
                    if o["progressive_combine"] == "cat":
                        cin *= 2
                elif o["progressive_input"] == "residual":
                    m.append(PyramidDown(pyramid_c, cin, True, fir, kernel))
                    pyramid_c = cin
                hs_c.append(cin)
        cin = hs_c[-1]
        m += [block(cin), AttnBlock(cin, skip), block(cin)]
        for level in reversed(range(len(ch_mult))):
            for _ in range(nrb + 1):
                m.append(block(cin + hs_c.pop(), nf * ch_mult[level]))
                cin = nf * ch_mult[level]
            if res[level] in attn:
                m.append(AttnBlock(cin, skip))
            if o["progressive"] == "output_skip":
                m += [_norm(cin), _conv3(cin, channels)]
            if level != 0:
                m.append(block(cin, up=True))
        if o["progressive"] != "output_skip":
            m += [_norm(cin), _conv3(cin, channels)]
        self.all_modules = nn.ModuleList(m)
        self.nf, self.channels, self.levels = nf, channels, len(ch_mult)
        # attention by level, as built; the reference tests the runtime width instead, which
        # only agrees at the trained image size (other sizes would misalign the module list)
        self.attn_at = [r in attn for r in res]

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        o, mods = self.o, iter(self.all_modules)
        temb = next(mods)(torch.log(sigma))
        temb = next(mods)(temb)
        temb = next(mods)(F.silu(temb))
        if not o["centered"]:
            x = 2 * x - 1
        pyramid = x
        hs = [next(mods)(x)]
        for level in range(self.levels):
            for _ in range(o["num_res_blocks"]):
                h = next(mods)(hs[-1], temb)
                if self.attn_at[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level != self.levels - 1:
                h = next(mods)(hs[-1], temb)
                if o["progressive_input"] == "input_skip":
                    fir = o["fir"]
                    pyramid = (
                        downsample_2d(pyramid, o["fir_kernel"]) if fir else _naive_down(pyramid)
                    )
                    h = next(mods)(pyramid, h)
                elif o["progressive_input"] == "residual":
                    pyramid = next(mods)(pyramid)
                    pyramid = (pyramid + h) / math.sqrt(2.0) if o["skip_rescale"] else pyramid + h
                    h = pyramid
                hs.append(h)
        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        out = None
        for level in reversed(range(self.levels)):
            for _ in range(o["num_res_blocks"] + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_at[level]:
                h = next(mods)(h)
            if o["progressive"] == "output_skip":  # an output at every level, summed upwards
                norm, conv = next(mods), next(mods)
                skip = conv(F.silu(norm(h)))
                if out is not None:
                    out = upsample_2d(out, o["fir_kernel"]) if o["fir"] else _naive_up(out)
                out = skip if out is None else out + skip
            if level != 0:
                h = next(mods)(h, temb)
        if o["progressive"] == "output_skip":
            h = out
        else:
            norm, conv = next(mods), next(mods)
            h = conv(F.silu(norm(h)))
        if o["scale_by_sigma"]:
            h = h / sigma.reshape(-1, 1, 1, 1)
        return h


def ema_state(
    model: dict[str, torch.Tensor], shadow: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """score_sde's checkpoint ``{'model', 'ema': {'shadow_params'}}``: the model's state dict
    with its trainable parameters replaced by the EMA's, in order (the noise table ``sigmas``
    dropped, the fixed Fourier ``W`` kept)."""
    state = {k: v for k, v in model.items() if k != "sigmas"}
    trainable = [k for k in state if not k.endswith("all_modules.0.W")]
    if len(trainable) != len(shadow) or any(
        tuple(state[k].shape) != tuple(s.shape) for k, s in zip(trainable, shadow, strict=False)
    ):
        raise ValueError(
            f"the EMA holds {len(shadow)} tensors for the model's {len(trainable)} trainable "
            "parameters, or their shapes differ"
        )
    return {**state, **dict(zip(trainable, shadow, strict=True))}


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """What the weights tell: the base width ``nf`` and the image channels."""
    if "all_modules.0.W" not in shapes or "all_modules.3.weight" not in shapes:
        raise ValueError("not an NCSN++ state dict with a Fourier embedding (all_modules.0.W)")
    return {"nf": shapes["all_modules.0.W"][0], "channels": shapes["all_modules.3.weight"][1]}
