"""Mamba and Mamba-2 from transformers, and iclab's own selective scan: equal to the library's Mamba mixer (forward
and gradients, float64), to the step-by-step recurrence at every chunking, finite at any decay; the keys' mapping
onto the library's configs; one-line errors for bad keys."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformers")

from iclab.errors import UserError  # noqa: E402
from iclab.models import ModelConfig  # noqa: E402
from iclab.models import scan as scan_module  # noqa: E402
from iclab.models.hf import NO_TOKENS  # noqa: E402
from iclab.models.mamba import Mamba2Config, MambaConfig  # noqa: E402
from iclab.models.scan import fast_mamba, mamba_mixer_forward, selective_scan  # noqa: E402

F64 = torch.float64


def recurrence(x, dt, A, B, C):
    """The definition, one token at a time: h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t, y_t = C_t . h_t."""
    h = torch.zeros(x.shape[0], *A.shape, dtype=x.dtype)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1)


def scan_inputs(length, dt_scale=1.0, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, d, n = 3, 5, 4
    x = torch.randn(b, length, d, generator=g, dtype=dtype)
    dt = torch.rand(b, length, d, generator=g, dtype=dtype) * dt_scale
    A = -torch.rand(d, n, generator=g, dtype=dtype) * 3 - 0.1
    B, C = (torch.randn(b, length, n, generator=g, dtype=dtype) for _ in range(2))
    return [t.requires_grad_() for t in (x, dt, A, B, C)]


def grads(y, inputs, seed=1):
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return torch.autograd.grad((y * weight).sum(), inputs)


@pytest.mark.parametrize("length, chunk", [(13, 4), (12, 4), (13, 1), (13, 64), (1, 4)])
def test_the_scan_is_the_recurrence_at_every_chunking(length, chunk):
    """Lengths that are and are not multiples of the chunk, chunks of one token and one chunk for all."""
    inputs = scan_inputs(length)
    ours, reference = selective_scan(*inputs, chunk=chunk), recurrence(*inputs)
    assert reference.abs().max() > 1
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    for g, r in zip(grads(ours, inputs), grads(reference, inputs), strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dt_scale", [5.0, 20.0, 2000.0])
def test_large_decays_stay_finite_and_exact_in_float32(dt_scale):
    """Decays beyond float32's exponent range (exp(-S) would overflow in one chunk of 40): the chunks shorten
    (dt_scale 5: chunks of 2-3 steps), and past one step's range (20, 2000) the state resets, as the recurrence's
    does to working precision."""
    inputs = scan_inputs(40, dt_scale=dt_scale, dtype=torch.float32)
    ours = selective_scan(*inputs)
    reference = recurrence(*(t.detach().double() for t in inputs))
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)
    assert all(torch.isfinite(g).all() for g in grads(ours, inputs))


def mamba_pair(width=16, points=7, dims=3):
    """The library's Mamba (scan: hf) and the same weights on iclab's scan, float64, every weight redrawn at
    scale so that the selective scan, not the skip connection, carries the output."""
    torch.manual_seed(0)
    hf = MambaConfig(layers=2, width=width, scan="hf").build(dims, points).double()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if name.endswith("A_log") else 0.3))
    own = copy.deepcopy(hf)
    assert fast_mamba(own) == 2 and fast_mamba(torch.nn.Linear(2, 2)) == 0
    return hf, own


@pytest.mark.parametrize("chunk", [64, 4])  # one chunk; 14 tokens in chunks of 4 (not a multiple)
def test_own_scan_equals_the_library_module(monkeypatch, chunk):
    monkeypatch.setattr(scan_module, "CHUNK", chunk)
    hf, own = mamba_pair()
    xs = torch.randn(4, 7, 3, dtype=F64, requires_grad=True)
    ys = torch.randn(4, 7, dtype=F64)
    a, b = hf(xs, ys), own(xs, ys)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    assert (a - b).abs().max() < 1e-6  # to float32 rounding: the library's scan rounds B and x to float32
    for p, q in zip(grads(a, [xs, *hf.parameters()]), grads(b, [xs, *own.parameters()]), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5)
    # the scan matters: without it (dt = 0: no state) the output moves 1,000 times the tolerance
    with torch.no_grad():
        for layer in own.backbone.layers:
            layer.mixer.dt_proj.bias.fill_(-1e4)
    assert (own(xs, ys) - a).abs().max() > 1e-2


def test_a_mixer_with_a_padding_mask_falls_back_to_the_library():
    hf, own = mamba_pair()
    mixer, theirs = own.backbone.layers[0].mixer, hf.backbone.layers[0].mixer
    h = torch.randn(2, 6, 16, dtype=F64)
    mask = torch.ones(2, 6, dtype=torch.long)
    torch.testing.assert_close(mixer(h, attention_mask=mask), theirs(h, attention_mask=mask), rtol=0, atol=0)
    # the library rounds B and x to float32 inside its scan (iclab's scan keeps float64)
    torch.testing.assert_close(mamba_mixer_forward(theirs, h), theirs(h), rtol=0, atol=1e-6)


def test_mamba_keys_map_onto_the_library_config():
    config = MambaConfig(layers=3, width=24, state_size=8, expand=3, conv_kernel=2)
    hf = config.hf_config(max_points=11)
    assert (hf.num_hidden_layers, hf.hidden_size, hf.state_size, hf.expand, hf.conv_kernel) == (3, 24, 8, 3, 2)
    assert hf.intermediate_size == 72 and hf.time_step_rank == 2 and not hf.residual_in_fp32
    model = config.build(dims=4, max_points=11)
    mixer = model.backbone.layers[0].mixer
    assert len(model.backbone.layers) == 3 and mixer.A_log.shape == (72, 8) and mixer.conv1d.kernel_size == (2,)
    assert model.backbone.get_input_embeddings() is None
    assert mixer.forward.func is mamba_mixer_forward  # scan: own is the default
    assert "forward" not in vars(MambaConfig(scan="hf").build(4, 11).backbone.layers[0].mixer)


def test_mamba2_keys_map_onto_the_library_config():
    config = Mamba2Config(layers=2, width=16, heads=4, state_size=8, expand=2, conv_kernel=3)
    hf = config.hf_config(max_points=11)
    assert (hf.num_hidden_layers, hf.hidden_size, hf.num_heads, hf.head_dim) == (2, 16, 4, 8)
    assert (hf.state_size, hf.expand, hf.conv_kernel, hf.n_groups, hf.chunk_size) == (8, 2, 3, 1, 22)
    mixer = config.build(dims=4, max_points=11).backbone.layers[0].mixer
    assert mixer.A_log.shape == (4,) and mixer.conv1d.kernel_size == (3,)


def test_mamba2_chunk_size_is_speed_only():
    """The mapping's chunk_size (one chunk per prompt) computes what the library's default 256 does."""
    torch.manual_seed(0)
    model = Mamba2Config(layers=2, width=16).build(3, 7).double()
    xs, ys = torch.randn(2, 9, 3, dtype=F64), torch.randn(2, 9, dtype=F64)  # longer than max_points: two chunks
    ours = model(xs, ys)
    for layer in model.backbone.layers:
        layer.mixer.chunk_size = 256
    torch.testing.assert_close(model(xs, ys), ours, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"name": "mamba2", "width": 10, "heads": 3}, "model.width"),
        ({"name": "mamba", "scan": "cuda"}, "model.scan"),
        ({"name": "mamba", "heads": 2}, "model.heads"),
        ({"name": "mamba", "state_size": 0}, "model.state_size"),
    ],
)
def test_bad_keys_are_one_line_errors(spec, key):
    with pytest.raises(UserError) as error:
        ModelConfig.from_spec(spec)
    assert key in str(error.value) and "\n" not in str(error.value)


def test_fast_mamba_switches_jambas_mixers_too():
    """Jamba's mixer is Mamba's with RMSNorms on dt, B and C: the same forward and gradients on iclab's scan."""
    from transformers import JambaConfig, JambaModel

    torch.manual_seed(0)
    config = JambaConfig(
        num_hidden_layers=2, hidden_size=16, num_attention_heads=2, num_key_value_heads=2, intermediate_size=32,
        attn_layer_period=2, attn_layer_offset=1, num_experts=1, use_cache=False, **NO_TOKENS,
    )
    hf = JambaModel(config).double()
    hf.set_input_embeddings(None)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    own = copy.deepcopy(hf)
    assert fast_mamba(own) == 1
    h = torch.randn(2, 9, 16, dtype=F64, requires_grad=True)
    a, b = (m(inputs_embeds=h).last_hidden_state for m in (hf, own))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    for p, q in zip(grads(a, [h, *hf.parameters()]), grads(b, [h, *own.parameters()]), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5)


def test_a_model_on_the_own_scan_copies_and_pickles_with_its_own_weights():
    import io

    _, own = mamba_pair()
    xs, ys = torch.randn(2, 5, 3, dtype=F64), torch.randn(2, 5, dtype=F64)
    buffer = io.BytesIO()
    torch.save(own, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(own), torch.load(buffer, weights_only=False)):
        mixer = twin.backbone.layers[0].mixer
        assert mixer.forward.args[0] is mixer  # bound to the copy, not to the original
        with torch.no_grad():
            mixer.D.add_(1.0)
        assert not torch.allclose(twin(xs, ys), own(xs, ys))
