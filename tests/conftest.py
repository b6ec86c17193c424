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
# every head of a family (the first is the family's LM head); helpers below give each its inputs and labels
HEAD_CLASSES = {
    "bert": [hv.VariantBertForMaskedLM, hv.VariantBertForSequenceClassification,
             hv.VariantBertForTokenClassification, hv.VariantBertForQuestionAnswering, hv.VariantBertForMultipleChoice,
             hv.VariantBertForNextSentencePrediction, hv.VariantBertForPreTraining, hv.VariantBertLMHeadModel],
    "gpt2": [hv.VariantGPT2LMHeadModel, hv.VariantGPT2ForSequenceClassification, hv.VariantGPT2ForTokenClassification,
             hv.VariantGPT2ForQuestionAnswering, hv.VariantGPT2DoubleHeadsModel],
}
# fields a head needs in its config: the BERT decoder
HEAD_FIELDS = {hv.VariantBertLMHeadModel: {"is_decoder": True}}
CHOICE_HEADS = (hv.VariantBertForMultipleChoice, hv.VariantGPT2DoubleHeadsModel)  # inputs (B, choices, T)
NUM_CHOICES = 2


def tiny_model(family: str, variant: str = "dense", cls=None, seed: int = 0, **fields):
    torch.manual_seed(seed)
    fields = {**HEAD_FIELDS.get(cls, {}), **fields}
    model = (cls or BASE_CLASS[family])(tiny_config(family, variant, **fields))
    return model.eval()


def head_inputs(cls, ids, mask=None) -> dict:
    """The inputs of a head for the batch ids, mask (B, T): multiple-choice heads get (B, 2, T), the
    second choice other tokens under the same mask."""
    if cls not in CHOICE_HEADS:
        return {"input_ids": ids, "attention_mask": mask}
    other = (ids % 96) + 1
    choice_mask = None if mask is None else mask[:, None].expand(-1, NUM_CHOICES, -1).contiguous()
    return {"input_ids": torch.stack([ids, other], dim=1), "attention_mask": choice_mask}


def head_labels(cls, ids) -> dict:
    """Label keyword arguments of a head for the batch ids (B, T) (multiple-choice heads: (B, 2, T))."""
    name, batch, length = cls.__name__, ids.shape[0], ids.shape[-1]
    rows = torch.arange(batch)
    if name.endswith(("SequenceClassification", "MultipleChoice", "NextSentencePrediction")):
        return {"labels": rows % 2}
    if name.endswith("TokenClassification"):
        return {"labels": ids % 2}
    if name.endswith("QuestionAnswering"):
        return {"start_positions": rows % length, "end_positions": (rows + 2) % length}
    if name.endswith("ForPreTraining"):
        return {"labels": ids, "next_sentence_label": rows % 2}
    if name.endswith("DoubleHeadsModel"):
        choices = torch.stack([ids, (ids % 96) + 1], dim=1)
        return {"labels": choices, "mc_labels": rows % 2}
    return {"labels": ids}


def head_logits(output):
    """A head's main output: the first tensor it returns without labels (logits, start_logits, prediction_logits)."""
    return output.to_tuple()[0] if hasattr(output, "to_tuple") else output[0]


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
