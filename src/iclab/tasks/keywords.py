"""A synthetic text-classification world for ICL-vs-finetuning studies on iclab's own token models.

Each of `classes` classes owns a set of `keywords` content tokens (the same in every task instance by default,
as words keep their meaning in a language). A *task instance* (the analogue of one dataset such as SST-2 with
label words of no meaning) maps the classes to label tokens by a fresh random permutation. An input is `length`
tokens, each one of its class's keywords, or with probability `noise` any content token. Because the mapping
is random per instance, zero-shot accuracy is at chance by construction: whatever a model gets right beyond
chance it learned from the demonstrations (in context, or by finetuning on them).

Token ids: 0 BOS, 1 EOS, 2 .. 2+classes-1 label tokens, the rest content tokens. The ICL layout follows Dai et
al.: BOS, then each demonstration as input + label + EOS, then the query input; the label is predicted at the
last position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..spec import key_error

BOS, EOS, FIRST_LABEL = 0, 1, 2


@dataclass
class KeywordClassification:
    vocab: int = field(default=64, metadata={"min": 8})
    classes: int = field(default=2, metadata={"min": 2})
    keywords: int = field(default=4, metadata={"min": 1})
    length: int = field(default=5, metadata={"min": 1})
    noise: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})
    # shared: every instance uses the same keyword sets (drawn from topic_seed), like a language whose words
    # keep their meaning, and only the label map is new; per_instance: new keyword sets too (pure induction)
    topics: str = field(default="shared", metadata={"choices": ["shared", "per_instance"]})
    topic_seed: int = 0
    # probability that an instance keeps the canonical map (class c -> label c), as label words keep their
    # everyday meaning in most datasets; otherwise the map is a random permutation. 0 puts zero-shot at chance.
    prior: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})

    def check(self, prefix: str) -> None:
        if self.classes * self.keywords > self.content:
            raise key_error(
                f"{prefix}.keywords",
                f"classes x keywords must fit in the {self.content} content tokens of a vocabulary of {self.vocab}",
            )

    @property
    def content(self) -> int:
        return self.vocab - FIRST_LABEL - self.classes

    @property
    def label_tokens(self) -> Tensor:
        return torch.arange(FIRST_LABEL, FIRST_LABEL + self.classes)

    def instances(self, count: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Keyword sets (count, classes, keywords) and label maps (count, classes) of `count` task instances."""
        first_content = FIRST_LABEL + self.classes
        if self.topics == "shared":
            fixed = torch.rand(1, self.content, generator=torch.Generator().manual_seed(self.topic_seed))
            order = fixed.argsort(dim=1)[:, : self.classes * self.keywords].expand(count, -1)
        else:
            order = torch.rand(count, self.content, generator=generator).argsort(dim=1)
            order = order[:, : self.classes * self.keywords]
        words = (order + first_content).view(count, self.classes, self.keywords)
        labels = torch.rand(count, self.classes, generator=generator).argsort(dim=1)
        canonical = torch.rand(count, generator=generator) < self.prior
        labels = torch.where(canonical.unsqueeze(1), torch.arange(self.classes), labels) + FIRST_LABEL
        return {"words": words, "labels": labels}

    def examples(self, instances: dict[str, Tensor], n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """n examples per instance: inputs (count, n, length), classes (count, n), label tokens (count, n)."""
        count = instances["words"].shape[0]
        cls = torch.randint(0, self.classes, (count, n), generator=generator)
        pick = torch.randint(0, self.keywords, (count, n, self.length), generator=generator)
        words = instances["words"].gather(1, cls.unsqueeze(-1).expand(-1, -1, self.keywords))  # (count, n, kw)
        tokens = words.gather(2, pick)
        noisy = torch.rand(count, n, self.length, generator=generator) < self.noise
        random_words = torch.randint(FIRST_LABEL + self.classes, self.vocab, tokens.shape, generator=generator)
        tokens = torch.where(noisy, random_words, tokens)
        return {"inputs": tokens, "classes": cls, "labels": instances["labels"].gather(1, cls)}

    def sequence(self, inputs: Tensor, labels: Tensor, query: Tensor | None = None) -> Tensor:
        """BOS, then input + label + EOS for each example, then the query input if given.
        inputs (batch, k, length), labels (batch, k), query (batch, length) -> ids (batch, tokens)."""
        b, k, _ = inputs.shape
        demos = torch.cat((inputs, labels.unsqueeze(-1), torch.full((b, k, 1), EOS)), dim=-1).flatten(1)
        parts = [torch.full((b, 1), BOS), demos] + ([query] if query is not None else [])
        return torch.cat(parts, dim=1)

    def label_positions(self, k: int) -> Tensor:
        """Positions (in `sequence` of k examples) whose next token is a label: where training scores labels."""
        return 1 + torch.arange(k) * (self.length + 2) + self.length - 1

    def study_inputs(self, instance: dict[str, Tensor], k: int, n_test: int, n_val: int, generator: torch.Generator):
        """For one task instance (dict of (1, ...) tensors): k demonstrations as training sequences, and the ICL,
        ZSL and validation id tensors of the ICL-vs-finetuning engine, as keyword arguments of StudyData."""
        demos = self.examples(instance, k, generator)
        test = self.examples(instance, n_test, generator)
        val = self.examples(instance, n_val, generator)
        prefix = self.sequence(demos["inputs"], demos["labels"])  # (1, tokens), shared by every query
        queries = test["inputs"][0]
        bos = torch.full((len(queries), 1), BOS)
        candidates = self.label_tokens

        def gold(ex):
            return (ex["labels"][0].unsqueeze(-1) == candidates).long().argmax(-1)

        return {
            "demos": [self.sequence(demos["inputs"][:, i : i + 1], demos["labels"][:, i : i + 1]) for i in range(k)],
            "icl": torch.cat((prefix.expand(len(queries), -1), queries), dim=1),
            "zsl": torch.cat((bos, queries), dim=1),
            "gold": gold(test),
            "val_zsl": torch.cat((torch.full((n_val, 1), BOS), val["inputs"][0]), dim=1),
            "val_gold": gold(val),
            "candidates": candidates,
            "query_tokens": self.length,
            "demo_positions": slice(1, prefix.shape[1]),
        }
