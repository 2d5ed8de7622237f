"""Token layouts of the ICL-vs-finetuning study on a text task (Dai et al. 2023's layout).

ICL prompt: BOS, then each demonstration as its formatted input + label word + separator (EOS by default), then
the formatted query; the label is scored after it. The demonstrations are the first k of the training split
shuffled with the seed (no class balancing), the same for every query, and are cut from the end until the prompt
fits the token budget. ZSL: BOS, then the query. FT trains on each demonstration as its own sequence (BOS +
input + label word + separator). Validation queries for FT's learning rate come from the training split after
the demonstrations; the test set is the test split shuffled with the task's seed (1), cut at `limit`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UserError
from ..icl_vs_ft.adapter import Prompts
from ..icl_vs_ft.engine import StudyData
from .tasks import TaskData, TaskSpec


@dataclass
class Layout:
    data: StudyData
    k: int  # demonstrations that fit the budget (<= the k asked for)
    prompt_tokens: int  # longest ICL prompt, label included
    demos: list[dict]  # the demonstration rows, in order
    test: list[dict]


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def special_ids(tokenizer, separator: str) -> tuple[int, list[int]]:
    """(BOS id, separator ids): BOS falls back to EOS (GPT-2 has one token for both); separator 'eos' or text."""
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    if bos is None:
        raise UserError("the tokenizer has neither a BOS nor an EOS token; iclab needs one to start a prompt")
    if separator == "eos":
        if eos is None:
            raise UserError("the tokenizer has no EOS token: pass --separator with a text, e.g. '\\n'")
        return bos, [eos]
    separator = separator.replace("\\n", "\n").replace("\\t", "\t")  # '\n' typed on a command line
    ids = encode(tokenizer, [separator])[0]
    if not ids:
        raise UserError(f"the separator {separator!r} tokenizes to nothing")
    return bos, ids


def label_ids(tokenizer, task: TaskSpec) -> list[Tensor]:
    out = []
    for word, ids in zip(task.words, encode(tokenizer, task.words), strict=True):
        if not ids:
            raise UserError(f"task '{task.name}': the label word {word!r} tokenizes to nothing; choose another word")
        out.append(torch.tensor(ids))
    if len({tuple(t.tolist()) for t in out}) < len(out):
        raise UserError(f"task '{task.name}': two label words tokenize to the same tokens; make them distinct")
    return out


def _padded(seqs: list[list[int]]) -> Prompts:
    longest = max(len(s) for s in seqs)
    queries = torch.zeros(len(seqs), longest, dtype=torch.long)  # pads are never attended (right padding)
    for i, s in enumerate(seqs):
        queries[i, : len(s)] = torch.tensor(s)
    return Prompts(torch.zeros(1, 0, dtype=torch.long), queries, torch.tensor([len(s) for s in seqs]))


def _with_prefix(p: Prompts, prefix: list[int]) -> Prompts:
    return Prompts(torch.tensor([prefix]), p.queries, p.lengths)


def build_layout(
    tokenizer,
    task: TaskSpec,
    data: TaskData,
    k: int,
    seed: int,
    limit: int,
    n_val: int,
    budget: int,
    separator: str = "eos",
) -> Layout:
    if k < 1:
        raise UserError(f"k must be at least 1, got {k}")
    if k + n_val > len(data.train):
        raise UserError(
            f"k = {k} demonstrations + {n_val} validation queries need {k + n_val} training examples, but task "
            f"'{task.name}' has {len(data.train)}: lower --k or --val"
        )
    train = list(data.train)
    random.Random(seed).shuffle(train)
    test = list(data.test)
    random.Random(task.test_seed).shuffle(test)
    test = test[: min(limit, task.max_test)]
    demos, val = train[:k], train[k : k + n_val]
    bos, sep = special_ids(tokenizer, separator)
    labels = label_ids(tokenizer, task)
    queries = encode(tokenizer, [task.format(r) for r in test])
    val_queries = encode(tokenizer, [task.format(r) for r in val])
    content_free = encode(tokenizer, [task.content_free()])[0]
    domain = encode(tokenizer, [task.domain_premise()])[0] if task.domain_premise() else []
    demo_ids = [
        q + labels[r["label"]].tolist() + sep
        for q, r in zip(encode(tokenizer, [task.format(r) for r in demos]), demos, strict=True)
    ]
    tail = max(len(q) for q in [*queries, content_free]) + max(len(t) for t in labels) - 1
    if 1 + tail > budget:
        raise UserError(f"a test query takes {tail} tokens, more than the budget of {budget}: raise --max-tokens")
    used, fit = 1 + tail, 0
    for d in demo_ids:  # Dai et al.: cut the demonstrations to fit the context
        if used + len(d) > budget:
            break
        used, fit = used + len(d), fit + 1
    if fit == 0:
        raise UserError(f"not one demonstration fits a budget of {budget} tokens: raise --max-tokens")
    prefix = [bos] + [t for d in demo_ids[:fit] for t in d]
    test_prompts = _padded(queries + [content_free])
    n = len(queries)
    zsl = Prompts(torch.tensor([[bos]]), test_prompts.queries[:n], test_prompts.lengths[:n])
    cf = test_prompts.queries[n:, : test_prompts.lengths[n]]
    gold = torch.tensor([r["label"] for r in test])
    study = StudyData(
        demos=[torch.tensor([[bos] + d]) for d in demo_ids[:fit]],
        icl=_with_prefix(zsl, prefix),
        zsl=zsl,
        gold=gold,
        val_zsl=_with_prefix(_padded(val_queries), [bos]),
        val_gold=torch.tensor([r["label"] for r in val]),
        candidates=labels,
        demo_positions=slice(1, len(prefix)),
        content_free=cf,
        domain=torch.tensor([domain]) if domain else None,
        separator_tokens=len(sep),
    )
    return Layout(study, fit, len(prefix) + tail, demos[:fit], test)
