"""Momentum attention: the closed form and the recurrence against a naive sum, eta = 0 against softmax attention,
the whole attention layer against a per-position reference, and the config's one-line errors."""

import math

import pytest
import torch
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.models import transformer as model_module
from iclab.models.transformer import (
    CausalSelfAttention,
    ICLTransformer,
    TokenLM,
    TransformerConfig,
    momentum_carry,
    momentum_term,
)


def naive_momentum(v: torch.Tensor, eta: float) -> torch.Tensor:
    """sum_{i<t} eta^(t-i) v_i, one position and one earlier token at a time."""
    out = torch.zeros_like(v)
    for t in range(v.shape[-2]):
        for i in range(t):
            out[..., t, :] += eta ** (t - i) * v[..., i, :]
    return out


@pytest.mark.parametrize("eta", [0.0, 0.3, 0.9, 0.99])
@pytest.mark.parametrize("block", [4, 5, 64])  # many blocks (a last one cut short), and a single block
def test_blocked_form_equals_the_naive_sum(eta, block, gen, monkeypatch):
    monkeypatch.setattr(model_module, "MOMENTUM_BLOCK", block)
    v = torch.randn(2, 3, 17, 4, generator=gen, dtype=torch.float64)
    assert torch.allclose(momentum_term(v, eta), naive_momentum(v, eta), rtol=1e-12, atol=1e-12)


