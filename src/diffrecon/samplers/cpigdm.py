"""C-ΠGDM and C-ΠGFM: conditional conjugate integrators (Pandey, Yang, Mandt; arXiv 2405.17673).

The ΠGDM-guided probability-flow ODE of a path ``x_t = a x0 + s eps`` (see ``paths``), with
the paper's guidance weight ``w_t = w r_t^2 a_t^2`` and ``eps`` the denoiser's noise
prediction, is

    dx/dt = (a'/a) x + g2/2 w_k P x + g2/(2 s) eps - g2/2 w_k s P eps
            - g2/2 w_k a H^+ y + g2/2 w_k a s grad_x(mat . eps),

with ``P = H^+ H``, ``mat = H^+ y - P x0_hat`` held fixed in the gradient and
``w_k = w kappa_t``. Noiseless data give ``kappa = 1``. With noise ``sigma_y`` and an operator
whose ``A A^H = c I`` (masks, pooling, single-coil Cartesian MRI), ΠGDM's likelihood
``N(y; H x0_hat, r^2 H H^T + sigma_y^2 I)`` gives exactly the same ODE with
``kappa_t = r_t^2 c / (r_t^2 c + sigma_y^2)``; this is the noisy extension. Other operators
(multicoil SENSE) are refused when ``noise_std > 0``.

The design choice ``B_t = lambda I`` gives ``A_t = exp(c1) (I + (exp(c2) - 1) P)`` with
``c1 = lambda t - log a_t`` and ``c2 = -w/2 int_0^t g2 kappa``; in ``x_bar = A_t x`` the
stiff linear part disappears and one Euler step is

    x_bar += lambda x_bar dt + dPhi_y H^+ y + dPhi_s . (eps, P eps) + dPhi_j . (g, P g),

with the five ``Phi`` coefficients integrated by adaptive quadrature once per schedule
(cached). Sampling starts from ``a H^+ y + s z`` at the first level and returns ``x / a`` at
the last. Path ``"vp"`` is C-ΠGDM, path ``"rf"`` (rectified flow) is C-ΠGFM; with a flow
model wrap it in :class:`~diffrecon.priors.FlowMatchingDenoiser` first. The authors' flow
code (``ConjugateV2``) writes its guidance weight as ``w tau (1 - tau)`` in velocity units
and flow time ``tau = 1 - t``: that is this ODE (``w r_t^2 a_t^2`` turns ΠGDM's velocity
weight ``((1 - tau)^2 + tau^2) / (tau (1 - tau))`` into it), checked against the reference
ODE in the tests.

Their noisy VP sampler (``NoisyConjugatePGDMSampler``) is ``noise_model="reference"``: it
keeps the noiseless ``c2`` and adds a first-order ``sigma_y^2`` term to the projection,
``A_t' = A_t + c3 H^+ H^+T`` with ``c3 = w/2 (e^{c1 + c2} - 1) sigma_y^2 log(sigma_t^2)``
(``sigma_t`` the VE level), inverts it to first order
(``A_t^{-1} - A_t^{-1} c3 H^+ H^+T A_t^{-1}``), and integrates three more coefficients for
the ``y``, score and Jacobian terms along ``H^+ H^+T``. With ``A A^H = c I`` that operator
is ``P / c``, so the correction stays in the range of ``P``. At the reference's configured
``w = 1, lambda = 0`` (``ncpgdm.yaml``) ``c1 + c2 = 0`` and ``c3`` vanishes: that sampler
is then the noiseless one, blind to ``sigma_y``. The reference starts inpainting from pure
noise (a task-name switch in its code); here every start is ``a H^+ y + s z``.

Notation map: ``w`` -> ``w``, ``lambda`` -> ``lam``, ``sigma_y`` -> ``noise_std``, times
``t_n`` <- ``sigmas`` (VE levels, ``t = path.time(sigma)``; zeros are dropped). Each step is
one denoiser call plus one backward pass: NFE = ``len(levels) - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.integrate import quad

from diffrecon.operators.base import LinearOperator
from diffrecon.priors.base import Denoiser, denoiser_range, sigma_batch
from diffrecon.samplers.common import Callback, Generators, NoiseSource, StepState, blank_image
from diffrecon.samplers.paths import get_path


@dataclass(frozen=True)
class _Noise:
    """What ``kappa_t`` needs: ``A A^H = c I``, ``sigma_y^2`` and the prior's ``sigma_data``."""

    c: float
    var: float
    sigma_data: float


@dataclass(frozen=True)
class Coefficients:
    """Per-schedule constants: ``c1``, ``c2`` at each time and the ``Phi`` increments
    ``(steps, 5)`` in the order ``y, s1, s2, j1, j2``."""

    ts: tuple[float, ...]
    c1: tuple[float, ...]
    c2: tuple[float, ...]
    dphi: np.ndarray


