"""Least squares on an L1 ball: w = argmin ||X^T w - y||^2 subject to ||w||_1 <= mu.

Solved by accelerated projected gradient (FISTA with the projection as its proximal step,
Beck & Teboulle 2009) with step 1/L, L = 2 sigma_max(X)^2; the projection onto the L1 ball
is the sort-based one of Duchi et al. (ICML 2008). Every column of Y is its own problem
(one per class), solved together. Deterministic: no randomness anywhere.
"""

from __future__ import annotations

import torch


def project_l1_ball(v: torch.Tensor, mu: float) -> torch.Tensor:
    """Euclidean projection of every column of ``v`` (d, k) onto {w : ||w||_1 <= mu}."""
    if mu <= 0:
        raise ValueError("mu must be positive")
    inside = v.abs().sum(0) <= mu
    u = v.abs().sort(0, descending=True).values
    cumulative = u.cumsum(0)
    ranks = torch.arange(1, v.shape[0] + 1, dtype=v.dtype, device=v.device)[:, None]
    # rho: the largest j with u_j > (sum_{i<=j} u_i - mu) / j
    condition = u * ranks > cumulative - mu
    rho = condition.to(v.dtype).mul(ranks).amax(0).long()
    theta = (cumulative.gather(0, (rho - 1)[None]) - mu) / rho.to(v.dtype)
    projected = v.sign() * (v.abs() - theta).clamp(min=0)
    return torch.where(inside[None], v, projected)


def l1_ball_least_squares(
    x: torch.Tensor, y: torch.Tensor, mu: float, iterations: int = 3000, tol: float = 1e-10
) -> torch.Tensor:
    """W (d, k) minimising ||X^T W - Y||_F^2 with ||W[:, c]||_1 <= mu for every column.

    ``x`` (d, n): one column per sample; ``y`` (n, k). Stops early when an iteration moves
    W by less than ``tol`` relative to its norm.
    """
    x, y = x.double(), y.double()
    lipschitz = 2 * torch.linalg.matrix_norm(x, ord=2) ** 2
    step = 1.0 / float(lipschitz)
    w = torch.zeros(x.shape[0], y.shape[1], dtype=torch.float64)
    z, t = w.clone(), 1.0
    for _ in range(iterations):
        gradient = 2 * x @ (x.T @ z - y)
        w_next = project_l1_ball(z - step * gradient, mu)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = w_next + ((t - 1) / t_next) * (w_next - w)
        moved = float((w_next - w).norm()) / max(float(w_next.norm()), 1e-30)
        w, t = w_next, t_next
        if moved < tol:
            break
    return w
