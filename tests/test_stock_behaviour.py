"""The variant models behave like stock transformers models (issue 8): ``VariantCache`` is a
``transformers.Cache`` that crops exactly, so assisted and prompt-lookup decoding give greedy's
tokens; ``cache_implementation`` is refused clearly; gradient checkpointing returns no cache;
``config.use_cache`` / ``config.return_dict`` are honoured; dense dispatches through
``ALL_ATTENTION_FUNCTIONS`` and other variants refuse names they cannot honour; device_map offload;
``torch.compile(fullgraph=True)``; unknown keyword arguments are named."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    BASE_CLASS,
    CASE_IDS,
    FAMILIES,
    HEAD_CLASSES,
    VARIANT_CASES,
    head_inputs,
    random_batch,
    tiny_config,
    tiny_model,
)
from transformers import AttentionInterface, BertConfig, BertModel, Cache, DynamicCache, GPT2Config, GPT2LMHeadModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import hf_attn_variants as hv
from hf_attn_variants.hfav_caching import VariantCache

GPT2_CASES = VARIANT_CASES + [("mixed", {"layer_variants": ["band", "lstmn"]})]
GPT2_IDS = CASE_IDS + ["mixed-band-lstmn"]


def lm(variant: str, fields: dict, seed: int = 0):
    if variant == "mixed":
        return tiny_model("gpt2", "dense", cls=hv.VariantGPT2LMHeadModel, seed=seed, **fields)
    return tiny_model("gpt2", variant, cls=hv.VariantGPT2LMHeadModel, seed=seed, **fields)


def greedy(model, ids, n: int = 12, **kw):
    return model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, pad_token_id=0, **kw)


# ----------------------------------------------------------------------------- the cache and its crop


def test_variant_cache_is_a_transformers_cache():
    out = lm("band", {"attention_window": 2})(input_ids=random_batch(2, 5, None)[0], use_cache=True)
    assert isinstance(out.cache, Cache) and isinstance(out.cache, VariantCache)
    assert out.cache.is_croppable and out.cache.get_seq_length() == 5 and len(out.cache) == 2


@pytest.mark.parametrize(("variant", "fields"), GPT2_CASES, ids=GPT2_IDS)
def test_crop_undoes_a_draft_exactly(variant, fields):
    """Prefill, run a draft (two right tokens, three wrong), crop the wrong ones, continue with the
    right tokens: every logit equals the full forward's (left padding included)."""
    model = lm(variant, fields)
    ids, mask = random_batch(2, 12, "left", seed=3)
    wrong = (ids[:, 7:10] + 1) % 96 + 1
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        cache = model(input_ids=ids[:, :5], attention_mask=mask[:, :5], use_cache=True).cache
        cache.activate_past_recording()
        draft = torch.cat([ids[:, 5:7], wrong], dim=1)
        drafted = model(input_ids=draft, attention_mask=mask[:, :10], cache=cache).logits
        cache.crop(-3)
        assert cache.get_seq_length() == 7
        rest = model(input_ids=ids[:, 7:], attention_mask=mask, cache=cache).logits
    real = mask.bool()
    assert (drafted[:, :2] - full[:, 5:7])[real[:, 5:7]].abs().max() <= 1e-4
    assert (rest - full[:, 7:])[real[:, 7:]].abs().max() <= 1e-4


def test_band_crop_past_its_window_refuses_without_recording():
    model = lm("band", {"attention_window": 2})
    ids = random_batch(1, 9, None)[0]
    with torch.no_grad():
        cache = model(input_ids=ids[:, :6], use_cache=True).cache
        model(input_ids=ids[:, 6:], cache=cache)
    with pytest.raises(ValueError, match="activate_past_recording"):
        cache.crop(-2)
    assert cache.get_seq_length() == 9 and cache.layers[0].keys.shape[2] == 2  # nothing was changed


