"""End-to-end runs of hf_attn_variants_research/train.py on tiny configs and small local fixture files: every task,
a stock checkpoint converted to a variant, resume after SIGKILL, and a 2-process (gloo) run."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]

train = pytest.importorskip("hf_attn_variants_research.train", reason="needs the train extra")

POSITIVE = ["good", "great", "love", "wonderful", "superb"]
NEGATIVE = ["bad", "awful", "hate", "terrible", "boring"]
FILLER = ["the", "movie", "film", "plot", "actor", "was", "is", "a", "story", "really", "quite", "it", "and", "with"]
TINY_BERT = {"family": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
TINY_GPT2 = {"family": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
             "attn_pdrop": 0.0}
TRAINING = {"num_train_epochs": 3, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 32,
            "learning_rate": 3e-3, "seed": 7, "use_cpu": True, "disable_tqdm": True, "save_strategy": "epoch",
            "eval_strategy": "epoch", "logging_strategy": "epoch", "report_to": "none", "dataloader_num_workers": 0}


def sentiment_rows(n: int, seed: int) -> list[dict]:
    """Sentences of filler words with one sentiment word: the label is that word's polarity."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER, k=6)
        positive = i % 2 == 0
        words.insert(rng.randrange(7), rng.choice(POSITIVE if positive else NEGATIVE))
        rows.append({"text": " ".join(words), "label": "pos" if positive else "neg"})
    return rows


