"""The data terms samplers use: a Gaussian likelihood (DAPS) and the DPS family's misfit.

DAPS targets ``p(y | x0) = N(y; A(x0), tau^2 I)`` and needs the gradient of its negative log;
DPS, ZAPS and STSL step along the gradient of the *non-squared* misfit ``||y - A(x0)||`` (the
DPS reference code's choice; their step sizes absorb the noise level).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffrecon.operators.base import Operator
from diffrecon.samplers.common import Generators, randn_like


def sq_norm(r: torch.Tensor) -> torch.Tensor:
    """Per-item ``||r||^2`` over all but the batch axis (both parts of a complex ``r``)."""
    a = r.abs() ** 2 if r.is_complex() else r**2
    return a.reshape(a.shape[0], -1).sum(1)


def misfit(operator: Operator, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-item ``||y - A(x0)||`` (non-squared, as in DPS), differentiable in ``x0``."""
    return sq_norm(operator(x0) - y).sqrt()


def misfit_grad(
    operator: Operator,
    x0: torch.Tensor,
    y: torch.Tensor,
    *,
    create_graph: bool = False,
    squared: bool = False,
) -> torch.Tensor:
    """``grad_{x0} ||y - A(x0)||`` per item (``squared``: of ``||y - A(x0)||^2``); with
    ``create_graph`` the result stays differentiable in whatever ``x0`` depends on (ZAPS
    differentiates through it)."""
    with torch.enable_grad():
        x0g = x0 if (create_graph and x0.requires_grad) else x0.detach().requires_grad_(True)
        loss = sq_norm(operator(x0g) - y) if squared else misfit(operator, x0g, y)
        (g,) = torch.autograd.grad(loss.sum(), x0g, create_graph=create_graph)
    return g


class GaussianLikelihood:
    """``y = A(x) + n`` with i.i.d. Gaussian ``n`` of standard deviation ``std`` per real
    component (complex noise has ``E|n|^2 = 2 std^2``)."""

    def __init__(self, std: float) -> None:
        if not std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {std}")
        self.std = float(std)

    def nll(self, operator: Operator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-item ``||A(x) - y||^2 / (2 std^2)`` (up to a constant)."""
        return sq_norm(operator(x) - y) / (2 * self.std**2)

    def nll_grad_fn(
        self, operator: Operator, y: torch.Tensor
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> grad ||A(x) - y||^2 / (2 std^2)`` for repeated use with one ``y``.

        Linear operators use ``(A^H A x - A^H y) / std^2`` with ``A^H y`` computed once: the
        residual then lives in image space, not in the (often much larger) measurement space.
        """
        var = self.std**2
        if operator.is_linear:
            aty = operator.adjoint(y)  # type: ignore[attr-defined]
            normal = operator.N  # type: ignore[attr-defined]
            return lambda x: (normal(x) - aty) / var
        return lambda x: operator.vjp(x, operator(x) - y) / var

    def sample(self, clean: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Add noise to a clean measurement."""
        if clean.is_complex():
            re = randn_like(clean.real, generator)
            im = randn_like(clean.real, generator)
            return clean + self.std * torch.complex(re, im)
        return clean + self.std * randn_like(clean, generator)
