"""Exact Gaussian-mixture prior: closed-form denoiser through component responsibilities.

``x0 ~ sum_k w_k N(mu_k, C_k)``. Under noise ``sigma`` each component becomes
``N(mu_k, C_k + sigma^2 I)``; the denoiser mixes the per-component Gaussian denoisers with the
posterior responsibilities of ``x``. Multimodal posteriors make it the test of mode coverage.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffrecon._checks import as_tensor, check_finite
from diffrecon.priors.base import sigma_batch
from diffrecon.priors.gaussian import _check_cov


class GMMPrior:
    """Mixture of Gaussians with ``weights (K,)``, ``means (K, C, H, W)``, ``covs (K, n, n)``."""

    def __init__(
        self, weights: Any, means: Any, covs: Any, sigma_min: float = 1e-3, sigma_max: float = 100.0
    ):
        w = as_tensor("weights", weights).to(torch.float64)
        mu = as_tensor("means", means).to(torch.float64)
        cv = as_tensor("covs", covs).to(torch.float64)
        if w.ndim != 1 or (w < 0).any() or not math.isclose(float(w.sum()), 1.0, rel_tol=1e-6):
            raise ValueError("weights must be a non-negative vector (K,) summing to 1")
        if mu.ndim != 4 or mu.shape[0] != w.shape[0]:
            raise ValueError(
                f"means must have shape (K={w.shape[0]}, C, H, W), got {tuple(mu.shape)}"
            )
        check_finite("means", mu)
        n = mu[0].numel()
        if cv.ndim != 3 or cv.shape[0] != w.shape[0]:
            raise ValueError(
                f"covs must have shape (K={w.shape[0]}, {n}, {n}), got {tuple(cv.shape)}"
            )
        for k in range(cv.shape[0]):
            _check_cov(cv[k], n, name=f"covs[{k}]")
        evals, evecs = torch.linalg.eigh(cv)
        self.shape = tuple(mu.shape[1:])
        self.weights, self.means, self.covs = w, mu, cv
        self.evals, self.evecs = evals.clamp_min(0.0), evecs
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        centered = mu.reshape(len(w), -1) - (w[:, None] * mu.reshape(len(w), -1)).sum(0)
        total_var = (w * (self.evals.sum(1) + (centered**2).sum(1))).sum() / n
        self.sigma_data = float(total_var.sqrt())

    def log_responsibilities(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """``log p(k | x)`` under noise ``sigma``: ``(B, K)``."""
        s2 = sigma_batch(sigma, x).to(torch.float64) ** 2
        d = x.reshape(x.shape[0], 1, -1).to(torch.float64) - self.means.reshape(
            1, len(self.weights), -1
        ).to(x.device)
        proj = torch.einsum("bkn,knm->bkm", d, self.evecs.to(x.device))  # (B, K, n)
        var = self.evals.to(x.device)[None] + s2[:, None, None]  # (B, K, n)
        logp = -0.5 * ((proj**2) / var).sum(-1) - 0.5 * var.log().sum(-1)
        logp = logp + self.weights.to(x.device).log()[None]
        return logp - torch.logsumexp(logp, dim=1, keepdim=True)

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        s2 = sigma_batch(sigma, x).to(torch.float64) ** 2
        k = len(self.weights)
        d = x.reshape(x.shape[0], 1, -1).to(torch.float64) - self.means.reshape(1, k, -1).to(
            x.device
        )
        u = self.evecs.to(x.device)
        lam = self.evals.to(x.device)[None]
        proj = torch.einsum("bkn,knm->bkm", d, u)
        comp = torch.einsum("bkm,knm->bkn", proj * lam / (lam + s2[:, None, None]), u)
        comp = comp + self.means.reshape(1, k, -1).to(x.device)
        resp = self.log_responsibilities(x, sigma).exp()
        return (resp[..., None] * comp).sum(1).reshape(x.shape).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` prior draws ``(n, C, H, W)`` (float64)."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means[0].numel(), dtype=torch.float64, generator=generator)
        x = torch.einsum("bn,bmn->bm", z * self.evals[idx].sqrt(), self.evecs[idx])
        return (x + self.means[idx].reshape(n, -1)).reshape(n, *self.shape)

    def posterior(self, operator: Any, y: torch.Tensor, noise_std: float):
        """Exact posterior mixture for a linear operator: ``(weights, means, covs)``."""
        from diffrecon.priors.gaussian import GaussianPrior

        n = self.means[0].numel()
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *self.shape)
        a_cols = operator(basis)  # (n, *oshape): A applied to each unit image
        if a_cols.is_complex():
            amat = torch.view_as_real(a_cols).reshape(n, -1).T
            y_vec = torch.view_as_real(y.to(torch.complex128)).reshape(-1)
        else:
            amat, y_vec = a_cols.reshape(n, -1).T, y.reshape(-1).double()
        keep = amat.abs().sum(1) > 0  # rows the mask zeroes carry no information
        amat, y_vec = amat[keep], y_vec[keep]
        logw, means, covs = [], [], []
        for k in range(len(self.weights)):
            comp = GaussianPrior(self.means[k], self.covs[k])
            m, c = comp.posterior(operator, y, noise_std)
            means.append(m)
            covs.append(c)
            # evidence N(y; A mu_k, A C_k A^T + s^2 I), in image space via the matrix A^T A
            basis = torch.eye(n, dtype=torch.float64).reshape(n, *self.shape)
            a_rows = operator(basis)  # (n, *oshape): columns of A
            amat = (
                torch.view_as_real(a_rows).reshape(n, -1).T
                if a_rows.is_complex()
                else a_rows.reshape(n, -1).T
            )
            y_vec = (
                torch.view_as_real(y.to(torch.complex128)).reshape(-1)
                if y.is_complex()
                else y.reshape(-1).double()
            )
            keep = amat.abs().sum(1) > 0  # rows the mask zeroes carry no information
            amat, y_vec = amat[keep], y_vec[keep]
            cov_y = amat @ self.covs[k] @ amat.T + noise_std**2 * torch.eye(
                amat.shape[0], dtype=torch.float64
            )
            resid = y_vec - amat @ self.means[k].reshape(-1)
            chol = torch.linalg.cholesky(cov_y)
            sol = torch.cholesky_solve(resid[:, None], chol)[:, 0]
            logw.append(self.weights[k].log() - 0.5 * resid @ sol - chol.diagonal().log().sum())
        logw_t = torch.stack(logw)
        return (logw_t - torch.logsumexp(logw_t, 0)).exp(), torch.stack(means), torch.stack(covs)
