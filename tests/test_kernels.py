"""Every efficient kernel against its naive reference: outputs and gradients (inputs and
parameters), random shapes (T not a multiple of any block), random padding, both directions."""

from __future__ import annotations

import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_attn_variants import hfav_kernels as K
from hf_attn_variants import hfav_kernels_additive as kernels_additive
from hf_attn_variants import hfav_kernels_lstmn as kernels_lstmn
from hf_attn_variants.hfav_attention import LSTMNCell


def make_key_mask(batch: int, length: int, padding: str | None, g: torch.Generator) -> torch.Tensor | None:
    if padding is None:
        return None
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    pos = torch.arange(length)
    if padding == "right":
        return pos[None] < lengths[:, None]
    return pos[None] >= (length - lengths)[:, None]


def qkv(batch, heads, length, dqk, dv, g, dtype=torch.float64):
    make = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_()
    return make(batch, heads, length, dqk), make(batch, heads, length, dqk), make(batch, heads, length, dv)


def assert_same_with_grads(fast_out, ref_out, tensors, g, atol=1e-8):
    """Outputs agree, and so do the gradients of a random projection of them w.r.t. every input."""
    torch.testing.assert_close(fast_out, ref_out, atol=atol, rtol=1e-6)
    probe = torch.randn(fast_out.shape, generator=g, dtype=fast_out.dtype)
    fast_grads = torch.autograd.grad((fast_out * probe).sum(), tensors)
    ref_grads = torch.autograd.grad((ref_out * probe).sum(), tensors)
    for fast_g, ref_g in zip(fast_grads, ref_grads):
        torch.testing.assert_close(fast_g, ref_g, atol=atol, rtol=1e-6)


# ----------------------------------------------------------------------------- mask rule


def test_allowed_mask_band_conventions():
    causal = K.allowed_mask(6, 6, causal=True, window=2)[0, 0]
    bidir = K.allowed_mask(6, 6, causal=False, window=2)[0, 0]
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    assert torch.equal(causal, (i - j >= 0) & (i - j <= 2))
    assert torch.equal(bidir, (i - j).abs() <= 2)
    # a decoding query (Tq = 1) sits at the last key position
    assert torch.equal(K.allowed_mask(1, 6, causal=True, window=2)[0, 0, 0], torch.tensor([0, 0, 0, 1, 1, 1]).bool())


def test_allowed_mask_padding_keeps_self():
    key_mask = torch.tensor([[False, False, True, True]])
    allowed = K.allowed_mask(4, 4, causal=True, key_mask=key_mask)[0, 0]
    assert allowed[0].tolist() == [True, False, False, False]  # a pad query still reads itself
    assert allowed[3].tolist() == [False, False, True, True]  # real queries never read pads


# ----------------------------------------------------------------------------- dense, low rank


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left"])
def test_dense_and_low_rank_match_reference(seed, causal, padding):
    g = torch.Generator().manual_seed(seed)
    b, h, t = int(torch.randint(1, 4, (1,), generator=g)), 2, int(torch.randint(1, 40, (1,), generator=g))
    key_mask = make_key_mask(b, t, padding, g)
    q, k, v = qkv(b, h, t, 8, 8, g)
    kw = dict(causal=causal, key_mask=key_mask)
    assert_same_with_grads(K.dense_attention(q, k, v, scale=0.3, **kw),
                           K.dense_attention_reference(q, k, v, scale=0.3, **kw)[0], (q, k, v), g)
    ql, kl, _ = qkv(b, h, t, 3, 8, g)
    assert_same_with_grads(K.low_rank_attention(ql, kl, v, **kw),
                           K.low_rank_attention_reference(ql, kl, v, **kw)[0], (ql, kl, v), g)


def test_low_rank_has_rank_at_most_r():
    g = torch.Generator().manual_seed(0)
    q, k, v = qkv(1, 2, 30, 3, 8, g)
    _, _, scores = K.low_rank_attention_reference(q, k, v, causal=False)
    assert torch.linalg.matrix_rank(scores[0, 0]).item() <= 3


def test_decoding_queries_match_the_last_rows():
    g = torch.Generator().manual_seed(1)
    q, k, v = qkv(2, 2, 12, 8, 8, g)
    full = K.dense_attention(q, k, v, scale=0.35, causal=True, window=3)
    last = K.dense_attention(q[:, :, -2:], k, v, scale=0.35, causal=True, window=3)
    torch.testing.assert_close(last, full[:, :, -2:])


