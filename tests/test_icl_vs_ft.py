import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from iclab.icl_vs_ft.adapter import IclabLMAdapter
from iclab.icl_vs_ft.engine import StudyData, finetune, study
from iclab.models.transformer import TokenLM, TransformerConfig
from iclab.tasks.keywords import KeywordClassification

TASK = KeywordClassification(vocab=24, keywords=3, length=4)


def data(k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    instance = TASK.instances(1, g)
    return StudyData(**TASK.study_inputs(instance, k, n_test=10, n_val=6, generator=g))


@pytest.fixture
def adapter():
    torch.manual_seed(0)
    return IclabLMAdapter(TokenLM(TransformerConfig(layers=2, width=16, heads=2), vocab=24, max_tokens=64))


def test_layout_lines_up_demonstrations_and_queries():
    d = data()  # full (N, tokens) tensors become a shared prefix and the queries' own tokens
    assert d.icl.prefix.shape == (1, 1 + 3 * 6) and d.icl.queries.shape == (10, 4) and d.zsl.prefix.shape == (1, 1)
    assert torch.equal(d.icl.queries, d.zsl.queries)  # the same query tokens end both sequences
    demo_tokens = torch.cat([x[0, 1:] for x in d.demos])
    assert torch.equal(d.icl.full()[0, d.demo_positions], demo_tokens)  # ICL's demonstrations are FT's training tokens


def test_finetuning_moves_only_key_and_value_rows(adapter):
    tuned = finetune(adapter, data().demos, lr=0.5)
    before, after = adapter.model.state_dict(), tuned.model.state_dict()
    width = 16
    for name in before:
        changed = ~torch.isclose(before[name], after[name])
        if name.endswith("qkv.weight") or name.endswith("qkv.bias"):
            assert not changed[:width].any() and changed[width:].any(), name
        else:
            assert not changed.any(), name


def last_token_attention(model, ids):
    """Per layer, at the last token of every sequence: the attention output before the residual (N, width) and the
    pre-softmax scores q.k / sqrt(head_dim) over every token (N, heads, tokens), and the query vector (N, width),
    recomputed here in numpy from each attention layer's input and its fused qkv weights."""
    inputs, outputs = [], []

    def keep(module, args, out):
        inputs.append(args[0])
        outputs.append(out)

    hooks = [b.attn.register_forward_hook(keep) for b in model.blocks]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    layers = []
    for block, h, out in zip(model.blocks, inputs, outputs, strict=True):
        w, b = (p.detach().double().numpy() for p in (block.attn.qkv.weight, block.attn.qkv.bias))
        qkv = h.double().numpy() @ w.T + b
        width, heads = h.shape[-1], block.attn.heads
        q = qkv[:, -1, :width].reshape(len(ids), heads, -1)
        k = qkv[:, :, width : 2 * width].reshape(len(ids), -1, heads, width // heads)
        scores = np.einsum("nhd,nthd->nht", q, k) / np.sqrt(width // heads)
        layers.append((out[:, -1].double().numpy(), scores, qkv[:, -1, :width]))
    return layers


def cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_study_measures_match_an_independent_computation(adapter):
    """SimAOU, both SimAMs and Kendall's tau recomputed on this small case from the models' own weights (numpy
    cosines, scipy's kendalltau), not through the engine's conditions, attention readers or metrics."""
    d = data()
    result = study(adapter, d, lrs=[0.01, 0.1])
    assert set(result.accuracy) == {"zsl", "icl", "ft"} and result.ft_lr in (0.01, 0.1)
    tuned = finetune(adapter, d.demos, result.ft_lr, record_queries=True)  # deterministic: the study's FT model
    zsl = last_token_attention(adapter.model, d.zsl.full())
    icl = last_token_attention(adapter.model, d.icl.full())
    ft = last_token_attention(tuned.model, d.zsl.full())
    own_icl, own_zsl = slice(d.icl.prefix.shape[1], None), slice(d.zsl.prefix.shape[1], None)  # the query's tokens
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    aou, am_ft, am_zsl, tau = [], [], [], []
    sizes, positions = d.demo_tokens(), d.dai_positions().numpy()
    train_queries = np.concatenate([q[:, 1 : 1 + t].double().numpy() for q, t in zip(tuned.train_queries, sizes,
                                                                                        strict=True)], axis=1)
    for layer, ((z_out, z_s, _), (i_out, i_s, _), (f_out, f_s, f_q)) in enumerate(zip(zsl, icl, ft, strict=True)):
        aou.append(cosine(unit(i_out) - unit(z_out), unit(f_out) - unit(z_out)).mean())
        am_ft.append(cosine(i_s[..., own_icl], f_s[..., own_zsl]).mean())
        am_zsl.append(cosine(i_s[..., own_icl], z_s[..., own_zsl]).mean())
        icl_attn = i_s.sum(1)[:, positions]  # Dai et al.: summed over heads (a softmax keeps the ranks)
        ft_attn = f_q @ train_queries[layer].T
        tau.append(np.mean([kendalltau(a, b)[0] for a, b in zip(icl_attn, ft_attn, strict=True)]))
    assert result.per_layer["simaou"] == pytest.approx(aou, abs=1e-5)
    assert result.per_layer["simam_icl_ft"] == pytest.approx(am_ft, abs=1e-5)
    assert result.measures["simam_icl_zsl"] == pytest.approx(np.mean(am_zsl), abs=1e-5)
    assert result.per_layer["kendall"] == pytest.approx(tau, abs=1e-5)
    for key in ("simaou", "simam_icl_ft", "kendall"):
        assert -1 <= result.random[key] <= 1


def test_a_diverging_grid_is_reported_not_a_nan(adapter):
    result = study(adapter, data(), lrs=[1e30])
    assert result.ft_grid == {"1e+30": "diverged"} and result.accuracy["ft"] is None
    assert result.measures["simaou"] is None and not math.isnan(result.measures["simam_icl_zsl"])


def test_bad_inputs_are_named():
    from iclab.errors import UserError
    from iclab.models.transformer import ICLTransformer

    short = IclabLMAdapter(TokenLM(TransformerConfig(layers=1, width=8, heads=1), vocab=24, max_tokens=10))
    with pytest.raises(UserError, match="take 23 tokens but the model's context is 10"):
        study(short, data(), lrs=[0.1])
    with pytest.raises(UserError, match="cannot find the key/value projections of ICLTransformer"):
        IclabLMAdapter(ICLTransformer(TransformerConfig(layers=1, width=8, heads=1), dims=2, max_points=3))
