"""The recurrent families: torch.nn's LSTM and GRU (models/rnn.py) against the textbook equations stepped by hand,
their Muon matrices and FLOPs; Hugging Face's RWKV, xLSTM and RecurrentGemma (models/hf_recurrent.py): the mapping
of iclab's keys onto the HF config, the HF class as backbone, xLSTM in float64 throughout, the local-attention
window, and one-line errors for keys a family cannot take."""

import pytest
import torch

from iclab.config import load_config
from iclab.errors import UserError
from iclab.models import ICLModel, interleave
from iclab.training.optim import is_hidden_matrix
from iclab.training.runs import build_model

transformers = pytest.importorskip("transformers")


def model(*overrides: str, dims: int = 3, points: int = 7):
    torch.manual_seed(0)
    return build_model(load_config(None, [f"dims={dims}", f"points={points}", *overrides]))


def prompts(n: int = 7, dims: int = 3, dtype=torch.float64):
    torch.manual_seed(1)
    return torch.randn(4, n, dims, dtype=dtype), torch.randn(4, n, dtype=dtype)


# torch.nn LSTM and GRU


def lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    x_r, x_z, x_n = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
    h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    return (1 - z) * torch.tanh(x_n + r * h_n) + z * h, c


def by_hand(net, xs, ys, step):
    """The model's forward pass with its recurrence written out: each layer stepped over the tokens."""
    h = net.read_in(interleave(xs, ys))
    for layer in range(net.config.layers):
        weights = [getattr(net.rnn, f"{k}_l{layer}") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        state = cell = torch.zeros_like(h[:, 0])
        outputs = []
        for t in range(h.shape[1]):
            state, cell = step(h[:, t], state, cell, *weights)
            outputs.append(state)
        h = torch.stack(outputs, dim=1)
    return net.read_out(h[:, 0::2]).squeeze(-1)


@pytest.mark.parametrize(("name", "step"), [("lstm", lstm_step), ("gru", gru_step)])
def test_lstm_and_gru_are_the_textbook_cells_stepped_over_the_tokens(name, step):
    net = model(f"model.name={name}", "model.layers=2", "model.width=8").double()
    assert isinstance(net.rnn, {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[name])
    xs, ys = prompts()
    out, ref = net(xs, ys), by_hand(net, xs, ys, step)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), list(net.parameters()))
    ref_grads = torch.autograd.grad((ref * weights).sum(), list(net.parameters()))
    assert all(torch.allclose(g, r, rtol=0, atol=1e-12) for g, r in zip(grads, ref_grads, strict=True))


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_muon_trains_the_input_and_hidden_matrices_of_every_layer(name):
    net = model(f"model.name={name}", "model.layers=2", "model.width=8")
    hidden = {n for n, p in net.named_parameters() if is_hidden_matrix(net, n, p)}
    assert hidden == {f"rnn.weight_{k}_l{i}" for k in ("ih", "hh") for i in (0, 1)}


def test_rnn_flops_are_the_gate_products_counted_by_hand():
    # d = 3, width 4, 2 layers, 5 points = 10 tokens; 2 FLOPs per multiply-add:
    # read-in 2*3*4*10 = 240; per layer and token the gates' products 2*gates*4*(4 + 4): LSTM 256, GRU 192,
    # times 10 tokens and 2 layers; read-out 2*4 at the 5 x-positions = 40
    lstm = model("model.name=lstm", "model.layers=2", "model.width=4")
    gru = model("model.name=gru", "model.layers=2", "model.width=4")
    assert lstm.forward_flops(5) == 240 + 256 * 20 + 40
    assert gru.forward_flops(5) == 240 + 192 * 20 + 40
    # torch's counter sees the GRU's products on this CPU (not the fused LSTM's): the same convention
    assert gru.forward_flops(5) == ICLModel.forward_flops(gru, 5)


def test_a_recurrent_network_takes_prompts_longer_than_it_was_built_for():
    net = model("model.name=lstm", points=3).double()
    assert net(*prompts(n=9)).shape == (4, 9)


# Hugging Face RWKV, xLSTM, RecurrentGemma

SHAPE = ["model.layers=3", "model.width=24", "model.mlp_ratio=2"]


def test_rwkv_maps_layers_width_and_mlp_ratio_onto_rwkvmodel():
    net = model("model.name=rwkv", *SHAPE)
    assert type(net.backbone) is transformers.RwkvModel
    hf = net.backbone.config
    assert (hf.num_hidden_layers, hf.hidden_size, hf.attention_hidden_size) == (3, 24, 24)
    assert (hf.intermediate_size, hf.context_length, hf.rescale_every) == (48, 14, 0)
    assert len(net.backbone.blocks) == 3 and net.backbone.blocks[0].feed_forward.key.out_features == 48
    assert net.backbone.embeddings is None


