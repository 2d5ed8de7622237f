"""The Lasso baseline is exact: its weights satisfy the Lasso's optimality (KKT) conditions on every prefix.

On the normalised objective 1/(2k) ||y - Xw||^2 + alpha ||w||_1 the conditions are, with g = X^T (y - Xw) / k:
g_j = alpha sign(w_j) where w_j != 0, and |g_j| <= alpha where w_j = 0. Checked to 1e-6 alpha on Garg et al.'s
prompts (2d + 1 points, so the underdetermined prefixes k < d are included) at every alpha Garg uses.
"""

import pytest
import torch
from torch import Tensor

from iclab.baselines import lasso_prefixes
from iclab.baselines.linear import prefix_grams
from iclab.tasks import make_inputs, make_task, sample_prompts

GARG_ALPHAS = (1.0, 0.1, 0.01, 0.001, 0.0001)


def kkt_violations(xs: Tensor, ys: Tensor, w: Tensor, alpha: float, rel: float = 1e-6) -> Tensor:
    """(batch, n) mask of the prefixes k >= 1 whose weights w (batch, n, d) break a KKT condition by > rel alpha."""
    gram, xty, _ = prefix_grams(xs.double(), ys.double())
    k = torch.arange(xs.shape[1], dtype=torch.float64).clamp(min=1)
    grad = (xty - torch.einsum("bnij,bnj->bni", gram, w)) / k[:, None]
    on = w != 0
    bad_on = on & ((grad - alpha * torch.sign(w)).abs() > rel * alpha)
    bad_off = ~on & (grad.abs() > alpha * (1 + rel))
    bad = (bad_on | bad_off).any(-1)
    bad[:, 0] = False  # no examples: w = 0 is the only solution
    return bad


def test_the_checker_catches_a_wrong_solution(gen):
    xs = torch.randn(4, 9, 4, generator=gen, dtype=torch.float64)
    ys = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    w = lasso_prefixes(xs, ys, 0.01)
    assert not kkt_violations(xs, ys, w, 0.01).any()
    assert kkt_violations(xs, ys, torch.zeros_like(w), 0.01)[:, 2:].all()  # too sparse
    assert kkt_violations(xs, ys, w * (1 + 1e-4), 0.01)[:, 5:].all()  # off the optimum on the support
    flipped = w.clone()
    flipped[..., 0] = -flipped[..., 0]
    assert kkt_violations(xs, ys, flipped, 0.01)[(w[..., 0] != 0)].all()  # wrong sign


@pytest.mark.parametrize(
    ("dims", "task", "prompts"),
    [(5, "linear", 128), (5, "sparse_linear:nnz=2", 128), (20, "linear", 96), (20, "sparse_linear:nnz=3", 64)],
)
def test_lasso_meets_its_optimality_conditions_on_every_prefix(dims, task, prompts):
    g = torch.Generator().manual_seed(1)
    xs, ys, _ = sample_prompts(
        make_task(task, dims), make_inputs("isotropic", dims), batch=prompts, points=2 * dims + 1, generator=g
    )
    bad = {alpha: int(kkt_violations(xs, ys, lasso_prefixes(xs, ys, alpha), alpha).sum()) for alpha in GARG_ALPHAS}
    assert sum(bad.values()) == 0, f"prefixes violating the KKT conditions, by alpha: {bad}"