def test_band_recording_is_cut_back_to_the_window_by_crop():
    model = lm("band", {"attention_window": 2})
    ids = random_batch(1, 9, None)[0]
    with torch.no_grad():
        cache = model(input_ids=ids[:, :6], use_cache=True).cache
        cache.activate_past_recording()
        model(input_ids=ids[:, 6:], cache=cache)
        assert cache.layers[0].keys.shape[2] == 5  # the window (2) and the 3 new tokens
        cache.crop(-2)
    assert cache.layers[0].keys.shape[2] == 2 and cache.get_seq_length() == 7


def test_lstmn_crop_restores_the_summary_of_that_step():
    model = lm("lstmn", {})
    ids = random_batch(1, 8, None)[0]
    with torch.no_grad():
        short = model(input_ids=ids[:, :5], use_cache=True).cache
        model(input_ids=ids[:, 5:6], cache=short)  # builds the tapes of the prompt, then one step
        long = model(input_ids=ids[:, :5], use_cache=True).cache
        with pytest.raises(ValueError, match="activate_past_recording"):
            model(input_ids=ids[:, 5:6], cache=long).cache.crop(-1)  # the summary of step 5 was not kept
        long.activate_past_recording()
        model(input_ids=ids[:, 6:], cache=long)
        long.crop(-2)
    assert long.get_seq_length() == short.get_seq_length() == 6
    for a, b in zip(short.layers, long.layers):
        for name in a:
            torch.testing.assert_close(a[name], b[name])


# ----------------------------------------------------------------------------- generation modes


@pytest.mark.parametrize("mode", ["prompt_lookup", "assistant"])
@pytest.mark.parametrize(("variant", "fields"), GPT2_CASES, ids=GPT2_IDS)
def test_assisted_and_prompt_lookup_decoding_equal_greedy(variant, fields, mode):
    model = lm(variant, fields)
    ids = torch.tensor([[5, 6, 7, 8, 9, 5, 6, 7, 8, 9, 5, 6]])  # repeats: prompt lookup finds drafts
    extra = {"prompt_lookup_num_tokens": 3} if mode == "prompt_lookup" else {"assistant_model": lm(variant, fields, 1)}
    assert torch.equal(greedy(model, ids, **extra), greedy(model, ids))


def test_assisted_decoding_with_a_user_cache():
    model = lm("low_rank_band", {"band_combine": "sum"})
    ids = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5]])
    out = greedy(model, ids, cache=VariantCache(config=model.config), prompt_lookup_num_tokens=2)
    assert torch.equal(out, greedy(model, ids))


@pytest.mark.parametrize(("variant", "fields"), [("mixed", {"layer_variants": ["band", "lstmn"]}),
                                               ("low_rank_band", {"band_combine": "sequential"})])
def test_chunked_prefill_equals_greedy(variant, fields):
    model = lm(variant, fields)
    ids, mask = random_batch(2, 11, "left", seed=5)
    kw = dict(attention_mask=mask, n=5)
    assert torch.equal(greedy(model, ids, prefill_chunk_size=4, **kw), greedy(model, ids, **kw))


def test_cache_implementation():
    model = lm("band", {"attention_window": 2})
    ids = random_batch(1, 6, None)[0]
    assert torch.equal(greedy(model, ids, cache_implementation="dynamic"), greedy(model, ids))
    for name in ("offloaded", "quantized"):  # "static": tests/test_cache.py
        with pytest.raises(ValueError, match=f"cache_implementation='{name}'"):
            greedy(model, ids, cache_implementation=name)
    with pytest.raises(ValueError, match="VariantCache"):
        greedy(model, ids, cache=DynamicCache())
    with pytest.raises(ValueError, match="cache_implementation='paged'"):  # continuous batching
        greedy(model, ids, cache_implementation="paged")


# ----------------------------------------------------------------------------- config defaults, checkpointing


@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_gradient_checkpointing_returns_no_cache(variant, fields):
    model = lm(variant, fields).train()
    model.activation_checkpointing_enable()
    ids = random_batch(2, 6, None)[0]
    out = model(input_ids=ids, labels=ids, use_cache=True)
    assert out.cache is None
    out.loss.backward()
    assert model.transformer.wte.weight.grad is not None
    with torch.no_grad():  # without gradients nothing is checkpointed: the cache is kept, as stock
        assert model(input_ids=ids, use_cache=True).cache.get_seq_length() == 6


