"""Hugging Face backbones: a decoder from `transformers`, built from a config with random weights, between iclab's
read-in and read-out, exactly as Garg et al. wrap GPT2Model. Every HF decoder takes `inputs_embeds`, so the
prompt's tokens go in as vectors and no vocabulary is used: the token embedding the library builds is removed.

A family is a config dataclass that maps iclab's common keys (`layers`, `width`, `heads`, `mlp_ratio`) onto its
HF config in `hf_config`, with dropout off and no special tokens; the mapping of each family is its docstring.
Needs `pip install iclab[lm]` (transformers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ..errors import UserError
from ..spec import key_error
from .base import MODELS, ICLModel, ModelConfig


def transformers_module():
    """The transformers package, or a one-line error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise UserError("this model is a Hugging Face backbone: pip install 'iclab[lm]' (transformers)") from None
    transformers.logging.set_verbosity_error()  # its notes on CPU fallbacks and unused token ids are not for us
    return transformers


@dataclass
class HFConfig(ModelConfig):
    """A Hugging Face backbone (subclasses name the family)."""

    heads: int = field(default=2, metadata={"min": 1})  # attention heads; must divide width
    mlp_ratio: int = field(default=4, metadata={"min": 1})  # MLP hidden size / width

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.width % self.heads:
            raise key_error(f"{prefix}.width", f"must be divisible by heads ({self.heads}), got {self.width}")

    def hf_config(self, max_points: int):
        """The family's transformers config for prompts of up to `max_points` pairs (subclasses)."""
        raise NotImplementedError

    def build(self, dims: int, max_points: int) -> HFModel:
        return HFModel(self, dims, max_points)


class HFModel(ICLModel):
    """iclab's read-in -> a Hugging Face decoder (random weights, no token embedding) -> iclab's read-out."""

    def __init__(self, config: HFConfig, dims: int, max_points: int):
        super().__init__(config, dims, max_points)
        transformers = transformers_module()
        self.read_in = nn.Linear(dims, config.width)
        hf = config.hf_config(max_points)
        self.backbone = transformers.AutoModel.from_config(hf, attn_implementation=_attention(hf))
        self.backbone.set_input_embeddings(None)  # prompts enter as inputs_embeds; a vocabulary would be dead weight
        self.read_out = nn.Linear(config.width, 1)

    def sequence(self, h: Tensor) -> Tensor:
        return self.backbone(inputs_embeds=h, use_cache=False).last_hidden_state


def _attention(hf) -> str | None:
    """PyTorch's fused attention where the family supports it, else the library's own (eager) code."""
    return "sdpa" if type(hf).model_type in ("gpt2", "llama") else None


NO_TOKENS = {"vocab_size": 1, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


@MODELS.register("gpt2")
@dataclass
class GPT2Config(HFConfig):
    """Hugging Face GPT2Model, Garg et al.'s backbone: learned positions (n_positions = 2 points, longer prompts
    refused), exact GPT-2 blocks and initialisation. layers -> n_layer, width -> n_embd, heads -> n_head,
    mlp_ratio -> n_inner / n_embd; dropout 0."""

    name: str = "gpt2"

    @property
    def length_limited(self) -> bool:
        return True

    def hf_config(self, max_points: int):
        return transformers_module().GPT2Config(
            n_layer=self.layers, n_embd=self.width, n_head=self.heads, n_inner=self.mlp_ratio * self.width,
            n_positions=2 * max_points, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **NO_TOKENS,
        )



@MODELS.register("llama")
@dataclass
class LlamaConfig(HFConfig):
    """Hugging Face LlamaModel: rotary positions (RoPE, theta 10,000), RMSNorm, SwiGLU MLP, no biases.
    layers -> num_hidden_layers, width -> hidden_size, heads -> num_attention_heads (= key-value heads),
    mlp_ratio -> intermediate_size / hidden_size."""

    name: str = "llama"

    def hf_config(self, max_points: int):
        return transformers_module().LlamaConfig(
            num_hidden_layers=self.layers, hidden_size=self.width, num_attention_heads=self.heads,
            num_key_value_heads=self.heads, intermediate_size=self.mlp_ratio * self.width,
            max_position_embeddings=2 * max_points, rope_theta=10_000.0, attention_dropout=0.0, **NO_TOKENS,
        )


@MODELS.register("bloom")
@dataclass
class BloomConfig(HFConfig):
    """Hugging Face BloomModel: ALiBi (a linear distance penalty per head on the attention scores, no position
    embedding). layers -> n_layer, width -> hidden_size, heads -> n_head; BLOOM's MLP is 4 x width."""

    name: str = "bloom"
    mlp_ratio: int = field(default=4, metadata={"choices": [4]})  # BLOOM's MLP is fixed at 4 x width

    def hf_config(self, max_points: int):
        return transformers_module().BloomConfig(
            n_layer=self.layers, hidden_size=self.width, n_head=self.heads, hidden_dropout=0.0,
            attention_dropout=0.0, **NO_TOKENS,
        )
