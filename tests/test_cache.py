"""The generation cache (docs/cache.md): transformers cache layers that own the decoding window.

For every spec case x both families, with and without global tokens: prefill + draft + crop +
next step equals a full forward (at the attention layer for both families, through the GPT-2
model with and without left padding); an unrecorded crop the window cannot undo is refused and
changes nothing; assisted and prompt-lookup decoding and beam search equal greedy / uncached;
the cache tensors have the stock layout; a deep copy decodes on alone; the layers behave as
transformers' own layers where they are meant to (``VariantLayer()`` as ``DynamicLayer``,
``VariantLayer(sliding_window=W)`` as ``DynamicSlidingWindowLayer``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import CASE_IDS, FAMILIES, VARIANT_CASES, random_batch, tiny_model
from transformers.cache_utils import Cache, DynamicLayer, DynamicSlidingWindowLayer

import hf_attn_variants as hv
from hf_attn_variants.hfav_attention import VariantAttention
from hf_attn_variants.hfav_attention_lstmn import LSTMNAttention
from hf_attn_variants.hfav_caching import (
    CacheRule,
    LSTMNLayer,
    VariantCache,
    VariantLayer,
    VariantRingLayer,
    VariantStaticLayer,
    layer_for,
)
from hf_attn_variants.hfav_variants import spec_of

GLOBAL = [0, 1]
ATOL = 1e-5


def lm(variant: str, fields: dict, g: int = 0, seed: int = 0):
    return tiny_model("gpt2", variant, cls=hv.VariantGPT2LMHeadModel, seed=seed, attention_global_tokens=g, **fields)


def attention_module(family: str, variant: str, fields: dict, g: int):
    """The first self-attention sublayer of a causal model of the family (a BERT decoder for bert)."""
    extra = {"is_decoder": True, "lstmn_direction": "forward"} if family == "bert" else {}
    model = tiny_model(family, variant, attention_global_tokens=g, **extra, **fields)
    module = next(m for m in model.modules() if isinstance(m, (VariantAttention, LSTMNAttention)))
    return module, model.config


def check_rows(a, b, mask):
    """Max abs difference on real (unpadded) query rows is within ATOL."""
    real = mask.bool()
    assert (a - b)[real].abs().max() <= ATOL


# ----------------------------------------------------------------------------- draft, crop, next step


@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_layer_draft_crop_next_equals_full_forward(family, variant, fields, g):
    """At the attention sublayer of either family: prefill 8, draft 4 (1 right, 3 wrong), crop 3,
    then the rest; every output row equals the full forward's."""
    module, config = attention_module(family, variant, fields, g)
    torch.manual_seed(1)
    x = torch.randn(2, 14, config.hidden_size)
    mask = random_batch(2, 14, "left", seed=4)[1].bool()
    wrong = torch.randn(2, 3, config.hidden_size)
    with torch.no_grad():
        full = module(x, mask)[0]
        layer = layer_for(spec_of(variant).cache(config))
        module(x[:, :8].contiguous(), mask[:, :8], layer_cache=layer)
        layer.activate_past_recording()
        draft = module(torch.cat([x[:, 8:9], wrong], 1), torch.cat([mask[:, :9], mask[:, 8:9].expand(2, 3)], 1),
                       layer_cache=layer)[0]
        layer.crop(-3)
        assert layer.get_seq_length() == 9
        rest = module(x[:, 9:].contiguous(), mask, layer_cache=layer)[0]
    check_rows(draft[:, :1], full[:, 8:9], mask[:, 8:9])
    check_rows(rest, full[:, 9:], mask[:, 9:])


