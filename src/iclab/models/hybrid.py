"""Hybrid and ALiBi backbones from Hugging Face: recurrent layers interleaved with attention (`qwen3_next`, gated
DeltaNet + gated attention; `jamba`, Mamba + attention), and MPT's ALiBi attention (`mpt`, beside `bloom`).

The two hybrids share one vocabulary for their layer pattern: layer i (counting from 0) is an attention layer where
i % attention_every == attention_offset, every other layer is the family's recurrence. The default, every 2 from 1,
alternates recurrence and attention (R, A, R, A, ...) so that even a 2-layer model is a hybrid; the published
models are far sparser (Qwen3-Next: every 4 from 3; Jamba: every 8 from 4), which `attention_every` and
`attention_offset` reproduce. Both are dense: no mixture of experts. No fla, Triton or CUDA kernel is needed:
Qwen3-Next's delta rule runs HF's chunked PyTorch code (in chunks of equal length: `DeltaNetModel`); Jamba's Mamba
layers run iclab's chunked selective scan (`scan: own`: iclab.models.scan's `fast_mamba`, which applies Jamba's
extra norms too) unless `scan: hf` asks for the library's fallback without `mamba-ssm`, a loop over tokens.

All three run in float64 (and are causal there to rounding), but the library computes some steps in float32
whatever the model's dtype: Qwen3-Next's delta rule and RMSNorms, Jamba's RMSNorms, MPT's softmax. A float64 run
of these families is float32-accurate in those steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..spec import key_error
from .base import MODELS
from .hf import NO_TOKENS, HFConfig, HFModel, transformers_module
from .scan import fast_mamba

ROTARY_FRACTION = 0.25  # Qwen3-Next turns a quarter of each attention head's channels with RoPE
DELTA_CHUNK = 64  # the longest chunk of HF's chunked delta rule (its default length)


@dataclass
class InterleavedConfig(HFConfig):
    """A Hugging Face hybrid: attention at every `attention_every`-th layer from `attention_offset`, the family's
    recurrence elsewhere (subclasses name the family)."""

    # one layer in every attention_every is attention (1: every layer); the published models use 4 (Qwen3-Next)
    # and 8 (Jamba)
    attention_every: int = field(default=2, metadata={"min": 1})
    # which layer of each group of attention_every is the attention layer, from 0 (Qwen3-Next: 3; Jamba: 4)
    attention_offset: int = field(default=1, metadata={"min": 0})

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.attention_offset >= self.attention_every:
            raise key_error(
                f"{prefix}.attention_offset",
                f"must be below attention_every ({self.attention_every}), got {self.attention_offset}",
            )

    def is_attention(self, layer: int) -> bool:
        """Whether layer `layer` (from 0) is an attention layer."""
        return layer % self.attention_every == self.attention_offset


@MODELS.register("qwen3_next")
@dataclass
class Qwen3NextConfig(InterleavedConfig):
    """Hugging Face Qwen3NextModel, dense: gated DeltaNet linear attention (the delta rule with a learned decay and
    a causal convolution, HF's chunked PyTorch path) interleaved with gated softmax attention (RoPE on a quarter of
    each head, theta 10,000; per-head RMSNorm on queries and keys; a sigmoid output gate), SwiGLU MLPs, RMSNorm.
    layers -> num_hidden_layers, width -> hidden_size, heads -> num_attention_heads = num_key_value_heads =
    linear_num_key_heads = linear_num_value_heads, width / heads -> head_dim = linear_key_head_dim =
    linear_value_head_dim, mlp_ratio -> intermediate_size / hidden_size, attention_every / attention_offset ->
    layer_types ("full_attention" at the attention layers, "linear_attention" elsewhere); num_experts 0 (every MLP
    dense), dropout 0. width / heads must be a multiple of 8, so that the rotated quarter pairs up."""

    name: str = "qwen3_next"

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if (self.width // self.heads) % 8:
            raise key_error(
                f"{prefix}.width",
                f"width / heads must be a multiple of 8 (RoPE turns a quarter of each head in pairs), "
                f"got {self.width} / {self.heads} = {self.width // self.heads}",
            )

    def hf_config(self, max_points: int):
        head = self.width // self.heads
        return transformers_module().Qwen3NextConfig(
            num_hidden_layers=self.layers, hidden_size=self.width, intermediate_size=self.mlp_ratio * self.width,
            num_attention_heads=self.heads, num_key_value_heads=self.heads, head_dim=head,
            linear_num_key_heads=self.heads, linear_num_value_heads=self.heads,
            linear_key_head_dim=head, linear_value_head_dim=head, num_experts=0,
            layer_types=["full_attention" if self.is_attention(i) else "linear_attention" for i in range(self.layers)],
            max_position_embeddings=2 * max_points, attention_dropout=0.0,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": ROTARY_FRACTION},
            **NO_TOKENS,
        )

    def build(self, dims: int, max_points: int) -> DeltaNetModel:
        return DeltaNetModel(self, dims, max_points)


class DeltaNetModel(HFModel):
    """HFModel for Qwen3-Next, whose delta rule runs in as few chunks of equal length (at most 64 tokens) as cover
    the prompt, instead of the library's chunks of 64 with the last one padded: a 22-token prompt is one chunk of
    22, not 64 (the same function; 2.2x faster a training step of the backbone at width 64, batch 64, on 2 threads)."""

    def sequence(self, h: Tensor) -> Tensor:
        chunks = -(-h.shape[1] // DELTA_CHUNK)
        size = -(-h.shape[1] // chunks)
        return self.backbone(inputs_embeds=h, use_cache=False, chunk_size=size).last_hidden_state


@MODELS.register("jamba")
@dataclass
class JambaConfig(InterleavedConfig):
    """Hugging Face JambaModel, dense: Mamba layers (Jamba's mixer: state size 16, convolution 4, expansion 2,
    RMSNorms on the time step, B and C) interleaved with softmax attention without positions (order comes from
    the Mamba layers), each layer followed by a SwiGLU MLP, RMSNorm. layers -> num_hidden_layers, width ->
    hidden_size, heads -> num_attention_heads = num_key_value_heads, mlp_ratio -> intermediate_size /
    hidden_size, attention_every -> attn_layer_period, attention_offset -> attn_layer_offset; num_experts 1 (every
    MLP dense), dropout 0. `scan: own` runs the Mamba layers on iclab's chunked scan (iclab.models.scan),
    `hf` on the library's loop over tokens (its `use_mamba_kernels` switch is deprecated and ignored, so iclab does
    not set it)."""

    name: str = "jamba"
    # the Mamba layers' selective scan: own (iclab's chunked scan, iclab.models.scan) or hf (the library's loop)
    scan: str = field(default="own", metadata={"choices": ["own", "hf"]})

    def hf_config(self, max_points: int):
        return transformers_module().JambaConfig(
            num_hidden_layers=self.layers, hidden_size=self.width, intermediate_size=self.mlp_ratio * self.width,
            num_attention_heads=self.heads, num_key_value_heads=self.heads,
            attn_layer_period=self.attention_every, attn_layer_offset=self.attention_offset,
            num_experts=1, num_experts_per_tok=1, attention_dropout=0.0, **NO_TOKENS,
        )

    def build(self, dims: int, max_points: int) -> HFModel:
        model = HFModel(self, dims, max_points)
        if self.scan == "own":
            fast_mamba(model)
        return model


ALIBI_TOKENS = 8192  # MPT cuts its ALiBi bias from a table of max_seq_len positions, so the table is made this long


@MODELS.register("mpt")
@dataclass
class MptConfig(HFConfig):
    """Hugging Face MptModel: ALiBi (MPT's slopes, bias max 8; no position embedding), LayerNorms without bias, no
    biases in the linear maps, exact-GELU MLP of 4 x width (HF's MptMLP ignores expansion_ratio). layers ->
    n_layers, width -> d_model, heads -> n_heads; max_seq_len 8,192 tokens, or 2 x points if longer (MPT cuts its
    ALiBi bias from a table of that length; ALiBi itself has no limit); dropout 0."""

    name: str = "mpt"
    mlp_ratio: int = field(default=4, metadata={"choices": [4]})  # MPT's MLP is fixed at 4 x width

    def hf_config(self, max_points: int):
        return transformers_module().MptConfig(
            n_layers=self.layers, d_model=self.width, n_heads=self.heads, expansion_ratio=4,
            max_seq_len=max(ALIBI_TOKENS, 2 * max_points), resid_pdrop=0.0, emb_pdrop=0.0,
            attn_config={"attn_pdrop": 0}, **NO_TOKENS,
        )