def _kappa(path_name: str, t: float, noise: _Noise | None) -> float:
    if noise is None or noise.var == 0:
        return 1.0
    p = get_path(path_name)
    sig2 = (p.s(t) / p.a(t)) ** 2
    r2 = sig2 * noise.sigma_data**2 / (sig2 + noise.sigma_data**2)
    return r2 * noise.c / (r2 * noise.c + noise.var)


@lru_cache(maxsize=64)
def coefficients(
    path_name: str, ts: tuple[float, ...], w: float, lam: float, noise: _Noise | None = None
) -> Coefficients:
    """Integrate the conjugate integrator's coefficients for decreasing times ``ts``."""
    p = get_path(path_name)

    def c2(t: float) -> float:
        if noise is None or noise.var == 0:
            return -0.5 * w * p.int_g2(t)
        val = quad(lambda u: p.g2(u) * _kappa(path_name, u, noise), 0.0, t, limit=200)[0]
        return -0.5 * w * val

    def c1(t: float) -> float:
        return lam * t - math.log(p.a(t))

    # with noise c2 is itself a quadrature from 0: memoise it (the rates revisit times)
    c2_cache: dict[float, float] = {}

    def c2c(t: float) -> float:
        if t not in c2_cache:
            c2_cache[t] = c2(t)
        return c2_cache[t]

    def rate(t: float, k: int) -> float:
        g2, a, s = p.g2(t), p.a(t), p.s(t)
        wk = w * _kappa(path_name, t, noise)
        e1, e2 = math.exp(c1(t)), math.exp(c2c(t))
        if k == 0:
            return -0.5 * g2 * wk * a * e1 * e2
        if k == 1:
            return 0.5 * g2 * e1 / s
        if k == 2:
            return 0.5 * g2 * e1 * (e2 - 1) / s - 0.5 * g2 * wk * s * e1 * e2
        if k == 3:
            return 0.5 * g2 * wk * a * s * e1
        return 0.5 * g2 * wk * a * s * e1 * (e2 - 1)

    dphi = np.zeros((len(ts) - 1, 5))
    for n in range(len(ts) - 1):
        for k in range(5):
            dphi[n, k] = quad(rate, ts[n], ts[n + 1], args=(k,), limit=200)[0]
    return Coefficients(ts, tuple(c1(t) for t in ts), tuple(c2c(t) for t in ts), dphi)


@lru_cache(maxsize=64)
def reference_noise_terms(
    ts: tuple[float, ...], w: float, lam: float, var: float
) -> tuple[tuple[float, ...], np.ndarray]:
    """The reference noisy sampler's ``c3`` at each time and its three extra ``Phi``
    increments ``(steps, 3)``, in the order ``y, s, j`` (VP path, noiseless ``c2``)."""
    p = get_path("vp")

    def c3(t: float) -> float:
        e = math.exp(lam * t - math.log(p.a(t)) - 0.5 * w * p.int_g2(t))
        return 0.5 * w * (e - 1.0) * var * math.log(p.sigma(t) ** 2)

    def rate(t: float, k: int) -> float:
        g2, a, s = p.g2(t), p.a(t), p.s(t)
        if k == 0:
            return -0.5 * g2 * w * a * c3(t)
        if k == 1:
            return 0.5 * g2 * c3(t) * (1.0 / s - w * s)
        return 0.5 * w * g2 * a * s * c3(t)

    dphi = np.zeros((len(ts) - 1, 3))
    for n in range(len(ts) - 1):
        for k in range(3):
            dphi[n, k] = quad(rate, ts[n], ts[n + 1], args=(k,), limit=200)[0]
    return tuple(c3(t) for t in ts), dphi


def split(
    x: torch.Tensor, px: torch.Tensor, c1: float, c2: float, k: float = 0.0
) -> tuple[torch.Tensor, ...]:
    """``x_bar = A_t x`` as its parts ``(P x_bar, (I - P) x_bar)`` given ``px = P x``, with
    ``A_t = e^{c1} (I + (e^{c2} - 1) P) + k P``; exact, ``P`` being a projection (``k`` is
    the reference noisy sampler's ``c3 / c``, 0 otherwise)."""
    return (math.exp(c1 + c2) + k) * px, math.exp(c1) * (x - px)


def join(u: torch.Tensor, v: torch.Tensor, c1: float, c2: float, k: float = 0.0) -> torch.Tensor:
    """``A_t^{-1} x_bar`` from the parts ``u = P x_bar``, ``v = (I - P) x_bar``: no
    cancellation, where ``x_bar + expm1(-c2) P x_bar`` amplifies the rounding of ``P x_bar``
    by ``e^{-c2}`` (about 4e9 at w = 64). With ``k``, the reference's first-order inverse
    of ``A_t + k P``: ``A_t^{-1} - k A_t^{-1} P A_t^{-1}``."""
    e = math.exp(-c2)
    if k:
        e *= 1.0 - k * math.exp(-c1 - c2)
    return math.exp(-c1) * (v + e * u)


