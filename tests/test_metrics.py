import pytest
import torch
from scipy.stats import kendalltau

from iclab.icl_vs_ft.metrics import kendall, kendall_tau, rec2ftp, simam, simaou


def test_rec2ftp_counts_only_examples_finetuning_fixes():
    zsl = torch.tensor([0, 0, 0, 0, 1, 1])
    ft = torch.tensor([1, 1, 1, 0, 1, 0])
    icl = torch.tensor([1, 0, 1, 1, 0, 0])
    assert rec2ftp(zsl, ft, icl) == pytest.approx(2 / 3)  # FT fixes 0, 1, 2; ICL gets 0 and 2
    assert rec2ftp(torch.ones(3), torch.ones(3), torch.ones(3)) is None  # nothing to recover: undefined


def test_simaou_known_angles():
    zsl = torch.tensor([[[1.0, 0.0, 0.0]] * 2])  # (layers=1, examples=2, width=3)
    icl = torch.tensor([[[0.0, 2.0, 0.0], [0.0, 0.0, 5.0]]])
    ft = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 3.0, 0.0]]])
    # example 1: icl - zsl = ft - zsl = (-1, 1, 0) -> 1; example 2: (-1, 0, 1) vs (-1, 1, 0) -> 1/2
    assert simaou(zsl, icl, ft).per_layer == [pytest.approx(0.75)]


def test_simam_is_mean_cosine_over_heads_and_examples():
    icl = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # (1 layer, 1 example, 2 heads, 2 tokens)
    other = torch.tensor([[[[1.0, 0.0], [1.0, -1.0]]]])
    assert simam(icl, other).mean == pytest.approx(0.5)  # cosines 1 and 0


def test_kendall_matches_scipy(gen):
    a = torch.randn(7, 12, generator=gen)
    b = a + torch.randn(7, 12, generator=gen)
    b[0, :4] = 0.0  # ties
    ours = kendall_tau(a, b)
    for i in range(7):
        assert float(ours[i]) == pytest.approx(kendalltau(a[i].numpy(), b[i].numpy()).statistic, abs=1e-12)
    assert kendall(a.unsqueeze(0), a.unsqueeze(0)).mean == pytest.approx(1.0)
    assert kendall(a.unsqueeze(0), -a.unsqueeze(0)).mean == pytest.approx(-1.0)
