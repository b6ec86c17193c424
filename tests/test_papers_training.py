"""The papers' inter-attention systems through the training pipeline: the shipped date-normalisation
(seq2seq) and SNLI fusion (pair_fusion) configs, shrunk by overrides, train, evaluate and save folders
that load again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
train = pytest.importorskip("hf_attn_variants_research.train", reason="needs the train extra")

import hf_attn_variants as hv  # noqa: E402

COMMON = ["data.max_train_samples=64", "data.max_eval_samples=16", "data.max_test_samples=16", "num_train_epochs=1",
          "report_to=none", "use_cpu=true", "disable_tqdm=true", "per_device_train_batch_size=16"]


@pytest.mark.slow
def test_dates_additive_config_trains_generates_and_saves(tmp_path):
    from transformers import AutoTokenizer, EncoderDecoderModel

    overrides = [*COMMON, f"output_dir={tmp_path / 'run'}", "model.encoder.hidden_size=16",
                 "model.encoder.intermediate_size=32", "model.decoder.n_embd=16", "generation_max_length=14"]
    results = train.main([str(ROOT / "configs" / "dates" / "additive.yaml"), *overrides])
    (name, metrics), = results.items()
    assert name == "additive"
    assert {"test_exact_match", "test_bleu", "test_chrf"} <= set(metrics)
    assert 0 <= metrics["test_exact_match"] <= 1 and 0 <= metrics["test_chrf"] <= 100
    folder = tmp_path / "run" / "model"
    saved = json.loads((folder / "eval_results.json").read_text())
    assert saved["exact_match"] == metrics["test_exact_match"]
    model = EncoderDecoderModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.decoder.config.cross_attention_variant == "additive"
    out = model.generate(**tokenizer("3 mars 2021", return_tensors="pt"), max_new_tokens=12, do_sample=False)
    assert out[0, 0] == tokenizer.bos_token_id and out.shape[1] > 1


@pytest.mark.slow
def test_snli_deep_fusion_config_trains_and_saves_a_hub_folder(tmp_path):
    from transformers import AutoModelForSequenceClassification

    overrides = [*COMMON, f"output_dir={tmp_path / 'run'}", "tokenizer.vocab_size=300", "model.hidden_size=16",
                 "data.max_length=48"]
    results = train.main([str(ROOT / "configs" / "snli_fusion" / "deep.yaml"), *overrides])
    (name, metrics), = results.items()
    assert name == "deep" and 0 <= metrics["test_accuracy"] <= 1
    folder = tmp_path / "run" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_lstmn_fusion.")
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    assert isinstance(model, hv.LSTMNFusionForSequenceClassification) and model.config.fusion == "deep"
    assert torch.isfinite(next(model.parameters())).all()