def test_long_sequences_span_several_blocks(gen):
    v = torch.randn(2, 150, 3, generator=gen, dtype=torch.float64)  # 64 + 64 + 22 tokens
    assert torch.allclose(momentum_term(v, 0.97), naive_momentum(v, 0.97), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("eta", [0.3, 0.9])
def test_recurrence_one_token_at_a_time_equals_the_closed_form(eta, gen):
    """m_(t+1) = eta (m_t + v_t): the O(T) recurrence, run through `carry` one token at a time."""
    v = torch.randn(2, 3, 17, 4, generator=gen, dtype=torch.float64)
    carry, terms = torch.zeros(2, 3, 4, dtype=torch.float64), []
    for t in range(v.shape[-2]):
        term = momentum_term(v[..., t : t + 1, :], eta, carry)
        carry = momentum_carry(term, v[..., t : t + 1, :], eta)
        terms.append(term)
    assert torch.allclose(torch.cat(terms, dim=-2), naive_momentum(v, eta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", [4, 64])
def test_a_sequence_continues_across_chunks(block, gen, monkeypatch):
    """A cached prefix hands its carry to the rest of the sequence: chunked equals whole."""
    monkeypatch.setattr(model_module, "MOMENTUM_BLOCK", block)
    v = torch.randn(4, 30, 8, generator=gen, dtype=torch.float64)
    head = momentum_term(v[:, :11], 0.8)
    tail = momentum_term(v[:, 11:], 0.8, momentum_carry(head, v[:, :11], 0.8))
    assert torch.allclose(torch.cat([head, tail], dim=1), momentum_term(v, 0.8), rtol=1e-12, atol=1e-12)


def test_eta_zero_adds_exact_zeros_and_long_sequences_stay_finite(gen):
    v = torch.randn(3, 50, 4, generator=gen)
    assert torch.equal(momentum_term(v, 0.0), torch.zeros_like(v))
    # 5,000 tokens of ones in float32 at eta = 0.99: the term is the geometric sum eta (1 - eta^t) / (1 - eta),
    # which approaches 99 (the term's steady-state scale); no power overflows or loses precision on the way
    term = momentum_term(torch.ones(5000, 1), 0.99).squeeze(-1).double()
    t = torch.arange(5000, dtype=torch.float64)
    assert torch.allclose(term, 0.99 * (1 - 0.99**t) / 0.01, rtol=1e-5)


def reference_attention(layer: CausalSelfAttention, h: torch.Tensor, eta: float) -> torch.Tensor:
    """MoAttn(V, K, q_t) = V softmax(K^T q_t / sqrt(d)) + sum_{i<t} eta^(t-i) v_i, per head and position."""
    q, k, v = layer.split_heads(h)
    out = torch.zeros_like(q)
    for t in range(h.shape[1]):
        scores = q[:, :, t : t + 1] @ k[:, :, : t + 1].transpose(-2, -1) / math.sqrt(q.shape[-1])
        out[:, :, t] = (scores.softmax(-1) @ v[:, :, : t + 1]).squeeze(2)
        for i in range(t):
            out[:, :, t] += eta ** (t - i) * v[:, :, i]
    b, heads, t, d = out.shape
    return layer.proj(out.transpose(1, 2).reshape(b, t, heads * d))


@pytest.mark.parametrize("eta", [0.0, 0.5, 0.9])
def test_attention_layer_equals_the_formula(eta, gen):
    torch.manual_seed(0)
    layer = CausalSelfAttention(width=12, heads=3, attention="momentum", momentum=eta).double()
    h = torch.randn(2, 9, 12, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(layer(h), reference_attention(layer, h, eta), atol=1e-10)
        assert torch.allclose(layer(h, x_only=True), reference_attention(layer, h, eta)[:, 0::2], atol=1e-10)


@pytest.mark.parametrize("kind", ["icl", "token"])
def test_eta_zero_is_softmax_attention_exactly(kind, gen):
    def build(**attention):
        torch.manual_seed(0)
        config = TransformerConfig(layers=2, width=16, heads=2, **attention)
        return ICLTransformer(config, dims=3, max_points=6) if kind == "icl" else TokenLM(config, 20, 12)

    softmax, momentum = build(), build(attention="momentum", momentum=0.0)
    assert all(torch.equal(a, b) for a, b in zip(softmax.parameters(), momentum.parameters(), strict=True))
    if kind == "icl":
        inputs = (torch.randn(4, 6, 3, generator=gen), torch.randn(4, 6, generator=gen))
    else:
        inputs = (torch.randint(0, 20, (4, 12), generator=gen),)
    assert torch.equal(softmax(*inputs), momentum(*inputs))
    assert not torch.allclose(build(attention="momentum", momentum=0.5)(*inputs), softmax(*inputs))


def test_token_model_with_momentum_is_causal(gen):
    torch.manual_seed(0)
    model = TokenLM(TransformerConfig(layers=2, width=16, heads=2, attention="momentum", momentum=0.9), 20, 10).eval()
    ids = torch.randint(0, 20, (3, 10), generator=gen)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 20
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6) and not torch.allclose(a[:, 6:], b[:, 6:])


def test_gradients_of_the_closed_form_are_exact(gen):
    v = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    carry = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, c: momentum_term(v, 0.7, c), (v, carry))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model.attention=momentum", "model.momentum=1.0"],
            "config key 'model.momentum': eta must be in [0, 1), got 1.0",
        ),
        (["model.attention=momentum", "model.momentum=-0.1"], "eta must be in [0, 1), got -0.1"),
        (["model.attention=momentum"], "config key 'model.momentum': attention: momentum needs the decay eta"),
        (["model.momentum=0.5"], "applies only to attention: momentum (attention is 'softmax')"),
        (["model.attention=momentum", "model.momentum=fast"], "config key 'model.momentum': expected a number"),
        (["model.attention=moment"], "'moment' is not one of softmax, linear, momentum"),
    ],
)
def test_bad_momentum_settings_are_one_line_errors(overrides, message):
    with pytest.raises(UserError) as info:
        load_config(None, TINY + overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_python_api_validates_too():
    with pytest.raises(UserError, match=r"model.momentum': eta must be in \[0, 1\), got 1.5"):
        TransformerConfig(attention="momentum", momentum=1.5)


def test_momentum_runs_train_and_store_eta(tmp_path):
    from iclab.training.runs import load_model, read_config
    from iclab.training.trainer import train

    config = load_config(None, TINY + ["train.steps=3", "model.attention=momentum", "model.momentum=0.5"])
    train(config, tmp_path / "run", progress=False)
    assert read_config(tmp_path / "run").model.momentum == 0.5
    model, _ = load_model(tmp_path / "run")
    assert model.blocks[0].attn.momentum == 0.5
