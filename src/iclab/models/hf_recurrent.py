"""Hugging Face's linear recurrences: RWKV (`rwkv`), xLSTM (`xlstm`) and Griffin's RG-LRU (`recurrent_gemma`), each
a transformers backbone between iclab's read-in and read-out (models/hf.py) in plain PyTorch on the CPU.

What the library computes in float32 whatever the model's dtype (so a float64 model is float64 around it, and its
results agree with float32's to about 1e-7, not 1e-15): RWKV's CPU time-mixing loop (keys and state; iclab's own
WKV kernel, the default, is in the model's dtype), RecurrentGemma's RMSNorm and RG-LRU scan accumulator. xLSTM is
float64 throughout (below). RWKV's library CPU scan and RecurrentGemma's are a Python loop over the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from ..spec import key_error
from .base import MODELS, ModelConfig
from .hf import NO_TOKENS, HFConfig, HFModel, transformers_module
from .wkv import fast_rwkv


@MODELS.register("rwkv")
@dataclass
class RwkvConfig(ModelConfig):
    """Hugging Face RwkvModel (RWKV-4, Peng et al. 2023): per-channel time mixing with learned decays (the WKV
    recurrence) and a squared-ReLU channel mix, no attention heads. layers -> num_hidden_layers, width ->
    hidden_size (= attention_hidden_size), mlp_ratio -> intermediate_size / hidden_size; context_length = 2 x
    max_points (it only bounds the CUDA kernel; the CPU path takes any length); rescale_every = 0 (the library's
    inference-time halving of weights, which rewrites them in place on every train/eval switch, is off).
    `scan: own` runs the WKV recurrence on iclab's chunked kernel (iclab.models.wkv: matrix products within chunks
    of 32 tokens, in the model's dtype; proven equal to the recurrence and to the library's module, and faster in
    benchmarks/architectures.py), `hf` on the library's token-by-token loop (keys and state in float32)."""

    name: str = "rwkv"
    mlp_ratio: int = field(default=4, metadata={"min": 1})  # channel-mix hidden size / width
    scan: str = field(default="own", metadata={"choices": ["own", "hf"]})  # the WKV kernel: iclab's or the library's

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.layers < 2:  # the library's initialisation spreads its decays over layer_id / (layers - 1)
            raise key_error(f"{prefix}.layers", f"RWKV needs at least 2 layers (its initialisation divides by "
                            f"layers - 1), got {self.layers}")

    def hf_config(self, max_points: int):
        return transformers_module().RwkvConfig(
            num_hidden_layers=self.layers, hidden_size=self.width, attention_hidden_size=self.width,
            intermediate_size=self.mlp_ratio * self.width, context_length=2 * max_points, rescale_every=0,
            **NO_TOKENS,
        )

    def build(self, dims: int, max_points: int) -> HFModel:
        model = HFModel(self, dims, max_points)
        if self.scan == "own":
            fast_rwkv(model)
        return model


@MODELS.register("xlstm")
@dataclass
class XLSTMConfig(HFConfig):
    """Hugging Face xLSTMModel (Beck et al. 2024, xLSTM-7B's mLSTM blocks: matrix memory, exponential input gate,
    sigmoid forget gate, then a SwiGLU MLP). layers -> num_hidden_layers, width -> hidden_size, heads -> num_heads
    (queries and keys have width / 2 channels, values width, split over the heads), mlp_ratio -> ffn_proj_factor
    (the MLP's hidden size is exactly mlp_ratio x width: ffn_round_up_to_multiple_of = 1).

    Runs without the `xlstm` package or Triton: the library's native chunkwise kernel in plain PyTorch
    (chunkwise--native_autograd, mode train) in the model's dtype, and the norms without their float32 cast
    (norm_reduction_force_float32 off, the final norm's too), so float64 is float64 throughout. The kernel takes
    whole chunks of `chunk` tokens: the sequence is padded with zero tokens at its end and cut back, which changes
    no output (the kernel is causal)."""

    name: str = "xlstm"
    chunk: int = field(default=16, metadata={"min": 1})  # tokens per chunk of the chunkwise kernel (speed only)

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.width % (2 * self.heads):
            raise key_error(
                f"{prefix}.width",
                f"must be divisible by 2 x heads ({2 * self.heads}): xLSTM's queries and keys have width / 2 "
                f"channels split over the heads, got {self.width}",
            )

    def hf_config(self, max_points: int):
        return transformers_module().xLSTMConfig(
            num_hidden_layers=self.layers, hidden_size=self.width, num_heads=self.heads,
            ffn_proj_factor=float(self.mlp_ratio), ffn_round_up_to_multiple_of=1,
            chunkwise_kernel="chunkwise--native_autograd", mode="train", return_last_states=True,
            chunk_size=self.chunk, norm_reduction_force_float32=False, use_cache=False, **NO_TOKENS,
        )

    def build(self, dims: int, max_points: int) -> XLSTMModel:
        return XLSTMModel(self, dims, max_points)


