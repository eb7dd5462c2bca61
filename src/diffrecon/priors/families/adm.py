"""guided-diffusion's ADM U-Net (``UNetModel`` of openai/guided-diffusion), written so its
parameter names and shapes are the published ones: DDS's fastMRI complex priors and every
checkpoint trained with that code base load into it.

The network is a VP epsilon model ``eps(z_t, t)`` with an integer-scale timestep; with
``learn_sigma`` it returns twice the input channels (epsilon, then the variance
interpolation) and :class:`ADMNetwork` keeps the epsilon half. :func:`infer_config` reads
the architecture back from the key names and shapes; what the weights cannot tell
(attention heads: ``num_head_channels`` or ``num_heads``, and the attention channel order)
comes from the user, with DDS's values as defaults.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """32-group norm computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, cosines first."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class ResBlock(nn.Module):
    """Residual block with the timestep embedding as a bias or as scale and shift, optionally
    resampling (nearest-neighbour up, average-pool down) between its two halves."""

    def __init__(
        self, ch: int, emb: int, out: int, scale_shift: bool, up: bool = False, down: bool = False
    ) -> None:
        super().__init__()
        self.scale_shift, self.up, self.down = scale_shift, up, down
        self.in_layers = nn.Sequential(
            GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * out if scale_shift else out))
        self.out_layers = nn.Sequential(
            GroupNorm32(32, out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out == ch else nn.Conv2d(ch, out, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return torch.nn.functional.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[2](self._resample(self.in_layers[1](self.in_layers[0](x))))
        x = self._resample(x)
        e = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over pixels. ``new_order``: the qkv channels are (q/k/v, head, channel);
    otherwise (head, q/k/v, channel), guided-diffusion's legacy layout."""

    def __init__(self, ch: int, heads: int, new_order: bool) -> None:
        super().__init__()
        if heads < 1 or ch % heads:
            raise ValueError(f"{ch} attention channels do not split into {heads} heads")
        self.heads, self.new_order = heads, new_order
        self.norm = GroupNorm32(32, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        n = qkv.shape[-1]
        ch = c // self.heads
        if self.new_order:
            q, k, v = (t.reshape(b * self.heads, ch, n) for t in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * self.heads, 3 * ch, n).split(ch, dim=1)
        s = 1 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", q * s, k * s).float().softmax(dim=-1).type(q.dtype)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, n)
        return (x + self.proj_out(a)).reshape(b, c, *spatial)


class Resample(nn.Module):
    """The separate 2x up/downsampling layer (``conv``: with a 3x3 convolution)."""

    def __init__(self, ch: int, up: bool, conv: bool) -> None:
        super().__init__()
        self.up_ = up
        if conv and up:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        elif conv:
            self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if self.up_:
            x = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(x) if hasattr(self, "conv") else x
        return self.op(x) if hasattr(self, "op") else torch.nn.functional.avg_pool2d(x, 2)


class _Seq(nn.ModuleList):
    """guided-diffusion's ``TimestepEmbedSequential``: layers indexed 0, 1, 2."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = (
                layer(x, emb)
                if isinstance(layer, ResBlock | AttentionBlock | Resample)
                else layer(x)
            )
        return x


class ADMUNet(nn.Module):
    """``UNetModel(in_channels, model_channels, out_channels, num_res_blocks,
    attention_resolutions (as downsampling factors), channel_mult, conv_resample,
    num_heads / num_head_channels, use_scale_shift_norm, resblock_updown,
    use_new_attention_order)``: the same modules under the same names."""

    def __init__(
        self,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_ds: tuple[int, ...],
        channel_mult: tuple[int, ...] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        up_heads = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb = 4 * model_channels
        self.model_channels = model_channels
        ss = use_scale_shift_norm

        def attn(c: int, heads: int) -> AttentionBlock:
            if num_head_channels != -1 and c % num_head_channels:
                raise ValueError(
                    f"{c} attention channels are not a multiple of {num_head_channels}"
                )
            h = c // num_head_channels if num_head_channels != -1 else heads
            return AttentionBlock(c, h, use_new_attention_order)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        ch = model_channels * channel_mult[0]
        self.input_blocks = nn.ModuleList([_Seq([nn.Conv2d(in_channels, ch, 3, padding=1)])])
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb, model_channels * mult, ss)]
                ch = model_channels * mult
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(_Seq(layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = (
                    ResBlock(ch, emb, ch, ss, down=True)
                    if resblock_updown
                    else Resample(ch, False, conv_resample)
                )
                self.input_blocks.append(_Seq([down]))
                chans.append(ch)
                ds *= 2
        self.middle_block = _Seq(
            [ResBlock(ch, emb, ch, ss), attn(ch, num_heads), ResBlock(ch, emb, ch, ss)]
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb, model_channels * mult, ss)]
                ch = model_channels * mult
                if ds in attention_ds:
                    layers.append(attn(ch, up_heads))
                if level and i == num_res_blocks:
                    layers.append(
                        ResBlock(ch, emb, ch, ss, up=True)
                        if resblock_updown
                        else Resample(ch, True, conv_resample)
                    )
                    ds //= 2
                self.output_blocks.append(_Seq(layers))
        self.out = nn.Sequential(
            GroupNorm32(32, ch),
            nn.SiLU(),
            nn.Conv2d(model_channels * channel_mult[0], out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t.reshape(-1), self.model_channels))
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


class ADMNetwork(ADMUNet):
    """An ADM U-Net as ``eps(z_t, t)``; with ``learn_sigma`` the first half of the output
    channels (epsilon) and never the variance half. Its state dict is the bare
    ``UNetModel``'s, as the published checkpoints hold it."""

    def __init__(self, learn_sigma: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.learn_sigma, self.kwargs = learn_sigma, kwargs
        if learn_sigma and kwargs["out_channels"] != 2 * kwargs["in_channels"]:
            raise ValueError(
                f"learn_sigma needs twice the input channels out ({2 * kwargs['in_channels']}), "
                f"the network has {kwargs['out_channels']}"
            )

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = super().forward(z, t)
        return out[:, : z.shape[1]] if self.learn_sigma else out


_BLOCK = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(\w+)")


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The :class:`ADMUNet` arguments a guided-diffusion state dict implies (all but the
    attention heads and channel order, which the weights do not record)."""
    if "time_embed.0.weight" not in shapes or "input_blocks.0.0.weight" not in shapes:
        raise ValueError(
            "not a guided-diffusion UNetModel state dict (no time_embed / input_blocks)"
        )
    sub: dict[tuple[str, int], dict[int, set[str]]] = {}
    for key in shapes:
        m = _BLOCK.match(key)
        if m:
            where = (m.group(1), int(m.group(2)))
            sub.setdefault(where, {}).setdefault(int(m.group(3)), set()).add(m.group(4))
    mc = shapes["time_embed.0.weight"][1]
    n_out = 1 + max(i for (kind, i) in sub if kind == "output_blocks")

    def has_up(i: int) -> bool:
        layers = sub.get(("output_blocks", i), {})
        return any(j >= 1 and ({"in_layers", "conv"} & names) for j, names in layers.items())

    ups = [i for i in range(n_out) if has_up(i)]
    if ups:
        nrb = ups[0]
    else:  # parameter-free resampling: the input blocks with no weights are the downsamplers
        n_in = 1 + max(i for (kind, i) in sub if kind == "input_blocks")
        empty = [i for i in range(1, n_in) if ("input_blocks", i) not in sub]
        nrb = empty[0] - 1 if empty else n_out - 1
    levels = n_out // (nrb + 1)
    mult, attention, scale_shift = [], [], False
    for level in range(levels):
        first = 1 + level * (nrb + 1)
        out_w = shapes[f"input_blocks.{first}.0.out_layers.3.weight"]
        mult.append(out_w[0] // mc)
        scale_shift = shapes[f"input_blocks.{first}.0.emb_layers.1.weight"][0] == 2 * out_w[0]
        if "qkv" in sub.get(("input_blocks", first), {}).get(1, set()):
            attention.append(2**level)
    down = sub.get(("input_blocks", nrb + 1), {}).get(0, set()) if levels > 1 else set()
    if "label_emb.weight" in shapes:
        raise ValueError(
            "class-conditional ADM networks (label_emb) need a class label at every step; "
            "only unconditional priors are supported"
        )
    return {
        "in_channels": shapes["input_blocks.0.0.weight"][1],
        "model_channels": mc,
        "out_channels": shapes["out.2.weight"][0],
        "num_res_blocks": nrb,
        "attention_ds": tuple(attention),
        "channel_mult": tuple(mult),
        "conv_resample": any(".0.op." in k for k in shapes if k.startswith("input_blocks.")),
        "use_scale_shift_norm": scale_shift,
        "resblock_updown": "in_layers" in down,
    }
