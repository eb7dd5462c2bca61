"""Exact Gaussian prior ``x0 ~ N(mean, cov)``: closed-form denoiser, scores and posteriors.

The ground truth for sampler tests and a way to check a sampler before trusting it on a
learned prior. Images are ``(C, H, W)``; ``cov`` is ``(n, n)``, ``n = C*H*W`` in C order.
"""

from __future__ import annotations

from typing import Any

import torch

from diffrecon._checks import as_tensor, check_finite
from diffrecon.priors.base import sigma_batch


def _check_cov(cov: torch.Tensor, n: int, name: str = "cov") -> None:
    if tuple(cov.shape) != (n, n):
        raise ValueError(
            f"{name} must have shape ({n}, {n}) for the mean's {n} entries, got {tuple(cov.shape)}"
        )
    check_finite(name, cov)
    if not torch.allclose(cov, cov.T, atol=1e-8 * float(cov.abs().max())):
        raise ValueError(f"{name} must be symmetric")


class GaussianPrior:
    """``N(mean, cov)`` with denoiser ``mean + U diag(l / (l + s^2)) U^T (x - mean)``.

    The eigendecomposition ``cov = U diag(l) U^T`` is computed once (float64).
    """

    def __init__(self, mean: Any, cov: Any, sigma_min: float = 1e-3, sigma_max: float = 100.0):
        mean_t = as_tensor("mean", mean).to(torch.float64)
        if mean_t.ndim != 3:
            raise ValueError(f"mean must have shape (C, H, W), got {tuple(mean_t.shape)}")
        check_finite("mean", mean_t)
        cov_t = as_tensor("cov", cov).to(torch.float64)
        _check_cov(cov_t, mean_t.numel())
        evals, evecs = torch.linalg.eigh(cov_t)
        if float(evals.min()) < -1e-8 * float(evals.max()):
            raise ValueError(
                f"cov must be positive semi-definite (min eigenvalue {evals.min():.3g})"
            )
        self.shape = tuple(mean_t.shape)
        self.mean = mean_t
        self.cov = cov_t
        self.evals = evals.clamp_min(0.0)
        self.evecs = evecs
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.sigma_data = float(self.evals.mean().sqrt())

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).to(torch.float64) - self.mean.reshape(1, -1).to(x.device)

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``E[x0 | x]`` for ``x = x0 + sigma n``; ``sigma`` scalar or ``(B,)``."""
        s2 = sigma_batch(sigma, x).to(torch.float64) ** 2
        u = self.evecs.to(x.device)
        lam = self.evals.to(x.device)
        coef = lam[None] / (lam[None] + s2[:, None])  # (B, n)
        out = ((self._flat(x) @ u) * coef) @ u.T
        return (out + self.mean.reshape(1, -1).to(x.device)).reshape(x.shape).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` prior draws ``(n, C, H, W)`` (float64)."""
        z = torch.randn(n, self.mean.numel(), dtype=torch.float64, generator=generator)
        x = (z * self.evals.sqrt()) @ self.evecs.T + self.mean.reshape(1, -1)
        return x.reshape(n, *self.shape)

    def posterior(self, operator: Any, y: torch.Tensor, noise_std: float):
        """Exact posterior ``(mean, cov)`` for ``y = A x + noise`` with a linear operator.

        Dense: ``A^T A`` is built by applying ``A^H A`` to the identity, so keep images small.
        ``noise_std`` is the standard deviation of each real component of the noise.
        """
        n = self.mean.numel()
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *self.shape)
        ata = operator.N(basis).reshape(n, n).T
        y64 = y.to(torch.complex128 if y.is_complex() else torch.float64)
        mu = self.mean.reshape(-1)
        at_resid = operator.adjoint(y64).reshape(-1) - ata @ mu  # A^T (y - A mu)
        # cov_post = U S (I + S U^T A^T A U S / s_y^2)^{-1} S U^T, robust to tiny eigenvalues
        u, s = self.evecs, self.evals.sqrt()
        inner = (
            torch.eye(n, dtype=torch.float64)
            + s[:, None] * (u.T @ ata @ u) * s[None] / noise_std**2
        )
        cov_post = u @ (s[:, None] * torch.linalg.inv(inner) * s[None]) @ u.T
        cov_post = (cov_post + cov_post.T) / 2
        mean_post = mu + cov_post @ at_resid / noise_std**2
        return mean_post.reshape(self.shape), cov_post