class XLSTMModel(HFModel):
    """HFModel whose sequence is padded to whole chunks for xLSTM's chunkwise kernel."""

    def __init__(self, config: XLSTMConfig, dims: int, max_points: int):
        super().__init__(config, dims, max_points)
        self.backbone.out_norm.force_float32_reductions = False  # the library builds it without the config's flag

    def sequence(self, h: Tensor) -> Tensor:
        tokens = h.shape[1]
        padded = F.pad(h, (0, 0, 0, -tokens % self.config.chunk))
        return super().sequence(padded)[:, :tokens]


BLOCK_TYPES = ("recurrent", "attention")


@MODELS.register("recurrent_gemma")
@dataclass
class RecurrentGemmaConfig(HFConfig):
    """Hugging Face RecurrentGemmaModel (Griffin, De et al. 2024): residual blocks whose temporal mixing is either
    the RG-LRU (a gated diagonal linear recurrence after a width-4 causal convolution) or local attention (RoPE on
    half of each head), each followed by a gated GELU MLP; `block_types` repeats over the layers (Griffin's default:
    two recurrent blocks, then one attention block). layers -> num_hidden_layers, width -> hidden_size, heads ->
    num_attention_heads (= key-value heads; also the RG-LRU's block-diagonal gate blocks), mlp_ratio ->
    intermediate_size / (2 x hidden_size) (the library halves intermediate_size: the MLP's hidden size is
    mlp_ratio x width), lru_width -> lru_width (default: width).

    attention_window -> attention_window_size: how many tokens a local-attention position sees (itself included);
    by default 2 x max_points, the whole prompt, so that attention is global at the trained lengths; set it
    smaller for Griffin's local attention. The library's input scaling by sqrt(width) is kept."""

    name: str = "recurrent_gemma"
    lru_width: int | None = field(default=None, metadata={"min": 1})  # RG-LRU channels; none: width
    attention_window: int | None = field(default=None, metadata={"min": 1})  # none: 2 x max_points tokens
    block_types: list[str] = field(default_factory=lambda: ["recurrent", "recurrent", "attention"])

    def check(self, prefix: str) -> None:
        super().check(prefix)
        bad = [t for t in self.block_types if t not in BLOCK_TYPES]
        if bad or not self.block_types:
            raise key_error(
                f"{prefix}.block_types", f"a non-empty list of {' and '.join(BLOCK_TYPES)}, got {self.block_types}"
            )
        if (self.lru_width or self.width) % self.heads:
            raise key_error(
                f"{prefix}.lru_width", f"must be divisible by heads ({self.heads}), got {self.lru_width or self.width}"
            )

    def hf_config(self, max_points: int):
        return transformers_module().RecurrentGemmaConfig(
            num_hidden_layers=self.layers, hidden_size=self.width, num_attention_heads=self.heads,
            num_key_value_heads=self.heads, intermediate_size=2 * self.mlp_ratio * self.width,
            lru_width=self.lru_width or self.width, attention_window_size=self.attention_window or 2 * max_points,
            block_types=list(self.block_types), attention_dropout=0.0, **NO_TOKENS,
        )
