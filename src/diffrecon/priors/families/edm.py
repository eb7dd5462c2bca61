"""EDM's two U-Nets, ``DhariwalUNet`` (ADM) and ``SongUNet`` (DDPM++ / NCSN++), written so
their parameter names and shapes are those of NVlabs/edm ``training/networks.py``.

Checkpoints of EDM and of the code built on it (InverseBench's 2-channel MRI priors, EDM
fastMRI priors) are state dicts of ``EDMPrecond``, whose network sits under ``model.``;
:class:`EDMNetwork` keeps that nesting. :func:`infer_config` reads the architecture back
from the key names and shapes (resolutions, blocks, attention, channels, embedding), so a
state dict loads without its training options. The forward pass is the raw ``F(x,
c_noise)`` that :class:`~diffrecon.priors.wrappers.EDMDenoiser` preconditions.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch.nn.functional import silu


class Linear(torch.nn.Module):
    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_out, n_in) / math.sqrt(n_in))
        self.bias = torch.nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), _cast(self.bias, x))


def _cast(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(like.dtype)


class Conv2d(torch.nn.Module):
    """A ``kernel`` x ``kernel`` convolution (none when ``kernel`` is 0) with an optional
    2x up- or downsampling by the separable ``resample_filter`` (a buffer of its own)."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: tuple[int, ...] = (1, 1),
        fused_resample: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.up, self.down = n_in, n_out, up, down
        self.fused = fused_resample
        fan_in = max(n_in * kernel * kernel, 1)
        shape = (n_out, n_in, kernel, kernel)
        self.weight = torch.nn.Parameter(torch.randn(shape) / math.sqrt(fan_in)) if kernel else None
        self.bias = torch.nn.Parameter(torch.zeros(n_out)) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum() ** 2
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = torch.nn.functional.conv2d
        w = _cast(self.weight, x)
        f = _cast(self.resample_filter, x)
        wp = w.shape[-1] // 2 if w is not None else 0
        fp = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused and self.up and w is not None:
            x = torch.nn.functional.conv_transpose2d(
                x, (4 * f).tile(self.in_channels, 1, 1, 1), groups=self.in_channels, stride=2,
                padding=max(fp - wp, 0),
            )  # fmt: skip
            x = conv(x, w, padding=max(wp - fp, 0))
        elif self.fused and self.down and w is not None:
            x = conv(x, w, padding=wp + fp)
            x = conv(x, f.tile(self.out_channels, 1, 1, 1), groups=self.out_channels, stride=2)
        else:
            if self.up:
                x = torch.nn.functional.conv_transpose2d(
                    x,
                    (4 * f).tile(self.in_channels, 1, 1, 1),
                    groups=self.in_channels,
                    stride=2,
                    padding=fp,
                )
            if self.down:
                x = conv(
                    x,
                    f.tile(self.in_channels, 1, 1, 1),
                    groups=self.in_channels,
                    stride=2,
                    padding=fp,
                )
            if w is not None:
                x = conv(x, w, padding=wp)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        return x


