"""iclab's own WKV kernel for RWKV-4 (iclab.models.wkv): equal in float64 to the recurrence as transformers'
CPU loop defines it (forward and gradients) at every chunking, equal to the library's own loop in float32 (the
kernel, and the whole model with the same weights, outputs and gradients), exact at large decays and keys; `scan`
chooses it in the rwkv family."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from transformers.models.rwkv import modeling_rwkv  # noqa: E402

from iclab.errors import UserError  # noqa: E402
from iclab.models import ModelConfig  # noqa: E402
from iclab.models import wkv as wkv_module  # noqa: E402
from iclab.models.wkv import fast_rwkv, wkv  # noqa: E402

F64 = torch.float64


def recurrence(time_decay, time_first, key, value):
    """The reference: transformers' rwkv_linear_attention_cpu line by line, without its float32 casts (keys and
    state stay in the inputs' dtype). State: numerator, denominator and their log-scale (running maximum)."""
    output = torch.zeros_like(key)
    num_state = torch.zeros_like(key[:, 0])
    den_state = torch.zeros_like(key[:, 0])
    max_state = torch.zeros_like(key[:, 0]) - 1e38
    time_decay = -torch.exp(time_decay)
    for t in range(key.shape[1]):
        current_key, current_value = key[:, t], value[:, t]
        max_for_output = torch.maximum(max_state, current_key + time_first)
        e1 = torch.exp(max_state - max_for_output)
        e2 = torch.exp(current_key + time_first - max_for_output)
        output[:, t] = (e1 * num_state + e2 * current_value) / (e1 * den_state + e2)
        max_for_state = torch.maximum(max_state + time_decay, current_key)
        e1 = torch.exp(max_state + time_decay - max_for_state)
        e2 = torch.exp(current_key - max_for_state)
        num_state = e1 * num_state + e2 * current_value
        den_state = e1 * den_state + e2
        max_state = max_for_state
    return output


def inputs(length, decay=2.0, keys=3.0, dtype=F64, seed=0, channels=6):
    """time_decay, time_first, key, value: decays exp(time_decay) from about exp(-2 decay) to exp(2 decay)."""
    g = torch.Generator().manual_seed(seed)
    time_decay = torch.linspace(-decay, decay, channels, dtype=dtype) + 0.1 * torch.randn(channels, generator=g)
    time_first = torch.randn(channels, generator=g, dtype=dtype)
    key = torch.randn(3, length, channels, generator=g, dtype=dtype) * keys
    value = torch.randn(3, length, channels, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (time_decay, time_first, key, value)]


