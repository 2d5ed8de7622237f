"""iclab's own selective scan for Mamba, in plain PyTorch: chunked, with no Python loop over tokens.

Mamba's state space layer runs, for every channel d and state n, the scalar recurrence

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t,        y_t = C_t . h_t

(dt, B, C depend on the input; A < 0 does not). Transformers' CPU path (`MambaMixer` without the CUDA kernels)
loops over the tokens in Python, and its backward pass scatters every step's gradient into a full-size tensor.
Here, within a chunk of L tokens, the decays are cumulative sums S_t of dt_t A (log space), so

    h_t = exp(S_t) (h_start + sum_{s<=t} exp(-S_s) dt_s B_s x_s)

is two cumulative sums over the chunk; a short loop carries h from chunk to chunk. exp(-S_s) grows with the decay
inside a chunk, so the chunk is shortened until the largest possible decay in it stays below half the dtype's
exponent range (the result is then as accurate as the step-by-step recurrence): no overflow for any input. The
backward pass is written out: the same scan run backwards in time, keeping only the states h for it.

`fast_mamba(model)` makes every transformers `MambaMixer` (or Jamba's `JambaMambaMixer`) in a model use this scan
(the same weights, the same function; tests/test_mamba.py proves forward and gradients equal to the library's
modules).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHUNK = 64  # the longest chunk of `selective_scan` in the mixers (a prompt of up to 32 points is one chunk)


def _decay_limit(dtype: torch.dtype) -> float:
    """The largest total decay (-S) allowed inside a chunk: exp(limit) * a value must stay finite."""
    return math.log(torch.finfo(dtype).max) / 2  # 44 in float32, 354 in float64


def selective_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int = CHUNK) -> Tensor:
    """y_t = C_t . h_t with h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, h_0 = 0, for every channel, every token.

    x, dt: (batch, T, channels), dt > 0; A: (channels, state), A < 0; B, C: (batch, T, state). Returns y
    (batch, T, channels). `chunk` is the longest chunk; it is shortened where the decays need it."""
    length = x.shape[1]
    limit = _decay_limit(x.dtype)
    with torch.no_grad():  # the chunk length, from the largest one-step decay of this batch
        worst = float((dt * (-A).amax(-1)).amax()) if x.numel() else 0.0
    reset = not worst <= limit  # (or NaN)
    longest = 1 if reset else max(1, min(chunk, length, int(limit / max(worst, 1e-30))))
    size = -(-length // -(-length // longest))  # as few chunks as `longest` allows, of equal length: little padding
    pad = -length % size
    x, dt, B, C = (F.pad(t, (0, 0, 0, pad)) for t in (x, dt, B, C))  # padded steps: no decay, no input
    return _Scan.apply(x, dt, A, B, C, size, reset)[:, :length]


def _states(dt: Tensor, A: Tensor, inputs: Tensor, size: int, reset: bool) -> Tensor:
    """h_t = exp(dt_t A) h_{t-1} + inputs_t from h_0 = 0, (batch, T, channels, state), in chunks of `size` steps
    (T a multiple of it): within a chunk h_t = exp(S_t) (h_start + sum_{s<=t} exp(-S_s) inputs_s). Works in place
    in `inputs` (no grad: it runs inside _Scan), whose memory becomes h."""
    batch, length, channels, state = inputs.shape
    chunks = length // size
    if reset:  # one step decays beyond exp(-limit): the state is reset to working precision; chunks of 1
        S = (dt[..., None] * A).clamp_(min=-_decay_limit(inputs.dtype)).view(batch, chunks, 1, channels, state)
    else:  # S_t = A * (dt_1 + ... + dt_t) within a chunk: A is the same at every step
        S = dt.reshape(batch, chunks, size, channels).cumsum(2)[..., None] * A
    growth = S.exp_()  # exp(S_t) <= 1, and >= exp(-limit)
    h = inputs.view_as(growth).div_(growth).cumsum_(2)  # sum_{s<=t} exp(-S_s) inputs_s
    for c in range(1, chunks):  # carry the state from each chunk's end into the next chunk
        h[:, c] += (growth[:, c - 1, -1] * h[:, c - 1, -1])[:, None]
    return h.mul_(growth).view(batch, length, channels, state)


class _Scan(torch.autograd.Function):
    """The scan with its backward pass written out: the gradient of a linear recurrence is the same recurrence run
    backwards in time, so only the states h are kept (not the half-dozen state-sized tensors autograd would)."""

    @staticmethod
    def forward(ctx, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, size: int, reset: bool) -> Tensor:
        h = _states(dt, A, (dt * x)[..., None] * B[:, :, None, :], size, reset)
        ctx.save_for_backward(x, dt, A, B, C, h)
        ctx.size, ctx.reset = size, reset
        return (h @ C[..., None]).squeeze(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor):
        x, dt, A, B, C, h = ctx.saved_tensors
        # dL/dh_t = C_t gy_t + exp(dt_{t+1} A) dL/dh_{t+1}: the recurrence reversed, its decays one step later
        later = F.pad(dt[:, 1:], (0, 0, 0, 1)).flip(1)
        gh = _states(later, A, gy.flip(1)[..., None] * C.flip(1)[:, :, None, :], ctx.size, ctx.reset).flip(1)
        dtx = dt * x
        g_dtx = (gh @ B[..., None]).squeeze(-1)
        gB = (dtx[:, :, None, :] @ gh).squeeze(2)
        gC = (gy[:, :, None, :] @ h).squeeze(2)
        # dL/d(dt_t A) = dL/dh_t * exp(dt_t A) h_{t-1}, and exp(dt_t A) h_{t-1} = h_t - dt_t B_t x_t (where a decay
        # was clamped, this is exp(-limit) h_{t-1}: zero to working precision, as the clamp's own gradient)
        g_log = torch.sub(h, dtx[..., None] * B[:, :, None, :]).mul_(gh)
        gA = (g_log * dt[..., None]).sum((0, 1))
        gdt = g_log.mul_(A).sum(-1) + g_dtx * x
        return (g_dtx * dt).to(x.dtype), gdt.to(dt.dtype), gA.to(A.dtype), gB.to(B.dtype), gC.to(C.dtype), None, None


def mamba_mixer_forward(self: nn.Module, hidden_states: Tensor, cache=None, attention_mask=None, **kwargs) -> Tensor:
    """transformers' MambaMixer.forward (or JambaMambaMixer's) for a whole sequence with no cache or padding mask,
    on `selective_scan` (generation with a cache, or padded batches, go to the library's own forward). A, D and
    dt's bias are taken in float32, as the library does (so a float64 model computes the library's function)."""
    if cache is not None or attention_mask is not None or kwargs.get("cache_params") is not None:
        return type(self).forward(self, hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)
    length = hidden_states.shape[1]
    x, gate = self.in_proj(hidden_states).chunk(2, dim=-1)
    x = self.act(self.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)  # causal depthwise convolution
    dt, B, C = self.x_proj(x).split([self.time_step_rank, self.ssm_state_size, self.ssm_state_size], dim=-1)
    if hasattr(self, "dt_layernorm"):  # Jamba's mixer (JambaMambaMixer): RMSNorms on the time step, B and C
        dt, B, C = self.dt_layernorm(dt), self.b_layernorm(B), self.c_layernorm(C)
    dt = F.softplus(F.linear(dt, self.dt_proj.weight) + self.dt_proj.bias.float())
    y = selective_scan(x, dt, -torch.exp(self.A_log.float()), B, C, chunk=CHUNK) + x * self.D.float()
    return self.out_proj(y * F.silu(gate))


def fast_mamba(model: nn.Module) -> int:
    """Make every transformers MambaMixer (and Jamba's JambaMambaMixer) inside `model` run `selective_scan` (in
    place; the weights and the function stay the same). Returns how many mixers it switched."""
    from transformers.models.jamba.modeling_jamba import JambaMambaMixer
    from transformers.models.mamba.modeling_mamba import MambaMixer

    mixers = [m for m in model.modules() if isinstance(m, (MambaMixer, JambaMambaMixer))]
    for mixer in mixers:  # a partial, not a bound method, so that the model still pickles
        mixer.forward = functools.partial(mamba_mixer_forward, mixer)
    return len(mixers)
