"""Cartesian MRI forward models: SENSE with coil maps and an undersampling mask.

Images are ``(B, 2, H, W)`` real (real, imaginary); k-space is complex ``(B, coils, H, W)``,
zero where unsampled, transformed with fastMRI's centered orthonormal ``fft2c``.
"""

from __future__ import annotations

from typing import Any

import torch

from diffrecon._checks import as_tensor, check_bool_mask, check_finite, check_ndim
from diffrecon.complex import complex_dtype, real_dtype, to_channels, to_complex
from diffrecon.operators.base import LinearOperator
from diffrecon.operators.fft import centering_phases


def _kspace_mask(mask: Any, height: int, width: int) -> torch.Tensor:
    """Validate a column mask ``(W,)`` or a 2-D mask ``(H, W)``; return it broadcastable."""
    m = check_bool_mask("mask", mask)
    if m.ndim == 1:
        if m.shape[0] != width:
            raise ValueError(f"mask has {m.shape[0]} columns but the images have W={width}")
        return m.reshape(1, width)
    if m.ndim == 2:
        if tuple(m.shape) != (height, width):
            raise ValueError(f"mask must have shape ({height}, {width}), got {tuple(m.shape)}")
        return m
    raise ValueError(f"mask must have shape (W,) or (H, W), got {tuple(m.shape)}")


class MulticoilMRI(LinearOperator):
    """SENSE: ``y_c = M F (S_c x)`` for each coil ``c``; the adjoint is coil-combined.

    ``maps``: complex coil sensitivities ``(coils, H, W)``. ``mask``: boolean column mask
    ``(W,)`` (fastMRI phase-encode lines) or 2-D mask ``(H, W)`` (e.g. Poisson disc).
    """

    complex_output = True  # y is complex k-space: real-valued data is a mistake

    def __init__(self, maps: Any, mask: Any) -> None:
        maps_t = as_tensor("maps", maps)
        check_ndim("maps", maps_t, (3,), "(coils, H, W)")
        if not maps_t.is_complex():
            raise ValueError(f"maps must be complex, got dtype {maps_t.dtype}")
        check_finite("maps", maps_t)
        coils, height, width = maps_t.shape
        if 0 in maps_t.shape:
            raise ValueError(f"maps must have coils and pixels, got shape {tuple(maps_t.shape)}")
        self.maps = maps_t.clone()
        self.mask = _kspace_mask(mask, height, width).to(maps_t.device).clone()
        # fft2c(S x) masked == kweights * fft2(pmaps * x): the centering shifts become phases
        # folded into the maps and the mask once, instead of four copies per transform.
        (pin_h, pout_h), (pin_w, pout_w) = centering_phases(height), centering_phases(width)
        phase_in = (pin_h[:, None] * pin_w[None, :]).to(maps_t.device)
        phase_out = (pout_h[:, None] * pout_w[None, :]).to(maps_t.device)
        self._pmaps = (maps_t.to(torch.complex128) * phase_in).to(maps_t.dtype)
        self._kweights = (phase_out * self.mask).to(maps_t.dtype)
        # materialised conjugates: multiplying by a lazy conj() view re-resolves it every call
        self._pmaps_conj = self._pmaps.conj().resolve_conj()
        self._kweights_conj = self._kweights.conj().resolve_conj()
        self._kmask = self.mask.to(real_dtype(maps_t.dtype))  # |kweights|^2: the normal op
        # the normal operator's per-row eigendecomposition (column masks), made on first use
        self._row_values: torch.Tensor | None = None
        self._row_vectors_h: torch.Tensor | None = None
        super().__init__((2, height, width), (coils, height, width))

    @property
    def coils(self) -> int:
        return int(self.maps.shape[0])

    @staticmethod
    def _like(buf: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = t.dtype if t.is_complex() else complex_dtype(t.dtype)
        return buf.to(device=t.device, dtype=dtype)

    def _check(self, t: torch.Tensor, shape: Any, arg: str) -> None:
        if arg == "x" and isinstance(t, torch.Tensor) and t.is_complex():
            raise ValueError(
                f"{self.name}: x must be real (B, 2, H, W) (real, imaginary channels), got "
                f"complex {t.dtype}"
            )
        if arg == "y" and isinstance(t, torch.Tensor) and t.ndim == 4:
            if t.shape[1] != self.coils:
                raise ValueError(
                    f"{self.name}: y has {t.shape[1]} coils but the coil maps have {self.coils}"
                )
        super()._check(t, shape, arg)

    def _coil_fft(self, x: torch.Tensor) -> torch.Tensor:
        """``F (S_phased x)`` for every coil, before the output phases and the mask."""
        z = to_complex(x)  # (B, H, W)
        return torch.fft.fft2(self._like(self._pmaps, z) * z[:, None], norm="ortho")

    def _coil_combine(self, img: torch.Tensor) -> torch.Tensor:
        """``sum_c conj(S_phased_c) img_c`` as a 2-channel image."""
        return to_channels((self._like(self._pmaps_conj, img) * img).sum(dim=1))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self._coil_fft(x)
        return k * self._like(self._kweights, k)  # = mask * fft2c(S x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._coil_combine(
            torch.fft.ifft2(y * self._like(self._kweights_conj, y), norm="ortho")
        )

    def _normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x = S^H F^H M F S x``: the output phases cancel, the mask applies once."""
        k = self._coil_fft(x)
        mask = self._kmask.to(device=k.device, dtype=k.real.dtype)
        return self._coil_combine(torch.fft.ifft2(k * mask, norm="ortho"))

    # -- exact damped solves for column masks -----------------------------------------------
    ROW_SOLVE_BYTES = 2**30  # largest per-row eigenvector store (H x W x W complex)

    @property
    def separable_rows(self) -> bool:
        """Whether the normal operator acts on each image row alone: the mask samples whole
        readout lines (a column mask), so the readout FFT cancels in ``A^H A`` and each row
        ``h`` sees the ``W x W`` matrix ``G_h = sum_c S_ch^H F^H M F S_ch``."""
        h, w = self.oshape[1], self.oshape[2]
        if h * w * w * 8 > self.ROW_SOLVE_BYTES:
            return False
        m = self.mask
        return m.shape[0] == 1 or bool((m == m[:1]).all())

    def _row_eigh(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues ``(H, W)`` and conjugate-transposed eigenvectors ``(H, W, W)`` of every
        row's ``G_h`` (computed once, in row chunks to bound the workspace)."""
        if self._row_values is None or self._row_values.device != device:
            maps = self._pmaps.to(device)
            w = maps.shape[-1]
            m = self.mask[0].to(device=device, dtype=maps.dtype)
            kernel = torch.fft.ifft(m)  # F^H diag(m) F is circulant: K[i, j] = kernel[i - j]
            idx = torch.arange(w, device=device)
            k = kernel[(idx[:, None] - idx[None, :]) % w]
            values, vectors_h = [], []
            for rows in torch.split(torch.arange(maps.shape[1], device=device), 32):
                p = maps[:, rows]  # (coils, rows, W)
                g = torch.einsum("chi,chj->hij", p.conj(), p) * k
                lam, vec = torch.linalg.eigh(g)
                values.append(lam.clamp_min(0))
                vectors_h.append(vec.mH.contiguous())
            # a cache, not state: the operator stays what it was built as
            object.__setattr__(self, "_row_values", torch.cat(values))
            object.__setattr__(self, "_row_vectors_h", torch.cat(vectors_h))
        assert self._row_vectors_h is not None
        return self._row_values, self._row_vectors_h

    def _solve_damped_exact(
        self, b: torch.Tensor, scale: float, damping: float
    ) -> torch.Tensor | None:
        """``(scale A^H A + damping I) x = b`` solved exactly, row by row, for column masks:
        two batched products with the rows' eigenvectors, from an eigendecomposition made
        once per operator (``None`` otherwise: conjugate gradients)."""
        if not self.separable_rows:
            return None
        values, vectors_h = self._row_eigh(b.device)
        z = to_complex(b).to(vectors_h.dtype).permute(1, 2, 0)  # (H, W, B)
        t = (vectors_h @ z) / (scale * values + damping)[..., None]
        x = (t.mH @ vectors_h).mH  # U t, with U^H the only matrix stored
        return to_channels(x.permute(2, 0, 1)).to(b.dtype)

    @property
    def acceleration(self) -> float:
        """Full k-space size divided by the number of sampled points."""
        h, w = self.oshape[1], self.oshape[2]
        return float(h * w) / max(int(self.mask.expand(h, w).sum()), 1)

    def _repr_args(self) -> str:
        return f"coils={self.coils}, acceleration={self.acceleration:.2f}"


