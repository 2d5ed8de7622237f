"""Token streams for language modelling: the corpus split encoded with its tokenizer, random training windows
drawn from a seeded generator (so runs that share a seed see the same batches in the same order), and the fixed
non-overlapping validation windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from .corpus import CorpusConfig, load_split
from .tokenizer import encode, load_tokenizer, train_tokenizer


@dataclass
class TokenData:
    tokenizer: object  # a tokenizers.Tokenizer
    train: Tensor  # (tokens,) int64 stream of the training documents
    val: Tensor  # (tokens,) int64 stream of the validation documents

    @property
    def vocab(self) -> int:
        return self.tokenizer.get_vocab_size()


def prepare_data(corpus: CorpusConfig, tokenizer_file: Path | None = None) -> TokenData:
    """Read and split the corpus; load the tokenizer from `tokenizer_file` if it exists, else train one on the
    training text only (the validation text stays unseen); encode both parts."""
    split = load_split(corpus)
    if tokenizer_file is not None and Path(tokenizer_file).is_file():
        tokenizer = load_tokenizer(tokenizer_file)
    else:
        tokenizer = train_tokenizer(split.train, corpus.vocab)
    return TokenData(tokenizer, encode(tokenizer, split.train), encode(tokenizer, split.val))


def sample_windows(stream: Tensor, batch: int, length: int, generator: torch.Generator) -> Tensor:
    """(batch, length) windows starting at uniform random offsets of `stream`."""
    if len(stream) < length:
        raise UserError(f"the training text has {len(stream)} tokens, fewer than one window of {length}")
    starts = torch.randint(0, len(stream) - length + 1, (batch, 1), generator=generator, device=generator.device)
    return stream.to(starts.device)[starts + torch.arange(length, device=starts.device)]


def validation_windows(stream: Tensor, length: int, limit: int = 0) -> Tensor:
    """(windows, length) consecutive non-overlapping windows from the start of `stream` (at most `limit`; 0: all)."""
    count = len(stream) // length
    if count == 0:
        raise UserError(f"the validation text has {len(stream)} tokens, fewer than one window of {length}")
    count = min(count, limit) if limit else count
    return stream[: count * length].view(count, length)