@pytest.mark.parametrize("padding", [None, "left"])
@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_model_draft_crop_next_equals_full_forward(variant, fields, g, padding):
    """Issue 18's case, for every spec: window 3, prefill 8 tokens, add 4 draft tokens, crop 3: the
    next logits equal a full forward (before the fix: 0.05-0.11 off for band with g = 1)."""
    for seed in (0, 1):
        model = lm(variant, {**fields, "attention_window": 3}, g, seed=seed)
        ids, mask = random_batch(2, 12, padding, seed=seed)
        wrong = (ids[:, 9:12] + 1) % 96 + 1
        with torch.no_grad():
            full = model(input_ids=ids, attention_mask=mask).logits
            cache = model(input_ids=ids[:, :8], attention_mask=mask[:, :8], use_cache=True).cache
            cache.activate_past_recording()
            draft_mask = torch.cat([mask[:, :9]] + [mask[:, 8:9]] * 3, 1)
            model(input_ids=torch.cat([ids[:, 8:9], wrong], 1), attention_mask=draft_mask, cache=cache)
            cache.crop(-3)
            assert cache.get_seq_length() == 9
            nxt = model(input_ids=ids[:, 9:], attention_mask=mask, cache=cache).logits
        check_rows(nxt, full[:, 9:], mask[:, 9:])


@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize("variant", ["band", "low_rank_band"])
def test_unrecorded_crop_past_the_window_is_refused_and_changes_nothing(variant, g):
    model = lm(variant, {"attention_window": 3}, g)
    ids = random_batch(1, 12, None)[0]
    with torch.no_grad():
        cache = model(input_ids=ids[:, :8], use_cache=True).cache
        model(input_ids=ids[:, 8:], cache=cache)
    before = [(layer.keys.clone(), layer.values.clone(), layer.positions) for layer in cache.layers]
    with pytest.raises(ValueError, match="activate_past_recording"):
        cache.crop(-3)
    assert cache.get_seq_length() == 12
    for layer, (k, v, positions) in zip(cache.layers, before):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v) and layer.positions == positions
    assert before[0][2] == list(range(g)) + [9, 10, 11]  # the first g and the last w = 3 positions


def test_the_layer_records_its_layout():
    """The window rule: the first g and the last w positions; recording keeps all until crop(0)."""
    layer = VariantLayer(rule=CacheRule(window=3, global_tokens=2))
    kv = torch.arange(10.0).view(1, 1, 10, 1)
    keys, _, _ = layer.extend(kv[:, :, :7], kv[:, :, :7])
    assert keys.flatten().tolist() == list(range(7)) and layer.positions == [0, 1, 4, 5, 6]
    assert layer.keys.flatten().tolist() == [0, 1, 4, 5, 6]
    layer.activate_past_recording()
    keys, _, _ = layer.extend(kv[:, :, 7:], kv[:, :, 7:])
    assert keys.flatten().tolist() == [0, 1, 4, 5, 6, 7, 8, 9]  # what the attention reads
    assert layer.held_view(torch.arange(10)[None], dim=1).tolist() == [[0, 1, 4, 5, 6, 7, 8, 9]]
    assert layer.positions == [0, 1, 4, 5, 6, 7, 8, 9]
    layer.crop(-2)
    assert layer.positions == [0, 1, 5, 6, 7] and layer.keys.flatten().tolist() == [0, 1, 5, 6, 7]
    with pytest.raises(ValueError, match="would need"):
        layer.crop(-1)  # position 4 is gone
    assert layer.get_seq_length() == 8


# ----------------------------------------------------------------------------- generation modes


@pytest.mark.parametrize("mode", ["prompt_lookup", "assistant"])
@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_assisted_and_prompt_lookup_decoding_equal_greedy(variant, fields, g, mode):
    model = lm(variant, fields, g)
    ids = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])  # repeats: prompt lookup finds drafts
    extra = ({"prompt_lookup_num_tokens": 3} if mode == "prompt_lookup"
             else {"assistant_model": lm(variant, fields, g, seed=1)})
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(input_ids=ids, **extra, **kw), model.generate(input_ids=ids, **kw))


@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_beam_search_and_left_padding_with_and_without_cache(variant, fields, g):
    model = lm(variant, fields, g)
    ids, mask = random_batch(2, 5, "left", seed=2)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, num_beams=3, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(**kw, use_cache=True), model.generate(**kw, use_cache=False))


# ----------------------------------------------------------------------------- the tensors and the API


