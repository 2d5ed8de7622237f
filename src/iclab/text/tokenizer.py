"""A byte-level BPE tokenizer (GPT-2's scheme) trained locally with Hugging Face `tokenizers`, stored as its
plain-JSON `tokenizer.json` (nothing is unpickled) and loaded back with a clear error when the file is broken."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from ..files import atomic_write_text

END_OF_TEXT = "<|endoftext|>"  # separates documents in the token stream
BYTES = 256  # the byte alphabet every byte-level vocabulary starts from


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise UserError("language modelling needs the tokenizers package: pip install 'iclab[lm]'") from None
    return tokenizers


def train_tokenizer(texts: list[str], vocab: int):
    """A byte-level BPE with `vocab` entries (the 256 bytes, END_OF_TEXT and the most frequent merges)."""
    if vocab <= BYTES:
        raise UserError(f"a byte-level tokenizer needs a vocabulary above {BYTES} entries, got {vocab}")
    tk = _tokenizers()
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def save_tokenizer(tokenizer, path: Path) -> None:
    atomic_write_text(path, tokenizer.to_str())


def load_tokenizer(path: Path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file missing: {path}")
    try:
        return _tokenizers().Tokenizer.from_str(path.read_text())
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise UserError(f"tokenizer file {path} is corrupt ({str(e).splitlines()[0]}); delete it to retrain") from None


def encode(tokenizer, documents: list[str]) -> Tensor:
    """One int64 token stream: every document followed by END_OF_TEXT."""
    eot = tokenizer.token_to_id(END_OF_TEXT)
    ids = []
    for encoding in tokenizer.encode_batch(documents):
        ids += encoding.ids
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.int64)
