"""Momentum attention patched into Hugging Face models (iclab.lm.momentum), on tiny random models of every family:
the term equals a naive sum over the values the model itself cached, eta = 0 and removal change nothing, and
prefix-cached scoring, chunked forwards, generation and padding all equal full-sequence runs of the patched model."""

import copy
import math

import pytest
import torch
from conftest import assert_finetuned_key_value_only

from iclab.errors import UserError
from iclab.icl_vs_ft.engine import finetune
from iclab.lm.adapters import HFAdapter
from iclab.lm.layouts import attention_modules
from iclab.lm.momentum import OUTPUT_PROJECTIONS, momentum_of, patch_momentum
from iclab.lm.prompts import build_layout
from iclab.lm.tasks import load_data, load_task
from iclab.lm.tiny import FAMILIES, tiny_model, tiny_tokenizer

TASK = load_task("fortunes-topics")
DATA = load_data(TASK)
ETA = 0.6


def tiny_llama_kin(kind: str):
    """Mistral and Qwen2 (grouped-query attention, sliding window / biased projections), which tiny.py lacks."""
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config

    cls = {"mistral": MistralConfig, "qwen2": Qwen2Config}[kind]
    config = cls(
        vocab_size=600,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def any_model(name: str):
    return tiny_model(name)[0] if name in FAMILIES else tiny_llama_kin(name)


def ids(batch=2, tokens=90, seed=0):
    return torch.randint(1, 500, (batch, tokens), generator=torch.Generator().manual_seed(seed))


def output_projection_input(model, x):
    """The input of layer 0's output projection, and the values layer 0 cached (batch, kv_heads, tokens, d)."""
    attention = attention_modules(model)[0]
    projection = next(getattr(attention, n) for n in OUTPUT_PROJECTIONS if hasattr(attention, n))
    seen = []
    handle = projection.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            out = model(input_ids=x, use_cache=True)
    finally:
        handle.remove()
    return seen[0], out.cache.layers[0].values


@pytest.mark.parametrize("name", [*FAMILIES, "mistral", "qwen2"])
def test_term_is_the_naive_sum_of_the_values_the_model_caches(name):
    model = any_model(name)
    x = ids(tokens=70)  # more than one block of momentum_term (64 tokens)
    plain, values = output_projection_input(model, x)
    with patch_momentum(model, ETA):
        patched, _ = output_projection_input(model, x)
    b, kv_heads, t, d = values.shape
    heads = plain.shape[-1] // d
    v = values.double()
    expected = torch.zeros(b, t, heads, d, dtype=torch.float64)
    for h in range(heads):  # query head h reads value head h // (heads / kv_heads)
        for s in range(t):
            for i in range(s):
                expected[:, s, h] += ETA ** (s - i) * v[:, h // (heads // kv_heads), i]
    torch.testing.assert_close((patched - plain).double(), expected.flatten(-2), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_eta_zero_and_removal_leave_the_model_exactly_unchanged(name):
    model, _ = tiny_model(name)
    x = ids()
    with torch.no_grad():
        before = model(input_ids=x).logits
        with patch_momentum(model, 0.0):
            zero = model(input_ids=x).logits
        patch = patch_momentum(model, 0.3)
        changed = model(input_ids=x).logits
        patch.remove()
        after = model(input_ids=x).logits
    assert torch.equal(zero, before) and torch.equal(after, before)
    assert not torch.allclose(changed, before) and momentum_of(model) is None


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model, tokenizer = tiny_model(request.param)
    layout = build_layout(tokenizer, TASK, DATA, k=4, seed=0, limit=7, n_val=4, budget=400)
    return request.param, model, layout.data


def test_prefix_cached_scoring_of_a_patched_model_equals_full_prompts(family):
    name, model, data = family
    labels = data.candidates + [torch.tensor([17, 42, 99])]  # a three-token label too
    plain, _ = HFAdapter(model).score(data.icl, labels, batch=3)
    adapter = HFAdapter(model)
    with patch_momentum(model, ETA):
        cached, c_int = adapter.score(data.icl, labels, batch=3)
        full, f_int = HFAdapter(model, reuse_prefix=False).score(data.icl, labels, batch=4)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_int.attn_out, f_int.attn_out, atol=1e-5, rtol=1e-5)
    assert (cached - plain).abs().max() > 1e-3, name  # the patch does change the scores
    # the same adapter, unpatched again, does not reuse the patched prefix
    torch.testing.assert_close(adapter.score(data.icl, labels, batch=3)[0], plain, atol=1e-6, rtol=0)


def test_chunks_generation_and_padding_continue_the_term():
    model, _ = tiny_model("llama")
    x = ids(tokens=40)
    with torch.no_grad(), patch_momentum(model, ETA):
        full = model(input_ids=x).logits
        first = model(input_ids=x[:, :25], use_cache=True)
        second = model(input_ids=x[:, 25:], cache=first.cache).logits
        torch.testing.assert_close(second, full[:, 25:], atol=1e-5, rtol=1e-5)
        # generation continues its own cache token by token: the greedy tokens of full forwards
        generated = model.generate(x[:1, :10], max_new_tokens=6, do_sample=False, pad_token_id=0)
        greedy = x[:1, :10]
        for _ in range(6):
            greedy = torch.cat((greedy, model(input_ids=greedy).logits[:, -1:].argmax(-1)), dim=1)
        assert torch.equal(generated, greedy)
        # left padding masked out: the padded row scores as the unpadded one
        padded = torch.cat((torch.zeros(1, 5, dtype=torch.long), x[:1, :30]), dim=1)
        mask = torch.cat((torch.zeros(1, 5), torch.ones(1, 30)), dim=1).long()
        torch.testing.assert_close(
            model(input_ids=padded, attention_mask=mask).logits[:, 5:], full[:1, :30], atol=1e-5, rtol=1e-5
        )


def test_a_deep_copy_carries_its_own_patch_and_finetuning_trains_through_it():
    model, tokenizer = tiny_model("gpt_neox")
    x = ids()
    patch = patch_momentum(model, ETA)
    with torch.no_grad():
        patched = model(input_ids=x).logits
    twin = copy.deepcopy(model)
    patch.remove()
    with torch.no_grad():
        assert torch.equal(twin(input_ids=x).logits, patched)
    assert momentum_of(twin).eta == ETA and momentum_of(model) is None
    layout = build_layout(tokenizer, TASK, DATA, k=2, seed=0, limit=2, n_val=2, budget=400)
    with patch_momentum(model, ETA):
        tuned = finetune(HFAdapter(model), layout.data.demos, lr=0.1)
    assert momentum_of(tuned.model).eta == ETA
    with patch_momentum(model, ETA):  # the loss the finetuning saw: with the momentum term
        assert_finetuned_key_value_only(HFAdapter(model), tuned, layout.data.demos)


def test_bad_input_is_one_line():
    from transformers import AutoModelForCausalLM, BloomConfig

    model, _ = tiny_model("gpt2")
    for eta in (1.0, -0.1, math.nan, True, "0.5"):
        with pytest.raises(UserError, match=r"momentum eta must be a number in \[0, 1\)"):
            patch_momentum(model, eta)
    bloom = AutoModelForCausalLM.from_config(
        BloomConfig(vocab_size=len(tiny_tokenizer()), hidden_size=32, n_layer=1, n_head=4)
    )
    with pytest.raises(UserError, match="not supported for model type 'bloom': iclab patches gpt2, gpt_neox"):
        patch_momentum(bloom, 0.5)
    with patch_momentum(model, 0.5), torch.no_grad():
        with pytest.raises(UserError, match="already carries a momentum patch"):
            patch_momentum(model, 0.3)
        first = model(input_ids=ids(tokens=20), use_cache=True)
        model(input_ids=ids(tokens=30))  # another sequence: the first one's carry is gone
        with pytest.raises(UserError, match="continues a key/value cache of 20 tokens"):
            model(input_ids=ids(tokens=5), cache=first.cache)
        with pytest.raises(UserError, match="outside the patched model's forward"):
            model.transformer(input_ids=ids(tokens=5))
