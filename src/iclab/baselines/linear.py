"""Linear in-context learners solved for every prompt and every prefix length in one batched call.

Prefix k of a prompt is the problem (X_k, y_k) made of its first k examples. Least squares pads X_k with zero
rows to a fixed shape (zero rows change neither the least-squares nor the minimum-norm solution), so all
batch x n problems go to one LAPACK call. Ridge and Lasso work on the cumulative Gram matrices
G_k = X_k^T X_k and c_k = X_k^T y_k. Solves run in float64: prefixes with k close to d are ill-conditioned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import Estimator


def prefix_grams(xs: Tensor, ys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """G (batch, n, d, d), c (batch, n, d) and y.y (batch, n) of the examples before each position."""
    outer = xs.unsqueeze(-1) * xs.unsqueeze(-2)
    gram = outer.cumsum(1) - outer  # exclusive cumulative sums: prefix k holds examples 0..k-1
    xty = (xs * ys.unsqueeze(-1)).cumsum(1) - xs * ys.unsqueeze(-1)
    yty = ys.square().cumsum(1) - ys.square()
    return gram, xty, yty


def predict_with(weights: Tensor, xs: Tensor) -> Tensor:
    return (weights * xs).sum(-1)


def least_squares_prefixes(xs: Tensor, ys: Tensor) -> Tensor:
    """Minimum-norm least-squares weights (batch, n, d) for every prefix."""
    b, n, d = xs.shape
    x64, y64 = xs.double(), ys.double()
    before = torch.ones(n, n, dtype=torch.bool, device=xs.device).tril(-1)  # [k, j]: example j precedes k
    design = x64.unsqueeze(1) * before[None, :, :, None]  # (batch, k, j, d)
    target = (y64.unsqueeze(1) * before[None]).unsqueeze(-1)
    # gelsy handles rank-deficient systems and returns the minimum-norm solution
    solution = torch.linalg.lstsq(design.reshape(b * n, n, d), target.reshape(b * n, n, 1), driver="gelsy")
    return solution.solution.view(b, n, d)


@dataclass
class LeastSquares(Estimator):
    """Ordinary least squares; with fewer examples than dimensions, the minimum-norm interpolant."""

    name = "least_squares"

    def _predict(self, xs, ys):
        return predict_with(least_squares_prefixes(xs, ys), xs.double()).to(ys.dtype)


@dataclass
class Ridge(Estimator):
    """argmin ||y - Xw||^2 + alpha ||w||^2 (scikit-learn's Ridge without intercept). With w ~ N(0, I) and noise
    variance s^2, alpha = s^2 is the Bayes posterior mean."""

    name = "ridge"
    alpha: float = field(default=0.1, metadata={"gt": 0.0})

    def _predict(self, xs, ys):
        gram, xty, _ = prefix_grams(xs.double(), ys.double())
        eye = torch.eye(xs.shape[-1], dtype=gram.dtype, device=gram.device)
        weights = torch.linalg.solve(gram + self.alpha * eye, xty)
        return predict_with(weights, xs.double()).to(ys.dtype)


def on_support(gram: Tensor, support: Tensor) -> Tensor:
    """G restricted to the support S (boolean (..., d)), padded with the identity off S: a d x d matrix whose
    solves and determinant are those of G_SS, so problems with different supports batch together."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    return torch.where(support.unsqueeze(-1) & support.unsqueeze(-2), gram, eye * (~support).unsqueeze(-1))


def lasso_prefixes(xs: Tensor, ys: Tensor, alpha: float, max_events: int | None = None) -> Tensor:
    """Exact Lasso weights (batch, n, d) for every prefix: argmin 1/(2k) ||y_k - X_k w||^2 + alpha ||w||_1
    (scikit-learn's objective, no intercept).

    The homotopy (LARS-Lasso) algorithm, vectorised over problems: start at w = 0 with the penalty at
    lambda_0 = max |X^T y| and follow the piecewise-linear solution path down to lambda = alpha k. On a
    support A with signs s the solution is w_A = G_AA^{-1} (c_A - lambda s_A), so as lambda falls by t every
    problem moves along b = G_AA^{-1} s_A until an event: a free coordinate's correlation reaches the bound
    (it joins) or a support weight reaches zero (it leaves). The path has a handful of events per problem, so
    this is exact to rounding at the cost of ~2d batched d x d solves, where coordinate descent
    (scikit-learn's method) can take 10^5 sweeps on near-tied or underdetermined prefixes.

    Events are decided by rates, not by the sign of a distance: a coordinate that has just left sits exactly on
    the bound, where rounding gives its distance either sign, so only a correlation moving outward (rate > 0)
    can join and only a weight moving towards zero can leave. Every point is re-solved from (A, s), so no error
    accumulates along the path.
    """
    b, n, d = xs.shape
    gram, xty, _ = (t.flatten(0, 1) for t in prefix_grams(xs.double(), ys.double()))
    count = torch.arange(n, device=xs.device, dtype=torch.float64).repeat(b)  # k of each problem
    target = alpha * count  # lambda of the unnormalised objective 0.5 ||y - Xw||^2 + lambda ||w||_1
    weights = torch.zeros_like(xty)

    lam = xty.abs().amax(-1)
    todo = torch.nonzero(lam > target).squeeze(1)
    g, c, lam, tgt = gram[todo], xty[todo], lam[todo], target[todo]
    a_set = torch.zeros_like(c, dtype=torch.bool)
    s_set = torch.zeros_like(c)
    rows = torch.arange(len(todo), device=xs.device)
    first = c.abs().argmax(-1)
    a_set[rows, first] = True
    s_set[rows, first] = torch.sign(c[rows, first])
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=xs.device)
    events = max_events or 20 * d + 20
    for _ in range(events):
        if len(todo) == 0:
            break
        # on (A, s): w(lambda) = start - lambda b with start = G_AA^{-1} c_A and b = G_AA^{-1} s_A
        rhs = torch.stack([c, s_set], -1) * a_set.unsqueeze(-1)
        start, direction = torch.linalg.solve(on_support(g, a_set), rhs).unbind(-1)
        lam_ = lam.unsqueeze(-1)
        w = start - lam_ * direction
        corr = c - torch.einsum("pij,pj->pi", g, w)  # = lambda s on the support
        slope = torch.einsum("pij,pj->pi", g, direction)  # corr(lambda - t) = corr - t slope
        # a free coordinate joins with sign +-1 when lambda - t -+ (corr - t slope), at rate 1 -+ slope, hits 0
        gap = torch.stack([lam_ - corr, lam_ + corr])
        rate = torch.stack([1 - slope, 1 + slope])
        join = torch.where(~a_set & (rate > 1e-12), gap.clamp(min=0) / rate, inf)
        t_join, j_join = join.transpose(0, 1).reshape(len(todo), 2 * d).min(-1)
        join_sign = torch.where(j_join < d, 1.0, -1.0).to(c.dtype)
        j_join = j_join % d
        # a support coordinate leaves when its weight s_j w_j, falling at rate -s_j b_j, hits 0
        fall = -s_set * direction
        leave = torch.where(a_set & (fall > 0), (s_set * w).clamp(min=0) / fall, inf)
        t_leave, j_leave = leave.min(-1)
        t_end = lam - tgt
        step = torch.minimum(torch.minimum(t_join, t_leave), t_end)
        lam = lam - step
        joined = (step == t_join) & (step < t_end)
        left = (step == t_leave) & (step < t_end) & ~joined
        rows = torch.arange(len(todo), device=xs.device)
        a_set[rows[joined], j_join[joined]] = True
        s_set[rows[joined], j_join[joined]] = join_sign[joined]
        a_set[rows[left], j_leave[left]] = False
        s_set[rows[left], j_leave[left]] = 0.0
        finished = ~(joined | left)
        weights[todo[finished]] = (start - tgt.unsqueeze(-1) * direction)[finished]
        keep = ~finished
        todo, g, c, lam, tgt, a_set, s_set = (t[keep] for t in (todo, g, c, lam, tgt, a_set, s_set))
    else:
        raise RuntimeError(f"lasso path did not finish in {events} events for {len(todo)} prefixes")
    return weights.view(b, n, d)


@dataclass
class Lasso(Estimator):
    """argmin 1/(2k) ||y - Xw||^2 + alpha ||w||_1 over the k examples (scikit-learn's Lasso, no intercept)."""

    name = "lasso"
    alpha: float = field(default=0.01, metadata={"gt": 0.0})

    def _predict(self, xs, ys):
        weights = lasso_prefixes(xs, ys, self.alpha)
        return predict_with(weights, xs.double()).to(ys.dtype)


@dataclass
class Averaging(Estimator):
    """w = mean_i x_i y_i over the examples, prediction w.x (Garg's averaging baseline)."""

    name = "averaging"

    def _predict(self, xs, ys):
        _, xty, _ = prefix_grams(xs, ys)
        count = torch.arange(xs.shape[1], device=xs.device, dtype=xs.dtype).clamp(min=1)
        return predict_with(xty / count[:, None], xs)
