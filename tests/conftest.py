"""Shared fixtures: tiny configs for every variant case x both families."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

import hf_attn_variants as hv

# The property-based tests draw the same examples on every run (a suite that cannot flake); run
# HYPOTHESIS_PROFILE=explore python -m pytest tests/test_kernels.py to search new random examples.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

# every variant of the registry, once per test case its spec lists (low_rank_band: once per way of
# combining its two modules): a new variant joins every shared test through its spec's test_cases
VARIANT_CASES = [(name, dict(case)) for name, spec in hv.VARIANTS.items() for case in spec.test_cases]
CASE_IDS = [v + "".join(f"-{x}" for x in kw.values()) for v, kw in VARIANT_CASES]
FAMILIES = ["bert", "gpt2"]


def tiny_config(family: str, variant: str = "dense", **fields):
    """A 2-layer, hidden-32, 4-head config of the given family (any field can be overridden)."""
    fields = {"attention_window": 3, "attention_variant": variant, **fields}
    if family == "bert":
        base = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return hv.VariantBertConfig(**{**base, **fields})
    base = dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                attn_pdrop=0.0, pad_token_id=0)
    return hv.VariantGPT2Config(**{**base, **fields})


BASE_CLASS = {"bert": hv.VariantBertModel, "gpt2": hv.VariantGPT2Model}
HEAD_CLASSES = {
    "bert": [hv.VariantBertForMaskedLM, hv.VariantBertForSequenceClassification,
             hv.VariantBertForTokenClassification],
    "gpt2": [hv.VariantGPT2LMHeadModel, hv.VariantGPT2ForSequenceClassification],
}


def tiny_model(family: str, variant: str = "dense", cls=None, seed: int = 0, **fields):
    torch.manual_seed(seed)
    model = (cls or BASE_CLASS[family])(tiny_config(family, variant, **fields))
    return model.eval()


def random_batch(batch: int, length: int, padding: str | None = "right", vocab: int = 97, seed: int = 0):
    """Random token ids (never the pad id 0) and an attention mask with random lengths >= 1."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if padding:
        lengths = torch.randint(1, length + 1, (batch,), generator=g)
        lengths[0] = length
        for row, n in enumerate(lengths.tolist()):
            if padding == "right":
                mask[row, n:] = 0
            else:
                mask[row, : length - n] = 0
        ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run faster on one thread, above all on a machine shared with other test runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(params=VARIANT_CASES, ids=CASE_IDS)
def case(request):
    return request.param