class GroupNorm(torch.nn.Module):
    """Group norm with at most 32 groups of at least 4 channels (EDM's rule)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = min(32, channels // 4), eps
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.group_norm(
            x, self.groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps
        )


class UNetBlock(torch.nn.Module):
    """Residual block with the noise embedding (added, or as scale and shift) and optional
    self-attention; the union of what DDPM++, NCSN++ and ADM need."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        emb: int,
        *,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        heads: int | None = None,
        channels_per_head: int = 64,
        skip_scale: float = 1.0,
        eps: float = 1e-5,
        resample_filter: tuple[int, ...] = (1, 1),
        resample_proj: bool = False,
        adaptive_scale: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = n_in, n_out
        self.heads = (heads or n_out // channels_per_head) if attention else 0
        self.skip_scale, self.adaptive_scale = skip_scale, adaptive_scale
        rf = resample_filter
        self.norm0 = GroupNorm(n_in, eps)
        self.conv0 = Conv2d(n_in, n_out, 3, up=up, down=down, resample_filter=rf)
        self.affine = Linear(emb, n_out * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(n_out, eps)
        self.conv1 = Conv2d(n_out, n_out, 3)
        self.skip = None
        if n_out != n_in or up or down:
            kernel = 1 if resample_proj or n_out != n_in else 0
            self.skip = Conv2d(n_in, n_out, kernel, up=up, down=down, resample_filter=rf)
        if self.heads:
            self.norm2 = GroupNorm(n_out, eps)
            self.qkv = Conv2d(n_out, 3 * n_out, 1)
            self.proj = Conv2d(n_out, n_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = silu(shift + self.norm1(h) * (scale + 1))
        else:
            h = silu(self.norm1(h + params))
        h = self.conv1(h)
        h = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.heads:
            b, c = h.shape[:2]
            # channels are laid out (head, channel, q/k/v): the checkpoints' order
            q, k, v = (
                self.qkv(self.norm2(h)).reshape(b * self.heads, c // self.heads, 3, -1).unbind(2)
            )
            w = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(k.shape[1]))
            w = w.softmax(dim=2).to(q.dtype)
            a = torch.einsum("nqk,nck->ncq", w, v)
            h = (self.proj(a.reshape(h.shape)) + h) * self.skip_scale
        return h


class PositionalEmbedding(torch.nn.Module):
    def __init__(self, channels: int, endpoint: bool = False, max_positions: int = 10000):
        super().__init__()
        self.channels, self.endpoint, self.max_positions = channels, endpoint, max_positions

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=t.device) / (
            half - (1 if self.endpoint else 0)
        )
        freqs = (1 / self.max_positions) ** freqs
        arg = torch.outer(t, freqs.to(t.dtype))
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class FourierEmbedding(torch.nn.Module):
    def __init__(self, channels: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = torch.outer(t, (2 * math.pi * self.freqs).to(t.dtype))
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class _EDMUNet(torch.nn.Module):
    """What both U-Nets share: encoder and decoder as ordered dicts named by resolution."""

    def _run(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        aux = x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)
        out: torch.Tensor | None = None
        tmp = x
        for name, block in self.dec.items():
            if "aux_up" in name:
                out = block(out)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(silu(tmp))
                out = tmp if out is None else tmp + out
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        return x if out is None else out

    def _labels(self, x: torch.Tensor) -> torch.Tensor | None:
        """Unconditional use of a class-conditional network: zero labels, as EDM samples
        without ``class_labels``."""
        if self.map_label is None:
            return None
        return torch.zeros(
            x.shape[0], self.map_label.weight.shape[1], dtype=x.dtype, device=x.device
        )


class SongUNet(_EDMUNet):
    """DDPM++ (positional embedding, standard encoder) or NCSN++ (Fourier embedding, residual
    encoder, ``[1, 3, 3, 1]`` resampling), as EDM re-implements them."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult: tuple[int, ...] = (1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions: tuple[int, ...] = (16,),
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter: tuple[int, ...] = (1, 1),
    ) -> None:
        super().__init__()
        emb_ch = model_channels * channel_mult_emb
        noise_ch = model_channels * channel_mult_noise
        rf = tuple(resample_filter)
        kw: dict[str, Any] = dict(
            heads=1, skip_scale=math.sqrt(0.5), eps=1e-6, resample_filter=rf,
            resample_proj=True, adaptive_scale=False,
        )  # fmt: skip
        self.map_noise: torch.nn.Module = (
            PositionalEmbedding(noise_ch, endpoint=True)
            if embedding_type == "positional"
            else FourierEmbedding(noise_ch)
        )
        self.map_label = Linear(label_dim, noise_ch) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_ch, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_ch, emb_ch)
        self.map_layer1 = Linear(emb_ch, emb_ch)
        self.enc = torch.nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            r = img_resolution >> level
            if level == 0:
                self.enc[f"{r}x{r}_conv"] = Conv2d(cout, model_channels, 3)
                cout = model_channels
            else:
                self.enc[f"{r}x{r}_down"] = UNetBlock(cout, cout, emb_ch, down=True, **kw)
                if encoder_type == "skip":
                    self.enc[f"{r}x{r}_aux_down"] = Conv2d(
                        caux, caux, 0, down=True, resample_filter=rf
                    )
                    self.enc[f"{r}x{r}_aux_skip"] = Conv2d(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[f"{r}x{r}_aux_residual"] = Conv2d(
                        caux, cout, 3, down=True, resample_filter=rf, fused_resample=True
                    )
                    caux = cout
            for i in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{r}x{r}_block{i}"] = UNetBlock(
                    cin, cout, emb_ch, attention=r in attn_resolutions, **kw
                )
        skips = [b.out_channels for n, b in self.enc.items() if "aux" not in n]
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            r = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{r}x{r}_in0"] = UNetBlock(cout, cout, emb_ch, attention=True, **kw)
                self.dec[f"{r}x{r}_in1"] = UNetBlock(cout, cout, emb_ch, **kw)
            else:
                self.dec[f"{r}x{r}_up"] = UNetBlock(cout, cout, emb_ch, up=True, **kw)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = i == num_blocks and r in attn_resolutions
                self.dec[f"{r}x{r}_block{i}"] = UNetBlock(cin, cout, emb_ch, attention=attn, **kw)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{r}x{r}_aux_up"] = Conv2d(
                        out_channels, out_channels, 0, up=True, resample_filter=rf
                    )
                self.dec[f"{r}x{r}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{r}x{r}_aux_conv"] = Conv2d(cout, out_channels, 3)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        emb = self.map_noise(noise_labels.to(x.dtype))
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)  # sin first
        labels = self._labels(x)
        if labels is not None:
            emb = emb + self.map_label(labels)
        emb = silu(self.map_layer1(silu(self.map_layer0(emb))))
        return self._run(x, emb)


class DhariwalUNet(_EDMUNet):
    """ADM (Dhariwal & Nichol) as EDM re-implements it: the InverseBench MRI priors' network."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult: tuple[int, ...] = (1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions: tuple[int, ...] = (32, 16, 8),
    ) -> None:
        super().__init__()
        emb_ch = model_channels * channel_mult_emb
        kw: dict[str, Any] = {"channels_per_head": 64}
        self.map_noise = PositionalEmbedding(model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_ch)
        self.map_layer1 = Linear(emb_ch, emb_ch)
        self.map_label = Linear(label_dim, emb_ch, bias=False) if label_dim else None
        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            r = img_resolution >> level
            if level == 0:
                self.enc[f"{r}x{r}_conv"] = Conv2d(cout, model_channels * mult, 3)
                cout = model_channels * mult
            else:
                self.enc[f"{r}x{r}_down"] = UNetBlock(cout, cout, emb_ch, down=True, **kw)
            for i in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{r}x{r}_block{i}"] = UNetBlock(
                    cin, cout, emb_ch, attention=r in attn_resolutions, **kw
                )
        skips = [b.out_channels for b in self.enc.values()]
        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            r = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{r}x{r}_in0"] = UNetBlock(cout, cout, emb_ch, attention=True, **kw)
                self.dec[f"{r}x{r}_in1"] = UNetBlock(cout, cout, emb_ch, **kw)
            else:
                self.dec[f"{r}x{r}_up"] = UNetBlock(cout, cout, emb_ch, up=True, **kw)
            for i in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{r}x{r}_block{i}"] = UNetBlock(
                    cin, cout, emb_ch, attention=r in attn_resolutions, **kw
                )
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        emb = self.map_noise(noise_labels.to(x.dtype))
        emb = self.map_layer1(silu(self.map_layer0(emb)))
        labels = self._labels(x)
        if labels is not None:
            emb = emb + self.map_label(labels)
        x = self._run(x, silu(emb))
        return self.out_conv(silu(self.out_norm(x)))


