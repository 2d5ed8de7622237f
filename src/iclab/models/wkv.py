"""iclab's own WKV kernel for RWKV-4, in plain PyTorch: chunked matrix products, no Python loop over tokens.

RWKV-4's time mixing computes, for every channel, with w = exp(time_decay) (the state decays by exp(-w) a token)
and u = time_first (the current token's bonus),

    wkv_t = (sum_{s<t} exp(k_s - (t-1-s) w) v_s + exp(u + k_t) v_t) / (sum_{s<t} exp(k_s - (t-1-s) w) + exp(u + k_t))

Transformers' CPU path (`rwkv_linear_attention_cpu`) runs it as a Python loop over the tokens with a running
maximum for stability, and rounds the keys to float32. Here the decay is the same at every token, so within a
chunk of L tokens both sums are one product of a fixed (L x L) matrix per channel, exp(-(t-1-s) w) below the
diagonal and exp(u) on it, with exp(k_s - K) (v_s, 1), K the chunk's largest key. A short loop carries the state
(its log-scale and both sums, as the library's) from chunk to chunk, and each token combines it with its chunk's
sums at their common largest log-weight. Every weight that matters then stays far from underflow: a chunk whose
keys spread more than half the dtype's exponent range (44 in float32) is halved until they do not (chunks of one
token are the library's loop), decays that underflow are negligible next to the previous token's weight, and a
bonus |u| beyond a quarter of the range (never at sane weights) goes to the library's loop. Exact in the inputs'
dtype (at least float32) at any decay.

`fast_rwkv(model)` makes every transformers `RwkvSelfAttention` in a model use this kernel (the same weights,
the same function; tests/test_wkv.py proves it equal to the recurrence and to the library's module).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHUNK = 32  # the longest chunk of tokens (prompts of up to 16 points are one chunk); the fastest in the measurements


def _limit(dtype: torch.dtype) -> float:
    """The largest |time_first|; twice it, the largest spread of the keys within a chunk: every weight that matters
    is then at least exp(-3 limit), far from underflow (exp(-87) in float32)."""
    return math.log(torch.finfo(dtype).max) / 4  # 22 in float32, 177 in float64


def _chunk_size(k: Tensor, chunk: int, limit: float) -> int:
    """The longest chunk length up to `chunk` (chunks of equal length) whose keys spread at most `limit` within
    every chunk; k: (channels, T, batch)."""
    length = k.shape[1]
    size = max(1, min(chunk, length))
    while size > 1:
        size = -(-length // -(-length // size))  # as few chunks as `size` allows, of equal length: little padding
        chunks = F.pad(k, (0, 0, 0, -length % size), mode="replicate").unflatten(1, (-1, size))
        if float((chunks.amax(2) - chunks.amin(2)).amax()) <= limit:
            break
        size //= 2
    return size


def wkv(time_decay: Tensor, time_first: Tensor, key: Tensor, value: Tensor, chunk: int = CHUNK) -> Tensor:
    """RWKV-4's WKV of every token from an empty state. time_decay, time_first: (channels,); key, value:
    (batch, T, channels). Returns (batch, T, channels) in key's dtype, computed in float32 or wider."""
    batch, length, channels = key.shape
    dtype = torch.promote_types(torch.promote_types(key.dtype, time_decay.dtype), torch.float32)
    limit = _limit(dtype)
    if not float(time_first.detach().abs().max()) <= limit:
        from transformers.models.rwkv.modeling_rwkv import rwkv_linear_attention_cpu

        return rwkv_linear_attention_cpu(time_decay, time_first, key, value)[0]
    k, v = (t.to(dtype).permute(2, 1, 0) for t in (key, value))  # (channels, T, batch)
    with torch.no_grad():
        size = _chunk_size(k, chunk, 2 * limit)
    chunks = -(-length // size)
    pad = chunks * size - length  # padded tokens come last: they change no real token's output (causality)
    k, v = F.pad(k, (0, 0, 0, pad), mode="replicate"), F.pad(v, (0, 0, 0, pad))
    k, v = (t.reshape(channels, chunks, size, batch).transpose(1, 2) for t in (k, v))  # (channels, L, chunks, batch)
    w, u = torch.exp(time_decay.to(dtype)), time_first.to(dtype)
    scale = k.amax(1, keepdim=True).detach()  # K: the stabiliser (any value gives the same result)
    e = torch.exp(k - scale)
    gap = (torch.arange(size + 1, device=key.device)[:, None] - 1 - torch.arange(size, device=key.device)).to(dtype)
    decay = torch.exp(-gap.clamp(min=0) * w[:, None, None]).masked_fill(gap < 0, 0)  # gap = t - 1 - s
    weights = torch.where(gap == -1, torch.exp(u)[:, None, None], decay)  # (channels, L + 1, L); row L: the end
    sums = weights @ torch.stack((e * v, e), dim=2).view(channels, size, -1)
    sums = sums.view(channels, size + 1, 2, chunks, batch)  # both sums at every token and after the chunk
    num, den = sums[:, :size, 0], sums[:, :size, 1]
    if chunks > 1:  # the state before each chunk: log-scale m, sums (num, den), as the library's loop carries it
        m, state = torch.full_like(scale[:, 0, 0], -torch.inf), torch.zeros_like(sums[:, 0, :, 0])
        ms, states = [], []
        for c in range(chunks):
            ms.append(m)
            states.append(state)
            end, top = sums[:, size, :, c], scale[:, 0, c]
            with torch.no_grad():
                new = torch.maximum(m - size * w[:, None], top + torch.log(end[:, 1]))
            state = torch.exp(m - size * w[:, None] - new)[:, None] * state + torch.exp(top - new)[:, None] * end
            m = new
        steps = torch.arange(size, device=key.device).to(dtype)
        carried = torch.stack(ms, 1)[:, None] - (steps * w[:, None])[..., None, None]  # log-scale at each token
        state = torch.stack(states, 2)
        with torch.no_grad():
            top = torch.maximum(scale + torch.log(den), carried)
        inner, outer = torch.exp(scale - top), torch.exp(carried - top)
        num, den = inner * num + outer * state[:, None, 0], inner * den + outer * state[:, None, 1]
    out = (num / den).transpose(1, 2).reshape(channels, chunks * size, batch)[:, :length]
    return out.permute(2, 1, 0).to(key.dtype)


def rwkv_attention_forward(self: nn.Module, hidden: Tensor, state=None, use_cache: bool = False):
    """transformers' RwkvSelfAttention.forward for a whole sequence from an empty state, on `wkv` (generation
    with a state goes to the library's own forward)."""
    if state is not None or use_cache:
        return type(self).forward(self, hidden, state=state, use_cache=use_cache)
    receptance, key, value, _ = self.extract_key_value(hidden)
    with torch.autocast(hidden.device.type, enabled=False):  # bf16 autocast: the kernel computes in float32
        rwkv = wkv(self.time_decay, self.time_first, key, value, chunk=CHUNK)
    return self.output(receptance * rwkv), None


def fast_rwkv(model: nn.Module) -> int:
    """Make every transformers RwkvSelfAttention inside `model` run `wkv` (in place; the weights and the function
    stay the same). Returns how many it switched."""
    from transformers.models.rwkv.modeling_rwkv import RwkvSelfAttention

    layers = [m for m in model.modules() if isinstance(m, RwkvSelfAttention)]
    for layer in layers:
        layer.forward = functools.partial(rwkv_attention_forward, layer)  # unlike a bound method, pickles
    return len(layers)