def cpigdm(
    denoiser: Denoiser,
    operator: LinearOperator,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise_std: float = 0.0,
    generator: Generators = None,
    shape: tuple[int, ...] | None = None,
    callback: Callback = None,
    w: float = 1.0,
    lam: float = 0.0,
    path: str = "vp",
    noise_model: str = "exact",
    cg_iters: int = 100,
) -> torch.Tensor:
    """One C-ΠGDM (``path="vp"``) or C-ΠGFM (``path="rf"``) draw per item of ``y``;
    ``noise_model`` ``"exact"`` (ours) or ``"reference"`` (the authors' noisy VP sampler)."""
    if noise_model not in ("exact", "reference"):
        raise ValueError(f"noise_model must be 'exact' or 'reference', got {noise_model!r}")
    if not operator.is_linear:
        raise ValueError(f"C-ΠGDM needs a linear operator, got {operator.name}")
    if not operator.has_exact_pinv:
        raise ValueError(
            f"C-ΠGDM needs an exact pseudo-inverse: {operator.name} has only an iterative one, "
            "whose projection A^+ A is not idempotent; use daps or pigdm"
        )
    noise = None
    if noise_std > 0:
        c = operator._normal_projection_scale()
        if c is None:
            raise ValueError(
                f"noisy C-ΠGDM needs A A^H = c I, which {operator.name} does not have; "
                "use the daps or pigdm samplers"
            )
        noise = _Noise(float(c), float(noise_std) ** 2, float(denoiser_range(denoiser).sigma_data))
    reference = noise is not None and noise_model == "reference"
    if reference and path != "vp":
        raise ValueError("the reference's noisy C-ΠGDM sampler exists for the VP path only")
    p = get_path(path)
    levels = [s for s in sigmas.tolist() if s > 0]
    if len(levels) < 2:
        raise ValueError("C-ΠGDM needs at least two non-zero noise levels")
    ts = tuple(p.time(s) for s in levels)
    co = coefficients(path, ts, float(w), float(lam), None if reference else noise)
    # k_n = c3(t_n) / c and its increments: zero unless the reference's noisy sampler runs
    ks, dref = [0.0] * len(ts), np.zeros((len(ts) - 1, 3))
    if reference:
        c3s, dref = reference_noise_terms(ts, float(w), float(lam), noise.var)
        ks, dref = [c3 / noise.c for c3 in c3s], dref / noise.c

    def proj(v: torch.Tensor) -> torch.Tensor:  # P v = H^+ H v
        return operator.pinv(operator(v), max_iter=cg_iters)

    x = blank_image(operator, y, shape)
    noise_src = NoiseSource(generator, x)
    pinv_y = operator.pinv(y, max_iter=cg_iters).to(x.dtype)
    x = p.a(ts[0]) * pinv_y + p.s(ts[0]) * noise_src()
    # the projected state x_bar = A_t x is carried as its parts P x_bar, (I - P) x_bar
    u, v = split(x, proj(x), co.c1[0], co.c2[0], ks[0])
    if reference:  # the reference reads its first state back through the first-order inverse
        x = join(u, v, co.c1[0], co.c2[0], ks[0])
    n = len(ts) - 1
    for i in range(n):
        a, sig = p.a(ts[i]), levels[i]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x_ve = xg / a
            x0_hat = denoiser(x_ve, sigma_batch(sig, x_ve))
            eps = (x_ve - x0_hat) / sig
            mat = (pinv_y - proj(x0_hat.detach())).detach()
            (g,) = torch.autograd.grad((mat * eps).sum(), xg)
        eps = eps.detach()
        d_y, d_s1, d_s2, d_j1, d_j2 = co.dphi[i].tolist()
        p_eps, p_g = proj(eps), proj(g)
        decay = 1 + lam * (ts[i + 1] - ts[i])
        # P pinv_y = pinv_y: the data term lives in the range of P
        r_y, r_s, r_j = dref[i].tolist()  # the reference's H^+ H^+T = P / c terms
        u = u * decay + (d_y + r_y) * pinv_y + (d_s1 + d_s2 + r_s) * p_eps
        u = u + (d_j1 + d_j2 + r_j) * p_g
        v = v * decay + d_s1 * (eps - p_eps) + d_j1 * (g - p_g)
        x = join(u, v, co.c1[i + 1], co.c2[i + 1], ks[i + 1])
        if callback is not None:
            a_next = p.a(ts[i + 1])
            callback(StepState(i, n, levels[i + 1], x / a_next, x0_hat.detach(), i + 1))
    return (x / p.a(ts[-1])).detach()
