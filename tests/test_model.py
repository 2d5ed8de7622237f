import math

import pytest
import torch

from iclab.models.transformer import Block, ICLTransformer, TransformerConfig

# every attention the model offers (momentum with its decay eta)
ATTENTIONS = [{"attention": "softmax"}, {"attention": "linear"}, {"attention": "momentum", "momentum": 0.9}]


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_prediction_at_k_ignores_later_tokens(attention, gen):
    torch.manual_seed(0)
    model = ICLTransformer(TransformerConfig(layers=2, width=32, heads=4, **attention), dims=4, max_points=9).eval()
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
    cfg = TransformerConfig(layers=3, width=64, heads=2)
    model = ICLTransformer(cfg, dims=5, max_points=11)
    assert model(torch.randn(7, 11, 5), torch.randn(7, 11)).shape == (7, 11)
    assert model(torch.randn(7, 4, 5), torch.randn(7, 4)).shape == (7, 4)  # shorter prompts work too
    w = 64
    per_block = 2 * 2 * w + (w * 3 * w + 3 * w) + (w * w + w) + (w * 4 * w + 4 * w) + (4 * w * w + w)
    expected = (5 * w + w) + 22 * w + 3 * per_block + 2 * w + (w + 1)
    assert model.num_parameters() == expected  # read-in, positions, blocks, final norm, read-out: no token table


def test_interleaving_puts_y_in_first_coordinate():
    model = ICLTransformer(TransformerConfig(layers=1, width=8, heads=1), dims=3, max_points=2)
    with torch.no_grad():
        model.read_in.weight.copy_(torch.eye(8, 3))
        model.read_in.bias.zero_()
        model.pos.zero_()
    xs = torch.tensor([[[1.0, 2, 3], [4, 5, 6]]])
    ys = torch.tensor([[7.0, 8]])
    emb = model.embed(xs, ys)[0, :, :3]
    assert torch.equal(emb, torch.tensor([[1.0, 2, 3], [7, 0, 0], [4, 5, 6], [8, 0, 0]]))


def test_wrong_input_sizes_are_reported():
    model = ICLTransformer(TransformerConfig(layers=1, width=8, heads=1), dims=3, max_points=4)
    with pytest.raises(ValueError, match="3-dimensional"):
        model(torch.randn(1, 4, 2), torch.randn(1, 4))
    with pytest.raises(ValueError, match="at most 4 points"):
        model(torch.randn(1, 5, 3), torch.randn(1, 5))


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_x_only_last_block_equals_the_full_pass(attention, gen):
    model = ICLTransformer(TransformerConfig(layers=2, width=16, heads=2, **attention), dims=3, max_points=6)
    xs, ys = torch.randn(4, 6, 3, generator=gen), torch.randn(4, 6, generator=gen)
    full = model.read_out(model.hidden(xs, ys)[:, 0::2]).squeeze(-1)
    assert torch.allclose(model(xs, ys), full, atol=1e-6)


def hf_gpt2(layers: int, width: int, heads: int, positions: int):
    """Garg et al.'s backbone: transformers.GPT2Model as their src/models.py configures it."""
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(
        n_positions=positions, n_embd=width, n_layer=layers, n_head=heads,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
    )  # fmt: skip
    return GPT2Model(config).eval()


def linear_pairs(block, theirs) -> list[tuple]:
    """Our block's linear layers beside the same layers of a Hugging Face GPT2Block (Conv1D, transposed weights)."""
    return [
        (block.attn.qkv, theirs.attn.c_attn),
        (block.attn.proj, theirs.attn.c_proj),
        (block.fc, theirs.mlp.c_fc),
        (block.fc_out, theirs.mlp.c_proj),
    ]


