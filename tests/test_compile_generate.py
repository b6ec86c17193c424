"""Fullgraph-compiled generation (transformers' ``test_generate_compile_model_forward_fullgraph`` and
``test_static_cache_no_recompile_with_smaller_length``): with ``cache_implementation="static"`` and a compile
config, ``generate`` compiles the decoding forward of the variants whose spec declares a compileable cache rule
(every variant but lstmn; band and low_rank_band over their ring layers: ``_can_compile_fullgraph``), with no
graph break, one graph for every step and every prompt of the batch shape, and the tokens and scores of eager
generation. lstmn keeps the flag off and refuses a static cache (the reason in docs/compat.md).

The checks compile with ``backend="eager"`` (dynamo's tracing and guards, no code generation: fast); one slow
test runs inductor, generate's default."""

from __future__ import annotations

import pytest
import torch
from conftest import VARIANT_CASES, random_batch, tiny_model
from transformers import CompileConfig

import hf_attn_variants as hv
from hf_attn_variants.hfav_caching import VariantCache
from hf_attn_variants.hfav_variants import cache_rules, compiles_fullgraph

CASES = [case for case in VARIANT_CASES if case[1] == dict(hv.VARIANTS[case[0]].test_cases[0])]  # one per variant


def lm(variant: str, fields: dict):
    return tiny_model("gpt2", variant, cls=hv.VariantGPT2LMHeadModel, **fields)


def compile_config(backend: str = "eager") -> CompileConfig:
    config = CompileConfig(fullgraph=True, dynamic=False, backend=backend)  # a graph break or dynamic shape errors
    config._compile_all_devices = True  # generate compiles on CPU too (transformers' tests do the same)
    return config


KW = dict(do_sample=False, max_new_tokens=5, return_dict_in_generate=True, output_scores=True, pad_token_id=0)


