"""Band attention for stock transformers models (hf_attn_variants.register_band_attention): tiny stock
Llama (grouped kv heads), Qwen2 and BERT (encoder, and decoder) loaded with from_pretrained(...,
attn_implementation=...) equal the eager model given an explicit band mask, with random padding,
causal and bidirectional; cached decoding and greedy generate equal the full forward pass."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    DynamicCache,
    LlamaConfig,
    Qwen2Config,
)

import hf_attn_variants as hv
from hf_attn_variants.stock_attention import resolve_window

NAME = hv.register_band_attention()  # window from each model's config
VOCAB, LENGTH = 97, 14
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=64)
BERT = dict(SMALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
# name: (config, auto class, causal, padding side)
MODELS = {
    "llama": (lambda: LlamaConfig(**SMALL, num_key_value_heads=2, pad_token_id=0), AutoModelForCausalLM, True, "left"),
    "qwen2": (lambda: Qwen2Config(**SMALL, num_key_value_heads=1, pad_token_id=0), AutoModelForCausalLM, True, "left"),
    "bert": (lambda: BertConfig(**BERT), AutoModel, False, "right"),
    "bert_decoder": (lambda: BertConfig(**BERT, is_decoder=True), AutoModelForCausalLM, True, "left"),
}
CAUSAL = [name for name, spec in MODELS.items() if spec[2]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """Each tiny stock model, randomly initialised and saved once."""
    folders = {}
    for name, (config, auto, _, _) in MODELS.items():
        torch.manual_seed(0)
        folders[name] = tmp_path_factory.mktemp(name)
        auto.from_config(config()).save_pretrained(folders[name])
    return folders


def load(saved, name: str, implementation: str, window: int | None = None):
    model = MODELS[name][1].from_pretrained(saved[name], attn_implementation=implementation).eval()
    if window is not None:
        model.config.attention_window = window
    return model


def explicit_band_mask(mask: torch.Tensor, window: int, causal: bool) -> torch.Tensor:
    """The (B, 1, T, T) additive float mask of the band and the padding, for the eager model."""
    pos = torch.arange(mask.shape[1])
    diff = pos[:, None] - pos[None, :]  # query position minus key position
    band = (diff >= 0) & (diff <= window) if causal else diff.abs() <= window
    allowed = band[None] & mask.bool()[:, None, :]  # (B, T, T)
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


def outputs(model, **inputs) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("window", [0, 2, 5, LENGTH])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_equals_eager_with_explicit_band_mask(saved, name, window):
    """Random padding (left for causal LMs, right for BERT); compared at the real tokens."""
    causal, padding = MODELS[name][2], MODELS[name][3]
    ids, mask = random_batch(4, LENGTH, padding, vocab=VOCAB, seed=window)
    band = outputs(load(saved, name, NAME, window), input_ids=ids, attention_mask=mask)
    eager = outputs(load(saved, name, "eager"), input_ids=ids, attention_mask=explicit_band_mask(mask, window, causal))
    real = mask.bool()
    assert (band - eager)[real].abs().max() <= 1e-5
    if window < LENGTH - 1:  # and the band matters: full attention differs
        full = outputs(load(saved, name, "eager"), input_ids=ids, attention_mask=mask)
        assert (band - full)[real].abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_reaches_the_attention_function(saved, name):
    """The registered mask function hands the padding over: padded keys do not change the real tokens' outputs,
    whatever the padded ids are (without the mask registration transformers would pass attention_mask=None)."""
    model = load(saved, name, NAME, 3)
    ids, mask = random_batch(3, LENGTH, MODELS[name][3], vocab=VOCAB, seed=5)
    noise = torch.randint(1, VOCAB, ids.shape, generator=torch.Generator().manual_seed(1))
    other = torch.where(mask.bool(), ids, noise)  # other ids on the padding
    real = mask.bool()
    a, b = outputs(model, input_ids=ids, attention_mask=mask), outputs(model, input_ids=other, attention_mask=mask)
    assert (a - b)[real].abs().max() <= 1e-5
    assert (a - outputs(model, input_ids=other))[real].abs().max() > 1e-3  # padding read as tokens differs


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """generate()'s positions for a left-padded batch: count real tokens, 0 on the padding."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("name", CAUSAL)
def test_cached_decoding_equals_full_forward(saved, name):
    model = load(saved, name, NAME, 3)
    ids, mask = random_batch(3, LENGTH, "left", vocab=VOCAB, seed=7)
    pos = position_ids(mask)
    full = outputs(model, input_ids=ids, attention_mask=mask, position_ids=pos)
    cache, logits = DynamicCache(config=model.config), []
    with torch.no_grad():
        for t0, t1 in [(0, 5)] + [(t, t + 1) for t in range(5, LENGTH)]:  # a prefill of 5, then one at a time
            out = model(input_ids=ids[:, t0:t1], attention_mask=mask[:, :t1], position_ids=pos[:, t0:t1],
                        cache=cache, use_cache=True)
            logits.append(out.logits)
    stepped = torch.cat(logits, dim=1)
    assert (stepped - full)[mask.bool()].abs().max() <= 1e-4


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", CAUSAL)
def test_greedy_generate_equals_full_forward_argmax(saved, name, cache):
    """Also with a static cache, whose empty slots the mask function cuts off."""
    model = load(saved, name, NAME, 2)
    ids, mask = random_batch(2, 6, "left", vocab=VOCAB, seed=11)
    new = 8
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=0,
                         cache_implementation=cache)
    seq, seq_mask = ids, mask
    for _ in range(new):
        logits = outputs(model, input_ids=seq, attention_mask=seq_mask, position_ids=position_ids(seq_mask))
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        seq, seq_mask = torch.cat([seq, nxt], 1), torch.cat([seq_mask, torch.ones_like(nxt)], 1)
    assert torch.equal(out, seq)
    assert len(set(seq[:, 6:].flatten().tolist())) > 1  # a continuation repeating one token checks too little