def write_csv(path: Path, rows: list[dict]) -> str:
    path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("data")
    out = {split: write_csv(folder / f"{split}.csv", sentiment_rows(n, seed))
           for split, n, seed in (("train", 240, 0), ("validation", 48, 1), ("test", 64, 2))}
    rng = random.Random(3)
    pairs = []
    for i in range(160):
        premise = rng.sample(FILLER, 4)
        entail = i % 2 == 0
        hypothesis = rng.choice(premise) if entail else rng.choice([w for w in FILLER if w not in premise])
        pairs.append({"premise": " ".join(premise), "hypothesis": hypothesis,
                      "gold": "entailment" if entail else "contradiction"})
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out["pairs"] = str(folder / "pairs.jsonl")
    alphabet = "abcdefghij"
    lines = [" ".join(alphabet[(start + k) % 10] * 2 for k in range(12)) for start in range(10) for _ in range(40)]
    (folder / "text.txt").write_text("\n".join(lines) + "\n")
    out["text"] = str(folder / "text.txt")
    return out


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory) -> str:
    """A WordPiece tokenizer with a fixed vocabulary (every word of the fixture files, sorted). A trained one
    differs between processes (``tokenizers`` breaks frequency ties differently in each), which makes the
    token ids, hence the whole run, differ: runs with this one are deterministic."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(POSITIVE + NEGATIVE + FILLER)))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    folder = tmp_path_factory.mktemp("word_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]", model_max_length=64,
                            model_input_names=["input_ids", "token_type_ids", "attention_mask"]).save_pretrained(folder)
    return str(folder)


def train_losses(run_dir: Path) -> list[float]:
    """The training loss logged at each epoch of a run (from its last checkpoint's trainer_state.json)."""
    states = sorted((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.split("-")[1]))
    return [entry["loss"] for entry in json.loads(states[-1].read_text())["log_history"] if "loss" in entry]


def write_config(path: Path, cfg: dict) -> str:
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def classification_config(files: dict, out: Path, **variant) -> dict:
    # initializer_range 0.2: from BERT's 0.02 a tiny model first sits on a loss plateau at ln 2 and leaves it
    # after a number of steps that rounding can change; from 0.2 its loss falls from the first epoch on
    return {"task": "classification", "model": {**TINY_BERT, "initializer_range": 0.2},
            "variant": variant or {"attention_variant": "low_rank_band", "attention_rank": 4, "attention_window": 2},
            "tokenizer": {"vocab_size": 100},
            "data": {"train_file": files["train"], "validation_file": files["validation"], "test_file": files["test"],
                     "max_length": 16},
            "training": {**TRAINING, "output_dir": str(out)}}


def read_results(folder: Path) -> dict:
    return json.loads((folder / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def classification_run(files, word_tokenizer, tmp_path_factory):
    """A deterministic run (fixed tokenizer, seed, one thread) of low_rank_band and a dense baseline."""
    out = tmp_path_factory.mktemp("cls")
    cfg = classification_config(files, out / "run")
    cfg["tokenizer"] = {"pretrained": word_tokenizer}
    cfg["baselines"] = {"dense": {"attention_variant": "dense"}}
    results = train.main([write_config(out / "run.yaml", cfg)])
    return out / "run", results


# how far the training loss must fall from the first epoch to the last: measured 0.11 to 0.18 on these runs
LOSS_DROP = 0.05


def test_classification_with_baseline(classification_run):
    """The low_rank_band run and its dense baseline both learn (their loss falls) and leave Hub-ready folders.
    No threshold on test accuracy: on 64 test rows it moves by steps of 1/64 with any change of rounding."""
    run_dir, results = classification_run
    assert set(results) == {"low_rank_band", "dense"}
    for name in results:
        folder = run_dir / name / "model"
        metrics = read_results(folder)
        assert metrics["accuracy"] == pytest.approx(results[name]["test_accuracy"])
        assert 0 <= metrics["accuracy"] <= 1 and 0 < metrics["macro_f1"] <= 1
        losses = train_losses(run_dir / name)
        assert len(losses) == 3 and losses[-1] < losses[0] - LOSS_DROP, (name, losses)
        config = json.loads((folder / "config.json").read_text())
        assert config["attention_variant"] == name and "auto_map" in config
        assert config["id2label"] == {"0": "neg", "1": "pos"}
        for f in ("model.safetensors", "tokenizer.json", "README.md", "modeling_bert_variants.py"):
            assert (folder / f).is_file(), f
        card = (folder / "README.md").read_text()
        assert f"`{name}`" in card and f"# run-{name}" in card
    assert (run_dir / "low_rank_band" / "checkpoints").is_dir()


def test_hub_folder_loads_and_predicts(classification_run):
    """The saved folder loads with the Auto classes (remote code) and reproduces the test accuracy."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = classification_run[0] / "low_rank_band" / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    rows = sentiment_rows(64, 2)
    batch = tokenizer([r["text"] for r in rows], padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        predictions = model(**batch).logits.argmax(-1)
    labels = torch.tensor([int(r["label"] == "pos") for r in rows])
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy == pytest.approx(read_results(folder)["accuracy"], abs=1e-6)


def test_pair_classification(files, tmp_path):
    cfg = {"task": "pair_classification", "model": dict(TINY_BERT), "variant": {"attention_variant": "additive"},
           "tokenizer": {"vocab_size": 80},
           "data": {"train_file": files["pairs"], "text_column": "premise", "text_pair_column": "hypothesis",
                    "label_column": "gold", "max_length": 16},
           "training": {**TRAINING, "num_train_epochs": 1, "output_dir": str(tmp_path / "run")}}
    results = train.main([write_config(tmp_path / "pair.yaml", cfg)])
    folder = tmp_path / "run" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "contradiction", "1": "entailment"}
    assert config["attention_variant"] == "additive"
    assert 0 <= results["additive"]["test_accuracy"] <= 1 and set(read_results(folder)) >= {"accuracy", "macro_f1"}
    from transformers import AutoTokenizer

    encoded = AutoTokenizer.from_pretrained(folder)("a story", "the plot")
    assert encoded["token_type_ids"].count(1) >= 2  # the pair is encoded as two segments


@pytest.mark.parametrize("task", ["causal_lm", "masked_lm"])
def test_language_models_learn(files, tmp_path, task):
    """On a repetitive text a tiny model's loss falls and its test perplexity ends below the vocabulary size
    (uniform guessing). Measured: loss 3.4 -> 0.16 and perplexity 1.2 of 257 (causal), 3.1 -> 2.3 and 10 of 35
    (masked: the 10 words of the text), so neither bound is near what the runs reach."""
    model = dict(TINY_GPT2 if task == "causal_lm" else TINY_BERT)
    variant = {"attention_variant": "band", "attention_window": 4} if task == "causal_lm" else \
        {"attention_variant": "low_rank", "attention_rank": 4}
    cfg = {"task": task, "model": model, "variant": variant, "tokenizer": {"vocab_size": 60},
           "data": {"train_file": files["text"], "max_length": 24},
           "training": {**TRAINING, "num_train_epochs": 6, "output_dir": str(tmp_path / "run")}}
    results = train.main([write_config(tmp_path / "lm.yaml", cfg)])[variant["attention_variant"]]
    folder = tmp_path / "run" / "model"
    metrics = read_results(folder)
    vocab = len(json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"])
    assert metrics["perplexity"] == pytest.approx(results["test_perplexity"])
    assert 1 <= metrics["perplexity"] < vocab, (metrics, vocab)
    assert 0 <= results["test_accuracy"] <= 1
    losses = train_losses(tmp_path / "run")
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3, losses
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == ("variant_gpt2" if task == "causal_lm" else "variant_bert")
    card = (folder / "README.md").read_text()
    assert ("text-generation" if task == "causal_lm" else "fill-mask") in card


def test_stock_checkpoint_converted(classification_run, files, tmp_path):
    """model.pretrained: a stock BERT checkpoint is converted to the variant (and named as base_model)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer_dir = classification_run[0] / "dense" / "model"
    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    torch.manual_seed(0)
    stock = BertForSequenceClassification(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=4, intermediate_size=64, num_labels=2))
    stock.save_pretrained(tmp_path / "stock")
    cfg = classification_config(files, tmp_path / "run", attention_variant="low_rank", attention_rank=8)
    cfg["model"] = {"family": "bert", "pretrained": str(tmp_path / "stock")}
    cfg["tokenizer"] = {"pretrained": str(tokenizer_dir)}
    cfg["training"]["num_train_epochs"] = 1
    train.main([write_config(tmp_path / "conv.yaml", cfg)])
    folder = tmp_path / "run" / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "variant_bert" and config["attention_variant"] == "low_rank"
    assert config["attention_rank"] == 8 and config["hidden_size"] == 32
    assert f"base_model: {tmp_path / 'stock'}" in (folder / "README.md").read_text()


def test_tensorboard_logs_when_asked(files, tmp_path):
    cfg = classification_config(files, tmp_path / "run")
    cfg["training"].update(num_train_epochs=1, report_to="tensorboard")
    train.main([write_config(tmp_path / "tb.yaml", cfg)])
    events = list((tmp_path / "run" / "checkpoints").rglob("events.out.tfevents.*"))
    assert events and max(e.stat().st_size for e in events) > 100


def test_tokenizer_fingerprint_is_content_based():
    """Equal texts give equal fingerprints (ranks reuse rank 0's trained tokenizer); other texts do not."""
    from datasets import Dataset, DatasetDict

    from hf_attn_variants_research import tasks

    rows = {"text": ["a b", "c d"]}
    one, two = (DatasetDict({"train": Dataset.from_dict(rows)}) for _ in range(2))
    assert tasks.text_digest(one, ["text"]) == tasks.text_digest(two, ["text"])
    three = DatasetDict({"train": Dataset.from_dict({"text": ["a b", "c e"]})})
    assert tasks.text_digest(three, ["text"]) != tasks.text_digest(one, ["text"])


def test_trained_wordpiece_is_the_same_every_time():
    """tokenizers' WordPiece trainer gives a different vocabulary from one training to the next (ties between
    merges broken by hash-map order, huggingface/tokenizers#1794; 30 of 30 differed on this corpus); ours,
    with the continuing-subword alphabet declared up front, is the same every time, has the asked size, and
    its "##x" entries are ordinary tokens that encode and decode as the stock one does."""
    import random

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from hf_attn_variants_research import tasks

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 7))) for _ in range(300)]
    texts = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(200)]

    def stock_vocab() -> str:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]"]))
        return json.dumps(sorted(tok.get_vocab().items()))

    # the upstream trainer alone gave 10 different vocabularies in 10 trainings here (tokenizers 0.23.3); not
    # asserted, so that a release that fixes it does not fail this test
    print(f"stock WordPiece trainer: {len({stock_vocab() for _ in range(10)})} vocabularies in 10 trainings")
    ours = [tasks.train_tokenizer([texts], "bert", 120) for _ in range(10)]
    assert len({json.dumps(sorted(t.get_vocab().items())) for t in ours}) == 1
    tok = ours[0]
    assert len(tok) == 120 and tok.all_special_tokens == ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"]
    ids = tok(texts[0])["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert any(tok.convert_ids_to_tokens(i).startswith("##") for i in ids)  # words split into pieces
    assert tok.decode(ids, skip_special_tokens=True) == texts[0]  # the "##x" pieces are not dropped as specials


# ----------------------------------------------------------------------------- subprocess runs

def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _train(args: list[str], env: dict | None = None, launcher: list[str] | None = None):
    cmd = [*(launcher or [sys.executable]), "-m", "hf_attn_variants_research.train", *args]
    return subprocess.run(cmd, env=env or _env(), cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_resume_after_sigkill(word_tokenizer, files, tmp_path):
    """A run killed (SIGKILL) after its step-30 checkpoint resumes and ends with the uninterrupted run's metrics."""
    cfg = classification_config(files, tmp_path / "unused")
    # one tokenizer for both runs: tokenizers' trainer breaks frequency ties differently in each process
    cfg["tokenizer"] = {"pretrained": word_tokenizer}
    cfg["training"].update(num_train_epochs=3, save_strategy="steps", save_steps=15, eval_strategy="no")
    cfg["model"]["hidden_dropout_prob"] = 0.1  # dropout: the RNG state must be restored too
    path = write_config(tmp_path / "run.yaml", cfg)
    whole = _train([path, f"training.output_dir={tmp_path / 'whole'}"])
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = _train([path, f"training.output_dir={tmp_path / 'killed'}"],
                    env={**_env(), train.KILL_ENV: "30"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    checkpoints = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-15", "checkpoint-30"]
    assert not (tmp_path / "killed" / "model").exists()
    resumed = _train([path, f"training.output_dir={tmp_path / 'killed'}", "--resume_from_checkpoint", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-30" in resumed.stderr + resumed.stdout
    a, b = read_results(tmp_path / "whole" / "model"), read_results(tmp_path / "killed" / "model")
    assert a == b  # accuracy and macro-F1: identical
    from safetensors.torch import load_file

    wa, wb = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("whole", "killed"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # and the same weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LAUNCHERS = {
    "torchrun": lambda: [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                         "--master_port", str(_free_port())],
    "accelerate": lambda: [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port",
                           str(_free_port())],
}


def two_process_config(files: dict, tokenizer: str, out: Path) -> dict:
    cfg = classification_config(files, out)
    cfg["tokenizer"] = {"pretrained": tokenizer}  # the same ids in every process: a deterministic run
    # 224 = 7 global batches of 2 x 16: no short last batch, which 2 ranks would fill up with repeated rows
    cfg["data"]["max_train_samples"] = 224
    return cfg


@pytest.fixture(scope="module")
def one_process_run(files, word_tokenizer, tmp_path_factory) -> Path:
    """The reference of the 2-process runs: one process, their global batch (32), the same data, seed and ids."""
    out = tmp_path_factory.mktemp("one_process")
    cfg = two_process_config(files, word_tokenizer, out / "run")
    cfg["training"]["per_device_train_batch_size"] = 32
    train.main([write_config(out / "run.yaml", cfg)])
    return out / "run"


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "model.safetensors")


# 2 ranks sum their gradients in another order than one process does: rounding differences, which Adam's
# 21 steps carry into the weights (measured: 0 on the logged losses, <= 1e-5 on the weights). Key biases are
# left out: they shift every score of a query alike, so their exact gradient is 0 and Adam turns the rounding
# noise of their gradient into steps of the learning rate (measured up to 1.2e-3), without changing the model.
TWO_PROCESS_TOLERANCE = {"loss": 1e-4, "weights": 1e-4}
NO_GRADIENT = ("key.bias", "key_low_rank.bias")


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_process_gloo_run(files, word_tokenizer, one_process_run, tmp_path, launcher):
    """2 CPU processes (torchrun, or accelerate with the shipped config) on gloo equal one process with the same
    global batch: each rank trains on its own half of every batch of 32 (ranks that saw the same rows, or all
    rows, would give other losses and weights). Deterministic, and no threshold on how well it learns."""
    path = write_config(tmp_path / "run.yaml", two_process_config(files, word_tokenizer, tmp_path / "run"))
    result = _train([path], launcher=LAUNCHERS[launcher]())
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-21" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 * 7  # 3 epochs x 224 / (16 x 2 ranks) steps
    two, one = train_losses(tmp_path / "run"), train_losses(one_process_run)
    assert len(two) == len(one) == 3 and two[-1] < two[0] - LOSS_DROP, (two, one)  # the loss falls
    assert two == pytest.approx(one, abs=TWO_PROCESS_TOLERANCE["loss"]), (two, one)
    wa, wb = final_weights(tmp_path / "run"), final_weights(one_process_run)
    assert wa.keys() == wb.keys()
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa if not k.endswith(NO_GRADIENT))
    assert diff <= TWO_PROCESS_TOLERANCE["weights"], diff


SHRINK = {"snli/lstmn": ["model.hidden_size=32", "model.num_hidden_layers=1", "model.intermediate_size=64",
                         "data.max_length=32"],
          "shakespeare/additive": ["model.n_embd=32", "model.n_layer=1", "variant.additive_dim=8",
                                   "data.max_length=64", "data.max_train_samples=40"]}


@pytest.mark.parametrize("config", sorted(SHRINK))
def test_shipped_config_runs_on_real_data(config, tmp_path):
    """A shipped config, shrunk by overrides, trains and evaluates on its built-in corpus end to end."""
    overrides = ["tokenizer.vocab_size=300", "data.max_train_samples=200", "data.max_eval_samples=40",
                 "data.max_test_samples=40", "num_train_epochs=1", "report_to=none", "use_cpu=true",
                 "disable_tqdm=true", f"output_dir={tmp_path / 'run'}", *SHRINK[config]]  # later ones win
    results = train.main([str(ROOT / "configs" / f"{config}.yaml"), *overrides])
    (name, metrics), = results.items()
    saved = read_results(tmp_path / "run" / "model")
    if config.startswith("snli"):
        assert 0 <= saved["accuracy"] <= 1 and metrics["test_samples_per_second"] > 0
        id2label = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["id2label"]
        assert id2label == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    else:
        # below uniform guessing over its 300 tokens: a first epoch learns at least how often each token occurs
        # (measured 208: deterministic, a seeded sample and one process)
        assert 1 < saved["perplexity"] < 300
    assert name == config.split("/")[1]


def test_push_to_hub_publishes_the_folder(files, tmp_path, monkeypatch):
    """push_to_hub + hub_model_id: after the test evaluation the folder is uploaded (HfApi mocked, offline)."""
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs["repo_id"], kwargs["private"]))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    cfg = classification_config(files, tmp_path / "run")
    cfg["training"].update(num_train_epochs=1, push_to_hub=True, hub_model_id="me/tiny-lrb", hub_token="secret",
                           hub_private_repo=True)
    train.main([write_config(tmp_path / "push.yaml", cfg)])
    assert calls[:2] == [("token", "secret"), ("create_repo", "me/tiny-lrb", True)]
    assert {"model.safetensors", "README.md", "eval_results.json", "tokenizer.json"} <= set(calls[2][1])
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert 'from_pretrained("me/tiny-lrb", trust_remote_code=True)' in card
    with pytest.raises(ValueError, match="hub_model_id"):
        train.load_config(write_config(tmp_path / "bad.yaml", {**cfg, "training": {"push_to_hub": True}}), [])
