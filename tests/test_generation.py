"""Cached generation for every variant: token-by-token decoding with a VariantCache equals the
full forward pass (also left-padded), greedy generate equals the no-cache argmax continuation,
and each variant's cache holds what it should (band: the window, low-rank: keys at rank r)."""

from __future__ import annotations

import pytest
import torch
from conftest import CASE_IDS, VARIANT_CASES, random_batch, tiny_model

import hf_attn_variants as hv
from hf_attn_variants.hfav_caching import VariantCache

GPT2_CASES = VARIANT_CASES + [("mixed", {"layer_variants": ["band", "lstmn"]}),
                              ("mixed", {"layer_variants": ["additive", "low_rank"]})]
GPT2_IDS = CASE_IDS + ["mixed-band-lstmn", "mixed-additive-low_rank"]


def lm(variant, fields):
    if variant == "mixed":
        return tiny_model("gpt2", "dense", cls=hv.VariantGPT2LMHeadModel, **fields)
    return tiny_model("gpt2", variant, cls=hv.VariantGPT2LMHeadModel, **fields)


def decode_step_by_step(model, ids, mask, prefill: int):
    """Logits for every position: the first ``prefill`` tokens at once, then one token at a time."""
    with torch.no_grad():
        out = model(input_ids=ids[:, :prefill], attention_mask=mask[:, :prefill], use_cache=True)
        logits, cache = [out.logits], out.cache
        for t in range(prefill, ids.shape[1]):
            out = model(input_ids=ids[:, t:t + 1], attention_mask=mask[:, :t + 1], cache=cache, use_cache=True)
            logits.append(out.logits)
            cache = out.cache
    return torch.cat(logits, dim=1), cache


@pytest.mark.parametrize("padding", [None, "left"])
@pytest.mark.parametrize(("variant", "fields"), GPT2_CASES, ids=GPT2_IDS)
def test_cached_decoding_equals_full_forward(variant, fields, padding):
    model = lm(variant, fields)
    ids, mask = random_batch(3, 14, padding, seed=7)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
    stepped, cache = decode_step_by_step(model, ids, mask, prefill=5)
    assert cache.get_seq_length() == 14
    real = mask.bool()
    assert (stepped - full)[real].abs().max() <= 1e-4


@pytest.mark.parametrize(("variant", "fields"), GPT2_CASES, ids=GPT2_IDS)
def test_greedy_generate_equals_argmax_without_cache(variant, fields):
    model = lm(variant, fields)
    ids, mask = random_batch(2, 6, "left", seed=11)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, use_cache=True,
                         pad_token_id=0)
    seq, seq_mask = ids, mask
    with torch.no_grad():
        for _ in range(8):
            nxt = model(input_ids=seq, attention_mask=seq_mask).logits[:, -1].argmax(-1, keepdim=True)
            seq, seq_mask = torch.cat([seq, nxt], 1), torch.cat([seq_mask, torch.ones_like(nxt)], 1)
    assert torch.equal(out, seq)


def test_beam_search_with_and_without_cache():
    model = lm("low_rank_band", {"band_combine": "gate"})
    ids, mask = random_batch(2, 5, "left", seed=2)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(**kw, use_cache=True), model.generate(**kw, use_cache=False))


def key_cache_sizes(cache: VariantCache) -> list[dict[str, tuple[int, ...]]]:
    return [{"keys": tuple(layer.keys.shape), "values": tuple(layer.values.shape)} for layer in cache.layers]


def test_band_cache_stays_at_the_window():
    model = lm("band", {"attention_window": 3})
    ids, mask = random_batch(1, 30, None)
    _, cache = decode_step_by_step(model, ids, mask, prefill=12)  # the prompt is longer than the window
    for state in key_cache_sizes(cache):
        assert state == {"keys": (1, 4, 3, 8), "values": (1, 4, 3, 8)}


def test_band_cost_per_token_is_flat():
    """Each new token reads w + 1 keys (the window and itself), however long the context."""
    model = lm("band", {"attention_window": 3})
    module = model.transformer.h[0].attn
    module.capture = True  # record the attention weights of every call: (B, H, T_new, T_keys)
    key_lengths = []
    hook = module.register_forward_hook(lambda m, args, out: key_lengths.append(m.captured["weights"].shape[-1]))
    _, cache = decode_step_by_step(model, *random_batch(1, 40, None), prefill=5)
    hook.remove()
    assert key_lengths == [5] + [4] * 35
    assert cache.layers[0].keys.shape[2] == 3


def test_low_rank_cache_holds_rank_r_keys():
    dense_cache = decode_step_by_step(lm("dense", {}), *random_batch(1, 9, None), prefill=4)[1]
    low_cache = decode_step_by_step(lm("low_rank", {"attention_rank": 2}), *random_batch(1, 9, None), prefill=4)[1]
    assert low_cache.layers[0].keys.shape == (1, 4, 9, 2) and dense_cache.layers[0].keys.shape == (1, 4, 9, 8)
    assert low_cache.layers[0].values.shape == dense_cache.layers[0].values.shape
    assert low_cache.layers[0].keys.numel() * 4 == dense_cache.layers[0].keys.numel()  # r / head size = 2 / 8


def test_only_new_tokens_are_projected():
    """Keys (additive: W_k x_j) of past tokens come from the cache, never recomputed."""
    model = lm("additive", {"additive_dim": 6})
    lengths = []
    hooks = [block.attn.c_attn.register_forward_hook(lambda m, args, out: lengths.append(args[0].shape[1]))
             for block in model.transformer.h]
    _, cache = decode_step_by_step(model, *random_batch(1, 10, None), prefill=4)
    for hook in hooks:
        hook.remove()
    assert lengths == [4, 4] + [1] * 12
    assert cache.layers[0].keys.shape == (1, 4, 10, 6)  # projected keys, additive_dim wide


def test_lstmn_cache_carries_the_tapes():
    _, cache = decode_step_by_step(lm("lstmn", {}), *random_batch(2, 7, "left", seed=1), prefill=3)
    state = cache.layers[1]
    assert state["h"].shape == state["c"].shape == state["k"].shape == (2, 8, 32)  # zero slot + 7 tokens
    assert state.keys.shape == state.values.shape == (2, 1, 8, 32)  # the stock layout: one head
    assert state["readable"].shape == (2, 8) and state["summary"].shape == (2, 32)
    assert (state["h"][:, 0] == 0).all()


def test_a_foreign_cache_is_refused():
    model = lm("dense", {})
    with pytest.raises(ValueError, match="VariantCache"):
        model(input_ids=torch.ones(1, 3, dtype=torch.long), cache=object())