def test_gpt2_options_give_garg_s_model_exactly(gen):
    """With init: gpt2 and activation: gelu_new, the model computes Garg's TransformerModel: read-in, GPT2Model on
    the input embeddings, read-out at the x positions. Our weights copied into a Hugging Face GPT2Model (whose
    Conv1D layers store the transposed matrices) give the same predictions."""
    cfg = TransformerConfig(layers=2, width=32, heads=4, init="gpt2", activation="gelu_new")
    ours = ICLTransformer(cfg, dims=3, max_points=5).double().eval()
    hf = hf_gpt2(2, 32, 4, positions=10).double()
    with torch.no_grad():
        hf.wpe.weight.copy_(ours.pos)
        for block, theirs in zip(ours.blocks, hf.h, strict=True):
            for mine, conv in linear_pairs(block, theirs):
                conv.weight.copy_(mine.weight.T)
                conv.bias.copy_(mine.bias)
            for mine, norm in [(block.ln1, theirs.ln_1), (block.ln2, theirs.ln_2)]:
                norm.load_state_dict(mine.state_dict())
        hf.ln_f.load_state_dict(ours.ln_f.state_dict())
        xs, ys = torch.randn(4, 5, 3, generator=gen).double(), torch.randn(4, 5, generator=gen).double()
        zs = torch.stack((xs, torch.nn.functional.pad(ys.unsqueeze(-1), (0, 2))), dim=2).view(4, 10, 3)
        garg = ours.read_out(hf(inputs_embeds=ours.read_in(zs)).last_hidden_state)[:, ::2, 0]
        assert torch.allclose(ours(xs, ys), garg, rtol=0, atol=1e-12)
        exact = ICLTransformer(TransformerConfig(layers=2, width=32, heads=4), dims=3, max_points=5).double().eval()
        exact.load_state_dict(ours.state_dict())
        assert (exact(xs, ys) - garg).abs().max() > 1e-8  # the exact GELU is another function


def test_activations_are_the_exact_and_the_tanh_gelu(gen):
    x = 4 * torch.randn(1000, generator=gen, dtype=torch.float64)
    exact = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    tanh = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))  # Hugging Face's gelu_new
    for activation, expected in [("gelu", exact), ("gelu_new", tanh)]:
        block = Block(TransformerConfig(layers=1, width=8, heads=1, activation=activation))
        assert torch.allclose(block.act(x), expected, atol=1e-12)
    assert (exact - tanh).abs().max() > 1e-4  # two different functions


def std(t: torch.Tensor) -> float:
    return t.detach().double().std().item()


def test_gpt2_init_matches_hugging_face_s(gen):
    """Each weight's spread equals that of the same weight in a freshly initialised Hugging Face GPT2Model
    (N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 layers)), biases 0). The sample standard deviation of
    n entries scatters by sigma / sqrt(2 n): at most 0.7 % for the 16,384-entry matrices here; 5 of those for
    each of the two estimates gives a 5 % tolerance. The read-in and read-out keep PyTorch's default, uniform
    within 1 / sqrt(fan_in), as Garg's nn.Linear layers outside the GPT2Model do."""
    layers, width = 4, 128
    ours = ICLTransformer(TransformerConfig(layers=layers, width=width, heads=4, init="gpt2"), dims=5, max_points=64)
    hf = hf_gpt2(layers, width, 4, positions=128)
    for block, theirs in zip(ours.blocks, hf.h, strict=True):
        for mine, conv in linear_pairs(block, theirs):
            assert std(mine.weight) == pytest.approx(std(conv.weight), rel=0.05)
            assert (mine.bias == 0).all() and (conv.bias == 0).all()
        assert (block.ln1.weight == 1).all() and (block.ln1.bias == 0).all()
    assert std(ours.blocks[0].attn.proj.weight) == pytest.approx(0.02 / math.sqrt(2 * layers), rel=0.05)
    assert std(ours.pos) == pytest.approx(std(hf.wpe.weight), rel=0.05)
    for linear, fan_in in [(ours.read_in, 5), (ours.read_out, width)]:
        bound = 1 / math.sqrt(fan_in)
        assert linear.weight.abs().max() <= bound and linear.bias.abs().max() <= bound
    default = ICLTransformer(TransformerConfig(layers=layers, width=width, heads=4), dims=5, max_points=64)
    assert (default.pos == 0).all()  # iclab's default init: PyTorch's, positions from zero
    assert std(default.blocks[0].attn.qkv.weight) == pytest.approx(1 / math.sqrt(3 * width), rel=0.05)
