import pytest
import torch

from iclab.model import ICLTransformer, ModelConfig

# every attention the model offers (momentum with its decay eta)
ATTENTIONS = [{"attention": "softmax"}, {"attention": "linear"}, {"attention": "momentum", "momentum": 0.9}]


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_prediction_at_k_ignores_later_tokens(attention, gen):
    torch.manual_seed(0)
    model = ICLTransformer(ModelConfig(layers=2, width=32, heads=4, **attention), dims=4, max_points=9).eval()
    xs, ys = torch.randn(3, 9, 4, generator=gen), torch.randn(3, 9, generator=gen)
    base = model(xs, ys)
    for k in range(9):
        xs2, ys2 = xs.clone(), ys.clone()
        xs2[:, k + 1 :] = torch.randn_like(xs2[:, k + 1 :])
        ys2[:, k:] = torch.randn_like(ys2[:, k:])  # y_k itself is what position k predicts
        out = model(xs2, ys2)
        assert torch.allclose(out[:, : k + 1], base[:, : k + 1], atol=1e-6)
        if k < 8:
            assert not torch.allclose(out[:, k + 1 :], base[:, k + 1 :])


def test_shapes_and_parameter_count():
    cfg = ModelConfig(layers=3, width=64, heads=2)
    model = ICLTransformer(cfg, dims=5, max_points=11)
    assert model(torch.randn(7, 11, 5), torch.randn(7, 11)).shape == (7, 11)
    assert model(torch.randn(7, 4, 5), torch.randn(7, 4)).shape == (7, 4)  # shorter prompts work too
    w = 64
    per_block = 2 * 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + (w * 4 * w + 4 * w) + (4 * w * w + w)
    expected = (5 * w + w) + 22 * w + 3 * per_block + 2 * w + (w + 1)
    assert model.num_parameters() == expected  # read-in, positions, blocks, final norm, read-out: no token table


def test_interleaving_puts_y_in_first_coordinate():
    model = ICLTransformer(ModelConfig(layers=1, width=8, heads=1), dims=3, max_points=2)
    with torch.no_grad():
        model.read_in.weight.copy_(torch.eye(8, 3))
        model.read_in.bias.zero_()
        model.pos.zero_()
    xs = torch.tensor([[[1.0, 2, 3], [4, 5, 6]]])
    ys = torch.tensor([[7.0, 8]])
    emb = model.embed(xs, ys)[0, :, :3]
    assert torch.equal(emb, torch.tensor([[1.0, 2, 3], [7, 0, 0], [4, 5, 6], [8, 0, 0]]))


def test_wrong_input_sizes_are_reported():
    model = ICLTransformer(ModelConfig(layers=1, width=8, heads=1), dims=3, max_points=4)
    with pytest.raises(ValueError, match="3-dimensional"):
        model(torch.randn(1, 4, 2), torch.randn(1, 4))
    with pytest.raises(ValueError, match="at most 4 points"):
        model(torch.randn(1, 5, 3), torch.randn(1, 5))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_x_only_last_block_equals_the_full_pass(attention, gen):
    model = ICLTransformer(ModelConfig(layers=2, width=16, heads=2, **attention), dims=3, max_points=6)
    xs, ys = torch.randn(4, 6, 3, generator=gen), torch.randn(4, 6, generator=gen)
    full = model.read_out(model.hidden(xs, ys)[:, 0::2]).squeeze(-1)
    assert torch.allclose(model(xs, ys), full, atol=1e-6)
