"""Tiny randomly initialised causal LMs of every supported family, with a small byte-level BPE tokenizer trained
on the packaged offline text: for tests, and to try the whole pipeline in seconds without any download.

    model, tokenizer = tiny_model("gpt_neox")
    save_tiny("llama", "runs/tiny-llama")      # a model folder that `iclab lm run --model` takes
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from .tasks import DATA

FAMILIES = ("gpt2", "gpt_neox", "llama", "opt", "xglm")
WIDTH, LAYERS, HEADS, POSITIONS = 32, 2, 4, 512


@functools.cache
def tiny_tokenizer(vocab: int = 600):
    """A GPT-2-style byte-level BPE tokenizer (leading-space words, <|endoftext|> as BOS/EOS) trained in a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [
        json.loads(line)["text"]
        for name in ("fortunes-topics.train.jsonl", "shakespeare-genre.train.jsonl")
        for line in (DATA / name).read_text().splitlines()
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot)


def tiny_config(family: str, vocab: int):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, OPTConfig, XGLMConfig

    w, n, h = WIDTH, LAYERS, HEADS
    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}  # the tokenizer's <|endoftext|>
    configs = {
        "gpt2": lambda: GPT2Config(vocab_size=vocab, **ids, n_embd=w, n_layer=n, n_head=h, n_positions=POSITIONS),
        "gpt_neox": lambda: GPTNeoXConfig(
            vocab_size=vocab,
            **ids,
            hidden_size=w,
            num_hidden_layers=n,
            num_attention_heads=h,
            intermediate_size=2 * w,
            max_position_embeddings=POSITIONS,
            rotary_pct=0.5,
        ),
        "llama": lambda: LlamaConfig(  # grouped-query attention: 2 key/value heads for 4 query heads
            vocab_size=vocab,
            **ids,
            hidden_size=w,
            num_hidden_layers=n,
            num_attention_heads=h,
            num_key_value_heads=2,
            intermediate_size=2 * w,
            max_position_embeddings=POSITIONS,
        ),
        "opt": lambda: OPTConfig(
            vocab_size=vocab,
            **ids,
            hidden_size=w,
            num_hidden_layers=n,
            num_attention_heads=h,
            ffn_dim=2 * w,
            max_position_embeddings=POSITIONS,
            word_embed_proj_dim=w,
        ),
        "xglm": lambda: XGLMConfig(
            vocab_size=vocab,
            **ids,
            d_model=w,
            num_layers=n,
            attention_heads=h,
            ffn_dim=2 * w,
            max_position_embeddings=POSITIONS,
        ),
    }
    return configs[family]()


def tiny_model(family: str, seed: int = 0):
    """(model in eval mode, tokenizer) of one family, weights drawn with `seed`."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer)))
    return model.eval(), tokenizer


def save_tiny(family: str, folder: str | Path, seed: int = 0) -> Path:
    model, tokenizer = tiny_model(family, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
