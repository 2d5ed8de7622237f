"""Hugging Face adapters on tiny random models of every family: prefix-cached scoring equals full-prompt scoring,
the hooks read the model's real attention, and finetuning moves only key/value weights."""

import pytest
import torch
from conftest import assert_finetuned_key_value_only

from iclab.icl_vs_ft.adapter import Prompts
from iclab.icl_vs_ft.engine import finetune, run
from iclab.lm.adapters import HFAdapter
from iclab.lm.prompts import build_layout
from iclab.lm.tasks import load_data, load_task
from iclab.lm.tiny import FAMILIES, tiny_model

TASK = load_task("fortunes-topics")
DATA = load_data(TASK)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, tokenizer = tiny_model(request.param)
    layout = build_layout(tokenizer, TASK, DATA, k=4, seed=0, limit=7, n_val=4, budget=400)
    return request.param, model, tokenizer, layout.data


def test_prefix_cache_gives_the_full_prompt_scores_and_internals(family):
    name, model, _, data = family
    labels = data.candidates + [torch.tensor([17, 42, 99])]  # a three-token label too
    cached, c_int = HFAdapter(model).score(data.icl, labels, batch=3)
    full, f_int = HFAdapter(model, reuse_prefix=False).score(data.icl, labels, batch=4)
    assert torch.equal(cached.argmax(-1), full.argmax(-1)), name  # identical predictions
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    for attr in ("attn_out", "inputs"):
        torch.testing.assert_close(getattr(c_int, attr), getattr(f_int, attr), atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.isinf(c_int.scores), torch.isinf(f_int.scores))  # later positions masked alike
    torch.testing.assert_close(
        c_int.scores.nan_to_num(neginf=0), f_int.scores.nan_to_num(neginf=0), atol=1e-4, rtol=1e-5
    )
    layers = len(HFAdapter(model).attention_layers())
    assert c_int.scores.shape[:3] == (layers, len(data.gold), 4)  # (layers, queries, heads, keys)


def test_label_score_is_the_mean_log_probability_of_its_tokens(family):
    _, model, _, data = family
    label = torch.tensor([5, 11])
    scores, _ = HFAdapter(model).score(data.icl, [label], batch=8)
    row = 2
    n = int(data.icl.lengths[row])
    ids = torch.cat((data.icl.prefix[0], data.icl.queries[row, :n], label)).unsqueeze(0)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
    at = ids.shape[1] - 3  # the position that predicts the label's first token
    expected = (logp[at, 5] + logp[at + 1, 11]) / 2
    assert float(scores[row, 0]) == pytest.approx(float(expected), abs=1e-5)


