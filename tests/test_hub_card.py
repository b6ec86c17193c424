"""Model card rendering, Hub-ready folders (atomic) and publishing (huggingface_hub calls mocked, offline)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from huggingface_hub import ModelCard

import hf_attn_variants as hv
from hf_attn_variants import hub

ROOT = Path(__file__).resolve().parents[1]
CARD = {"task": "classification", "datasets": ["mr"], "dataset_name": "MR", "base_model": "org/bert-tiny",
        "metrics": {"accuracy": 0.8125, "macro_f1": 0.8}, "license": "mit", "extra_tags": ["sentiment"]}


@pytest.fixture
def model():
    return tiny_model("bert", "low_rank_band", cls=hv.VariantBertForSequenceClassification,
                      layer_variants=["band", "low_rank"], attention_rank=4)


@pytest.fixture(scope="module")
def tokenizer():
    from hf_attn_variants_research import tasks

    texts = [["a good film", "a bad film", "the story was great", "boring plot"] * 5]
    return tasks.train_tokenizer(texts, "bert", vocab_size=97)


def test_card_metadata_round_trip(model, tmp_path):
    card = hv.build_model_card(model, CARD, repo_id="me/tiny-variant")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "mit"
    assert data["base_model"] == "org/bert-tiny" and data["datasets"] == ["mr"]
    assert {"band", "low_rank", "hf-attn-variants", "sentiment"} <= set(data["tags"])
    assert data["pipeline_tag"] == "text-classification"
    results = {r.metric_type: r.metric_value for r in loaded.data.eval_results}
    assert results == {"accuracy": 0.8125, "macro_f1": 0.8}
    assert loaded.data.model_name == "tiny-variant"
    body = loaded.text
    assert "| 0 | `band` | attention_window=3, attention_global_tokens=0 |" in body
    assert "| 1 | `low_rank` | attention_rank=4 |" in body
    assert "Guo, Qiu, Xue, Zhang" in body and "Bahdanau" not in body
    assert 'AutoModelForSequenceClassification.from_pretrained("me/tiny-variant", trust_remote_code=True)' in body
    assert "| MR | test | accuracy | 0.8125 |" in body


@pytest.mark.parametrize("bad, match", [({"metrics": {"accuracy": "high"}}, "metrics"),
                                        ({"task": "regression"}, "task"), ({"dataset": "mr"}, "unknown keys")])
def test_bad_card_data(model, bad, match):
    with pytest.raises(ValueError, match=match):
        hv.build_model_card(model, bad)


def test_save_hub_folder_is_complete_and_loads(model, tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = hv.save_hub_folder(model, tokenizer, tmp_path / "out", card_data=CARD)
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "README.md", "eval_results.json", "tokenizer.json",
            "modeling_bert_variants.py", "configuration_variants.py", "hfav_attention.py"} <= names
    assert not any(n.endswith((".bin", ".pt")) for n in names)
    assert "auto_map" in json.loads((folder / "config.json").read_text())
    assert json.loads((folder / "eval_results.json").read_text()) == CARD["metrics"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
    loaded = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    ids = torch.tensor([AutoTokenizer.from_pretrained(folder)("a good film")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_existing_folder_replaced_only_when_complete(model, tokenizer, tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous run")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub, "build_model_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        hv.save_hub_folder(model, tokenizer, target, card_data=CARD)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (target / "old.txt").read_text() == "previous run"
    monkeypatch.undo()
    hv.save_hub_folder(model, tokenizer, target, card_data=CARD)
    assert not (target / "old.txt").exists() and (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


class FakeApi:
    """Records create_repo / upload_folder calls and what the uploaded folder held at that moment."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, **kwargs):
        FakeApi.calls.append(("create_repo", kwargs, self.token))

    def upload_folder(self, **kwargs):
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        card = ModelCard.load(Path(kwargs["folder_path"]) / "README.md")
        FakeApi.calls.append(("upload_folder", kwargs, files, card.data.model_name))
        return "commit-info"


def test_publish_uploads_the_built_folder(model, tokenizer, monkeypatch):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert hv.publish(model, tokenizer, "me/tiny-variant", card_data=CARD, token="tok", private=True) == "commit-info"
    (name, create, token), (name2, upload, files, model_name) = FakeApi.calls
    assert name == "create_repo" and create["repo_id"] == "me/tiny-variant" and create["private"] is True
    assert token == "tok" and name2 == "upload_folder" and upload["repo_id"] == "me/tiny-variant"
    expected = {"model.safetensors", "config.json", "README.md", "tokenizer.json", "modeling_bert_variants.py"}
    assert expected <= set(files)
    assert model_name == "tiny-variant"
    assert not Path(upload["folder_path"]).exists()  # the staging folder is cleaned up


def test_publish_dry_run_and_local_dir_do_not_upload(model, tokenizer, tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("no upload expected")

    monkeypatch.setattr(huggingface_hub, "HfApi", no_network)
    folder = hv.publish(model, tokenizer, "me/tiny-variant", card_data=CARD, dry_run_dir=tmp_path / "dry")
    assert folder == (tmp_path / "dry").resolve() and (folder / "model.safetensors").is_file()
    assert 'from_pretrained("me/tiny-variant"' in (folder / "README.md").read_text()
    local = hv.publish(model, tokenizer, str(tmp_path / "local"), card_data=CARD)
    assert (local / "README.md").is_file()


def test_template_ships_in_the_wheel(tmp_path):
    """The card template is package data: a regular (non-editable) install renders cards from it."""
    source = tmp_path / "src"  # build from a copy: nothing written into the repository
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    for name in ("hf_attn_variants", "hf_attn_variants_research", "model_cards", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("hf_attn_variants-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "hf_attn_variants/model_cards/variant_model_card.md" in names
    assert {"hf_attn_variants_research/train.py", "hf_attn_variants_research/configs/quickstart.yaml",
            "hf_attn_variants_research/configs/mr/band.yaml"} <= set(names)  # the research layer and its configs
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what a regular install puts on sys.path
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import hf_attn_variants as hv; "
              "from hf_attn_variants.hub import template_path; p = template_path(); "
              "assert str(p).startswith(sys.argv[1]), p; assert hv.__file__.startswith(sys.argv[1]); "
              "from hf_attn_variants_research.yaml_files import resolve_config; c = resolve_config('mr/band'); "
              "assert str(c).startswith(sys.argv[1]), c; print(p)")
    run = subprocess.run([sys.executable, "-c", script, str(site)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("model_cards/variant_model_card.md")
