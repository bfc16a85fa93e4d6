"""The L1-ball least-squares solver of VEBI's fitting (whyserve.vebi.solver)."""

from __future__ import annotations

import torch

from whyserve.vebi.solver import l1_ball_least_squares, project_l1_ball


def test_projection_lands_on_the_ball_and_is_the_nearest_point():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(40, 5, generator=g, dtype=torch.float64) * 3
    p = project_l1_ball(v, 2.0)
    assert torch.allclose(p.abs().sum(0), torch.full((5,), 2.0, dtype=torch.float64))
    # optimality (Duchi et al.): v - p = theta * sign(p) on the support, |v - p| <= theta off it
    for c in range(5):
        support = p[:, c] != 0
        theta = (v[support, c] - p[support, c]).abs()
        assert torch.allclose(theta, theta[0].expand_as(theta))
        assert ((v[~support, c]).abs() <= theta[0] + 1e-12).all()
        assert torch.equal(torch.sign(p[support, c]), torch.sign(v[support, c]))
    inside = v / v.abs().sum(0) * 0.5  # already in the ball: unchanged
    assert torch.equal(project_l1_ball(inside, 2.0), inside)


def test_solver_recovers_planted_sparse_weights_from_fewer_samples_than_features():
    g = torch.Generator().manual_seed(1)
    d, n, k = 120, 60, 5
    w_true = torch.zeros(d, 2, dtype=torch.float64)
    for c in range(2):
        idx = torch.randperm(d, generator=g)[:k]
        w_true[idx, c] = torch.randn(k, generator=g, dtype=torch.float64).sign() * (
            1 + torch.rand(k, generator=g, dtype=torch.float64)
        )
    x = torch.randn(d, n, generator=g, dtype=torch.float64)  # underdetermined: least squares alone cannot recover it
    y = x.T @ w_true
    mu = float(w_true.abs().sum(0).max())
    w = l1_ball_least_squares(x, y, mu=mu, iterations=20000)
    for c in range(2):
        w_c = l1_ball_least_squares(x, y[:, c : c + 1], mu=float(w_true[:, c].abs().sum()), iterations=20000)
        assert torch.equal(w_c[:, 0].abs() > 1e-3, w_true[:, c] != 0)
        assert torch.allclose(w_c[:, 0], w_true[:, c], atol=1e-4)
    assert (w.abs().sum(0) <= mu + 1e-9).all()


def test_solver_is_deterministic():
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(30, 50, generator=g), torch.rand(50, 3, generator=g)
    assert torch.equal(l1_ball_least_squares(x, y, 1.0, 500), l1_ball_least_squares(x, y, 1.0, 500))
