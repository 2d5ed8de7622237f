"""attention: ema, the authors' learned momentum attention: the term against its recurrence (values in float64 and
gradients by gradcheck, matrix and FFT paths), against fixed-eta momentum where they coincide, at long lengths; the
layer against a per-position formula; seed pairing with softmax models; config errors; training, exact resume and
evaluation of ICL and text runs."""

import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from iclab.config import load_config
from iclab.errors import UserError
from iclab.interrupts import Interrupted
from iclab.models import transformer as model_module
from iclab.models.transformer import (
    CausalSelfAttention,
    ICLTransformer,
    MovingAverage,
    TokenLM,
    TransformerConfig,
    ema_term,
    momentum_term,
)


def recurrence(v: torch.Tensor, decay: torch.Tensor, weight: torch.Tensor, current: bool = True) -> torch.Tensor:
    """The EMA one token at a time: h_n <- p_n h_n + v_t per channel and component, out_t = sum_n w_n h_n (or, without
    the current token, sum_n w_n p_n h_n(t-1), the state before v_t enters)."""
    h = torch.zeros(*v.shape[:-2], *decay.shape, dtype=v.dtype)
    out = torch.zeros_like(v)
    for t in range(v.shape[-2]):
        before = h
        h = decay * h + v[..., t, :, None]
        out[..., t, :] = ((h if current else decay * before) * weight).sum(-1)
    return out