# ----------------------------------------------------------------------------- band


def check_band(b, h, t, d, window, causal, padding, block, seed):
    g = torch.Generator().manual_seed(seed)
    key_mask = make_key_mask(b, t, padding, g)
    q, k, v = qkv(b, h, t, d, d, g)
    kw = dict(window=window, scale=d**-0.5, causal=causal, key_mask=key_mask)
    fast = K.band_attention(q, k, v, block_size=block, **kw)
    ref = K.band_attention_reference(q, k, v, **kw)[0]
    assert torch.isfinite(fast).all()
    assert_same_with_grads(fast, ref, (q, k, v), g)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize(("t", "window", "block"), [
    (16, 3, 16), (17, 3, 16), (31, 0, 16), (33, 15, 16), (48, 16, 16), (47, 17, 8), (5, 1, 16), (64, 62, 16),
])
def test_band_block_boundaries(t, window, block, causal, padding):
    check_band(2, 2, t, 4, window, causal, padding, block, seed=t * 100 + window)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), t=st.integers(1, 70), d=st.integers(1, 9),
       window=st.integers(0, 72), causal=st.booleans(), padding=st.sampled_from([None, "right", "left"]),
       block=st.sampled_from([None, 4, 7, 16]), seed=st.integers(0, 10_000))
def test_band_property(b, h, t, d, window, causal, padding, block, seed):
    check_band(b, h, t, d, window, causal, padding, block, seed)


def test_band_never_builds_the_full_matrix(monkeypatch):
    """The blocked kernel's SDPA calls see (b, b + 2w) score blocks, never T x T."""
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.shape[-2], k.shape[-2]))
        return real(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    q = k = v = torch.randn(1, 2, 512, 8)
    K.band_attention(q, k, v, window=8, scale=0.3, causal=False, block_size=16)
    assert seen == [(16, 32)]


def test_band_heavy_padding_is_finite():
    q = k = v = torch.randn(3, 2, 40, 4, requires_grad=True)
    key_mask = torch.zeros(3, 40, dtype=torch.bool)
    key_mask[:, 0] = True  # one real token per row
    for causal in (False, True):
        out = K.band_attention(q, k, v, window=2, scale=0.5, causal=causal, key_mask=key_mask, block_size=8)
        out.sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()


# ----------------------------------------------------------------------------- additive


def check_additive(b, h, t, a, dv, causal, padding, chunk, seed):
    g = torch.Generator().manual_seed(seed)
    key_mask = make_key_mask(b, t, padding, g)
    q, k, v = qkv(b, h, t, a, dv, g)
    w = torch.randn(h, a, generator=g, dtype=torch.float64).requires_grad_()
    kw = dict(causal=causal, key_mask=key_mask)
    fast = K.additive_attention(q, k, v, w, chunk_size=chunk, **kw)
    ref = K.additive_attention_reference(q, k, v, w, **kw)[0]
    assert_same_with_grads(fast, ref, (q, k, v, w), g)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize("chunk", [1, 5, None])
def test_additive_matches_reference(causal, padding, chunk):
    check_additive(2, 3, 13, 6, 4, causal, padding, chunk, seed=chunk or 0)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), t=st.integers(1, 30), a=st.integers(1, 8), dv=st.integers(1, 6),
       causal=st.booleans(), padding=st.sampled_from([None, "right", "left"]),
       chunk=st.sampled_from([None, 1, 3, 8]), seed=st.integers(0, 10_000))
def test_additive_property(b, h, t, a, dv, causal, padding, chunk, seed):
    check_additive(b, h, t, a, dv, causal, padding, chunk, seed)


def test_additive_does_not_store_the_tanh_tensor():
    """Under autograd the chunked kernel keeps O(T²) scores, not the O(T²·a) tanh tensor."""
    q, k = torch.randn(1, 2, 96, 32, requires_grad=True), torch.randn(1, 2, 96, 32, requires_grad=True)
    v, w = torch.randn(1, 2, 96, 8), torch.randn(2, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
        K.additive_attention(q, k, v, w, causal=False, chunk_size=16)
    assert max(saved) < 2 * 96 * 96 * 32 // 4  # the full tanh would be 2·96·96·32


# ----------------------------------------------------------------------------- LSTMN


def random_cell(d_in, d, seed):
    torch.manual_seed(seed)
    cell = LSTMNCell(d_in, d).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, 0.5)
    return cell


