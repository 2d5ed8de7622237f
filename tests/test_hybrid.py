"""The hybrid backbones (qwen3_next, jamba), MPT's ALiBi, and Park et al.'s MambaFormer: iclab's keys reach the
Hugging Face configs and modules, the layer patterns are the ones the docstrings promise, and the MambaFormer has
the reference's block order and structure (krafton-ai/mambaformer-icl, mamba_ssm/models/mixer_seq_simple.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from iclab.errors import UserError
from iclab.models import MODELS
from iclab.models.transformer import CausalSelfAttention

transformers = pytest.importorskip("transformers")
from transformers.models.jamba.modeling_jamba import (  # noqa: E402
    JambaAttentionDecoderLayer,
    JambaMambaDecoderLayer,
    JambaMLP,
)
from transformers.models.mamba.modeling_mamba import MambaMixer  # noqa: E402
from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextMLP  # noqa: E402


def build(name: str, dims: int = 3, points: int = 10, **keys):
    torch.manual_seed(0)
    return MODELS.make({"name": name, "width": 16, **keys}, "model").build(dims, points)


def test_qwen3_next_keys_reach_the_hf_config_and_layers():
    model = build("qwen3_next", layers=4, heads=2, mlp_ratio=3)
    hf = model.backbone.config
    assert hf.layer_types == ["linear_attention", "full_attention"] * 2  # the default: every 2 from 1
    assert (hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size) == (4, 16, 48)
    assert (hf.num_attention_heads, hf.num_key_value_heads, hf.head_dim) == (2, 2, 8)
    assert (hf.linear_num_key_heads, hf.linear_num_value_heads) == (2, 2)
    assert (hf.linear_key_head_dim, hf.linear_value_head_dim) == (8, 8)
    assert hf.rope_parameters["partial_rotary_factor"] == 0.25
    layers = model.backbone.layers
    assert [hasattr(layer, "linear_attn") for layer in layers] == [True, False, True, False]
    assert [hasattr(layer, "self_attn") for layer in layers] == [False, True, False, True]
    assert all(type(layer.mlp) is Qwen3NextMLP for layer in layers)  # dense: no experts anywhere
    assert not any("expert" in n for n, _ in model.named_parameters())
    # Qwen3-Next's own pattern: three DeltaNet layers, then attention
    published = build("qwen3_next", layers=8, attention_every=4, attention_offset=3).backbone.config
    assert published.layer_types == ["linear_attention"] * 3 + ["full_attention"] + ["linear_attention"] * 3 + [
        "full_attention"
    ]
    first = build("qwen3_next", layers=3, attention_offset=0).backbone.config  # attention first: A, R, A
    assert first.layer_types == ["full_attention", "linear_attention", "full_attention"]


def test_qwen3_next_runs_the_librarys_delta_rule_in_equal_chunks(monkeypatch):
    """One chunk of 22 for a 22-token prompt, 3 of 50 for 150 tokens (the library: chunks of 64, the last padded):
    the same function, exactly for one chunk, to float32 rounding for several (the library computes the delta rule
    in float32)."""
    import transformers.models.qwen3_next.modeling_qwen3_next as qwen

    sizes, library = [], qwen.torch_chunk_gated_delta_rule

    def spy(*args, **kwargs):
        sizes.append(kwargs.get("chunk_size", "library's"))
        return library(*args, **kwargs)

    monkeypatch.setattr(qwen, "torch_chunk_gated_delta_rule", spy)
    model = build("qwen3_next", layers=3, points=100).double()  # DeltaNet, attention, DeltaNet
    for tokens, size, tolerance in ((22, 22, 0.0), (150, 50, 1e-6)):
        sizes.clear()
        h = torch.randn(2, tokens, 16, dtype=torch.float64)
        ours = model.sequence(h)
        assert sizes == [size, size]
        theirs = model.backbone(inputs_embeds=h, use_cache=False).last_hidden_state  # the library's chunking
        assert sizes[2:] == ["library's", "library's"]
        assert torch.allclose(ours, theirs, rtol=0, atol=tolerance)


def test_jamba_keys_reach_the_hf_config_and_layers():
    model = build("jamba", layers=6, heads=4, attention_every=3, attention_offset=2)
    hf = model.backbone.config
    assert (hf.attn_layer_period, hf.attn_layer_offset) == (3, 2)
    assert hf.layers_block_type == ["mamba", "mamba", "attention"] * 2
    kinds = [type(layer) for layer in model.backbone.layers]
    assert kinds == [JambaMambaDecoderLayer, JambaMambaDecoderLayer, JambaAttentionDecoderLayer] * 2
    assert (hf.num_attention_heads, hf.num_key_value_heads, hf.intermediate_size) == (4, 4, 64)
    assert all(type(layer.feed_forward) is JambaMLP for layer in model.backbone.layers)  # one expert: dense
    assert build("jamba", layers=2).backbone.config.layers_block_type == ["mamba", "attention"]


def test_jamba_own_scan_is_the_library_mixer():
    """scan: own (the default) swaps each JambaMambaMixer's forward for iclab's chunked scan: the same function as
    the library's loop over tokens, forward and gradients, in float64 at the mixer (the model's RMSNorms round to
    float32, which would hide a difference)."""
    model = build("jamba", layers=2).double()
    mixer = model.backbone.layers[0].mamba
    assert "forward" in vars(mixer)  # switched; the library's own is type(mixer).forward
    assert "forward" not in vars(build("jamba", layers=2, scan="hf").backbone.layers[0].mamba)
    h = torch.randn(2, 30, 16, dtype=torch.float64, requires_grad=True)
    ours, theirs = mixer(h), type(mixer).forward(mixer, h)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-10)
    inputs = [h, *mixer.parameters()]
    grads = [torch.autograd.grad(out.square().sum(), inputs) for out in (ours, theirs)]
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_mpt_is_alibi_without_positions_and_takes_longer_prompts():
    model = build("mpt", layers=2, heads=2)
    hf = model.backbone.config
    assert hf.attn_config.alibi and (hf.n_layers, hf.d_model, hf.n_heads) == (2, 16, 2)
    assert not any(isinstance(m, nn.Embedding) for m in model.modules())  # no position (or token) table
    assert all(m.bias is None for m in model.backbone.modules() if isinstance(m, nn.Linear))
    xs = torch.randn(2, 50, 3)  # 5x the points it was built for: ALiBi has no position table to run out of
    assert torch.isfinite(model(xs, xs[..., 0])).all()


@pytest.mark.parametrize("name", ["qwen3_next", "jamba", "mpt", "mambaformer"])
def test_no_dropout_anywhere(name):
    """In training mode two passes agree exactly: every dropout is 0."""
    model = build(name, layers=2).double().train()
    xs = torch.randn(2, 6, 3, dtype=torch.float64)
    assert torch.equal(model(xs, xs[..., 0]), model(xs, xs[..., 0]))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "jamba", "attention_every": 2, "attention_offset": 2}, "'model.attention_offset': must be below"),
        ({"name": "qwen3_next", "width": 24, "heads": 2}, "'model.width': width / heads must be a multiple of 8"),
        ({"name": "mpt", "mlp_ratio": 2}, "'model.mlp_ratio'"),
        ({"name": "mambaformer", "width": 16, "heads": 3}, "'model.width': must be divisible by heads (3)"),
    ],
)
def test_bad_keys_are_one_line_errors(spec, message):
    with pytest.raises(UserError) as error:
        MODELS.make(spec, "model")
    assert message in str(error.value) and "\n" not in str(error.value)


# MambaFormer against its reference


def test_mambaformer_block_order_is_the_references():
    """mixed_attn == "mambaformer": a Mamba block (layer_idx -1), then attention at even i, Mamba at odd i."""
    assert MODELS.make({"name": "mambaformer", "layers": 4}).block_kinds() == [
        "mamba", "attention", "mamba", "attention", "mamba",
    ]
    model = build("mambaformer", layers=3)
    mixers = [type(block.mixer) for block in model.blocks]
    assert mixers == [MambaMixer, CausalSelfAttention, MambaMixer, CausalSelfAttention]
    assert model.describe().startswith("mambaformer: M-A-M-A, width 16, 8 heads")
    assert all(block.mixer.heads == 8 for block in model.blocks if isinstance(block.mixer, CausalSelfAttention))


def test_mambaformer_has_no_position_embedding():
    model = build("mambaformer", layers=2)
    names = [n for n, _ in model.named_parameters()]
    assert not any("pos" in n or "wpe" in n or "embed" in n for n in names)
    xs = torch.randn(2, 40, 3)  # prompts longer than the model was built for
    assert torch.isfinite(model(xs, xs[..., 0])).all()


def test_mambaformer_runs_the_references_add_norm_mixer_blocks():
    """The reference's MixerModel.forward, written as it is (residual carried beside the mixer output, add ->
    LayerNorm -> mixer, a final add and LayerNorm), on the model's own modules: the same sequence as iclab's."""
    model = build("mambaformer", layers=3).double()
    h = torch.randn(2, 12, 16, dtype=torch.float64)
    hidden, residual = h, None
    for block in model.blocks:
        residual = hidden + residual if residual is not None else hidden
        hidden = block.mixer(block.norm(residual))
    reference = model.norm_f(hidden + residual)
    assert torch.allclose(model.sequence(h), reference, rtol=0, atol=1e-12)


def test_mambaformer_is_initialised_as_the_reference():
    layers = 4
    model = build("mambaformer", layers=layers)
    for block in model.blocks:
        mixer = block.mixer
        if isinstance(mixer, CausalSelfAttention):  # linear biases zeroed
            assert not mixer.qkv.bias.any() and not mixer.proj.bias.any()
        else:  # Kaiming-uniform out_proj (bound 1 / sqrt(fan_in)) divided by sqrt(n_layer)
            bound = 1 / math.sqrt(mixer.out_proj.in_features) / math.sqrt(layers)
            assert 0.9 * bound < mixer.out_proj.weight.abs().max() <= bound
            dt = F.softplus(mixer.dt_proj.bias)  # Mamba's time steps, log-uniform in [0.001, 0.1]
            assert dt.min() >= 0.001 - 1e-7 and dt.max() <= 0.1 + 1e-7
            assert torch.allclose(mixer.A_log, torch.log(torch.arange(1, 17.0)).expand_as(mixer.A_log))
            assert (mixer.ssm_state_size, mixer.conv_kernel_size, mixer.intermediate_size) == (16, 4, 32)


def test_mambaformer_own_scan_is_the_library_loop():
    """scan: own (the default) and scan: hf build the same weights and compute the same function: outputs and
    gradients agree in float64."""
    own, hf = (build("mambaformer", layers=3, scan=scan).double() for scan in ("own", "hf"))
    assert all("forward" in vars(b.mixer) for b in own.blocks if isinstance(b.mixer, MambaMixer))  # switched
    assert not any("forward" in vars(b.mixer) for b in hf.blocks)
    xs, ys = torch.randn(2, 9, 3, dtype=torch.float64), torch.randn(2, 9, dtype=torch.float64)
    outs = [model(xs, ys) for model in (own, hf)]
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-10)
    for out in outs:
        (out - ys).pow(2).sum().backward()
    for (name, p), q in zip(own.named_parameters(), hf.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=0, atol=1e-10), name