def test_captured_scores_are_the_attention_the_model_computes(family):
    name, model, _, data = family
    model.set_attn_implementation("eager")  # the one implementation that returns attention probabilities
    try:
        _, internals = HFAdapter(model).score(data.icl, data.candidates, batch=8)
        row = 1
        n = int(data.icl.lengths[row])
        ids = torch.cat((data.icl.prefix[0], data.icl.queries[row, :n])).unsqueeze(0)
        with torch.no_grad():
            attentions = model(ids, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa" if name != "xglm" else "eager")
    keys = ids.shape[1]
    for layer, probs in enumerate(attentions):
        ours = torch.softmax(internals.scores[layer, row, :, :keys], dim=-1)
        torch.testing.assert_close(ours, probs[0, :, -1].float(), atol=1e-5, rtol=1e-4)
        assert torch.isinf(internals.scores[layer, row, :, keys:]).all()  # padding after the query


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama"])
def test_finetuning_moves_only_key_and_value_weights(name):
    model, tokenizer = tiny_model(name)
    layout = build_layout(tokenizer, TASK, DATA, k=2, seed=0, limit=2, n_val=2, budget=400)
    adapter = HFAdapter(model)
    tuned = finetune(adapter, layout.data.demos, lr=1.0)
    before, after = model.state_dict(), tuned.model.state_dict()
    kv = {p.name: p.mask for p in adapter.kv_parameters()}
    width = model.config.hidden_size
    for key in before:
        changed = ~torch.isclose(before[key], after[key])
        if key in kv:
            mask = torch.ones_like(before[key], dtype=torch.bool) if kv[key] is None else kv[key].bool()
            assert changed[mask].any() and not changed[~mask].any(), key
        else:
            assert not changed.any(), key
    if name == "gpt_neox":  # fused rows interleaved per head: q_h, k_h, v_h
        d = width // model.config.num_attention_heads
        rows = kv["gpt_neox.layers.0.attention.query_key_value.weight"][:, 0]
        assert rows[:d].sum() == 0 and rows[d : 3 * d].all() and rows[3 * d : 4 * d].sum() == 0
    if name == "gpt2":  # Conv1D: (in, Q | K | V) columns
        cols = kv["transformer.h.0.attn.c_attn.weight"][0]
        assert cols[:width].sum() == 0 and cols[width:].all()


def test_calibration_subtracts_the_content_free_scores(family):
    _, model, _, data = family
    adapter = HFAdapter(model)
    c = run(adapter, data.icl, data.candidates, data.gold, content_free=data.content_free, calibrated=True)
    direct, _ = adapter.score(Prompts(data.icl.prefix, data.content_free), data.candidates)
    torch.testing.assert_close(c.content_free, direct[0])
    assert torch.equal(c.predictions(), (c.scores - direct[0]).argmax(-1))
    assert torch.equal(c.predictions(calibrated=False), c.scores.argmax(-1))


def test_a_longer_prefix_extends_the_cached_shorter_one(family):
    name, model, tokenizer, _ = family
    short, long = (build_layout(tokenizer, TASK, DATA, k=k, seed=0, limit=3, n_val=2, budget=400).data for k in (2, 4))
    assert torch.equal(long.icl.prefix[:, : short.icl.prefix.shape[1]], short.icl.prefix)
    reused = HFAdapter(model)
    reused.score(short.icl, short.candidates)
    extended, _ = reused.score(long.icl, long.candidates)  # encodes only the two new demonstrations
    fresh, _ = HFAdapter(model).score(long.icl, long.candidates)
    torch.testing.assert_close(extended, fresh, atol=1e-5, rtol=1e-5)


def test_pmi_subtracts_the_domain_premise_scores_after_bos(family):
    _, model, _, data = family
    adapter = HFAdapter(model)
    c = run(adapter, data.icl, data.candidates, data.gold, domain=data.domain, pmi=True)
    direct, _ = adapter.score(Prompts(data.icl.prefix[:, :1], data.domain), data.candidates)
    assert torch.equal(c.predictions(), (c.scores - direct[0]).argmax(-1))
    assert set(c.summary()) == {"plain", "pmi"}


def test_every_study_reports_every_scoring_and_the_headline_picks_the_learning_rate(family):
    from iclab.icl_vs_ft.engine import SCORINGS, studies

    _, model, _, data = family
    adapter = HFAdapter(model)
    # each scoring's accuracy from scores computed here: after the prompts, the content-free query and the premise
    scores, _ = adapter.score(data.icl, data.candidates)
    cf = adapter.score(Prompts(data.icl.prefix, data.content_free), data.candidates)[0][0]
    dom = adapter.score(Prompts(data.icl.prefix[:, :1], data.domain), data.candidates)[0][0]
    expected = {"plain": scores, "calibrated": scores - cf, "pmi": scores - dom}
    lrs = {"kv-sgd": [1e-3, 0.1]}
    val = {}  # lr -> scoring -> validation accuracy of the finetuned model
    for lr in lrs["kv-sgd"]:
        tuned = finetune(adapter, data.demos, lr)
        v, _ = tuned.score(data.val_zsl, data.candidates)
        v_cf = tuned.score(Prompts(data.val_zsl.prefix, data.content_free), data.candidates)[0][0]
        v_dom = tuned.score(Prompts(data.val_zsl.prefix[:, :1], data.domain), data.candidates)[0][0]
        val[lr] = {m: float((x.argmax(-1) == data.val_gold).float().mean())
                   for m, x in (("plain", v), ("calibrated", v - v_cf), ("pmi", v - v_dom))}
    for headline in SCORINGS:
        r = studies(adapter, data, lrs, calibrated=headline == "calibrated", pmi=headline == "pmi")["kv-sgd"]
        for condition in ("zsl", "icl", "ft"):
            assert set(r.scoring[condition]) == set(SCORINGS), (headline, condition)
        for mode, s in expected.items():
            acc = float((s.argmax(-1) == data.gold).float().mean())
            assert r.scoring["icl"][mode]["accuracy"] == pytest.approx(acc, abs=1e-9), (headline, mode)
        assert r.accuracy["icl"] == r.scoring["icl"][headline]["accuracy"]
        assert r.accuracy["ft"] == r.scoring["ft"][headline]["accuracy"]
        # FT's learning rate is the one with the best validation accuracy under the headline scoring
        assert {float(k): v for k, v in r.ft_grid.items()} == pytest.approx({lr: val[lr][headline] for lr in val})
        assert val[r.ft_lr][headline] == max(val[lr][headline] for lr in val)


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama", "opt", "xglm"])
def test_deutch_untrained_and_lcgd_on_every_family(name):
    from iclab.icl_vs_ft.engine import untrained_like

    model, tokenizer = tiny_model(name)
    fresh, _ = tiny_model(name, seed=1)
    adapter = HFAdapter(model)
    other = untrained_like(adapter, fresh)
    norms = {n for n, m in model.named_modules() if "norm" in type(m).__name__.lower()}
    block_params = {n for n, _ in model.named_parameters() if any(n.startswith(f"{b}.") for b in _block_names(model))}
    for n, p in other.state_dict().items():
        in_norm = any(n.startswith(f"{x}.") for x in norms)
        source = fresh if n in block_params and not in_norm else model
        assert torch.equal(p, source.state_dict()[n]), n
    # the logit lens of the last block is the model's own output
    from iclab.icl_vs_ft.finetune import _layer_causal

    ids = torch.tensor([[0, 5, 9, 13]])
    with torch.no_grad(), _layer_causal(adapter) as outputs:
        logits = adapter.logits(ids)
    assert len(outputs) == len(adapter.attention_layers())
    torch.testing.assert_close(adapter.readout(outputs[-1]), logits, atol=1e-5, rtol=1e-5)
    layout = build_layout(tokenizer, TASK, DATA, k=2, seed=0, limit=2, n_val=2, budget=400)
    demos = layout.data.demos
    assert_finetuned_key_value_only(adapter, finetune(adapter, demos, lr=0.1, method="lcgd"), demos)


def _block_names(model):
    blocks = HFAdapter(model).decoder_blocks()
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(b)] for b in blocks]
