import pytest
import torch

from iclab.analysis.dual import dual_decomposition, gd_construction, gd_step, lsa_forward, tokens
from iclab.models.transformer import ICLTransformer, TransformerConfig


@pytest.mark.parametrize("seed", range(5))
def test_one_lsa_layer_is_one_gradient_step(seed):
    g = torch.Generator().manual_seed(seed)
    d = int(torch.randint(1, 9, (1,), generator=g))
    n = int(torch.randint(1, 30, (1,), generator=g))
    eta = float(torch.rand(1, generator=g) * 2)
    xs = torch.randn(4, n, d, generator=g, dtype=torch.float64)
    ys = torch.randn(4, n, generator=g, dtype=torch.float64)
    w0 = torch.randn(d, generator=g, dtype=torch.float64)
    xq = torch.randn(4, 1, d, generator=g, dtype=torch.float64)
    out = lsa_forward(
        gd_construction(d, eta, n, w0), tokens(xs, ys), tokens(xq, torch.zeros(4, 1, dtype=torch.float64))
    )
    w1 = gd_step(xs, ys, eta, w0)
    expected = (w0 - w1).unsqueeze(1) @ xq.transpose(1, 2)  # (W0 - W1) x_q in the y-slot
    assert torch.allclose(out[:, :, -1], expected.squeeze(-1), atol=1e-10, rtol=0)
    assert torch.equal(out[:, :, :-1], xq)  # the x-part of the query token is untouched


@pytest.mark.parametrize("split", [0, 3, 8])
def test_dual_parts_sum_to_the_attention_output(split):
    torch.manual_seed(0)
    config = TransformerConfig(layers=2, width=16, heads=4, attention="linear")
    model = ICLTransformer(config, dims=3, max_points=6).double()
    xs, ys = torch.randn(5, 6, 3, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    h = model.blocks[1].ln1(model.blocks[0](model.embed(xs, ys)))
    parts = dual_decomposition(model.blocks[1].attn, h, split=split)
    assert torch.allclose(parts.zsl + parts.icl + parts.bias, parts.direct, atol=1e-12)
    if split == 0:
        assert torch.allclose(parts.icl, torch.zeros_like(parts.icl))


def test_dual_form_needs_linear_attention():
    model = ICLTransformer(TransformerConfig(layers=1, width=8, heads=2), dims=2, max_points=3)
    with pytest.raises(ValueError, match="linear"):
        dual_decomposition(model.blocks[0].attn, torch.randn(1, 6, 8), split=2)
