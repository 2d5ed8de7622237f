"""Each measure variant on hand-built inputs against a plain independent formula (numpy loops, scipy's Kendall)."""

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from iclab.icl_vs_ft.adapter import IclabLMAdapter, _linear_gap
from iclab.icl_vs_ft.engine import StudyData, finetune, study
from iclab.icl_vs_ft.metrics import (
    dai_ft_attention,
    dai_icl_attention,
    head_updates,
    kendall,
    per_demo,
    simam_delta,
    topk_recall,
    update_similarity,
)
from iclab.models.transformer import TokenLM, TransformerConfig
from iclab.tasks.keywords import KeywordClassification


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_simam_delta_is_the_cosine_of_the_changes_from_zsl():
    g = torch.Generator().manual_seed(0)
    icl, zsl, ft = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    got = simam_delta(icl, zsl, ft)
    a, z, f = icl.numpy(), zsl.numpy(), ft.numpy()
    want = [np.mean([cos(a[i, n, h] - z[i, n, h], f[i, n, h] - z[i, n, h]) for n in range(3) for h in range(4)])
            for i in range(2)]
    assert got.per_layer == pytest.approx(want) and got.mean == pytest.approx(np.mean(want))


def test_dai_kendall_sums_scores_over_heads_then_softmaxes_and_ranks_like_scipy():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(2, 4, 3, 12, generator=g, dtype=torch.float64)  # (layers, examples, heads, keys)
    positions = torch.tensor([1, 2, 3, 5, 6, 8, 9, 10])  # BOS (0) and separators (4, 7, 11) left out
    query, train = torch.randn(2, 4, 6, generator=g), torch.randn(2, 8, 6, generator=g)
    icl_attn, ft_attn = dai_icl_attention(scores, positions), dai_ft_attention(query, train)
    s, q, t = scores.numpy(), query.double().numpy(), train.double().numpy()
    taus, taus_demo = np.zeros(2), np.zeros(2)
    for i in range(2):
        for n in range(4):
            a = np_softmax(s[i, n].sum(0)[positions.numpy()])
            b = np_softmax(t[i] @ q[i, n])
            np.testing.assert_allclose(icl_attn[i, n].numpy(), a)
            np.testing.assert_allclose(ft_attn[i, n].numpy(), b, rtol=1e-6)
            taus[i] += kendalltau(a, b)[0] / 4
            sums = [slice(0, 3), slice(3, 5), slice(5, 8)]  # per demonstration: scores summed within it
            taus_demo[i] += kendalltau([a[x].sum() for x in sums], [b[x].sum() for x in sums])[0] / 4
    assert kendall(icl_attn, ft_attn).per_layer == pytest.approx(list(taus))
    demo = kendall(per_demo(icl_attn, [3, 2, 3]), per_demo(ft_attn, [3, 2, 3]))
    assert demo.per_layer == pytest.approx(list(taus_demo))


def test_topk_recall_counts_shared_top_tokens():
    icl = torch.tensor([[[0.9, 0.8, 0.1, 0.0, 0.5]], [[0.1, 0.2, 0.3, 0.4, 0.5]]])  # (layers, examples, tokens)
    ft = torch.tensor([[[0.0, 0.9, 0.8, 0.1, 0.7]], [[0.5, 0.4, 0.3, 0.2, 0.1]]])
    r = topk_recall(icl, ft, 2)
    assert r.per_layer == [0.5, 0.0]  # layer 0: {0, 1} vs {1, 2}; layer 1: {4, 3} vs {0, 1}
    assert topk_recall(icl, ft, 100).per_layer == [1.0, 1.0]  # k cut to the tokens there are


def test_head_updates_are_sums_of_outer_products_and_compare_by_cosine_and_norm():
    g = torch.Generator().manual_seed(2)
    k, v = torch.randn(5, 2, 3, generator=g), torch.randn(5, 2, 3, generator=g)  # (tokens, heads, d)
    got = head_updates(k, v)
    want = sum(torch.outer(v[t, h], k[t, h]).double() for t in range(5) for h in [0]), None
    torch.testing.assert_close(got[0], want[0])
    other = head_updates(k.flip(0)[:3], v[:3])
    c, n = update_similarity(got, other)
    for h in range(2):
        a, b = got[h].flatten().numpy(), other[h].flatten().numpy()
        assert float(c[h]) == pytest.approx(cos(a, b)) and float(n[h]) == pytest.approx(
            np.linalg.norm(b) / np.linalg.norm(a))