def grads(y, tensors, seed=1):
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return torch.autograd.grad((y * weight).sum(), tensors, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("length, chunk", [(13, 4), (16, 4), (13, 1), (13, 32), (82, 32), (1, 32), (2, 32)])
def test_wkv_is_the_recurrence_in_float64(length, chunk):
    """Lengths that are and are not multiples of the chunk (and powers of two), chunks of one token and one chunk
    for all; forward and the gradients of all four inputs."""
    args = inputs(length)
    ours, reference = wkv(*args, chunk=chunk), recurrence(*args)
    assert reference.abs().max() > 1
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    expected = grads(reference, args)
    assert max(r.abs().max() for r in expected) > 0.1
    for g, r in zip(grads(ours, args), expected, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-10)


@pytest.mark.parametrize("length", [16, 22, 41, 82])
@pytest.mark.parametrize("decay, keys", [(2.0, 3.0), (8.0, 3.0), (4.0, 8.0), (4.0, 60.0)])
def test_wkv_equals_the_library_loop_in_float32(length, decay, keys):
    """Against transformers' own CPU function at float32 tolerance: decays exp(-exp(8)) (every term older than a
    token underflows) to exp(-exp(-8)) (no decay), and keys of 8 and 60 x N(0, 1) (beyond float32's range in one
    chunk: the chunks shorten, at 60 to one token)."""
    args = inputs(length, decay=decay, keys=keys, dtype=torch.float32)
    ours = wkv(*args)
    theirs, _ = modeling_rwkv.rwkv_linear_attention_cpu(*args)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    reference = recurrence(*(t.detach().double() for t in args))
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads(ours, args), grads(theirs, args), strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


def test_a_bonus_beyond_the_kernels_range_goes_to_the_library_loop():
    args = inputs(9, dtype=torch.float32)
    with torch.no_grad():
        args[1][0] = 60.0  # exp(60 + key): beyond float32's range for one common scale
    theirs, _ = modeling_rwkv.rwkv_linear_attention_cpu(*args)
    torch.testing.assert_close(wkv(*args), theirs, rtol=0, atol=0)


def rwkv_pair(points, dtype, width=16):
    """The library's RWKV (scan: hf) and the same weights on iclab's kernel, every weight redrawn at scale so that
    the WKV mixing, not the residual stream, carries the output."""
    torch.manual_seed(0)
    hf = ModelConfig.from_spec({"name": "rwkv", "layers": 2, "width": width, "scan": "hf"}).build(3, points).to(dtype)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("time_decay"):
                p.copy_(torch.linspace(-3, 3, p.numel()))
            elif "ln" not in name:  # every weight but the LayerNorms
                p.copy_(torch.randn_like(p) * (1.0 if name.endswith("time_first") else 0.3))
    own = copy.deepcopy(hf)
    assert fast_rwkv(own) == 2 and fast_rwkv(torch.nn.Linear(2, 2)) == 0
    return hf, own


def prompts(points, dtype):
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(4, points, 3, generator=g, dtype=dtype).requires_grad_()
    return xs, torch.randn(4, points, generator=g, dtype=dtype)


@pytest.mark.parametrize("points", [8, 11, 41])  # 16, 22 and 82 tokens (82: three chunks)
def test_own_kernel_equals_the_library_module_in_float32(points):
    hf, own = rwkv_pair(points, torch.float32)
    xs, ys = prompts(points, torch.float32)
    a, b = hf(xs, ys), own(xs, ys)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for p, q in zip(grads(a, [xs, *hf.parameters()]), grads(b, [xs, *own.parameters()]), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-4 * max(1.0, float(p.abs().max())))
    # the kernel matters: without the time mixing's history (decay exp(-exp(30)): none) the output moves
    with torch.no_grad():
        for block in own.backbone.blocks:
            block.attention.time_decay.fill_(30.0)
    assert (own(xs, ys) - a).abs().max() > 1e-2


@pytest.mark.parametrize("points", [8, 41])
def test_own_kernel_is_the_float64_recurrence_in_the_model(monkeypatch, points):
    """The whole model in float64, outputs and gradients: iclab's kernel against the same model running the
    reference recurrence (float64 throughout; the library's own loop rounds keys to float32)."""
    _, own = rwkv_pair(points, F64)
    xs, ys = prompts(points, F64)
    b = own(xs, ys)
    ours = grads(b, [xs, *own.parameters()])
    monkeypatch.setattr(wkv_module, "wkv", lambda decay, first, key, value, chunk: recurrence(decay, first, key, value))
    a = own(xs, ys)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    for p, q in zip(grads(a, [xs, *own.parameters()]), ours, strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-10)


def test_generation_with_a_state_goes_to_the_library():
    hf, own = rwkv_pair(5, F64)
    layer, theirs = own.backbone.blocks[0].attention, hf.backbone.blocks[0].attention
    h = torch.randn(2, 6, 16, dtype=F64)
    state = [torch.zeros(2, 16, 2, dtype=F64) for _ in range(5)]
    state[4] -= 1e30  # an empty state, as RwkvModel makes it
    out, new = layer(h, state=copy.deepcopy(state), use_cache=True)
    expected, expected_new = theirs(h, state=copy.deepcopy(state), use_cache=True)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for s, e in zip(new, expected_new, strict=True):
        torch.testing.assert_close(s, e, rtol=0, atol=0)


def test_scan_chooses_the_kernel_and_refuses_other_values():
    own = ModelConfig.from_spec({"name": "rwkv", "layers": 2, "width": 16}).build(3, 5)
    hf = ModelConfig.from_spec({"name": "rwkv", "layers": 2, "width": 16, "scan": "hf"}).build(3, 5)
    assert all("forward" in vars(b.attention) for b in own.backbone.blocks)
    assert not any("forward" in vars(b.attention) for b in hf.backbone.blocks)
    with pytest.raises(UserError) as error:
        ModelConfig.from_spec({"name": "rwkv", "scan": "fast"})
    assert "model.scan" in str(error.value) and "\n" not in str(error.value)


def test_a_model_on_the_own_kernel_copies_and_pickles_with_its_own_weights():
    """The switched forward is bound to its layer in a way that copies and pickles (torch.save of a whole module,
    e.g. inside a pickled scikit-learn estimator), each copy on its own weights."""
    import io

    _, own = rwkv_pair(5, F64)
    xs, ys = prompts(5, F64)
    buffer = io.BytesIO()
    torch.save(own, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(own), torch.load(buffer, weights_only=False)):
        attention = twin.backbone.blocks[0].attention
        assert attention.forward.args[0] is attention  # bound to the copy, not to the original
        with torch.no_grad():
            assert torch.allclose(twin(xs, ys), own(xs, ys))
            attention.time_first.add_(1.0)
            assert not torch.allclose(twin(xs, ys), own(xs, ys))
