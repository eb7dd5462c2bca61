"""Forward operators: immutable, batched, shape-checked, composable (after SigPy's ``Linop``).

An operator maps a batch ``x`` of shape ``(B, *ishape)`` to ``(B, *oshape)``. Shapes may hold
``None`` for a size the operator accepts freely (a blur works on any image size). Linear
operators add the adjoint ``.H``, the normal operator ``.N = A^H A`` (both cached) and ``pinv``,
with the real inner product ``<a, b> = Re sum(conj(a) b)`` (see :mod:`diffrecon.linalg`).
"""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Any

import torch

from diffrecon.linalg import conjugate_gradient

Shape = tuple[int | None, ...]


def format_shape(shape: Shape | None, batch: bool = True) -> str:
    """``(B, 2, 16, *)``: ``*`` marks a free size."""
    if shape is None:
        return "(B, ...)" if batch else "(...)"
    dims = (["B"] if batch else []) + ["*" if s is None else str(s) for s in shape]
    return "(" + ", ".join(dims) + ")"


def shapes_compatible(a: Shape | None, b: Shape | None) -> bool:
    """True when two shapes can describe the same tensor (``None`` matches anything)."""
    if a is None or b is None:
        return True
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


class _FrozenMeta(type):
    """Marks instances frozen once ``__init__`` has run: operators are immutable."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = super().__call__(*args, **kwargs)
        object.__setattr__(obj, "_frozen", True)
        return obj


class Operator(metaclass=_FrozenMeta):
    """A (possibly nonlinear) differentiable forward model ``y = A(x)``.

    Subclasses implement ``_forward``. ``vjp`` uses autograd unless overridden.
    ``complex_output``: the measurements are complex (real-valued ``y`` is refused).
    """

    complex_output = False

    def __init__(self, ishape: Shape | None, oshape: Shape | None) -> None:
        self.ishape = None if ishape is None else tuple(ishape)
        self.oshape = None if oshape is None else tuple(oshape)

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"{type(self).__name__} is immutable: build a new operator instead of "
                f"setting {name!r}"
            )
        object.__setattr__(self, name, value)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def is_linear(self) -> bool:
        return False

    # -- application ---------------------------------------------------------------------
    def _check(self, t: torch.Tensor, shape: Shape | None, arg: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{self.name}: {arg} must be a torch tensor, got {type(t).__name__}")
        if shape is None:
            if t.ndim < 1:
                raise ValueError(f"{self.name}: {arg} needs a leading batch dimension")
            return
        if t.ndim != len(shape) + 1 or not shapes_compatible(tuple(t.shape[1:]), shape):
            raise ValueError(
                f"{self.name}: {arg} must have shape {format_shape(shape)}, got {tuple(t.shape)}"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the forward model to a batch ``x`` of shape ``(B, *ishape)``."""
        self._check(x, self.ishape, "x")
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Vector-Jacobian product ``J_A(x)^T v`` (real inner product), by autograd."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            y = self(xg)
            (g,) = torch.autograd.grad(y, xg, grad_outputs=v.to(y.dtype))
        return g

    # -- composition and devices ---------------------------------------------------------
    def __matmul__(self, other: Operator) -> Operator:
        if not isinstance(other, Operator):
            return NotImplemented
        if self.is_linear and other.is_linear:
            return ComposedLinear(self, other)  # type: ignore[arg-type]
        return Composed(self, other)

    def to(self, device: torch.device | str) -> Operator:
        """A copy with every tensor (and sub-operator) moved to ``device``."""
        new = copy.copy(self)
        for key, val in list(vars(new).items()):
            if key in ("H", "N"):  # cached views of the old operator
                del new.__dict__[key]
            elif isinstance(val, torch.Tensor | Operator):
                object.__setattr__(new, key, val.to(device))
        return new

    def _repr_args(self) -> str:
        return ""

    def __repr__(self) -> str:
        args = self._repr_args()
        shapes = f"{format_shape(self.ishape)} -> {format_shape(self.oshape)}"
        return f"<{self.name}({args}) {shapes}>"