def expected_layout(config, variant: str, seen: int) -> tuple[tuple, tuple]:
    """(keys shape, values shape) of layer 0 after ``seen`` tokens, batch 2: docs/cache.md's table."""
    h, d = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    rule = spec_of(variant).cache(config)
    held = seen if rule.window is None else min(seen, rule.global_tokens + rule.window)
    if variant == "lstmn":
        return (2, 1, seen + 1, config.hidden_size), (2, 1, seen + 1, config.hidden_size)
    key_heads, key_dim = spec_of(variant).projections(config)["main"]
    values = (2, h, held if "values" in rule.windowed else seen, d)
    return (2, key_heads, held, key_dim), values


@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_cache_tensors_have_the_stock_layout(variant, fields, g):
    model = lm(variant, fields, g)
    ids = random_batch(2, 9, None)[0]
    with torch.no_grad():
        cache = model(input_ids=ids[:, :6], use_cache=True).cache
        cache = model(input_ids=ids[:, 6:], cache=cache).cache  # (an LSTMN builds its tapes on the 2nd step)
    assert isinstance(cache, Cache) and cache.get_seq_length() == 9 and len(cache) == 2
    for layer in cache.layers:
        assert isinstance(layer, DynamicLayer) and isinstance(layer.keys, torch.Tensor)
        assert (tuple(layer.keys.shape), tuple(layer.values.shape)) == expected_layout(model.config, variant, 9)
    if variant == "low_rank_band":
        heads, rank = spec_of(variant).projections(model.config)["low_rank"]
        assert cache.layers[0]["keys_low_rank"].shape == (2, heads, 9, rank)


@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_a_deep_copy_decodes_on_alone(variant, fields):
    model = lm(variant, fields, 1)
    ids, mask = random_batch(2, 10, "left", seed=6)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        cache = model(input_ids=ids[:, :6], attention_mask=mask[:, :6], use_cache=True).cache
        model(input_ids=ids[:, 6:7], attention_mask=mask[:, :7], cache=cache)
        twin = copy.deepcopy(cache)
        a = model(input_ids=ids[:, 7:], attention_mask=mask, cache=twin).logits
        assert cache.get_seq_length() == 7 and twin.get_seq_length() == 10  # the original is untouched
        b = model(input_ids=ids[:, 7:], attention_mask=mask, cache=cache).logits
    check_rows(a, full[:, 7:], mask[:, 7:])
    assert torch.equal(a, b)


@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_batch_select_and_repeat(variant, fields):
    """``batch_select_indices`` / ``batch_repeat_interleave`` act on every tensor of every layer."""
    model = lm(variant, fields, 1)
    ids, mask = random_batch(2, 9, "left", seed=8)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        cache = model(input_ids=ids[:, :5], attention_mask=mask[:, :5], use_cache=True).cache
        model(input_ids=ids[:, 5:6], attention_mask=mask[:, :6], cache=cache)
        cache.batch_select_indices(torch.tensor([1]))
        cache.batch_repeat_interleave(2)
        rest = model(input_ids=ids[1:, 6:].repeat(2, 1), attention_mask=mask[1:].repeat(2, 1), cache=cache).logits
    check_rows(rest, full[1:, 6:].repeat(2, 1, 1), mask[1:, 6:].repeat(2, 1))


def test_layers_behave_as_transformers_layers():
    """Built the way transformers builds layers (no argument; ``sliding_window=W``), a VariantLayer
    stores and returns what DynamicLayer / DynamicSlidingWindowLayer do, and a Cache replicates it."""
    torch.manual_seed(0)
    chunks = [torch.randn(2, 3, n, 4) for n in (5, 1, 1, 2)]
    pairs = ((VariantLayer(), DynamicLayer()), (VariantLayer(sliding_window=4), DynamicSlidingWindowLayer(4)))
    for ours, stock in pairs:
        for c in chunks:
            for a, b in zip(ours.update(c, -c), stock.update(c, -c)):
                assert torch.equal(a, b)
            assert torch.equal(ours.keys, stock.keys) and torch.equal(ours.values, stock.values)
            assert ours.get_seq_length() == stock.get_seq_length()
    cache = Cache(layer_class_to_replicate=VariantLayer)
    cache.update(chunks[0], chunks[0], layer_idx=1)
    assert len(cache) == 2 and cache.layers[1].keys.shape == (2, 3, 5, 4)
    cache.crop(-2)
    assert cache.layers[1].keys.shape == (2, 3, 3, 4) and cache.get_seq_length(1) == 3