@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize("seed", range(3))
def test_lstmn_scan_matches_reference(padding, seed):
    g = torch.Generator().manual_seed(seed)
    b, t = 3, 9 + seed
    cell = random_cell(5, 4, seed)
    x = torch.randn(b, t, 5, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = make_key_mask(b, t, padding, g)
    fast, fast_attn = K.lstmn_scan(cell, x, key_mask, need_weights=True)
    ref, ref_attn = K.lstmn_reference(cell, x, key_mask)
    torch.testing.assert_close(fast_attn, ref_attn)
    assert_same_with_grads(fast, ref, (x, *cell.parameters()), g)


def test_lstmn_attention_rows_are_distributions_over_the_past():
    cell = random_cell(5, 4, 0)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    key_mask = torch.tensor([[True] * 7, [False, False] + [True] * 5])
    _, attn = K.lstmn_reference(cell, x, key_mask)  # (B, T, 1 + T): [zero slot, tokens]
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 7, dtype=torch.float64))
    assert (attn[:, :, 1:].triu() == 0).all()  # token t reads only tokens < t
    assert (attn[1, :, 1:3] == 0).all()  # pad slots are never read
    assert attn[0, 0, 0] == 1  # the first token reads only the zero slot


# ----------------------------------------------------------------------------- fast paths, tile boundaries


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize(("t", "tile_q", "tile_k", "window"), [
    (16, 4, 8, None), (17, 4, 8, None), (15, 16, 16, None), (23, 5, 7, 3), (32, 8, 4, 8), (9, 1, 1, 0),
])
def test_additive_tile_boundaries(t, tile_q, tile_k, window, causal, padding):
    g = torch.Generator().manual_seed(t * 7 + tile_q)
    key_mask = make_key_mask(2, t, padding, g)
    q, k, v = qkv(2, 2, t, 5, 3, g)
    w = torch.randn(2, 5, generator=g, dtype=torch.float64).requires_grad_()
    kw = dict(causal=causal, key_mask=key_mask, window=window)
    fast = K.additive_attention(q, k, v, w, chunk_size=tile_q, tile_k=tile_k, **kw)
    assert_same_with_grads(fast, K.additive_attention_reference(q, k, v, w, **kw)[0], (q, k, v, w), g)


@pytest.mark.parametrize("causal", [False, True])
def test_additive_tanh_path_and_decoding(causal, monkeypatch):
    """Large |q|, |k| (or a zero bound) take the plain tanh tiles; Tq < Tk reads the last rows."""
    g = torch.Generator().manual_seed(3)
    q, k, v = qkv(2, 2, 19, 4, 3, g)
    w = torch.randn(2, 4, generator=g, dtype=torch.float64).requires_grad_()
    with torch.no_grad():
        q[0, 0, 3] *= 40  # beyond EXP_TANH_BOUND: the exp path would overflow in fp32
    fast = K.additive_attention(q, k, v, w, causal=causal, chunk_size=4, tile_k=6)
    ref = K.additive_attention_reference(q, k, v, w, causal=causal)[0]
    assert_same_with_grads(fast, ref, (q, k, v, w), g)
    monkeypatch.setattr(kernels_additive, "EXP_TANH_BOUND", 0.0)
    last = K.additive_attention(q[:, :, -3:], k, v, w, causal=causal, chunk_size=2, tile_k=5)
    torch.testing.assert_close(last, ref[:, :, -3:])


def test_additive_exp_path_in_float32_is_accurate():
    g = torch.Generator().manual_seed(4)
    q, k, v = qkv(1, 2, 50, 16, 8, g, dtype=torch.float32)
    w = torch.randn(2, 16, generator=g)
    fast = K.additive_attention(q * 3, k * 3, v, w, causal=False, chunk_size=8, tile_k=16)
    ref = K.additive_attention_reference(q.double() * 3, k.double() * 3, v.double(), w.double(), causal=False)[0]
    torch.testing.assert_close(fast.double(), ref, atol=1e-5, rtol=1e-5)


def test_additive_dropout_is_redrawn_exactly_in_backward():
    """With dropout the tiled kernel's gradients are those of its own forward (same per-tile seeds)."""
    g = torch.Generator().manual_seed(5)
    q, k, v = qkv(1, 2, 11, 3, 2, g)
    w = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_()

    def f(q, k, v, w):
        torch.manual_seed(0)
        return K.additive_attention(q, k, v, w, causal=True, dropout_p=0.3, chunk_size=4, tile_k=3)

    assert torch.autograd.gradcheck(f, (q, k, v, w))
    torch.manual_seed(0)
    kept = K.additive_attention(q, k, v, w, causal=False, dropout_p=0.5)
    assert not torch.allclose(kept, K.additive_attention(q, k, v, w, causal=False))