def stock_twin(family: str):
    """The stock model of the same size: GPT2LMHeadModel or BertModel."""
    config = tiny_config(family).to_dict()
    for key in ("model_type", "attention_variant", "layer_variants", "attention_rank", "attention_window",
                "band_combine", "additive_dim", "lstmn_direction", "transformers_version", "auto_map"):
        config.pop(key, None)
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(**config)).eval()
    return BertModel(BertConfig(**config)).eval()


def test_gpt2_honours_config_use_cache_and_return_dict():
    """Tuples as stock GPT-2's: (logits, cache) under config.use_cache, (logits,) without. (Stock
    GPT2LMHeadModel itself fails under config.return_dict=False in 5.24, so it gets return_dict=False.)"""
    ids = random_batch(2, 5, None)[0]
    ours, stock = lm("additive", {"additive_dim": 6}), stock_twin("gpt2")
    ours.config.return_dict = False
    for model, kw in ((ours, {}), (stock, {"return_dict": False})):
        with torch.no_grad():
            out = model(input_ids=ids, **kw)  # config.use_cache defaults to True for GPT-2
        assert isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Cache)
        assert out[1].get_seq_length() == 5
        model.config.use_cache = False
        with torch.no_grad():
            out = model(input_ids=ids, **kw)
        assert isinstance(out, tuple) and len(out) == 1
        with torch.no_grad():
            out = model(input_ids=ids, return_dict=True, use_cache=True)
        assert isinstance(out.cache, Cache)


def test_bert_honours_config_return_dict():
    ids, mask = random_batch(2, 5, "right")
    for model in (tiny_model("bert", "band"), stock_twin("bert")):
        model.config.return_dict = False
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        assert isinstance(out, tuple) and len(out) == 2  # last hidden state, pooled
        assert out[0].shape == (2, 5, 32) and out[1].shape == (2, 32)


# ----------------------------------------------------------------------------- attn_implementation


def _recording_sdpa(calls):
    def attention(module, query, key, value, attention_mask, **kwargs):
        calls.append(attention_mask is None or attention_mask.dim() == 4)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return attention


@pytest.mark.parametrize("family", FAMILIES)
def test_dense_dispatches_through_the_attention_interface(family):
    ids, mask = random_batch(3, 9, "left" if family == "gpt2" else "right", seed=4)
    real = mask.bool()
    reference = tiny_model(family, "dense")
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    calls = []
    AttentionInterface.register("variants_test_sdpa", _recording_sdpa(calls))
    AttentionMaskInterface.register("variants_test_sdpa", sdpa_mask)
    for name in ("eager", "sdpa", "variants_test_sdpa"):
        model = tiny_model(family, "dense")
        model.set_attn_implementation(name)
        assert model.config._attn_implementation == name
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (out - expected)[real].abs().max() <= 1e-5
    assert calls == [True, True]  # one call per layer, with the mask masking_utils built for it


@pytest.mark.slow  # flex_attention compiles on first use (10-30 s here)
@pytest.mark.parametrize("family", FAMILIES)
def test_dense_flex_attention(family):
    pytest.importorskip("torch.nn.attention.flex_attention")
    ids, mask = random_batch(2, 8, "right", seed=4)
    model = tiny_model(family, "dense")
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        model.set_attn_implementation("flex_attention")
        assert model.config._attn_implementation == "flex_attention"
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (out - expected)[mask.bool()].abs().max() <= 1e-5