def test_xlstm_maps_its_keys_and_runs_the_native_kernel():
    net = model("model.name=xlstm", *SHAPE, "model.heads=3", "model.chunk=8")
    assert type(net.backbone) is transformers.xLSTMModel
    hf = net.backbone.config
    assert (hf.num_hidden_layers, hf.hidden_size, hf.num_heads, hf.chunk_size) == (3, 24, 3, 8)
    assert (hf.chunkwise_kernel, hf.mode) == ("chunkwise--native_autograd", "train")  # plain PyTorch, any dtype
    assert not hf.norm_reduction_force_float32
    block = net.backbone.blocks[0]
    assert block.mlstm_layer.q.out_features == 12 and block.ffn.proj_up.out_features == 48  # width/2, 2 x width
    assert len(net.backbone.blocks) == 3


def test_xlstm_is_float64_throughout_and_its_chunks_change_no_output():
    """A central difference with step 1e-6 matches the exact directional derivative to 1e-7 (a float32 cast of a
    norm anywhere leaves errors near 1e-2); the padding to whole chunks and the chunk length change nothing."""
    xs, ys = prompts()
    outs = [model("model.name=xlstm", f"model.chunk={c}").double()(xs, ys) for c in (4, 16, 64)]
    assert all(torch.allclose(o, outs[0], rtol=0, atol=1e-12) for o in outs)
    net = model("model.name=xlstm").double()
    direction = torch.randn_like(xs)
    _, exact = torch.autograd.functional.jvp(lambda x: net(x, ys), xs, direction)
    step = 1e-6
    central = (net(xs + step * direction, ys) - net(xs - step * direction, ys)) / (2 * step)
    assert exact.abs().max() > 0.1 and torch.allclose(central, exact, rtol=0, atol=1e-7)


def test_recurrent_gemma_maps_its_keys_onto_recurrentgemmamodel():
    net = model("model.name=recurrent_gemma", *SHAPE, "model.heads=3", "model.lru_width=12")
    assert type(net.backbone) is transformers.RecurrentGemmaModel
    hf = net.backbone.config
    assert (hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads, hf.num_key_value_heads) == (3, 24, 3, 3)
    assert (hf.lru_width, hf.attention_window_size) == (12, 14)  # the window: the whole prompt of 2 x 7 tokens
    assert net.backbone.layers[0].mlp_block.up_proj.out_features == 48  # mlp_ratio x width
    kinds = [type(layer.temporal_block).__name__ for layer in net.backbone.layers]
    assert kinds == ["RecurrentGemmaRecurrentBlock", "RecurrentGemmaRecurrentBlock", "RecurrentGemmaAttention"]


@pytest.mark.parametrize(("window", "local"), [(None, False), (2, True)])
def test_recurrent_gemmas_attention_window_reaches_the_attention(window, local):
    """One attention block that sees 2 tokens: the prediction at x_k depends on y_{k-1} and x_k alone; the default
    window sees the whole prompt."""
    extra = [f"model.attention_window={window}"] if window else []
    net = model("model.name=recurrent_gemma", "model.layers=1", "model.block_types=[attention]", *extra).double()
    xs, ys = prompts()
    xs2 = xs.clone()
    xs2[:, :5] += 1.0  # every x before x_6: x_6's prediction sees none of them through a window of 2
    moved = (net(xs2, ys) - net(xs, ys))[:, 5:].abs().max()
    assert (moved < 1e-12) if local else (moved > 1e-6)


@pytest.mark.parametrize("name", ["rwkv", "xlstm", "recurrent_gemma"])
def test_a_linear_recurrence_takes_prompts_longer_than_it_was_built_for(name):
    net = model(f"model.name={name}", points=3).double()
    assert net(*prompts(n=9)).shape == (4, 9)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.name=rwkv", "model.heads=2"], "model.heads"),  # RWKV-4 has no heads
        (["model.name=xlstm", "model.width=18", "model.heads=2"], "model.width"),  # width/2 = 9 over 2 heads
        (["model.name=recurrent_gemma", "model.block_types=[recurrent, mamba]"], "model.block_types"),
        (["model.name=recurrent_gemma", "model.block_types=[]"], "model.block_types"),
        (["model.name=recurrent_gemma", "model.lru_width=15"], "model.lru_width"),
        (["model.name=lstm", "model.heads=2"], "model.heads"),
    ],
)
def test_a_key_a_family_cannot_take_is_a_one_line_error(overrides, key):
    with pytest.raises(UserError) as error:
        load_config(None, overrides)
    assert key in str(error.value) and "\n" not in str(error.value)
