"""Park et al.'s MambaFormer ("Can Mamba learn how to learn?", 2024): `model: {name: mambaformer}`.

Its definition is the `mixed_attn == "mambaformer"` branch of `MixerModel` in krafton-ai/mambaformer-icl,
mamba/mamba_ssm/models/mixer_seq_simple.py (built by `MambaMixerModel` in src/models.py, family "tf-mamba"):

- no position embedding: a Mamba block comes first and gives the sequence its order (MambaMixerModel adds a learned
  position embedding only for `mixed_attn: standard`, the plain hybrid, never for the MambaFormer);
- then `n_layer` blocks, attention at the even ones and Mamba at the odd ones: for n_layer = 4 (the repository's
  hybrid config, src/conf/hybrid/linear_regression.yaml, whose `mixed_attn` is "standard" with "mambaformer" named
  as the alternative) the order is Mamba, attention, Mamba, attention, Mamba;
- every block is Mamba's residual block (mamba/mamba_ssm/modules/mamba_simple.py, `Block`: add -> LayerNorm ->
  mixer, which is x + mixer(LayerNorm(x)) written for fused kernels), with no MLP; a final LayerNorm;
- the attention mixer is nanoGPT's `CausalSelfAttention` (same file): fused q/k/v projection and output
  projection, both with biases, 8 heads, causal scaled-dot-product attention;
- the Mamba mixer is Mamba's (state size 16, convolution 4, expansion 2, dt rank width / 16), and the weights are
  initialised as its `_init_weights` does: linear biases 0 (except Mamba's time-step bias), each Mamba output
  projection scaled by 1 / sqrt(n_layer), Mamba's own A, D and time-step initialisation, PyTorch's elsewhere.

iclab builds it from the same pieces: transformers' `MambaMixer` (the Mamba mixer, initialised as Mamba does)
and iclab's own `CausalSelfAttention` (models/transformer.py, the nanoGPT layer: fused q/k/v with biases, causal
SDPA). `layers` is the reference's n_layer, so the model has layers + 1 blocks; `heads` is n_head (8 by default,
the reference's). The Mamba mixers run on iclab's chunked selective scan (`scan: own`, iclab.models.scan, as the
`mamba` family does) unless `scan: hf` asks for transformers' token-by-token loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..spec import key_error
from .base import MODELS, ICLModel, ModelConfig
from .hf import NO_TOKENS, transformers_module
from .scan import fast_mamba
from .transformer import CausalSelfAttention


@MODELS.register("mambaformer")
@dataclass
class MambaFormerConfig(ModelConfig):
    """Park et al.'s MambaFormer: a Mamba block in place of the position embedding, then `layers` blocks
    alternating attention and Mamba (attention first), no MLPs. layers -> n_layer (layers + 1 blocks in all),
    width -> d_model, heads -> n_head of the attention blocks; `scan` as in the `mamba` family."""

    name: str = "mambaformer"
    heads: int = field(default=8, metadata={"min": 1})  # attention heads (the reference's 8); must divide width
    # the Mamba blocks' selective scan: own (iclab's chunked scan, iclab.models.scan) or hf (the library's loop)
    scan: str = field(default="own", metadata={"choices": ["own", "hf"]})

    def check(self, prefix: str) -> None:
        super().check(prefix)
        if self.width % self.heads:
            raise key_error(f"{prefix}.width", f"must be divisible by heads ({self.heads}), got {self.width}")

    def block_kinds(self) -> list[str]:
        """The blocks in order: Mamba first, then attention at the even and Mamba at the odd of the `layers`."""
        return ["mamba"] + ["attention" if i % 2 == 0 else "mamba" for i in range(self.layers)]

    def build(self, dims: int, max_points: int) -> MambaFormer:
        model = MambaFormer(self, dims, max_points)
        if self.scan == "own":
            fast_mamba(model)
        return model


class Residual(nn.Module):
    """x + mixer(LayerNorm(x)): a block of the reference's MixerModel, with no MLP."""

    def __init__(self, width: int, mixer: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mixer = mixer

    def forward(self, h: Tensor) -> Tensor:
        return h + self.mixer(self.norm(h))


class MambaFormer(ICLModel):
    """iclab's read-in -> Mamba, then attention and Mamba blocks interleaved, a final LayerNorm -> iclab's read-out."""

    def __init__(self, config: MambaFormerConfig, dims: int, max_points: int):
        super().__init__(config, dims, max_points)
        transformers = transformers_module()
        from transformers.models.mamba.modeling_mamba import MambaMixer

        kinds = config.block_kinds()
        mamba = transformers.MambaConfig(
            hidden_size=config.width, num_hidden_layers=len(kinds), state_size=16, conv_kernel=4, expand=2,
            use_bias=False, use_conv_bias=True, hidden_act="silu", **NO_TOKENS,
        )
        self.read_in = nn.Linear(dims, config.width)
        self.blocks = nn.ModuleList(
            Residual(
                config.width,
                MambaMixer(mamba, layer_idx=i) if kind == "mamba"
                else CausalSelfAttention(config.width, config.heads, "softmax"),
            )
            for i, kind in enumerate(kinds)
        )
        self.norm_f = nn.LayerNorm(config.width)
        self.read_out = nn.Linear(config.width, 1)
        self._init_like_reference()

    def _init_like_reference(self) -> None:
        """The reference's `_init_weights`: attention biases 0, Mamba's output projections (PyTorch's Kaiming-uniform
        draw, as nn.Linear's) divided by sqrt(n_layer); MambaMixer has drawn Mamba's A, D and time-step weights."""
        with torch.no_grad():
            for block in self.blocks:
                if isinstance(block.mixer, CausalSelfAttention):
                    nn.init.zeros_(block.mixer.qkv.bias)
                    nn.init.zeros_(block.mixer.proj.bias)
                else:
                    block.mixer.out_proj.weight /= math.sqrt(self.config.layers)

    def describe(self) -> str:
        c = self.config
        order = "-".join("M" if kind == "mamba" else "A" for kind in c.block_kinds())
        return f"mambaformer: {order}, width {c.width}, {c.heads} heads, {self.num_parameters():,} parameters"

    def sequence(self, h: Tensor) -> Tensor:
        for block in self.blocks:
            h = block(h)
        return self.norm_f(h)
