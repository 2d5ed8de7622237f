"""Momentum attention (Dai et al. 2023) as an opt-in, inference-time patch of a Hugging Face causal LM.

    with patch_momentum(model, eta=0.3):
        logits = model(input_ids=ids).logits      # every layer's attention output gets + sum_{i<t} eta^(t-i) v_i

Forward hooks only, no edit of library source. A hook on each layer's value projection keeps the values v (v_proj;
the V third of GPT-2's c_attn; the V rows of each head in GPT-NeoX's query_key_value), and a pre-hook on the output
projection (o_proj, out_proj, c_proj, dense) adds `iclab.models.transformer.momentum_term(v)` to its input: the
heads' attention outputs side by side, head by head, in every supported family. The term acts feature by feature,
so that input's layout is all that must match. Under grouped-query attention query head h reads value head
h // (heads / kv_heads) (transformers' repeat_kv), so each value head's term is repeated to its query heads.
Dropout and scaling sit on the attention weights, never on v, so the hooks see the values the attention uses.

A forward that continues a key/value cache continues the term: the carry of the earlier tokens (`momentum_carry`)
is kept beside the cache. The carry of the previous forward is used when the cache holds exactly the tokens that
forward ended with (`model.generate`, a prompt fed in chunks); a cache reused for many continuations, such as
iclab's shared demonstration prefix (HFAdapter), passes its carry explicitly with `continuing(carries)`. Positions
that a 2-D attention_mask marks as padding contribute no values, so a left-padded batch scores as unpadded rows.
Beam search, which reorders the cache, is not supported.

The model was trained without the term: this measures what adding it at inference does to a model that never saw
it, not what a model trained with momentum attention (Dai et al.) would learn.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from ..errors import UserError
from ..models.transformer import momentum_carry, momentum_term
from .layouts import attention_modules, layout_of

# model types whose attention modules were checked against the transformers source (values per head, in head
# order, straight into the output projection); others are refused rather than patched by guesswork
SUPPORTED = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "opt", "xglm")
OUTPUT_PROJECTIONS = ("o_proj", "out_proj", "c_proj", "dense")
_ATTRIBUTE = "_iclab_momentum"  # where a patched model keeps its Momentum state (deep copies carry their own)


def check_eta(eta: float) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0 <= eta < 1:
        raise UserError(f"momentum eta must be a number in [0, 1) (0: standard attention), got {eta!r}")
    return float(eta)


class _Layer:
    """One attention layer's hooks and state: the values of the running forward, the carries in and out."""

    def __init__(self, eta: float, layout: str, heads: int, kv_heads: int):
        self.eta, self.layout, self.heads, self.kv_heads = eta, layout, heads, kv_heads
        self.values: Tensor | None = None  # (batch, tokens, kv_heads * head_dim) of the running forward
        self.carry: Tensor | None = None  # the term the forward's first token receives from earlier tokens
        self.mask: Tensor | None = None  # the forward's 2-D attention mask (1: a real token)
        self.carry_out: Tensor | None = None  # the carry into the token after the last forward
        self.armed = False  # True while the patched model's own forward runs

    def keep_values(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if self.layout == "gpt2":  # c_attn columns: Q | K | V, each heads x head_dim
            self.values = output[..., 2 * output.shape[-1] // 3 :]
        elif self.layout == "gpt_neox":  # query_key_value rows per head: [q_h, k_h, v_h]
            d = output.shape[-1] // (3 * self.heads)
            self.values = output.unflatten(-1, (self.heads, 3 * d))[..., 2 * d :].flatten(-2)
        else:
            self.values = output

    def add_term(self, module: nn.Module, args: tuple) -> tuple | None:
        v, self.values = self.values, None
        if not self.armed:
            raise UserError(
                "a momentum-patched attention layer ran outside the patched model's forward: call the model that "
                "patch_momentum was given, not one of its inner modules"
            )
        if not self.eta:  # eta = 0 adds nothing: the model's outputs stay exactly its own
            return None
        if self.mask is not None:  # padding contributes no values
            v = v * self.mask[:, -v.shape[1] :, None].to(v.dtype)
        term = momentum_term(v, self.eta, self.carry)
        self.carry_out = momentum_carry(term, v, self.eta).detach()
        if self.heads != self.kv_heads:  # grouped-query attention: query head h reads value head h // repeat
            term = term.unflatten(-1, (self.kv_heads, -1)).repeat_interleave(self.heads // self.kv_heads, -2)
            term = term.flatten(-2)
        x = args[0]
        return (x + term.to(x.dtype), *args[1:])


class Momentum:
    """The state a patched model keeps (`momentum_of(model)`): eta, and the carries of its last forward."""

    def __init__(self, eta: float, layers: list[_Layer], forward_parameters: list[str]):
        self.eta, self.layers = eta, layers
        self._parameters = forward_parameters  # to read attention_mask and cache from positional arguments too
        self._explicit: list[Tensor] | None = None
        self._end: int | None = None  # tokens seen (cache included) at the end of the last forward

    def carries(self) -> list[Tensor | None]:
        """Per layer, the carry into the token after the last forward: keep it beside that forward's cache."""
        return [layer.carry_out for layer in self.layers]

    @contextmanager
    def continuing(self, carries: list[Tensor | None]) -> Iterator[None]:
        """Forwards in this block continue a cache whose tokens left `carries` (from `carries()`; batch 1
        broadcasts over any batch)."""
        self._explicit = carries
        try:
            yield
        finally:
            self._explicit = None

    def _start(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        given = dict(zip(self._parameters, args, strict=False)) | kwargs
        cache = given.get("cache", given.get("past_key_values"))
        past = cache.get_seq_length() if cache is not None else 0
        mask = given.get("attention_mask")
        if mask is not None and mask.dim() != 2:
            raise UserError(
                f"the momentum patch reads padding from a 2-D attention_mask (batch, tokens), got shape "
                f"{tuple(mask.shape)}: pass the 2-D mask or none"
            )
        if not past:
            carries = [None] * len(self.layers)
        elif self._explicit is not None:
            carries = self._explicit
        elif past == self._end:  # the cache holds exactly the tokens of the forwards so far: continue them
            carries = self.carries()
        else:
            raise UserError(
                f"this forward continues a key/value cache of {past} tokens, but the momentum patch's last forward "
                f"ended at {self._end}: it has no momentum carry for that cache; run the whole sequence, or feed "
                "it in order through the patched model"
            )
        tokens = given.get("input_ids")
        tokens = given.get("inputs_embeds") if tokens is None else tokens
        self._end = past + tokens.shape[1]
        for layer, carry in zip(self.layers, carries, strict=True):
            layer.carry, layer.mask, layer.armed = carry, mask, True

    def _finish(self, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        for layer in self.layers:
            layer.carry, layer.mask, layer.values, layer.armed = None, None, None, False


class MomentumPatch:
    """The handle `patch_momentum` returns: `remove()`, or leaving its `with` block, restores the model exactly."""

    def __init__(self, model: nn.Module, state: Momentum, handles: list):
        self.model, self.state, self._handles = model, state, handles

    @property
    def eta(self) -> float:
        return self.state.eta

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if getattr(self.model, _ATTRIBUTE, None) is self.state:
            delattr(self.model, _ATTRIBUTE)

    def __enter__(self) -> MomentumPatch:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def momentum_note(eta: float) -> str:
    """What a study with the patch measures, for its report."""
    return (
        f"Momentum attention (Dai et al. 2023) patched in at inference with eta = {eta:g}: every layer adds "
        "sum_{i<t} eta^(t-i) v_i to its attention output, in ZSL, ICL and finetuning alike, for the trained and the "
        "untrained model. The model was trained without this term (Dai et al. trained with it), so this measures "
        "what adding it does to a model that never saw it."
    )


def momentum_of(model: nn.Module) -> Momentum | None:
    """The momentum state of a patched model (also of a deep copy of one), or None."""
    return getattr(model, _ATTRIBUTE, None)


def _features(projection: nn.Module, side: str) -> int:
    """Input or output features of a Linear or of GPT-2's Conv1D (whose weight is stored as (in, out))."""
    if isinstance(projection, nn.Linear):
        return projection.in_features if side == "in" else projection.out_features
    return projection.weight.shape[0 if side == "in" else 1]


def _layer(module: nn.Module, eta: float, config) -> tuple[_Layer, nn.Module, nn.Module]:
    """The hook state of one attention module, its value source and its output projection."""
    layout = layout_of(module)
    output = next((getattr(module, n) for n in OUTPUT_PROJECTIONS if hasattr(module, n)), None)
    source = {"gpt2": "c_attn", "gpt_neox": "query_key_value"}.get(layout, "v_proj")
    values = getattr(module, source)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    width = None if output is None else _features(output, "in")
    value_width = _features(values, "out") // (1 if layout == "separate" else 3)
    if getattr(module, "is_cross_attention", False) or width is None or width % heads or heads % kv_heads:
        raise UserError(f"cannot patch momentum into {type(module).__name__}: no self-attention output projection")
    if value_width * (heads // kv_heads) != width:
        raise UserError(
            f"cannot patch momentum into {type(module).__name__}: {value_width} value features do not map onto "
            f"{heads} heads of {width // heads} features"
        )
    return _Layer(eta, layout, heads, kv_heads), values, output


def patch_momentum(model: nn.Module, eta: float) -> MomentumPatch:
    """Add sum_{i<t} eta^(t-i) v_i to every attention layer's output before its output projection, per head.

    eta in [0, 1); eta = 0 leaves every output exactly unchanged. Returns a handle whose `remove()` (or the end of
    its `with` block) takes the patch off. A deep copy of a patched model (a finetuned copy) is patched too."""
    eta = check_eta(eta)
    if momentum_of(model) is not None:
        raise UserError("this model already carries a momentum patch: remove it before patching again")
    config = model.config
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED:
        raise UserError(
            f"momentum attention is not supported for model type '{model_type}': iclab patches "
            f"{', '.join(SUPPORTED)} models"
        )
    parts = [_layer(m, eta, config) for m in attention_modules(model)]
    if not parts:
        raise UserError(f"no attention layers found in {type(model).__name__} to patch with momentum")
    layers = [layer for layer, _, _ in parts]
    state = Momentum(eta, layers, list(inspect.signature(model.forward).parameters))
    handles = [model.register_forward_pre_hook(state._start, with_kwargs=True)]
    handles.append(model.register_forward_hook(state._finish, with_kwargs=True, always_call=True))
    for layer, values, output in parts:
        handles.append(values.register_forward_hook(layer.keep_values))
        handles.append(output.register_forward_pre_hook(layer.add_term))
    setattr(model, _ATTRIBUTE, state)
    return MomentumPatch(model, state, handles)