class SinglecoilMRI(MulticoilMRI):
    """Single-coil Cartesian MRI ``y = M F x``; k-space is ``(B, 1, H, W)``.

    With a column mask, pass ``shape=(H, W)``. Because ``F`` is unitary, ``A A^H = M`` and the
    pseudo-inverse is the zero-filled adjoint, in closed form.
    """

    def __init__(self, mask: Any, shape: tuple[int, int] | None = None) -> None:
        m = check_bool_mask("mask", mask)
        if m.ndim == 2:
            height, width = m.shape
            if shape is not None and tuple(shape) != (height, width):
                raise ValueError(f"shape {tuple(shape)} disagrees with mask {tuple(m.shape)}")
        elif shape is None:
            raise ValueError("shape=(H, W) is required with a column mask (W,)")
        else:
            height, width = shape
        super().__init__(torch.ones(1, height, width, dtype=torch.complex64), m)

    def _pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self._adjoint(y)

    def _normal_projection_scale(self) -> float:
        return 1.0

    def _repr_args(self) -> str:
        return f"acceleration={self.acceleration:.2f}"


class SoftSENSE(LinearOperator):
    """SENSE with several sets of coil maps, one image per set (soft-SENSE, Uecker et al.
    2014): ``y_c = M F (sum_s S_sc x_s)``.

    ``maps``: ``(sets, coils, H, W)`` complex; ``mask`` as :class:`MulticoilMRI`. Images are
    ``(B, 2 * sets, H, W)``: the real and imaginary channels of each set's image in turn.
    Objects that fill or wrap the phase field of view need a second set where their
    sensitivities are discontinuous across the periodic boundary.
    """

    complex_output = True

    def __init__(self, maps: Any, mask: Any) -> None:
        maps_t = as_tensor("maps", maps)
        check_ndim("maps", maps_t, (4,), "(sets, coils, H, W)")
        self.maps = maps_t
        self.mask = check_bool_mask("mask", mask)
        self.sets = tuple(MulticoilMRI(m, self.mask) for m in maps_t)
        _, coils, height, width = maps_t.shape
        super().__init__((2 * len(self.sets), height, width), (coils, height, width))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(op(x[:, 2 * i : 2 * i + 2]) for i, op in enumerate(self.sets))

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([op.adjoint(y) for op in self.sets], dim=1)

    def to(self, device: torch.device | str) -> SoftSENSE:
        return SoftSENSE(self.maps.to(device), self.mask.to(device))

    def _repr_args(self) -> str:
        return f"sets={len(self.sets)}, coils={self.sets[0].coils}"
