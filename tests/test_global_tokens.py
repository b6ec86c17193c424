"""``attention_global_tokens`` g: the first g positions read and are read by every position in band
and low_rank_band, in every kernel path, the cache, the costs and the references."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, random_batch, tiny_config, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from test_equivalence import stock_model, variant_from
from test_generation import decode_step_by_step
from test_kernels import assert_same_with_grads, make_key_mask, qkv

import hf_attn_variants as hv
from hf_attn_variants import hfav_kernels as K
from hf_attn_variants import hfav_pairs as pairs
from hf_attn_variants.costs import attended_pairs, model_costs


def rule_in_words(q: int, k: int, causal: bool, window: int, g: int) -> bool:
    """The structure of the band with global tokens, one pair at a time (padding aside)."""
    near = abs(q - k) <= window or q < g or k < g
    return near and (not causal or k <= q)


def band_global_mask(length: int, causal: bool, window: int, g: int) -> torch.Tensor:
    return torch.tensor([[rule_in_words(q, k, causal, window, g) for k in range(length)] for q in range(length)])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("g", [0, 1, 3])
def test_the_rule_with_global_tokens(causal, g):
    for window in (0, 2, 5):
        for length in (1, 4, 9):
            ours = pairs.allowed_mask(length, length, causal=causal, window=window, global_tokens=g)[0, 0]
            assert torch.equal(ours, band_global_mask(length, causal, window, g))
            assert attended_pairs(length, causal, window, g) == int(band_global_mask(length, causal, window, g).sum())
            for q0 in range(length):  # the key range of any run of queries holds every pair they may read
                for q1 in range(q0 + 1, length + 1):
                    lo, hi = pairs.key_range(q0, q1, length, causal=causal, window=window, global_tokens=g)
                    assert not ours[q0:q1, :lo].any() and not ours[q0:q1, hi:].any()


def check_band_global(b, h, t, d, window, g, causal, padding, block, seed):
    gen = torch.Generator().manual_seed(seed)
    key_mask = make_key_mask(b, t, padding, gen)
    q, k, v = qkv(b, h, t, d, d + 1, gen)
    kw = dict(window=window, scale=d**-0.5, causal=causal, key_mask=key_mask, global_tokens=g)
    fast = K.band_attention(q, k, v, block_size=block, **kw)
    ref = K.band_attention_reference(q, k, v, **kw)[0]
    assert torch.isfinite(fast).all()
    assert_same_with_grads(fast, ref, (q, k, v), gen)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize("g", [0, 1, 3])
@pytest.mark.parametrize(("t", "window", "block"), [(17, 2, 4), (40, 3, 16), (33, 0, 8), (5, 1, 16)])
def test_band_kernel_with_global_tokens_matches_reference(t, window, block, g, causal, padding):
    check_band_global(2, 2, t, 4, window, g, causal, padding, block, seed=t + 7 * g)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 2), t=st.integers(1, 50), d=st.integers(1, 6),
       window=st.integers(0, 20), g=st.sampled_from([0, 1, 3]), causal=st.booleans(),
       padding=st.sampled_from([None, "right", "left"]), block=st.sampled_from([None, 4, 7]),
       seed=st.integers(0, 10_000))
def test_band_kernel_with_global_tokens_property(b, h, t, d, window, g, causal, padding, block, seed):
    check_band_global(b, h, t, d, window, g, causal, padding, block, seed)


def test_global_tokens_never_build_the_full_matrix(monkeypatch):
    """The blocks read (b + 2w + g) keys; the g global rows read T: no T x T score matrix."""
    seen, real = [], torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.shape[-2], k.shape[-2]))
        return real(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    q = k = v = torch.randn(1, 2, 512, 8)
    K.band_attention(q, k, v, window=8, scale=0.3, causal=False, block_size=16, global_tokens=2)
    assert seen == [(16, 2 + 32), (2, 512)]


@pytest.mark.parametrize("g", [1, 3, 5])
def test_decoding_rows_with_global_tokens(g):
    """Queries that are the last rows of the keys (the dense decoding path) agree with the full rows."""
    gen = torch.Generator().manual_seed(g)
    q, k, v = qkv(2, 2, 15, 4, 4, gen)
    key_mask = make_key_mask(2, 15, "left", gen)
    full = K.band_attention_reference(q, k, v, window=2, scale=0.5, causal=True, key_mask=key_mask,
                                      global_tokens=g)[0]
    last = K.band_attention(q[:, :, -3:], k, v, window=2, scale=0.5, causal=True, key_mask=key_mask, global_tokens=g)
    torch.testing.assert_close(last, full[:, :, -3:])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("g", [1, 3])
def test_band_with_global_tokens_equals_stock_with_explicit_mask(family, g):
    window, length = 2, 30
    stock = stock_model(family, "eager")
    band = variant_from(stock, family, "sdpa", attention_variant="band", attention_window=window,
                        attention_global_tokens=g)
    ids, _ = random_batch(2, length, None, seed=4)
    keep = band_global_mask(length, family == "gpt2", window, g)
    mask4d = torch.zeros(2, 1, length, length).masked_fill(~keep, torch.finfo(torch.float32).min)
    with torch.no_grad():
        ours = band(input_ids=ids).last_hidden_state
        theirs = stock(input_ids=ids, attention_mask=mask4d).last_hidden_state
        plain = variant_from(stock, family, "sdpa", attention_variant="band", attention_window=window)
        assert (plain(input_ids=ids).last_hidden_state - theirs).abs().max() > 1e-3  # the tokens matter
    assert (ours - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fields", [{"attention_variant": "band"},
                                    {"attention_variant": "low_rank_band", "band_combine": "sum"},
                                    {"attention_variant": "low_rank_band", "band_combine": "heads"}],
                         ids=["band", "low_rank_band-sum", "low_rank_band-heads"])
def test_model_fast_path_equals_references_with_global_tokens(family, fields):
    ids, mask = random_batch(3, 13, "right" if family == "bert" else "left", seed=2)
    outs = []
    for reference in (False, True):
        model = tiny_model(family, attention_window=1, attention_global_tokens=2, **fields).double()
        for module in model.modules():
            if hasattr(module, "capture"):
                module.capture = reference
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None]
        hidden.pow(2).sum().backward()
        outs.append((hidden, [p.grad for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for fast, ref in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(fast, ref)


@pytest.mark.parametrize("padding", [None, "left"])
@pytest.mark.parametrize("fields", [{"attention_variant": "band"},
                                    {"attention_variant": "low_rank_band", "band_combine": "gate"},
                                    {"attention_variant": "low_rank_band", "band_combine": "sequential"}],
                         ids=["band", "low_rank_band-gate", "low_rank_band-sequential"])
def test_cached_decoding_with_global_tokens_equals_full_forward(fields, padding):
    model = tiny_model("gpt2", cls=hv.VariantGPT2LMHeadModel, attention_window=2, attention_global_tokens=3,
                       **fields)
    ids, mask = random_batch(3, 16, padding, seed=9)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
    stepped, cache = decode_step_by_step(model, ids, mask, prefill=4)
    assert (stepped - full)[mask.bool()].abs().max() <= 1e-4
    # the band keys kept: the 3 global positions and the last 2
    assert all(state.keys.shape[2] == 3 + 2 for state in cache.layers)


def test_costs_count_the_global_pairs_exactly():
    for family in FAMILIES:
        base = model_costs(tiny_config(family, "band", attention_window=2), 12)
        more = model_costs(tiny_config(family, "band", attention_window=2, attention_global_tokens=3), 12)
        causal = family == "gpt2"
        extra = int(band_global_mask(12, causal, 2, 3).sum() - band_global_mask(12, causal, 2, 0).sum())
        assert extra > 0
        assert more["flops"] - base["flops"] == 2 * 4 * extra * 32  # 2 layers, QKᵀ and ·V, hidden 32
        assert more["params"] == base["params"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", [-1, 1.5, "2", True])
def test_bad_global_tokens_name_the_field(family, value):
    with pytest.raises(ValueError, match="attention_global_tokens"):
        tiny_config(family, "band", attention_global_tokens=value)


def test_global_tokens_in_the_card_and_saved_config(tmp_path):
    model = tiny_model("bert", "band", attention_global_tokens=2)
    card = str(hv.build_model_card(model, {"task": "masked_lm"}))
    assert "attention_window=3, attention_global_tokens=2" in card
    model.save_pretrained(tmp_path)
    assert hv.VariantBertModel.from_pretrained(tmp_path).config.attention_global_tokens == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention band path needs CUDA")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("g", [1, 3])
def test_band_flex_with_global_tokens_on_cuda_matches_reference(causal, g):
    gen = torch.Generator().manual_seed(g)
    key_mask = make_key_mask(2, 300, "right", gen).cuda()
    q, k, v = (x.detach().float().cuda().requires_grad_() for x in qkv(2, 2, 300, 16, 16, gen))
    kw = dict(window=37, scale=0.25, causal=causal, key_mask=key_mask, global_tokens=g)
    fast = K.band_attention(q, k, v, flex=True, **kw)
    ref = K.band_attention_reference(q, k, v, **kw)[0]
    torch.testing.assert_close(fast, ref, atol=2e-4, rtol=1e-4)
    probe = torch.randn_like(fast)
    for fast_g, ref_g in zip(torch.autograd.grad((fast * probe).sum(), (q, k, v)),
                             torch.autograd.grad((ref * probe).sum(), (q, k, v))):
        torch.testing.assert_close(fast_g, ref_g, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", ["band", "low_rank_band"])
def test_right_padding_invariance_with_global_tokens(family, variant):
    """Global tokens are the first g positions: with right padding they are each row's first g tokens,
    so a padded batch gives each sequence its outputs alone. (With left padding the first positions of
    a short row are padding, which nobody reads: documented, not invariant.)"""
    model = tiny_model(family, variant, attention_window=1, attention_global_tokens=2)
    ids, mask = random_batch(4, 11, "right", seed=3)
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            alone = model(input_ids=ids[row, real][None]).last_hidden_state[0]
            torch.testing.assert_close(batched[row, real], alone, atol=2e-5, rtol=1e-4)