class LinearOperator(Operator):
    """A linear operator: adds the adjoint (``.H``), normal (``.N``) and ``pinv``.

    Subclasses implement ``_forward`` and ``_adjoint``; they may override ``_pinv`` with a
    closed form, otherwise ``pinv`` solves the normal equations by conjugate gradients.
    """

    @property
    def is_linear(self) -> bool:
        return True

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply ``A^H`` to a batch ``y`` of shape ``(B, *oshape)``."""
        self._check(y, self.oshape, "y")
        return self._adjoint(y)

    def vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """For a linear operator the VJP is the adjoint, whatever ``x``."""
        return self.adjoint(v)

    @cached_property
    def H(self) -> LinearOperator:  # noqa: N802 - SigPy's name
        """The adjoint operator (cached)."""
        return Adjoint(self)

    @cached_property
    def N(self) -> LinearOperator:  # noqa: N802 - SigPy's name
        """The normal operator ``A^H A`` (cached; fused where the operator has a fast form)."""
        return Normal(self)

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``; operators override it when a fused form saves work."""
        return self._adjoint(self._forward(x))

    def pinv(self, y: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 100) -> torch.Tensor:
        """Pseudo-inverse ``A^+ y``: a closed form where the operator has one, else CG."""
        self._check(y, self.oshape, "y")
        fast = self._pinv(y)
        if fast is not None:
            return fast
        return conjugate_gradient(self.N._forward, self._adjoint(y), tol=tol, max_iter=max_iter)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor | None:
        return None

    @property
    def has_exact_pinv(self) -> bool:
        """Whether :meth:`pinv` has a closed form (else it is conjugate gradients, whose
        projection ``A^+ A`` is only approximately idempotent)."""
        return type(self)._pinv is not LinearOperator._pinv

    def solve_normal(
        self,
        b: torch.Tensor,
        scale: float = 1.0,
        damping: float = 0.0,
        *,
        tol: float = 1e-6,
        max_iter: int = 100,
    ) -> torch.Tensor:
        """Solve ``(scale A^H A + damping I) x = b`` for ``b`` in the range of ``A^H``.

        Operators whose normal operator is ``c P`` with ``P`` an orthogonal projection (masks,
        average pooling) declare ``c`` in ``_normal_projection_scale`` and get the closed form
        ``b / (scale c + damping)``; others use conjugate gradients (minimum-norm if singular).
        """
        c = self._normal_projection_scale()
        if c is not None:
            return b / (scale * c + damping)
        return conjugate_gradient(
            lambda v: scale * self.N._forward(v) + damping * v, b, tol=tol, max_iter=max_iter
        )

    def solve_damped(
        self,
        b: torch.Tensor,
        scale: float,
        damping: float,
        *,
        x0: torch.Tensor | None = None,
        tol: float = 1e-6,
        max_iter: int = 100,
    ) -> torch.Tensor:
        """Solve ``(scale A^H A + damping I) x = b`` for any ``b`` (``damping > 0``).

        With ``A^H A = c P`` (``P`` an orthogonal projection) the inverse is
        ``I / d - s A^H A / (d (s c + d))`` in closed form; operators with another exact
        solve give it in ``_solve_damped_exact``; otherwise conjugate gradients,
        warm-started from ``x0`` when given (the system is positive definite).
        """
        if not damping > 0:
            raise ValueError(f"{self.name}.solve_damped needs damping > 0, got {damping}")
        c = self._normal_projection_scale()
        if c is not None:
            return b / damping - self.N._forward(b) * (scale / (damping * (scale * c + damping)))
        exact = self._solve_damped_exact(b, scale, damping)
        if exact is not None:
            return exact
        return conjugate_gradient(
            lambda v: scale * self.N._forward(v) + damping * v, b, x0, tol=tol, max_iter=max_iter
        )

    def _solve_damped_exact(
        self, b: torch.Tensor, scale: float, damping: float
    ) -> torch.Tensor | None:
        """An exact solve of :meth:`solve_damped`'s system where the operator has one (as
        ``_pinv`` for :meth:`pinv`); ``None``: conjugate gradients."""
        return None

    def _normal_projection_scale(self) -> float | None:
        return None

    def normal_norm(self, like: torch.Tensor, iters: int = 30) -> float:
        """``||A^H A|| = ||A||^2`` (the largest eigenvalue of the normal operator) for inputs
        shaped like ``like[:1]``: exact for projections, power iteration otherwise (from a
        fixed start, so the global RNG is untouched and the answer is reproducible)."""
        c = self._normal_projection_scale()
        if c is not None:
            return float(c)
        g = torch.Generator().manual_seed(0)
        v = torch.randn(like[:1].shape, generator=g, dtype=torch.float64).to(like)
        est = 0.0
        for _ in range(iters):
            v = v / v.norm().clamp_min(1e-30)
            w = self.N._forward(v)
            est = float((v * w).sum())
            v = w
        return est


class Adjoint(LinearOperator):
    """The adjoint of a linear operator; its own adjoint is the original."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.oshape, op.ishape)
        self.op = op

    @property
    def name(self) -> str:
        return f"{self.op.name}.H"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._adjoint(x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op._forward(y)

    @cached_property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.op

    def __repr__(self) -> str:
        return f"{self.op!r}.H"


class Normal(LinearOperator):
    """``A^H A``: self-adjoint, applied through the operator's ``_normal``."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.ishape, op.ishape)
        self.op = op

    @property
    def name(self) -> str:
        return f"{self.op.name}.N"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op._normal(x)

    _adjoint = _forward

    def __repr__(self) -> str:
        return f"{self.op!r}.N"


def _check_composable(outer: Operator, inner: Operator) -> None:
    if not shapes_compatible(outer.ishape, inner.oshape):
        raise ValueError(
            f"cannot compose {outer.name} @ {inner.name}: {inner.name} gives "
            f"{format_shape(inner.oshape)} but {outer.name} takes {format_shape(outer.ishape)}"
        )


class Composed(Operator):
    """``outer(inner(x))`` for possibly nonlinear operators."""

    def __init__(self, outer: Operator, inner: Operator) -> None:
        _check_composable(outer, inner)
        super().__init__(inner.ishape, outer.oshape)
        self.outer = outer
        self.inner = inner

    @property
    def name(self) -> str:
        return f"{self.outer.name} @ {self.inner.name}"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer._forward(self.inner._forward(x))

    def __repr__(self) -> str:
        return f"({self.outer!r} @ {self.inner!r})"


class ComposedLinear(Composed, LinearOperator):
    """``outer @ inner`` of two linear operators; its adjoint is ``inner.H @ outer.H``."""

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner._adjoint(self.outer._adjoint(y))