def test_lstmn_layer_keeps_its_tapes_beside_the_stock_views():
    model = lm("lstmn", {})
    ids = random_batch(1, 6, None)[0]
    with torch.no_grad():
        cache = model(input_ids=ids[:, :4], use_cache=True).cache
        assert isinstance(cache.layers[0], LSTMNLayer) and cache.get_seq_length() == 4
        assert cache.layers[0].keys is None  # the prefill ran the fused scan: tapes are built on the next step
        model(input_ids=ids[:, 4:], cache=cache)
    layer = cache.layers[0]
    assert torch.equal(layer.keys[:, 0], layer["k"]) and torch.equal(layer.values[:, 0], layer["h"])
    assert layer.keys.shape == (1, 1, 7, 32)


def test_variant_cache_from_config_follows_the_specs():
    config = tiny_model("gpt2", "dense", layer_variants=["band", "lstmn"], attention_global_tokens=2).config
    cache = VariantCache(config=config)
    assert cache.layers[0].rule == CacheRule(window=3, global_tokens=2, compileable=True) and cache.layers[0].is_sliding
    assert isinstance(cache.layers[1], LSTMNLayer) and cache.is_sliding == [True, False]


# ----------------------------------------------------------------------------- static cache (issue 22 item 5)


@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_generate_with_static_cache(variant, fields, g):
    """``cache_implementation="static"`` equals dynamic greedy (left padding, beams), in preallocated
    layers of the stock static shapes: max_cache_len positions, or min(max_cache_len, g + w) for what
    a window rule windows; lstmn refuses, naming the reason."""
    model = lm(variant, fields, g)
    ids, mask = random_batch(2, 6, "left", seed=3)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
              return_dict_in_generate=True)
    if variant == "lstmn":
        with pytest.raises(ValueError, match="lstmn layers cannot use a static cache: the LSTMN decodes by"):
            model.generate(**kw, cache_implementation="static")
        return
    static = model.generate(**kw, cache_implementation="static")
    assert torch.equal(static.sequences, model.generate(**kw).sequences)
    lookup = dict(input_ids=torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5]]), max_new_tokens=8, do_sample=False,
                  pad_token_id=0, prompt_lookup_num_tokens=2)
    if spec_of(variant).cache(model.config).window is None:  # nothing dropped: drafts crop exactly
        assert torch.equal(model.generate(**lookup, cache_implementation="static"), model.generate(**lookup))
    else:
        with pytest.raises(ValueError, match="cannot record its past: use the dynamic VariantCache"):
            model.generate(**lookup, cache_implementation="static")
    beams = dict(kw, num_beams=2, return_dict_in_generate=False)
    assert torch.equal(model.generate(**beams, cache_implementation="static"), model.generate(**beams))
    layer, rule = static.cache.layers[0], spec_of(variant).cache(model.config)
    length = layer.get_max_length()
    assert isinstance(layer, VariantStaticLayer) and static.cache.get_seq_length() == 15 and length >= 15
    scratch = int(layer.is_compileable)  # compiled decoding's scratch slot (dense, low_rank: VariantStaticLayer)
    windowed = length + scratch if rule.window is None else min(length, rule.global_tokens + rule.window)
    if isinstance(layer, VariantRingLayer):  # band: the globals and a ring of w + 1
        windowed = rule.global_tokens + rule.window + 1
    assert isinstance(layer, VariantRingLayer) == (rule.window is not None and rule.compileable)
    assert layer.keys.shape[2] == windowed
    assert layer.values.shape[2] == (windowed if layer.windows("values") else length + scratch)