def test_linear_gap_compares_softmax_attention_with_its_relaxed_linear_form():
    g = torch.Generator().manual_seed(3)
    scores, values = torch.randn(2, 4, 6, generator=g), torch.randn(2, 2, 6, 3, generator=g)  # 2 kv heads for 4
    scores[..., 5] = float("-inf")  # a later position
    got = _linear_gap(scores, values, scale=0.5)
    for b in range(2):
        soft, lin = [], []
        for h in range(4):
            s, v = scores[b, h, :5].double().numpy(), values[b, h // 2, :5].double().numpy()
            soft.append(np_softmax(s) @ v)
            lin.append((s / 0.5) @ v)
        soft, lin = np.concatenate(soft), np.concatenate(lin)
        assert float(got[b]) == pytest.approx(np.linalg.norm(soft - lin) / np.linalg.norm(soft), rel=1e-5)


TASK = KeywordClassification(vocab=24, keywords=3, length=4)


def data(k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = TASK.study_inputs(TASK.instances(1, g), k, n_test=10, n_val=6, generator=g)
    return StudyData(**inputs, separator_tokens=1)


@pytest.fixture
def adapter():
    torch.manual_seed(0)
    return IclabLMAdapter(TokenLM(TransformerConfig(layers=2, width=16, heads=2), vocab=24, max_tokens=64))


def test_dai_positions_leave_out_bos_separators_and_the_last_training_token():
    d = data()
    kept = torch.cat([x[0, 1:-1] for x in d.demos])  # input + label; EOS (the separator) left out
    assert d.demo_tokens() == [5, 5, 5] and torch.equal(d.icl.full()[0, d.dai_positions()], kept)


def test_recorded_training_queries_are_the_query_vectors_during_finetuning(adapter):
    d = data()
    tuned = finetune(adapter, d.demos, lr=0.0, record_queries=True)  # lr 0: the original model's queries
    for ids, recorded in zip(d.demos, tuned.train_queries, strict=True):
        inputs = adapter.layer_inputs(ids[:, :-1])  # the training forward runs on all but the last token
        for layer, module in enumerate(adapter.attention_layers()):
            q, _, _ = adapter.projections(module, inputs[layer])
            torch.testing.assert_close(recorded[layer], q.flatten(-2))


def test_variants_report_their_measures_and_name_themselves(adapter):
    dai, dual = (study(adapter, data(), lrs=[0.1], measures=m) for m in ("dai", "dual"))
    assert dai.variant == "dai" and dual.variant == "dual"
    assert {"kendall_demo", "recall_token", "recall_demo"} <= set(dai.measures)
    assert "kendall_demo" not in dual.measures
    for key in ("simaou", "simam_icl_ft", "simam_icl_zsl", "simam_delta"):  # defined alike in both
        assert dai.measures[key] == dual.measures[key]
    assert dai.random == dai.baselines["random uniform"] and dual.random == dual.baselines["random centred"]
    assert dual.baselines["random centred"]["kendall"] != dai.baselines["random centred"]["kendall"]
    assert len(dai.linear_gap) == 2 and all(g > 0 for g in dai.linear_gap)
    with pytest.raises(Exception, match="unknown measures 'daí'"):
        study(adapter, data(), lrs=[0.1], measures="daí")


def test_lcgd_trains_each_layer_on_its_own_logit_lens_loss(adapter):
    import torch.nn.functional as F

    demo = data().demos[:1]
    tuned = finetune(adapter, demo, lr=0.5, method="lcgd")
    model = adapter.model
    ids = demo[0]
    w = model.blocks[0].attn.qkv.weight.detach().clone().requires_grad_(True)
    original = model.blocks[0].attn.qkv.weight
    model.blocks[0].attn.qkv.weight = torch.nn.Parameter(w)
    try:  # layer 0's update comes from its own read-out loss only: layer 1's input is detached
        h = model.tok(ids[:, :-1]) + model.pos[: ids.shape[1] - 1]
        logits = model.ln_f(model.blocks[0](h)) @ model.tok.weight.T
        loss = F.cross_entropy(logits[0], ids[0, 1:])
        (grad,) = torch.autograd.grad(loss, model.blocks[0].attn.qkv.weight)
    finally:
        model.blocks[0].attn.qkv.weight = original
    grad[:16] = 0  # query rows are frozen
    torch.testing.assert_close(tuned.model.blocks[0].attn.qkv.weight, original - 0.5 * grad, atol=1e-6, rtol=1e-5)


def test_lcgd_on_one_layer_is_plain_kv_sgd_and_full_moves_everything():
    torch.manual_seed(0)
    one = IclabLMAdapter(TokenLM(TransformerConfig(layers=1, width=16, heads=2), vocab=24, max_tokens=64))
    demos = data().demos
    a, b = finetune(one, demos, 0.3, "lcgd"), finetune(one, demos, 0.3, "kv-sgd")
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    full = finetune(one, demos, 0.3, "full")
    before = one.model.state_dict()
    assert all(not torch.equal(before[n], p) for n, p in full.model.state_dict().items() if n != "pos")


def test_deutch_untrained_keeps_embeddings_norms_and_unembedding(adapter):
    from iclab.icl_vs_ft.engine import untrained_like

    torch.manual_seed(5)
    fresh = TokenLM(TransformerConfig(layers=2, width=16, heads=2), vocab=24, max_tokens=64)
    model = untrained_like(adapter, fresh)
    trained, new, out = adapter.model.state_dict(), fresh.state_dict(), model.state_dict()
    for name, p in out.items():
        kept = name in ("tok.weight", "pos", "ln_f.weight", "ln_f.bias") or ".ln" in name
        assert torch.equal(p, trained[name] if kept else new[name]), name