def assert_same_generation(eager, compiled):
    assert torch.equal(eager.sequences, compiled.sequences)
    for a, b in zip(eager.scores, compiled.scores, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_flag_follows_the_registry():
    """_can_compile_fullgraph is per model: every variant but lstmn decodes compiled (band and low_rank_band over
    their ring layers); lstmn (a recurrence, no static cache) keeps it off, and so does a stack with it."""
    flags = {name: lm(name, fields)._can_compile_fullgraph for name, fields in CASES}
    assert {name for name, on in flags.items() if not on} == {"lstmn"}
    for name, fields in CASES:
        assert flags[name] == compiles_fullgraph(lm(name, fields).config)
    assert not lm("dense", {"layer_variants": ["dense", "lstmn"]})._can_compile_fullgraph
    assert lm("dense", {"layer_variants": ["dense", "band"]})._can_compile_fullgraph
    assert lm("dense", {"layer_variants": ["dense", "low_rank"]})._can_compile_fullgraph


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_generate_compiles_the_decoding_forward_fullgraph(case):
    """Two batches of the same shape (left padding): the compiled generation equals eager generation with the
    dynamic cache; the second batch reuses the graph (fail_on_recompile). Variants with the flag off run eager
    over the static cache (nothing compiled) with the same results; lstmn refuses a static cache."""
    variant, fields = case
    model = lm(variant, fields)
    ids, mask = random_batch(4, 6, "left", seed=1)
    batches = [{"input_ids": ids[i:i + 2], "attention_mask": mask[i:i + 2]} for i in (0, 2)]
    if any(rule.recurrent for rule in cache_rules(model.config)):  # lstmn: no static cache, with the reason
        assert not model._can_compile_fullgraph
        with pytest.raises(ValueError, match="cannot use a static cache"):
            model.generate(**batches[0], cache_implementation="static", compile_config=compile_config(), **KW)
        return
    compiled = compiled_equals_eager(model, batches, KW)
    assert hasattr(model, "_compiled_call") == model._can_compile_fullgraph == compiled[0].cache.is_compileable


def compiled_equals_eager(model, batches: list[dict], kw: dict) -> list:
    """Generate each batch eager (dynamic cache), then compiled over the static cache, the second batch with
    recompiling forbidden: the same tokens and scores; one graph, no graph break (when the model compiles)."""
    eager = [model.generate(**batch, **kw) for batch in batches]
    torch.compiler.reset()
    torch._dynamo.utils.counters.clear()
    compiled = [model.generate(**batches[0], cache_implementation="static", compile_config=compile_config(), **kw)]
    with torch.compiler.set_stance("fail_on_recompile"):
        compiled.append(model.generate(**batches[1], cache_implementation="static", compile_config=compile_config(),
                                       **kw))
    for a, b in zip(eager, compiled):
        assert_same_generation(a, b)
        assert isinstance(b.cache, VariantCache)
    if model._can_compile_fullgraph:
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
        assert not torch._dynamo.utils.counters["graph_break"]
    return compiled


RING_CASES = [(name, fields) for name, fields in VARIANT_CASES if name in ("band", "low_rank_band")]


@pytest.mark.parametrize("g, w", [(0, 1), (2, 3)])
@pytest.mark.parametrize("case", RING_CASES + [("band", {"layer_variants": ["band", "dense"]})],
                         ids=[v + "".join(f"-{x}" for x in f.values()) for v, f in RING_CASES] + ["band+dense"])
def test_windowed_variants_decode_compiled_over_their_ring(g, w, case):
    """band and low_rank_band (every way of combining), alone and in a stack with dense: compiled decoding over
    the ring layers (a prompt shorter and longer than g + w, left padding, enough new tokens for the ring to
    wrap several times) gives the tokens and scores of eager decoding with the dynamic cache, in one graph."""
    variant, fields = case
    model = lm(variant, {**fields, "attention_window": w, "attention_global_tokens": g})
    assert model._can_compile_fullgraph
    ids, mask = random_batch(4, 7, "left", seed=5)
    mask[1, :5] = 0  # one row's prompt has 2 real tokens
    batches = [{"input_ids": ids[i:i + 2], "attention_mask": mask[i:i + 2]} for i in (0, 2)]
    compiled_equals_eager(model, batches, dict(KW, max_new_tokens=12))


def test_no_recompile_with_a_smaller_prompt():
    """transformers' test_static_cache_no_recompile_with_smaller_length: with the static cache's size fixed
    (max_length), a shorter prompt decodes with the graph compiled for a longer one."""
    model = lm("dense", {})
    ids, mask = random_batch(2, 8, "left", seed=2)
    kw = dict(KW, max_new_tokens=None, max_length=14, cache_implementation="static")
    torch.compiler.reset()
    long = model.generate(input_ids=ids, attention_mask=mask, compile_config=compile_config(), **kw)
    with torch.compiler.set_stance("fail_on_recompile"):
        short = model.generate(input_ids=ids[:, 3:], attention_mask=mask[:, 3:], compile_config=compile_config(),
                               **kw)
    assert long.sequences.shape[1] == short.sequences.shape[1] == 14  # 6 and 9 new tokens, one cache size
    assert long.cache.layers[0].get_max_length() == short.cache.layers[0].get_max_length()
    assert_same_generation(model.generate(input_ids=ids[:, 3:], attention_mask=mask[:, 3:],
                                          **dict(KW, max_new_tokens=None, max_length=14)), short)


@pytest.mark.parametrize("scale", [0.5, 30.0])  # within the exp path's bound, and beyond it
def test_additive_under_compile_takes_the_tanh_path_and_equals_the_reference(scale, monkeypatch):
    """Under torch.compile the additive tiles never read the data to choose the exp path (a host sync that
    fullgraph cannot trace): the tanh path runs, forward and gradients equal to the reference."""
    from hf_attn_variants import hfav_kernels_additive as kernels_additive

    g = torch.Generator().manual_seed(int(scale))
    q, k = (scale * torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64) for _ in range(2))
    q, k = q.requires_grad_(), k.requires_grad_()
    v = torch.randn(2, 3, 9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = torch.arange(9)[None] < torch.tensor([[9], [6]])
    assert kernels_additive._exp_trick(q, k) == (scale < 1)  # eager: the exp path within the bound
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not kernels_additive._exp_trick(q, k)
    out = kernels_additive.additive_attention(q, k, v, w, causal=True, key_mask=key_mask)
    ref = kernels_additive.additive_attention_reference(q, k, v, w, causal=True, key_mask=key_mask)[0]
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-7)
    for a, b in zip(torch.autograd.grad(out.square().sum(), (q, k, v, w)),
                    torch.autograd.grad(ref.square().sum(), (q, k, v, w))):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_a_compiled_step_refuses_what_it_cannot_honour():
    """A compiled forward over a compileable static cache takes one token per step and the mask over the slots."""
    model = lm("dense", {})
    ids = random_batch(1, 6, None, seed=3)[0]
    cache = VariantCache(config=model.config, max_cache_len=10)
    with torch.no_grad():
        model(input_ids=ids, cache=cache)
        step = torch.compile(model.__call__, fullgraph=True, dynamic=False, backend="eager")
        with pytest.raises(Exception, match="padded to max_cache_len=10"):
            step(input_ids=ids[:, :1], attention_mask=torch.ones(1, 7, dtype=torch.long), cache=cache)
        with pytest.raises(Exception, match="one new token per step"):
            step(input_ids=ids[:, :2], cache=cache)


@pytest.mark.slow
@pytest.mark.parametrize("variant, fields", [("dense", {}), ("band", {"attention_global_tokens": 1}),
                                             ("low_rank_band", {"attention_global_tokens": 1})])
def test_generate_compiled_with_inductor(variant, fields):
    """generate's default backend (inductor): the same tokens and scores as eager generation."""
    model = lm(variant, fields)
    ids, mask = random_batch(2, 6, "left", seed=4)
    torch.compiler.reset()
    compiled = model.generate(input_ids=ids, attention_mask=mask, cache_implementation="static",
                              compile_config=compile_config("inductor"), **KW)
    assert hasattr(model, "_compiled_call")
    assert_same_generation(model.generate(input_ids=ids, attention_mask=mask, **KW), compiled)