def test_static_layer_writes_in_place_and_crops_within_its_window():
    layer = VariantStaticLayer(8, rule=CacheRule(window=3, global_tokens=1))
    kv = torch.arange(8.0).view(1, 1, 8, 1)
    layer.extend(kv[:, :, :3], kv[:, :, :3])
    buffer = layer.keys
    assert buffer.shape == (1, 1, 4, 1) and layer.positions == [0, 1, 2]
    layer.crop(-1)
    keys, _, _ = layer.extend(kv[:, :, 2:7], kv[:, :, 2:7])
    assert keys.flatten().tolist() == [0, 1, 2, 3, 4, 5, 6] and layer.positions == [0, 4, 5, 6]
    assert layer.keys is buffer and buffer.flatten().tolist() == [0, 4, 5, 6]  # the same storage, rewritten
    with pytest.raises(ValueError, match="cannot record its past: use the dynamic VariantCache"):
        layer.crop(-1)  # position 3 is gone: a static window cannot record its past
    with pytest.raises(ValueError, match="assisted and prompt-lookup decoding crop drafts"):
        layer.activate_past_recording()
    with pytest.raises(ValueError, match="max_cache_len=8"):
        layer.extend(kv[:, :, :2], kv[:, :, :2])


RING_RULES = [(0, 0, ("keys", "values")), (0, 2, ("keys", "values")), (1, 2, ("keys", "values")),
              (3, 1, ("keys", "values")), (1, 2, ("keys",)), (0, 1, ("keys",))]  # ("keys",): low_rank_band's


@pytest.mark.parametrize("g, w, windowed", RING_RULES)
def test_ring_layer_hands_the_window_in_order_and_keeps_it_in_its_slots(g, w, windowed):
    """Eager steps of any size (the prompt, then single tokens): the ring layer hands the attention what the
    dynamic layer of the same rule hands (held positions in order, then the new; the tensors outside the
    window: every position), and each held position of a windowed tensor sits in its slot: the newest in the
    scratch slot, the others at home (g + (q - g) mod w for q >= g)."""
    rule = CacheRule(window=w, global_tokens=g, windowed=windowed, compileable=True)
    ring, dynamic = VariantRingLayer(20, rule=rule), VariantLayer(rule=rule)
    assert isinstance(layer_for(rule, 20), VariantRingLayer) and ring.is_compileable
    kv = torch.arange(1.0, 21.0).view(1, 1, 20, 1)  # the value of position q is q + 1 (never 0: 0 is unwritten)
    seen = 0
    for n in (5, 1, 1, 3, 1, 1, 1):
        new = kv[:, :, seen:seen + n]
        got = ring.extend(new, -new, {"keys_low_rank": 2 * new})
        want = dynamic.extend(new, -new, {"keys_low_rank": 2 * new})
        seen += n
        for a, b in ((got[0], want[0]), (got[1], want[1]), (got[2]["keys_low_rank"], want[2]["keys_low_rank"])):
            torch.testing.assert_close(a, b)
        assert ring.positions == dynamic.positions and ring.seen == seen
        mask = torch.arange(seen)[None] % 3 != 1
        assert torch.equal(ring.held_view(mask), dynamic.held_view(mask))
        values = torch.arange(seen, dtype=torch.float).view(1, 1, seen, 1)
        assert torch.equal(ring.held_view(values, dim=2), dynamic.held_view(values, dim=2))
        assert ring.keys.shape == (1, 1, g + w + 1, 1)
        assert ring.values.shape[2] == (g + w + 1 if "values" in windowed else 21)  # 20 and the scratch slot
        for q in ring.positions:  # the newest in the scratch slot, the others at home
            slot = ring.scratch if q == seen - 1 else int(ring.home(torch.tensor(q)))
            assert float(ring.keys[0, 0, slot]) == q + 1


