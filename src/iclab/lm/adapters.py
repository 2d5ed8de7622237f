"""The engine's `AttentionAdapter` for Hugging Face causal LMs, through forward hooks only.

Three layouts of the attention projections cover the families iclab supports:
  separate  q_proj, k_proj, v_proj (Llama and its kin such as SmolLM2, Mistral and Qwen2 with grouped-query
            attention; OPT; XGLM, e.g. fairseq-dense)
  gpt2      one Conv1D `c_attn` (weight: in x 3·width, columns Q | K | V)
  gpt_neox  one Linear `query_key_value` whose rows are interleaved per head: [q_h, k_h, v_h] for each head h
Every forward runs through a key/value cache that iclab owns: the keys of all tokens, rotary embeddings applied,
are then in the cache, so a hook needs only the query of the last token to rebuild its pre-softmax scores. A
demonstration prefix shared by all queries is encoded once and its cache reused by every batch; for a model with
momentum attention (iclab.lm.momentum) the prefix's momentum carry is kept beside its cache.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..icl_vs_ft.adapter import AttentionAdapter, Capture, KVParameter
from .layouts import attention_modules, layout_of
from .momentum import momentum_of

# where each family keeps the norm after its last block: Llama-like and XGLM-ish, GPT-2, GPT-NeoX, OPT, XGLM
FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm",
               "model.layer_norm")


class HFAdapter(AttentionAdapter):
    """A Hugging Face causal LM (GPT-2, GPT-NeoX, Llama-like, OPT, XGLM families)."""

    def __init__(self, model: nn.Module, reuse_prefix: bool = True):
        self.model = model
        self.reuse_prefix = reuse_prefix  # False: every prompt runs in full (the naive scoring, for comparison)
        # (prefix tokens and momentum eta, per-layer keys and values, per-layer momentum carries or None)
        self._memo: tuple[tuple, list, list | None] | None = None
        self._cache = None
        layers = self.attention_layers()
        if not layers:
            raise UserError(
                f"no supported attention layers in {type(model).__name__} (model type "
                f"'{getattr(model.config, 'model_type', '?')}'): iclab supports GPT-2, GPT-NeoX, Llama-like, OPT "
                "and XGLM models (q/k/v_proj, c_attn or query_key_value projections)"
            )
        self.layout = layout_of(layers[0])

    def with_model(self, model):
        other = super().with_model(model)
        other._memo = None  # the cached prefix belongs to the original weights
        return other

    def context_length(self):
        return getattr(self.model.config, "max_position_embeddings", None)

    def logits(self, ids):
        return self.model(input_ids=ids.to(self.device), use_cache=False).logits

    def attention_layers(self):
        return attention_modules(self.model)

    def kv_parameters(self):
        names = {id(m): n for n, m in self.model.named_modules()}
        out = []
        for m in self.attention_layers():
            name = names[id(m)]
            if self.layout == "separate":
                for proj in ("k_proj", "v_proj"):
                    lin = getattr(m, proj)
                    out += [KVParameter(f"{name}.{proj}.{k}", p) for k, p in lin.named_parameters(recurse=False)]
                continue
            fused = m.c_attn if self.layout == "gpt2" else m.query_key_value
            for kind, p in fused.named_parameters(recurse=False):
                out.append(
                    KVParameter(
                        f"{name}.{'c_attn' if self.layout == 'gpt2' else 'query_key_value'}.{kind}",
                        p,
                        self._kv_mask(m, p),
                    )
                )
        return out

    def _kv_mask(self, module: nn.Module, p: Tensor) -> Tensor:
        """1 on the key/value entries of a fused QKV parameter."""
        mask = torch.zeros_like(p)
        if self.layout == "gpt2":  # Conv1D: weight (in, 3 * width), bias (3 * width); Q | K | V along the last axis
            width = p.shape[-1] // 3
            mask[..., width:] = 1
        else:  # GPT-NeoX: output rows per head are [q (d), k (d), v (d)]
            heads = self.model.config.num_attention_heads
            d = p.shape[0] // (3 * heads)
            mask.view(heads, 3, d, *p.shape[1:])[:, 1:] = 1
        return mask

    def _query(self, module: nn.Module, h: Tensor) -> Tensor:
        """The attention query of hidden states h (batch, width), before rotary embeddings: (batch, heads * d)."""
        return self.projections(module, h)[0].flatten(-2)

    def projections(self, module, h):
        d = getattr(module, "head_dim", None) or module.head_size
        if self.layout == "gpt2":
            q, k, v = module.c_attn(h).split(module.embed_dim, dim=-1)
        elif self.layout == "gpt_neox":
            heads = self.model.config.num_attention_heads
            q, k, v = module.query_key_value(h).view(*h.shape[:-1], heads, 3, d).unbind(-2)
        else:
            q, k, v = module.q_proj(h), module.k_proj(h), module.v_proj(h)
        return tuple(x.reshape(*h.shape[:-1], -1, d) for x in (q, k, v))

    def decoder_blocks(self):
        layers = self.attention_layers()
        for m in self.model.modules():  # the ModuleList whose i-th block holds the i-th attention layer
            if isinstance(m, nn.ModuleList) and len(m) == len(layers):
                if all(any(x is a for x in block.modules()) for block, a in zip(m, layers, strict=True)):
                    return list(m)
        raise UserError(f"cannot find the decoder blocks of {type(self.model).__name__}")

    def readout(self, h):
        modules = dict(self.model.named_modules())
        for name in FINAL_NORMS:
            if name in modules:
                h = modules[name](h)
                break
        else:
            raise UserError(f"cannot find the final norm of {type(self.model).__name__} (looked for {FINAL_NORMS})")
        project_out = getattr(modules.get("model.decoder"), "project_out", None)  # OPT-350m's narrower output
        if project_out is not None:
            h = project_out(h)
        return self.model.get_output_embeddings()(h)

    def _capture(self, module, args, kwargs, output, last):
        h = args[0] if args else kwargs["hidden_states"]
        rows = torch.arange(len(h), device=h.device)
        keys = self._cache.layers[module.layer_idx].keys  # (batch, kv_heads, keys, d), rotary applied
        d = keys.shape[-1]
        q = self._query(module, h[rows, last]).view(len(h), -1, 1, d)  # (batch, heads, 1, d)
        rotary = kwargs.get("position_embeddings")
        if rotary is not None:  # rotate the query with the model's own function, at the token's position
            cos, sin = (t.expand(len(h), *t.shape[1:])[rows, last].unsqueeze(1) for t in rotary)
            q, _ = sys.modules[type(module).__module__].apply_rotary_pos_emb(q, q, cos, sin)
        keys = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # grouped-query attention
        scores = torch.einsum("bhd,bhsd->bhs", q[:, :, 0].float(), keys.float()) * module.scaling
        out = output[0] if isinstance(output, tuple) else output
        values = self._cache.layers[module.layer_idx].values
        return Capture(out, scores, h, self._query(module, h[rows, last]), values, module.scaling)

    def _prepare(self, prefix):
        from transformers import DynamicCache


        momentum = momentum_of(self.model)
        key = (tuple(prefix[0].tolist()), momentum.eta if momentum else None)
        if self.reuse_prefix and prefix.shape[1] and (self._memo is None or self._memo[0] != key):
            cache, start = DynamicCache(), 0
            if self._memo is not None and momentum is None and self._memo[0][1] is None:
                known = self._memo[0][0]
                if len(known) < len(key[0]) and key[0][: len(known)] == known:  # a longer prefix (a k sweep)
                    cache, start = DynamicCache(self._memo[1]), len(known)  # encode only the new tokens
            self.model(input_ids=prefix[:, start:].to(self.device), cache=cache, use_cache=True, logits_to_keep=1)
            # a momentum-patched model also leaves the prefix's momentum carry, which its continuations need
            carries = momentum.carries() if momentum else None
            self._memo = (key, [(layer.keys, layer.values) for layer in cache.layers], carries)

    def _forward(self, prefix, ids, positions):
        from transformers import DynamicCache


        if not self.reuse_prefix:
            ids = torch.cat((prefix.expand(len(ids), -1), ids), dim=1)
            positions, prefix = positions + prefix.shape[1], prefix[:, :0]
        carries = None
        if prefix.shape[1]:
            self._prepare(prefix)
            _, cached, carries = self._memo
            kv = [(k.expand(len(ids), -1, -1, -1), v.expand(len(ids), -1, -1, -1)) for k, v in cached]
            self._cache = DynamicCache(kv)
        else:
            self._cache = DynamicCache()
        try:  # a momentum-patched model continues the prefix's momentum term from the carry kept beside its cache
            with momentum_of(self.model).continuing(carries) if carries is not None else nullcontext():
                out = self.model(
                    input_ids=ids.to(self.device),
                    cache=self._cache,
                    use_cache=True,
                    logits_to_keep=positions.to(self.device),
                )
            return out.logits.float().cpu()
        finally:
            self._cache = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def make_adapter(model: nn.Module) -> HFAdapter:
    return HFAdapter(model)