@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES[1:], ids=CASE_IDS[1:])
def test_other_variants_refuse_names_they_cannot_honour(family, variant, fields):
    for name in ("flex_attention", "paged|eager"):
        with pytest.raises(ValueError, match=r"attn_implementation='(flex_attention|paged\|eager)'"):
            BASE_CLASS[family](tiny_config(family, variant, **fields, attn_implementation=name))
    model = tiny_model(family, variant, **fields)
    model.config._attn_implementation = "flex_attention"  # set behind the model's back: refused at forward
    with pytest.raises(ValueError, match=f"attention_variant\\(s\\) \\['{variant}'\\]"):
        model(input_ids=random_batch(1, 4, None)[0])
    for name in ("eager", "sdpa"):  # both accepted: the variant's own kernels
        model.config._attn_implementation = name
        with torch.no_grad():
            out = model(input_ids=random_batch(1, 6, None)[0]).last_hidden_state
        if name == "eager":
            expected = out
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_dense_refuses_paged_attention():
    with pytest.raises(ValueError, match="paged"):
        hv.VariantGPT2Model(tiny_config("gpt2", "dense", attn_implementation="paged|eager"))


# ----------------------------------------------------------------------------- offload


OFFLOAD_MAPS = {  # the first block on disk, everything else on cpu
    "gpt2": {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu", "transformer.h.0": "disk",
             "transformer.h.1": "cpu", "transformer.ln_f": "cpu", "lm_head": "cpu"},
    "bert": {"embeddings": "cpu", "encoder.layer.0": "disk", "encoder.layer.1": "cpu", "pooler": "cpu"},
}


@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_offloaded_model_equals_the_loaded_one(tmp_path, family, variant, fields):
    cls = hv.VariantGPT2LMHeadModel if family == "gpt2" else hv.VariantBertModel
    model = tiny_model(family, variant, cls=cls, **fields)
    model.save_pretrained(tmp_path / "model")
    offloaded = cls.from_pretrained(tmp_path / "model", device_map=OFFLOAD_MAPS[family],
                                    offload_folder=str(tmp_path / "offload")).eval()
    assert set(offloaded.hf_device_map.values()) == {"cpu", "disk"}
    ids, mask = random_batch(2, 8, "left" if family == "gpt2" else "right", seed=6)
    with torch.no_grad():
        expected, out = (m(input_ids=ids, attention_mask=mask)[0] for m in (model, offloaded))
    assert (out - expected)[mask.bool()].abs().max() <= 1e-5
    if family == "gpt2":
        kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert torch.equal(offloaded.generate(**kw), model.generate(**kw))


# ----------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_compile_fullgraph(family):
    """One graph through dense, low_rank, band and low_rank_band layers (padding included)."""
    layers = ["dense", "low_rank", "band", "low_rank_band"]
    size = {"num_hidden_layers": 4} if family == "bert" else {"n_layer": 4}
    model = tiny_model(family, "dense", layer_variants=layers, attention_rank=4, **size)
    ids, mask = random_batch(2, 8, "right", seed=2)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out = compiled(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (out - expected)[mask.bool()].abs().max() <= 1e-5


# ----------------------------------------------------------------------------- unknown keyword arguments


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_keyword_arguments_are_named(family):
    ids, mask = random_batch(1, 4, None)
    for cls in [BASE_CLASS[family], *HEAD_CLASSES[family]]:
        model = tiny_model(family, "dense", cls=cls)
        inputs = head_inputs(cls, ids, mask)
        with pytest.raises(TypeError, match="encoder_hidden_states"):
            model(input_ids=inputs["input_ids"], encoder_hidden_states=torch.randn(1, 4, 32))
        with pytest.raises(TypeError, match="atention_mask"):
            model(input_ids=inputs["input_ids"], atention_mask=mask)
        # the loss kwargs of transformers' loss functions (Trainer, sequence parallelism)
        model(**inputs, num_items_in_batch=torch.tensor(4), shift_labels=ids, ignore_index=-100)


def test_left_padded_row_equals_its_unpadded_self():
    """The deliberate difference from stock GPT-2: positions come from the attention mask."""
    model = lm("dense", {})
    ids = random_batch(1, 6, None, seed=8)[0]
    padded, mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1), torch.tensor([[0] * 3 + [1] * 6])
    with torch.no_grad():
        alone = model(input_ids=ids).logits
        left = model(input_ids=padded, attention_mask=mask).logits[:, 3:]
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-4)