class EDMNetwork(torch.nn.Module):
    """``EDMPrecond``'s nesting (the network under ``model.``) around either U-Net; the
    forward pass is the raw ``F(x, c_noise)``."""

    def __init__(self, model_type: str, **kwargs: Any) -> None:
        super().__init__()
        cls = {"DhariwalUNet": DhariwalUNet, "SongUNet": SongUNet}.get(model_type)
        if cls is None:
            raise ValueError(f"model_type must be DhariwalUNet or SongUNet, got {model_type!r}")
        self.model_type, self.kwargs = model_type, kwargs
        self.model = cls(**kwargs)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.model(x, c_noise.reshape(-1))


_ENC = re.compile(r"^model\.enc\.(\d+)x\d+_(\w+?)(\d*)\.")


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The ``EDMNetwork`` arguments behind a state dict (keys under ``model.``), read from its
    key names and shapes. Raises ``ValueError`` when the keys are not an EDM U-Net's."""
    enc: dict[int, dict[str, Any]] = {}
    for key in shapes:
        m = _ENC.match(key)
        if m:
            res, kind, idx = int(m.group(1)), m.group(2), m.group(3)
            enc.setdefault(res, {"blocks": set(), "attn": False, "kinds": set()})
            enc[res]["kinds"].add(kind)
            if kind == "block":
                enc[res]["blocks"].add(int(idx))
                if ".qkv." in key:
                    enc[res]["attn"] = True
    if not enc or "model.map_layer0.weight" not in shapes:
        raise ValueError("not an EDM U-Net state dict (no model.enc.* / model.map_layer0 keys)")
    res = sorted(enc, reverse=True)
    top = res[0]
    dhariwal = "model.out_conv.weight" in shapes
    conv0 = shapes[f"model.enc.{top}x{top}_conv.weight"]
    in_channels = conv0[1]
    first_block = shapes[f"model.enc.{top}x{top}_block0.conv0.weight"]
    emb_ch = shapes["model.map_layer1.weight"][0]
    outs = [shapes[f"model.enc.{r}x{r}_block0.conv1.weight"][0] for r in res]
    num_blocks = len(enc[top]["blocks"])
    dec_attn = {
        int(k.split(".")[2].split("x")[0])
        for k in shapes
        if k.startswith("model.dec.") and ".qkv." in k and "_block" in k
    }
    attn = sorted({r for r in res if enc[r]["attn"]} | dec_attn, reverse=True)
    label_w = shapes.get("model.map_label.weight")
    augment_w = shapes.get("model.map_augment.weight")
    cfg: dict[str, Any] = {
        "img_resolution": top,
        "in_channels": in_channels,
        "label_dim": label_w[1] if label_w else 0,
        "augment_dim": augment_w[1] if augment_w else 0,
        "num_blocks": num_blocks,
        "attn_resolutions": attn,
    }
    if dhariwal:
        base = conv0[0]
        model_channels = shapes["model.map_layer0.weight"][1]  # the noise embedding's width
        cfg.update(
            model_type="DhariwalUNet",
            out_channels=shapes["model.out_conv.weight"][0],
            model_channels=model_channels,
            channel_mult=[o // model_channels for o in outs],
            channel_mult_emb=emb_ch // model_channels,
        )
        if base != outs[0]:
            raise ValueError("not an EDM DhariwalUNet: the first conv and block widths differ")
        return cfg
    model_channels = conv0[0]
    noise_ch = shapes["model.map_layer0.weight"][1]
    aux = [k for k in shapes if "_aux_conv.weight" in k]
    out_channels = shapes[aux[0]][0] if aux else first_block[0]
    kinds = set().union(*(e["kinds"] for e in enc.values()))
    filt = next((v for k, v in shapes.items() if k.endswith("resample_filter")), (1, 1, 2, 2))
    cfg.update(
        model_type="SongUNet",
        out_channels=out_channels,
        model_channels=model_channels,
        channel_mult=[o // model_channels for o in outs],
        channel_mult_emb=emb_ch // model_channels,
        channel_mult_noise=noise_ch // model_channels,
        embedding_type="fourier" if "model.map_noise.freqs" in shapes else "positional",
        encoder_type="residual"
        if "aux_residual" in kinds
        else "skip"
        if "aux_skip" in kinds
        else "standard",
        decoder_type="skip" if any("_aux_up." in k for k in shapes) else "standard",
        resample_filter=[1, 3, 3, 1] if filt[-1] == 4 else [1, 1],
    )
    return cfg
