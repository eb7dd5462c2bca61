"""Low-rank adapters (LoRA, Hu et al. 2021) on a denoiser's convolutions and linear layers.

A layer ``W`` becomes ``W + (alpha / rank) B A``: ``A`` a ``rank``-output copy of the layer's
geometry (a convolution keeps its kernel, stride and padding), ``B`` a 1x1 convolution (or
linear map) from ``rank`` back to the layer's outputs, initialised to zero, so an adapted
network starts out exactly equal to its base. The base weights stay frozen; only ``A`` and
``B`` learn. After adaptation :func:`merged` folds ``B A`` into the weights, so the adapted
network costs no more per call than the base one.

Used for test-time adaptation of a prior to one measurement (:mod:`diffrecon.adapt`).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from diffrecon.priors.learned import LearnedPrior


class _Adapter(nn.Module):
    """``base(x) + scale * up(down(x))``; ``enabled=False`` gives ``base(x)``."""

    def __init__(
        self,
        base: nn.Module,
        down: nn.Module,
        up: nn.Module,
        scale: float,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        weight = base.weight
        assert isinstance(weight, torch.Tensor)
        self.base, self.down, self.up = base, down.to(weight.device, weight.dtype), up
        self.up.to(weight.device, weight.dtype)
        _init_down(self.down.weight, generator)
        nn.init.zeros_(self.up.weight)
        self.scale = scale
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.scale * self.up(self.down(x)) if self.enabled else out


class LoRAConv2d(_Adapter):
    """An adapter on an ungrouped ``nn.Conv2d``: ``A`` keeps its kernel, stride and padding,
    ``B`` is 1x1."""

    def __init__(
        self, base: nn.Conv2d, rank: int, alpha: float, generator: torch.Generator | None = None
    ) -> None:
        down = nn.Conv2d(
            base.in_channels,
            rank,
            base.kernel_size,  # type: ignore[arg-type]
            stride=base.stride,  # type: ignore[arg-type]
            padding=base.padding,  # type: ignore[arg-type]
            dilation=base.dilation,  # type: ignore[arg-type]
            bias=False,
            padding_mode=base.padding_mode,
        )
        up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        super().__init__(base, down, up, alpha / rank, generator)

    def delta(self) -> torch.Tensor:
        """``scale * B A`` as a kernel shaped like the base's."""
        up = self.up.weight[:, :, 0, 0]  # (out, rank)
        down = self.down.weight.flatten(1)  # (rank, in * kh * kw)
        return (self.scale * up @ down).reshape(self.base.weight.shape)


class LoRALinear(_Adapter):
    """An adapter on an ``nn.Linear``."""

    def __init__(
        self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator | None = None
    ) -> None:
        down = nn.Linear(base.in_features, rank, bias=False)
        up = nn.Linear(rank, base.out_features, bias=False)
        super().__init__(base, down, up, alpha / rank, generator)

    def delta(self) -> torch.Tensor:
        return self.scale * self.up.weight @ self.down.weight


LORA_TYPES = (LoRAConv2d, LoRALinear)


def _init_down(weight: torch.Tensor, generator: torch.Generator | None) -> None:
    """Kaiming-uniform (PyTorch's default for layers), drawn from ``generator`` so an
    adaptation is reproducible from its seed."""
    fan_in = weight[0].numel()
    bound = 1.0 / fan_in**0.5
    with torch.no_grad():
        u = torch.rand(weight.shape, generator=generator, dtype=torch.float32)
        weight.copy_((2 * u - 1) * bound)


def add_lora(
    net: nn.Module,
    rank: int = 4,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A copy of ``net`` with an adapter on every ungrouped ``Conv2d`` and every ``Linear``
    (frozen base weights; the adapters' ``B`` zero, so its output equals ``net``'s).
    ``alpha`` defaults to ``rank`` (scale 1); ``generator`` draws the ``A`` matrices
    (on the CPU)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"the LoRA rank must be a positive integer, got {rank!r}")
    scale_alpha = float(rank if alpha is None else alpha)
    out = copy.deepcopy(net)
    for p in out.parameters():
        p.requires_grad_(False)
    targets = [
        (name, m)
        for name, m in out.named_modules()
        if (isinstance(m, nn.Conv2d) and m.groups == 1) or isinstance(m, nn.Linear)
    ]
    if not targets:
        raise ValueError(f"{type(net).__name__} has no Conv2d or Linear layer to adapt")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        wrapper: nn.Module
        if isinstance(module, nn.Conv2d):
            wrapper = LoRAConv2d(module, rank, scale_alpha, generator)
        else:
            wrapper = LoRALinear(module, rank, scale_alpha, generator)
        setattr(parent, child, wrapper)
    return out


def set_enabled(net: nn.Module, enabled: bool) -> None:
    """Switch every adapter of ``net`` on or off (off: the base network's output)."""
    for m in net.modules():
        if isinstance(m, LORA_TYPES):
            m.enabled = enabled


def lora_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (``A`` and ``B`` of every adapted layer)."""
    params: list[nn.Parameter] = []
    for m in net.modules():
        if isinstance(m, LORA_TYPES):
            params += [m.down.weight, m.up.weight]
    return params


def lora_state(net: nn.Module) -> list[torch.Tensor]:
    """A detached copy of the adapters' parameters (to restore with :func:`load_lora_state`)."""
    return [p.detach().clone() for p in lora_parameters(net)]


def load_lora_state(net: nn.Module, state: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(lora_parameters(net), state, strict=True):
            p.copy_(v)


def merged(net: nn.Module) -> nn.Module:
    """A copy of an adapted ``net`` with every adapter folded into its layer's weight (plain
    ``Conv2d``/``Linear`` layers again, frozen): the same function, at the base's cost."""
    out = copy.deepcopy(net)
    wrappers = [(n, m) for n, m in out.named_modules() if isinstance(m, LORA_TYPES)]
    for name, module in wrappers:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        base = module.base
        with torch.no_grad():
            base.weight.add_(module.delta().to(base.weight.dtype))
        setattr(parent, child, base)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def with_lora(
    prior: LearnedPrior,
    rank: int = 4,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> LearnedPrior:
    """``prior`` with adapters on its network (a new :class:`LearnedPrior`, same config and
    precision; the adapters' parameters require gradients, the base's do not)."""
    if not isinstance(prior, LearnedPrior):
        raise ValueError(f"adapters need a learned prior (a network); got {type(prior).__name__}")
    net = add_lora(prior.net, rank, alpha, generator)
    out = _rewrapped(prior, net, {})
    for p in lora_parameters(out.net):
        p.requires_grad_(True)
    return out


def merged_prior(prior: LearnedPrior, **config: Any) -> LearnedPrior:
    """An adapted prior with its adapters folded in (frozen; ``config`` adds to its config,
    e.g. a new name)."""
    return _rewrapped(prior, merged(prior.net), config)


def _rewrapped(prior: LearnedPrior, net: nn.Module, config: dict[str, Any]) -> LearnedPrior:
    out = LearnedPrior(net, {**prior.config, **config})
    return out.with_precision(prior.precision) if prior.precision != "float32" else out
