"""State space models from Hugging Face: Mamba (selective scan, Gu & Dao 2023) and Mamba-2 (state space duality,
Dao & Gu 2024), each a stack of residual blocks RMSNorm -> mixer, as in `transformers` MambaModel/Mamba2Model.

Neither has attention heads of the transformer's kind nor an MLP, so their keys are the SSM's own: `state_size`
(N, the state per channel), `expand` (the mixer's inner width / width) and `conv_kernel` (its causal depthwise
convolution); Mamba-2 adds `heads` (its scalar-decay heads). Mamba's scan runs on iclab's chunked kernel
(`scan: own`, iclab.models.scan) unless `scan: hf` asks for the library's token-by-token loop; Mamba-2's library
code is already a chunked scan (SSD), used as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..spec import key_error
from .base import MODELS, ModelConfig
from .hf import NO_TOKENS, HFModel, transformers_module
from .scan import fast_mamba

SSM = {"residual_in_fp32": False, "use_cache": False, **NO_TOKENS}  # float64 runs stay float64; no generation


@dataclass
class SSMConfig(ModelConfig):
    """The keys Mamba and Mamba-2 share."""

    state_size: int = field(default=16, metadata={"min": 1})  # N: the SSM's state per channel
    expand: int = field(default=2, metadata={"min": 1})  # the mixer's inner width / width
    conv_kernel: int = field(default=4, metadata={"min": 1})  # the mixer's causal depthwise convolution's length


@MODELS.register("mamba")
@dataclass
class MambaConfig(SSMConfig):
    """Hugging Face MambaModel (Mamba-1: a selective scan with a state of N per channel, no attention, no position
    embedding). layers -> num_hidden_layers, width -> hidden_size, state_size -> state_size, expand -> expand
    (intermediate_size = expand x width), conv_kernel -> conv_kernel; time_step_rank = ceil(width / 16) (the
    library's "auto"). `scan: own` runs the library's mixers on iclab's chunked scan (iclab.models.scan, proven equal
    to the library's code and faster in benchmarks/architectures.py), `hf` on the library's token-by-token loop."""

    name: str = "mamba"
    scan: str = field(default="own", metadata={"choices": ["own", "hf"]})  # the selective scan's implementation

    def hf_config(self, max_points: int):
        return transformers_module().MambaConfig(
            num_hidden_layers=self.layers, hidden_size=self.width, state_size=self.state_size, expand=self.expand,
            conv_kernel=self.conv_kernel, **SSM,
        )

    def build(self, dims: int, max_points: int) -> HFModel:
        model = HFModel(self, dims, max_points)
        if self.scan == "own":
            fast_mamba(model)
        return model


@MODELS.register("mamba2")
@dataclass
class Mamba2Config(SSMConfig):
    """Hugging Face Mamba2Model (Mamba-2: one scalar decay per head, the scan computed in chunks as masked matrix
    products). layers -> num_hidden_layers, width -> hidden_size, heads -> num_heads, with head_dim = expand x width
    / heads; state_size -> state_size, expand -> expand, conv_kernel -> conv_kernel; n_groups = 1 (B and C shared
    by all heads); chunk_size = 2 x max_points, at most 256 (a whole prompt is one chunk, not padded to the library's
    256 tokens: a training step 3.4 x faster at width 64, 22 tokens, batch 64)."""

    name: str = "mamba2"
    heads: int = field(default=2, metadata={"min": 1})  # SSM heads; must divide expand x width

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if (self.expand * self.width) % self.heads:
            raise key_error(
                f"{prefix}.width",
                f"expand x width ({self.expand} x {self.width}) must be divisible by heads ({self.heads})",
            )

    def hf_config(self, max_points: int):
        return transformers_module().Mamba2Config(
            num_hidden_layers=self.layers, hidden_size=self.width, num_heads=self.heads,
            head_dim=self.expand * self.width // self.heads, state_size=self.state_size, expand=self.expand,
            conv_kernel=self.conv_kernel, n_groups=1, chunk_size=min(256, 2 * max_points), **SSM,
        )

    def build(self, dims: int, max_points: int) -> HFModel:
        return HFModel(self, dims, max_points)
