"""Hub-ready folders with a tokenizer beside them work through ``transformers.pipeline`` with
``trust_remote_code=True``, in ONE fresh interpreter where ``hf_attn_variants`` cannot be imported.
What the pipelines return is checked here against the saved models run by hand: fill-mask scores are
the softmax of the logits at the mask, text-classification labels and scores follow the logits,
greedy text-generation, with the cache (generate's default) and without, equals an argmax loop
without a cache, past the band window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from hub_helpers import HUB_CASE_IDS, HUB_CASES, TOKENIZERS, run_without_package

import hf_attn_variants as hv

TOLERANCE = 1e-5
MASKED_TEXT = "the cat [MASK] on the mat"
TEXT = "the small dog sat in the sun"
PROMPT = "the cat sat"
NEW_TOKENS = 10
TOP_K = 5
LABELS = {0: "negative", 1: "neutral", 2: "positive"}

# (task, family, model class, extra config fields, pipeline call kwargs)
PIPELINES = {
    "fill-mask": ("fill-mask", "bert", hv.VariantBertForMaskedLM, {}, {"top_k": TOP_K}),
    "bert-text-classification": ("text-classification", "bert", hv.VariantBertForSequenceClassification,
                                 {"id2label": LABELS}, {"top_k": None}),
    "gpt2-text-classification": ("text-classification", "gpt2", hv.VariantGPT2ForSequenceClassification,
                                 {"id2label": LABELS}, {"top_k": None}),
    "text-generation": ("text-generation", "gpt2", hv.VariantGPT2LMHeadModel, {"initializer_range": 0.5},
                        {"max_new_tokens": NEW_TOKENS, "do_sample": False, "return_tensors": True,
                         "use_cache": False}),
    # generate()'s default: use_cache=True, so each step feeds only the new token with the cache
    "text-generation-cached": ("text-generation", "gpt2", hv.VariantGPT2LMHeadModel, {"initializer_range": 0.5},
                               {"max_new_tokens": NEW_TOKENS, "do_sample": False, "return_tensors": True}),
}
INPUTS = {"fill-mask": MASKED_TEXT, "text-classification": TEXT, "text-generation": PROMPT}

RUNNER = '''
import json
import transformers

report = {}
for entry in json.loads(open("pipelines.json").read()):
    pipe = transformers.pipeline(entry["task"], model=entry["folder"], trust_remote_code=True)
    output = pipe(entry["input"], **entry["kwargs"])
    report[entry["folder"]] = {"class": f"{type(pipe.model).__module__}.{type(pipe.model).__name__}",
                               "output": output}
open("report.json", "w").write(json.dumps(report))
'''

CASES = [(name, case_id, case) for name in PIPELINES for case_id, case in zip(HUB_CASE_IDS, HUB_CASES)]


def folder_name(name: str, case_id: str) -> str:
    return f"{name}-{case_id}"


@pytest.fixture(scope="module")
def tokenizers() -> dict:
    return {family: make() for family, make in TOKENIZERS.items()}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizers) -> tuple[Path, dict]:
    """One folder (weights, code, tokenizer) per pipeline x variant case; the models stay here."""
    root = tmp_path_factory.mktemp("pipelines")
    models, manifest = {}, []
    for name, case_id, (variant, fields) in CASES:
        task, family, cls, extra, kwargs = PIPELINES[name]
        tokenizer = tokenizers[family]
        special = {"pad_token_id": tokenizer.pad_token_id} if family == "bert" else {
            "bos_token_id": tokenizer.eos_token_id, "eos_token_id": tokenizer.eos_token_id}
        model = tiny_model(family, variant, cls=cls, seed=len(manifest), vocab_size=len(tokenizer), **special,
                           **extra, **fields)
        folder = folder_name(name, case_id)
        model.save_pretrained(root / folder)
        tokenizer.save_pretrained(root / folder)
        models[folder] = model
        manifest.append({"folder": folder, "task": task, "input": INPUTS[task], "kwargs": kwargs})
    (root / "pipelines.json").write_text(json.dumps(manifest))
    return root, models


@pytest.fixture(scope="module")
def report(saved) -> dict:
    return run_without_package(RUNNER, saved[0])


def test_the_package_stayed_hidden(report):
    assert report["leaked"] == []


def check_fill_mask(model, tokenizer, output: list[dict]) -> None:
    enc = tokenizer(MASKED_TEXT, return_tensors="pt")
    position = (enc.input_ids[0] == tokenizer.mask_token_id).nonzero().item()
    with torch.no_grad():
        probs = model(**enc).logits[0, position].softmax(-1)
    top = probs.topk(TOP_K)
    assert [o["token"] for o in output] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([o["score"] for o in output]), top.values, atol=TOLERANCE, rtol=0)
    assert all(o["sequence"] for o in output) and "[MASK]" not in output[0]["sequence"]


def check_text_classification(model, tokenizer, output: list[dict]) -> None:
    with torch.no_grad():
        probs = model(**tokenizer(TEXT, return_tensors="pt")).logits[0].softmax(-1)
    assert output[0]["label"] == LABELS[probs.argmax().item()]
    scores = {o["label"]: o["score"] for o in output}
    assert set(scores) == set(LABELS.values())
    for index, label in LABELS.items():
        assert abs(scores[label] - probs[index].item()) <= TOLERANCE, label


def greedy_without_cache(model, tokenizer, prompt: str, steps: int) -> list[int]:
    ids = tokenizer(prompt).input_ids
    with torch.no_grad():
        for _ in range(steps):
            ids.append(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item())
            if ids[-1] == model.config.eos_token_id:
                break
    return ids


def check_text_generation(model, tokenizer, output: list[dict]) -> None:
    expected = greedy_without_cache(model, tokenizer, PROMPT, NEW_TOKENS)
    new = expected[len(tokenizer(PROMPT).input_ids):]
    assert len(set(new)) > 1, "a continuation repeating one token checks too little"  # (initializer_range 0.5)
    assert output[0]["generated_token_ids"] == expected


CHECKS = {"fill-mask": check_fill_mask, "text-classification": check_text_classification,
          "text-generation": check_text_generation}


@pytest.mark.parametrize(("name", "case_id", "case"), CASES, ids=[f"{n}-{c}" for n, c, _ in CASES])
def test_pipeline_matches_the_model(saved, report, tokenizers, name, case_id, case):
    task, family, cls, _, _ = PIPELINES[name]
    folder = folder_name(name, case_id)
    entry = report[folder]
    assert entry["class"].startswith("transformers_modules.") and entry["class"].endswith("." + cls.__name__)
    CHECKS[task](saved[1][folder], tokenizers[family], entry["output"])