def test_window_sources_and_conventions(saved):
    """register_band_attention(window=) beats config.attention_window (ours), which beats config.sliding_window
    (transformers': a causal window of W keeps W tokens, so w = W - 1; a bidirectional one, w = W)."""
    config = LlamaConfig(**SMALL)
    config.sliding_window = 4
    assert resolve_window(config, None, causal=True) == 3 and resolve_window(config, None, causal=False) == 4
    config.attention_window = 2
    assert resolve_window(config, None, causal=True) == 2 and resolve_window(config, 6, causal=True) == 6
    name = hv.register_band_attention("band_attention_w1", window=1)
    ids, mask = random_batch(2, LENGTH, "left", vocab=VOCAB, seed=3)
    fixed = load(saved, "llama", name, window=9)  # the registered window (1) wins over the config's (9)
    eager = explicit_band_mask(mask, 1, causal=True)
    reference = outputs(load(saved, "llama", "eager"), input_ids=ids, attention_mask=eager)
    assert (outputs(fixed, input_ids=ids, attention_mask=mask) - reference)[mask.bool()].abs().max() <= 1e-5
    sliding = load(saved, "llama", NAME)
    sliding.config.sliding_window = 2  # w = 1
    assert (outputs(sliding, input_ids=ids, attention_mask=mask) - reference)[mask.bool()].abs().max() <= 1e-5


@pytest.mark.parametrize("window", [-1, 2.5, "8", True])
def test_bad_window_is_named(saved, window):
    with pytest.raises(ValueError, match=f"window={window!r} is invalid"):
        hv.register_band_attention("band_attention_bad", window=window)
    model = load(saved, "bert", NAME)
    model.config.attention_window = window
    with pytest.raises(ValueError, match=f"config.attention_window={window!r} is invalid"):
        outputs(model, input_ids=torch.tensor([[5, 6, 7]]))


def test_missing_window_and_bad_names_are_named(saved):
    model = load(saved, "bert", NAME)  # BertConfig has no attention_window nor sliding_window
    with pytest.raises(ValueError, match="no window for this BertConfig"):
        outputs(model, input_ids=torch.tensor([[5, 6, 7]]))
    for name in ("sdpa", "eager", ""):
        with pytest.raises(ValueError, match=f"name={name!r}"):
            hv.register_band_attention(name, window=2)


def test_a_cache_shorter_than_the_window_is_refused(saved):
    """A sliding-window cache layer keeps W - 1 keys: a band reaching further back would silently lose keys."""
    model = load(saved, "llama", NAME, window=4)
    model.config.sliding_window = 3  # the cache keeps 2 past keys; the band needs 4
    ids = torch.randint(1, VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids[:, :5], cache=cache, use_cache=True)
        with pytest.raises(ValueError, match="band window reaches back"):
            model(input_ids=ids[:, 5:], cache=cache, use_cache=True)


def test_cross_attention_stays_dense(tmp_path):
    """A BERT decoder with cross-attention: band self-attention, dense cross-attention over the (padded) encoder
    states, equal to the eager model given the explicit band mask and the encoder padding."""
    from transformers import BertLMHeadModel

    torch.manual_seed(0)
    BertLMHeadModel(BertConfig(**BERT, is_decoder=True, add_cross_attention=True)).save_pretrained(tmp_path)
    ids, mask = random_batch(2, LENGTH, "left", vocab=VOCAB, seed=2)
    encoder = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(3))
    encoder_mask = torch.ones(2, 9, dtype=torch.long)
    encoder_mask[1, 6:] = 0
    band = BertLMHeadModel.from_pretrained(tmp_path, attn_implementation=NAME).eval()
    band.config.attention_window = 2
    eager = BertLMHeadModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    kw = dict(input_ids=ids, encoder_hidden_states=encoder, encoder_attention_mask=encoder_mask)
    ours = outputs(band, attention_mask=mask, **kw)
    reference = outputs(eager, attention_mask=explicit_band_mask(mask, 2, causal=True), **kw)
    assert (ours - reference)[mask.bool()].abs().max() <= 1e-5


def test_the_mask_pattern_is_read_from_its_base_not_guessed():
    """Which key slots hold tokens follows the base pattern transformers built the mask function on,
    through its combinators and padding closures (which cannot be called on scalar indices); a pattern
    built on neither base, or on both, is refused with a message instead of being taken as causal."""
    from transformers import masking_utils as mu

    from hf_attn_variants.stock_attention import _reads_ahead

    padding = mu.padding_mask_function(torch.ones(2, 1, dtype=torch.bool))  # indexing key 1 would fail
    causal = [mu.causal_mask_function, mu.sliding_window_causal_mask_function(3), mu.and_masks(
        mu.causal_mask_function, padding), mu.chunked_causal_mask_function(4, torch.zeros(1, dtype=torch.long))]
    bidirectional = [mu.bidirectional_mask_function, mu.sliding_window_bidirectional_mask_function(2),
                     mu.and_masks(mu.bidirectional_mask_function, padding)]
    assert [_reads_ahead(f) for f in causal + bidirectional] == [False] * len(causal) + [True] * len(bidirectional)
    assert _reads_ahead(None) is False
    for unknown in (lambda b, h, q, k: q >= k, mu.or_masks(mu.causal_mask_function, mu.bidirectional_mask_function)):
        with pytest.raises(ValueError, match="causal or bidirectional"):
            _reads_ahead(unknown)