def test_additive_saves_no_quadratic_tensor():
    """The tiled kernel keeps O(T·a) for backward: no (T, T) scores, no (T, T, a) tanh."""
    t, a = 96, 32
    q, k = torch.randn(1, 2, t, a, requires_grad=True), torch.randn(1, 2, t, a, requires_grad=True)
    v, w = torch.randn(1, 2, t, 8), torch.randn(2, a, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
        K.additive_attention(q, k, v, w, causal=False, chunk_size=16)
    assert max(saved) <= 2 * t * a


@pytest.mark.parametrize("exp_path", [True, False])
@pytest.mark.parametrize("padding", [None, "right", "left"])
def test_lstmn_recurrence_matches_reference(padding, exp_path, monkeypatch):
    """The hand-written backward through time (both ways of computing tanh) against autograd
    through the step-by-step reference."""
    if not exp_path:
        monkeypatch.setattr(kernels_lstmn, "EXP_TANH_BOUND", 0.0)
    g = torch.Generator().manual_seed(11)
    b, t = 3, 13
    cell = random_cell(5, 4, 11)
    x = torch.randn(b, t, 5, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = make_key_mask(b, t, padding, g)
    assert K._lstmn_exp_trick(cell.w_input(x), cell.w_tape.weight, cell.w_summary.weight) == exp_path
    fast, attn = K.lstmn_scan(cell, x, key_mask)
    assert attn is None
    assert_same_with_grads(fast, K.lstmn_reference(cell, x, key_mask)[0], (x, *cell.parameters()), g)


def test_lstmn_recurrence_saves_linear_memory():
    cell = random_cell(6, 8, 0)
    x = torch.randn(2, 40, 6, dtype=torch.float64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
        K.lstmn_scan(cell, x)
    assert max(saved) <= 2 * 41 * 4 * 8  # O(B·T·d): the gates, nothing of size T²


@pytest.mark.parametrize("window", [0, 15, 16, 17, 127, 128])
def test_band_block_size_default(window):
    b = K.band_block_size(window)
    assert 16 <= b <= 64 and b & (b - 1) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention band path needs CUDA")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right"])
def test_band_flex_on_cuda_matches_reference(causal, padding):
    g = torch.Generator().manual_seed(0)
    key_mask = make_key_mask(2, 300, padding, g)
    q, k, v = (x.detach().float().cuda().requires_grad_() for x in qkv(2, 2, 300, 16, 16, g))
    key_mask = key_mask.cuda() if key_mask is not None else None
    kw = dict(window=37, scale=0.25, causal=causal, key_mask=key_mask)
    fast = K.band_attention(q, k, v, flex=True, **kw)
    ref = K.band_attention_reference(q, k, v, **kw)[0]
    torch.testing.assert_close(fast, ref, atol=2e-4, rtol=1e-4)
    probe = torch.randn_like(fast)
    fast_grads = torch.autograd.grad((fast * probe).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((ref * probe).sum(), (q, k, v))
    for fast_g, ref_g in zip(fast_grads, ref_grads):
        torch.testing.assert_close(fast_g, ref_g, atol=2e-4, rtol=1e-4)
    # dropout falls back to the blocked path
    assert K.band_attention(q, k, v, dropout_p=0.1, **kw).shape == q.shape


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and not torch.cuda.is_available(),
                    reason="torch.compile needs a C++ compiler on CPU")
def test_additive_compiled_path_matches_reference():
    """The optional compiled tiles (first call compiles, ~20 s) against the reference."""
    g = torch.Generator().manual_seed(8)
    key_mask = make_key_mask(2, 37, "left", g)
    q, k, v = qkv(2, 3, 37, 8, 5, g)
    w = torch.randn(3, 8, generator=g, dtype=torch.float64).requires_grad_()
    for causal in (False, True):
        kw = dict(causal=causal, key_mask=key_mask)
        fast = K.additive_attention(q, k, v, w, compiled=True, chunk_size=16, **kw)
        assert_same_with_grads(fast, K.additive_attention_reference(q, k, v, w, **kw)[0], (q, k, v, w), g)