@pytest.mark.parametrize("g, w, windowed", RING_RULES)
def test_ring_layer_compiled_step_mask_reads_exactly_the_band(g, w, windowed, monkeypatch):
    """A compiled step (``torch.compiler.is_compiling()``): the previous token goes home and the new one to the
    scratch slot, where the kernels place the query; the key mask over all slots (``held_view`` of the step's
    mask over positions + the scratch column) selects exactly the positions the band rule lets it read, the
    globals and p - w .. p, less the padding; values outside the window (low_rank_band) are gathered from the
    same positions, the new token's from the scratch."""
    length = 16
    rule = CacheRule(window=w, global_tokens=g, windowed=windowed, compileable=True)
    layer = VariantRingLayer(length, rule=rule)
    kv = torch.arange(1.0, length + 1).view(1, 1, length, 1)
    padding = torch.ones(1, length, dtype=torch.bool)
    padding[0, [1, 6]] = False  # two padded positions
    layer.extend(kv[:, :, :3], -kv[:, :, :3])  # the prompt runs eager
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for p in range(3, length):
        step = torch.cat([(torch.arange(length) < p)[None] & padding, torch.ones(1, 1, dtype=torch.bool)], 1)
        keys, values, _ = layer.extend(kv[:, :, p:p + 1], -kv[:, :, p:p + 1])
        assert keys is layer.keys and values is layer.values and int(layer.cumulative_length) == p + 1
        assert int(keys[0, 0, -1, 0]) == p + 1  # the query's own key on the last slot, where the kernels place it
        mask = layer.held_view(step)[0]
        read = sorted(int(k) - 1 for k in keys[0, 0, :, 0][mask])
        band = [j for j in range(p + 1) if (j < g or p - j <= w) and (padding[0, j] or j == p)]
        assert read == band, p
        band_values = values if "values" in windowed else layer.held_view(values, dim=2)
        assert torch.equal(band_values[0, 0, :, 0][mask], -keys[0, 0, :, 0][mask])  # each key with its value


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_rules_for_both_families(family):
    """Both families' configs give one layer per model layer, by the spec of each layer's variant
    (a BERT decoder's cache is the same contract; variant BERT models do not decode yet)."""
    extra = {"is_decoder": True, "lstmn_direction": "forward"} if family == "bert" else {}
    config = tiny_model(family, "dense", layer_variants=["low_rank_band", "dense"], attention_global_tokens=1,
                        **extra).config
    cache = VariantCache(config=config)
    assert [layer.rule for layer in cache.layers] == [
        CacheRule(window=3, global_tokens=1, windowed=("keys",), compileable=True), CacheRule(compileable=True)]
    static = VariantCache(config=config, max_cache_len=7)
    assert all(isinstance(layer, VariantStaticLayer) and layer.get_max_length() == 7 for layer in static.layers)


@pytest.mark.parametrize("g", GLOBAL)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_generate_continues_from_a_returned_cache(variant, fields, g):
    """As transformers' ``test_generate_continue_from_past_key_values``: generate 4 tokens, pass the
    returned cache (a deep copy) back with the sequence, generate 3 more: equal to 7 at once, scores
    included; the returned cache's tensors are readable in the stock layout."""
    model = lm(variant, fields, g)
    ids, mask = random_batch(2, 6, "left", seed=12)
    kw = dict(do_sample=False, pad_token_id=0, return_dict_in_generate=True, output_scores=True)
    whole = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=7, **kw)
    first = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, **kw)
    assert all(isinstance(layer.keys, torch.Tensor) for layer in first.cache.layers)
    seq = first.sequences
    more = model.generate(input_ids=seq, attention_mask=torch.cat([mask, torch.ones_like(seq[:, 6:])], 1),
                          cache=copy.deepcopy(first.cache), max_new_tokens=3, **kw)
    assert torch.equal(more.sequences, whole.sequences)
    for a, b in zip(first.scores + more.scores, whole.scores):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_a_cache_without_the_rules_is_refused_by_lstmn_layers():
    model = lm("lstmn", {})
    with pytest.raises(ValueError, match="needs an LSTMNLayer; build the cache with VariantCache"):
        model(input_ids=torch.ones(1, 3, dtype=torch.long), cache=VariantCache(2))