def parameters(channels: int, dims: int, gen: torch.Generator, centre: float = 0.0):
    delta = centre + 0.5 * torch.randn(channels, dims, generator=gen, dtype=torch.float64)
    return delta, torch.randn(channels, dims, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("current", [True, False])
@pytest.mark.parametrize("direct", [64, 4])  # 17 tokens: the Toeplitz matmul, and (limit 4) the FFT convolution
def test_the_term_equals_its_recurrence(current, direct, gen, monkeypatch):
    monkeypatch.setattr(model_module, "EMA_DIRECT", direct)
    delta, weight = parameters(5, 3, gen, centre=1.0)
    v = torch.randn(2, 3, 17, 5, generator=gen, dtype=torch.float64)
    expected = recurrence(v, torch.sigmoid(delta), weight, current)
    assert torch.allclose(ema_term(v, F.logsigmoid(delta), weight, current), expected, rtol=1e-12, atol=1e-12)


def test_long_sequences_take_the_fft_path_exactly(gen):
    delta, weight = parameters(4, 2, gen, centre=3.0)  # decays near 0.95: memory across the whole sequence
    v = torch.randn(2, 300, 4, generator=gen, dtype=torch.float64)
    expected = recurrence(v, torch.sigmoid(delta), weight)
    assert torch.allclose(ema_term(v, F.logsigmoid(delta), weight), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("current", [True, False])
@pytest.mark.parametrize("direct", [64, 2])
def test_gradients_are_exact(current, direct, gen, monkeypatch):
    """gradcheck through the module's own parametrisation: values, decays (delta) and weights (gamma)."""
    monkeypatch.setattr(model_module, "EMA_DIRECT", direct)
    ema = MovingAverage(channels=3, dims=2, current=current).double()
    v = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    delta, gamma = (p.detach().clone().normal_(generator=gen).requires_grad_() for p in (ema.delta, ema.gamma))

    def term(v, delta, gamma):
        return torch.func.functional_call(ema, {"delta": delta, "gamma": gamma}, (v,))

    assert torch.autograd.gradcheck(term, (v, delta, gamma))


def test_one_component_without_the_current_token_is_fixed_eta_momentum(gen):
    """sum_{i<t} eta^(t-i) v_i is the special case: one component, decay eta, weight 1."""
    eta = 0.7
    v = torch.randn(3, 40, 6, generator=gen, dtype=torch.float64)
    log_decay = torch.full((6, 1), math.log(eta), dtype=torch.float64)
    term = ema_term(v, log_decay, torch.ones(6, 1, dtype=torch.float64), current=False)
    assert torch.allclose(term, momentum_term(v, eta), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tokens", [64, 5000])  # both paths
def test_long_sequences_stay_finite_and_accurate_in_float32(tokens):
    """Ones at decay p = sigmoid(5) ~ 0.9933: the term is the geometric sum (1 - p^(t+1)) / (1 - p), up to ~150."""
    delta = torch.full((1, 1), 5.0)
    term = ema_term(torch.ones(tokens, 1), F.logsigmoid(delta), torch.ones(1, 1)).squeeze(-1).double()
    p, t = torch.sigmoid(delta.double()).item(), torch.arange(tokens, dtype=torch.float64)
    assert torch.isfinite(term).all() and torch.allclose(term, (1 - p ** (t + 1)) / (1 - p), rtol=1e-4)


def reference_attention(layer: CausalSelfAttention, h: torch.Tensor) -> torch.Tensor:
    """softmax attention per head and position, plus sum_{i<=t} sum_n gamma s p^(t-i) v_i per channel of the merged
    values, then the output projection."""
    q, k, v = layer.split_heads(h)
    b, heads, t, hd = q.shape
    out = torch.zeros(b, t, heads * hd, dtype=h.dtype)
    values = v.transpose(1, 2).reshape(b, t, -1)
    decay, weight = layer.ema.decay(), layer.ema.gamma / math.sqrt(heads * hd)
    for pos in range(t):
        scores = q[:, :, pos : pos + 1] @ k[:, :, : pos + 1].transpose(-2, -1) / math.sqrt(hd)
        out[:, pos] = (scores.softmax(-1) @ v[:, :, : pos + 1]).reshape(b, -1)
        for i in range(pos + 1):
            out[:, pos] += ((decay ** (pos - i) * weight).sum(-1) * values[:, i]) * (layer.ema.current or i < pos)
    return layer.proj(out)


@pytest.mark.parametrize("current", [True, False])
def test_attention_layer_equals_the_formula(current, gen):
    torch.manual_seed(0)
    ema = MovingAverage(12, dims=3, current=current)
    ema.reset_parameters()
    layer = CausalSelfAttention(width=12, heads=3, attention="ema", ema=ema).double()
    h = torch.randn(2, 9, 12, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(layer(h), reference_attention(layer, h), atol=1e-10)
        assert torch.allclose(layer(h, x_only=True), reference_attention(layer, h)[:, 0::2], atol=1e-10)


@pytest.mark.parametrize("kind", ["icl", "token"])
def test_a_seed_gives_softmax_weights_plus_the_ema(kind):
    def build(**attention):
        torch.manual_seed(3)
        config = TransformerConfig(layers=2, width=16, heads=2, **attention)
        return ICLTransformer(config, dims=3, max_points=6) if kind == "icl" else TokenLM(config, 20, 12)

    softmax, ema = build().state_dict(), build(attention="ema").state_dict()
    extra = sorted(set(ema) - set(softmax))
    assert extra == [f"blocks.{i}.attn.ema.{p}" for i in (0, 1) for p in ("delta", "gamma")]
    assert all(torch.equal(softmax[key], ema[key]) for key in softmax)
    deltas = torch.stack([ema[f"blocks.{i}.attn.ema.delta"] for i in (0, 1)])
    assert deltas.shape == (2, 16, 8) and not torch.equal(deltas[0], deltas[1]) and 0.1 < deltas.std() < 0.3


def test_token_model_with_ema_is_causal_on_both_paths(gen):
    torch.manual_seed(0)
    model = TokenLM(TransformerConfig(layers=2, width=16, heads=2, attention="ema"), 20, 100).eval()
    for tokens in (30, 100):  # the Toeplitz matmul, and the FFT convolution beyond 64 tokens
        ids = torch.randint(0, 20, (3, tokens), generator=gen)
        changed = ids.clone()
        changed[:, 20:] = (changed[:, 20:] + 1) % 20
        with torch.no_grad():
            a, b = model(ids), model(changed)
        assert torch.allclose(a[:, :20], b[:, :20], atol=1e-5) and not torch.allclose(a[:, 20:], b[:, 20:])


def test_defaults_are_the_authors_and_stored():
    config = TransformerConfig(attention="ema")
    assert (config.ema_dims, config.ema_current) == (8, True)
    assert TransformerConfig(attention="ema", ema_dims=2, ema_current=False).ema_current is False
    assert (TransformerConfig().ema_dims, TransformerConfig().ema_current) == (None, None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.ema_dims=4"], "config key 'model.ema_dims': applies only to attention: ema (attention is 'softmax')"),
        (
            ["model.attention=momentum", "model.momentum=0.5", "model.ema_current=false"],
            "config key 'model.ema_current': applies only to attention: ema (attention is 'momentum')",
        ),
        (["model.attention=ema", "model.ema_dims=0"], "config key 'model.ema_dims': must be >= 1, got 0"),
        (["model.attention=ema", "model.momentum=0.5"], "model.momentum': applies only to attention: momentum"),
        (["model.attention=ema", "model.ema_current=maybe"], "'model.ema_current': expected true or false"),
    ],
)
def test_bad_ema_settings_are_one_line_errors(overrides, message):
    with pytest.raises(UserError) as info:
        load_config(None, TINY + overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_ema_run_trains_resumes_exactly_and_evaluates(tmp_path, monkeypatch):
    from iclab.evaluation.curves import evaluate
    from iclab.training.runs import load_model, read_config, read_metrics
    from iclab.training.trainer import Trainer, resume, train

    config = load_config(None, TINY + ["model.attention=ema", "model.ema_dims=2", "train.steps=10"])
    train(config, tmp_path / "straight", progress=False)
    batch_loss = Trainer.batch_loss

    def signalled_in_step_6(self):  # SIGTERM mid-step: the step completes, training stops after it
        loss = batch_loss(self)
        if self.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(Trainer, "batch_loss", signalled_in_step_6)
    with pytest.raises(Interrupted, match="interrupted by SIGTERM at step 6"):
        train(config, tmp_path / "resumed", progress=False)
    monkeypatch.undo()
    resume(tmp_path / "resumed", progress=False)
    losses = [[m["loss"] for m in read_metrics(tmp_path / r) if "loss" in m] for r in ("straight", "resumed")]
    assert len(losses[0]) == 10 and losses[0] == losses[1]  # bit-identical on the CPU
    (a, _), (b, _) = load_model(tmp_path / "straight"), load_model(tmp_path / "resumed")
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert read_config(tmp_path / "straight").model.ema_dims == 2
    torch.manual_seed(0)
    fresh = ICLTransformer(a.config, a.dims, a.max_points)
    assert not torch.equal(a.blocks[0].attn.ema.delta, fresh.blocks[0].attn.ema.delta)  # trained, and stored
    rows = evaluate(a, read_config(tmp_path / "straight"), baselines=[])
    assert len(rows) == 7 and all(math.isfinite(r["mean"]) for r in rows)


def test_an_ema_text_run_trains_resumes_exactly_and_evaluates(tmp_path):
    from iclab.text import evaluate_run, load_text_config, prepare_data, resume_text, train_text
    from iclab.training.runs import read_metrics

    tiny = ["corpus.source=tempest", "corpus.vocab=300", "context=16", "eval.lengths=[4,16]", "eval.windows=10"]
    tiny += ["model.layers=1", "model.width=16", "model.heads=2", "model.attention=ema", "train.batch_size=4"]
    # lr 0.03: six steps take the perplexity from the vocabulary size (a near-uniform untrained model) to about 100
    tiny += ["train.lr=0.03", "train.eval_every=0", "train.warmup=2", "train.log_every=1", "train.checkpoint_every=3"]
    config = load_text_config(None, tiny + ["train.steps=6"])
    data = prepare_data(config.corpus)
    train_text(config, tmp_path / "whole", data, progress=False)
    train_text(load_text_config(None, tiny + ["train.steps=3"]), tmp_path / "split", data, progress=False)
    resume_text(tmp_path / "split", data, steps=6, progress=False)
    losses = [[r["loss"] for r in read_metrics(tmp_path / run) if "loss" in r] for run in ("whole", "split")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    result = evaluate_run(tmp_path / "whole", data)
    # a uniform model's perplexity is the vocabulary size (300; the untrained model measures 304, 301): the trained
    # one must be under half of it (measured 94 and 108 at the two lengths), so learning nothing fails
    assert data.vocab == 300 and all(1 < p < data.vocab / 2 for p in result["perplexity"])
    assert result["parameters"] == TokenLM(config.model, data.vocab, 16).num_parameters()
