"""Tasks of the training pipeline: tokenizers, preprocessing, collators and metrics.

Tasks (``task:`` in a run config):

- ``classification``: bert (or gpt2), columns ``text_column`` and ``label_column``,
  ``...ForSequenceClassification``; metrics accuracy and macro_f1.
- ``pair_classification``: the same with ``text_pair_column`` (e.g. NLI premise / hypothesis).
- ``masked_lm``: bert, ``text_column``, ``VariantBertForMaskedLM``; perplexity and accuracy of
  the masked tokens.
- ``causal_lm``: gpt2, ``text_column``, ``VariantGPT2LMHeadModel``; perplexity and next-token accuracy.
- ``seq2seq``: encoder_decoder, ``text_column`` -> ``target_column``, a ``transformers.EncoderDecoderModel``
  of a Variant BERT encoder and a Variant GPT-2 decoder with cross-attention; evaluated on generated
  outputs (greedy): exact match, BLEU (``sacrebleu``, character tokens) and chrF.
- ``pair_fusion``: sentence pairs as in ``pair_classification``, with ``LSTMNFusionForSequenceClassification``
  (two LSTMNs joined by inter-attention, Cheng et al. 2016 section 4).

Language-model texts are concatenated and cut into blocks of ``max_length`` tokens. The masked
positions of the validation and test blocks are drawn once with a fixed seed, so every variant is
scored on the same masked tokens; training blocks are masked afresh every batch (15 %, BERT's
80/10/10 rule). Metrics are computed with numpy over exactly the scored tokens (perplexity is the
exponential of the mean token negative log-likelihood), which needs no metric download.

Not imported by the package (a training helper).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, DatasetDict, Value
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

TASKS = ("classification", "pair_classification", "masked_lm", "causal_lm", "seq2seq", "pair_fusion")
CLASSIFICATION = ("classification", "pair_classification", "pair_fusion")
PAIR_TASKS = ("pair_classification", "pair_fusion")
FAMILIES = ("bert", "gpt2", "encoder_decoder", "lstmn_fusion")
# default columns of the built-in corpora
DEFAULT_COLUMNS = {
    "mr": {"text_column": "sentence", "label_column": "label"},
    "rotten_tomatoes": {"text_column": "text", "label_column": "label"},
    "snli": {"text_column": "premise", "text_pair_column": "hypothesis", "label_column": "label"},
    "shakespeare": {"text_column": "text"},
    "dates": {"text_column": "source", "target_column": "target"},
}
TOKENIZER_FAMILY = {"lstmn_fusion": "bert", "encoder_decoder": "bert"}  # whose trained tokenizer a family uses
CHAR_SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
MLM_PROBABILITY = 0.15
EVAL_MASK_SEED = 4321


# ----------------------------------------------------------------------------- tokenizers

def _texts(data: DatasetDict, columns: list[str], batch: int = 1000) -> Iterable[list[str]]:
    train = data["train"]
    for start in range(0, len(train), batch):
        rows = train[start:start + batch]
        for column in columns:
            yield [t for t in rows[column] if t]


def continuing_alphabet(batches: list[list[str]], normalizer, pre_tokenizer) -> list[str]:
    """"##x" for every character x that continues a word in ``batches``, sorted.

    tokenizers' WordPiece trainer numbers these continuing-subword tokens as it meets them in a hash map,
    whose order changes from one training to the next; the numbers break ties between equally frequent
    merges, so the same texts gave different vocabularies (30 of 30 trainings differed on a small
    corpus; huggingface/tokenizers#1794, unfixed in 0.23.3). Declared up front, in sorted order, they are
    numbered before training and the vocabulary is the same every time (``tests/test_data.py``).
    """
    chars = {c for batch in batches for text in batch
             for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)) for c in word[1:]}
    return ["##" + c for c in sorted(chars)]


def train_tokenizer(texts: Iterable[list[str]], family: str, vocab_size: int, lowercase: bool = True,
                    max_length: int = 512) -> PreTrainedTokenizerFast:
    """A WordPiece (bert) or byte-level BPE (gpt2) tokenizer trained on ``texts`` with ``tokenizers``; the same
    texts give the same tokenizer (WordPiece: ``continuing_alphabet``; byte-level BPE numbers its alphabet
    sorted and has no continuing-subword prefix)."""
    family = TOKENIZER_FAMILY.get(family, family)
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if family == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=lowercase), pre_tokenizers.BertPreTokenizer()
        batches = list(texts)
        trained = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trained.normalizer, trained.pre_tokenizer = normalizer, pre_tokenizer
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size,
                                            special_tokens=specials + continuing_alphabet(batches, normalizer,
                                                                                          pre_tokenizer))
        trained.train_from_iterator(batches, trainer=trainer)
        # the vocabulary in a plain WordPiece model: the "##x" declared above are ordinary tokens, not special ones
        tok = Tokenizer(models.WordPiece(vocab=trained.get_vocab(), unk_token="[UNK]"))
        tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]", model_max_length=max_length,
            model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos,
                                   model_max_length=max_length, model_input_names=["input_ids", "attention_mask"])


def char_tokenizer(texts: Iterable[list[str]], max_length: int = 512) -> PreTrainedTokenizerFast:
    """A character-level tokenizer: one token per character seen in ``texts`` (sorted, after the
    specials [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3); every encoding ends with [EOS]."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    chars = sorted({c for batch in texts for text in batch for c in text})
    vocab = {token: i for i, token in enumerate([*CHAR_SPECIALS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
                                   unk_token="[UNK]", model_max_length=max_length,
                                   model_input_names=["input_ids", "attention_mask"])


def text_digest(data: DatasetDict, columns: list[str]) -> str:
    """sha256 of the training texts: the same in every process and for every way of loading them."""
    digest = hashlib.sha256()
    for texts in _texts(data, columns):
        digest.update("\x00".join(texts).encode())
        digest.update(b"\x01")
    return digest.hexdigest()


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def get_tokenizer(tok_cfg: dict, family: str, data: DatasetDict, columns: list[str], folder: Path,
                  max_length: int):
    """The run's tokenizer: ``tok_cfg["pretrained"]`` (path or Hub id), or one trained on the training split.

    A trained tokenizer is saved under ``folder`` with a fingerprint of what it was trained on, and
    reused when the fingerprint matches (the other processes of a distributed run, a resumed run).
    """
    if tok_cfg.get("pretrained"):
        return AutoTokenizer.from_pretrained(tok_cfg["pretrained"])
    if tok_cfg.get("type") == "char":  # deterministic (sorted characters): nothing to cache
        return char_tokenizer(_texts(data, columns), max_length)
    vocab_size = tok_cfg.get("vocab_size", 8000)
    if not isinstance(vocab_size, int) or vocab_size < 50:
        raise ValueError(f"tokenizer.vocab_size={vocab_size!r} is invalid: expected an integer >= 50")
    lowercase = bool(tok_cfg.get("lowercase", True))
    fingerprint = _fingerprint({"family": family, "vocab_size": vocab_size, "lowercase": lowercase, "columns": columns,
                                "data": text_digest(data, columns)})
    stamp = folder / "fingerprint.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return AutoTokenizer.from_pretrained(folder)
    tokenizer = train_tokenizer(_texts(data, columns), family, vocab_size, lowercase, max_length)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    tokenizer.save_pretrained(tmp)
    (tmp / "fingerprint.json").write_text(json.dumps({"fingerprint": fingerprint}))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return tokenizer


# ----------------------------------------------------------------------------- labels

def label_names(data: DatasetDict, column: str) -> list[str]:
    """Class names: a ClassLabel's names, the sorted string labels of train, or 0..max of int labels."""
    feature = data["train"].features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = set(data["train"].unique(column))
    if all(isinstance(v, str) for v in values):
        return sorted(values)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values) and min(values) >= 0:
        return [str(i) for i in range(int(max(values)) + 1)]
    raise ValueError(f"data.label_column={column!r}: labels must be strings or integers >= 0, got e.g. "
                     f"{sorted(map(repr, values))[:5]}")


def _label_ids(values: list, names: list[str], column: str, split: str) -> list[int]:
    if values and isinstance(values[0], str):
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"data.label_column={column!r}: {split} split has labels {unknown[:5]} "
                             f"not in train {names}")
        index = {n: i for i, n in enumerate(names)}
        return [index[v] for v in values]
    bad = [v for v in values if not 0 <= int(v) < len(names)]
    if bad:
        raise ValueError(f"data.label_column={column!r}: {split} split has labels {bad[:5]} "
                         f"outside 0..{len(names) - 1}")
    return [int(v) for v in values]


# ----------------------------------------------------------------------------- preprocessing

def preprocess(data: DatasetDict, task: str, tokenizer, data_cfg: dict, names: list[str] | None) -> DatasetDict:
    """Tokenized train / validation / test for a task (see the module docstring)."""
    max_length = data_cfg["max_length"]
    text, pair, label = data_cfg["text_column"], data_cfg.get("text_pair_column"), data_cfg.get("label_column")
    out = {}
    for split, ds in data.items():
        if task in CLASSIFICATION:
            ds = drop_unlabelled(ds, label, split)
            def encode(rows, split=split):
                enc = tokenizer(rows[text], rows[pair] if pair else None, truncation=True, max_length=max_length)
                enc["labels"] = _label_ids(rows[label], names, label, split)
                return enc
        elif task == "seq2seq":
            def encode(rows, target=data_cfg["target_column"]):
                enc = tokenizer(rows[text], truncation=True, max_length=max_length)
                enc["labels"] = tokenizer(rows[target], truncation=True, max_length=max_length)["input_ids"]
                return enc
        else:
            def encode(rows):
                return _lm_blocks(tokenizer, rows[text], max_length, task)
        out[split] = ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"tokenizing {split}")
        if task == "masked_lm" and split != "train":
            out[split] = out[split].map(lambda rows, idx: _fixed_masks(tokenizer, rows, idx), batched=True,
                                        with_indices=True, desc=f"masking {split}")
    if len(out["train"]) == 0:
        raise ValueError(f"no training examples left after tokenizing (max_length={max_length})")
    return DatasetDict(out)


def drop_unlabelled(ds, column: str, split: str):
    """Drop rows whose integer label is negative (the Hub's "no gold label", e.g. SNLI's -1)."""
    feature = ds.features.get(column)
    if not isinstance(feature, (ClassLabel, Value)) or not str(feature.dtype).startswith("int"):
        return ds
    kept = ds.filter(lambda labels: [v is not None and v >= 0 for v in labels], input_columns=column, batched=True)
    if len(kept) == 0:
        raise ValueError(f"data.label_column={column!r}: the {split} split has no labelled rows (labels < 0 mean none)")
    return kept


def _lm_blocks(tokenizer, texts: list[str], max_length: int, task: str) -> dict[str, list]:
    """Concatenate texts (eos/sep between them) and cut them into blocks of max_length tokens."""
    masked = task == "masked_lm"
    sep = tokenizer.sep_token_id if masked else tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer([t for t in texts if t], add_special_tokens=False)["input_ids"]:
        stream += ids + ([sep] if sep is not None else [])
    size = max_length - 2 if masked else max_length
    blocks = [stream[i:i + size] for i in range(0, len(stream) - size + 1, size)] or ([stream] if stream else [])
    if masked:
        blocks = [[tokenizer.cls_token_id, *b, tokenizer.sep_token_id] for b in blocks]
    result = {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]}
    if masked:
        result["token_type_ids"] = [[0] * len(b) for b in blocks]
    else:
        result["labels"] = [list(b) for b in blocks]
    return result


def _fixed_masks(tokenizer, rows: dict[str, list], indices: list[int]) -> dict[str, list]:
    """BERT masking drawn once per row from a seeded generator (so eval/test scores are reproducible)."""
    special = set(tokenizer.all_special_ids)
    inputs, labels = [], []
    for ids, idx in zip(rows["input_ids"], indices):
        rng = np.random.default_rng([EVAL_MASK_SEED, idx])
        ids = list(ids)
        lab = [-100] * len(ids)
        candidates = [i for i, t in enumerate(ids) if t not in special]
        chosen = [i for i in candidates if rng.random() < MLM_PROBABILITY] or candidates[:1]
        for i in chosen:
            lab[i] = ids[i]
            r = rng.random()
            if r < 0.8:
                ids[i] = tokenizer.mask_token_id
            elif r < 0.9:
                ids[i] = int(rng.integers(len(tokenizer)))
        inputs.append(ids)
        labels.append(lab)
    return {"input_ids": inputs, "labels": labels}


class Collator:
    """Pads a batch (input ids with the pad id, labels with -100); masked-LM training batches get fresh masks."""

    def __init__(self, tokenizer, task: str):
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY) \
            if task == "masked_lm" else None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if self.mlm is not None and "labels" not in features[0]:
            return self.mlm(features)
        batch = {}
        for key in features[0]:
            values = [f[key] for f in features]
            if isinstance(values[0], (list, tuple)):
                width = max(len(v) for v in values)
                fill = self.pad_id if key == "input_ids" else (-100 if key == "labels" else 0)
                batch[key] = torch.tensor([list(v) + [fill] * (width - len(v)) for v in values])
            else:
                batch[key] = torch.tensor(values)
        return batch


# ----------------------------------------------------------------------------- metrics

def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean(predictions == references)) if len(references) else float("nan")


def macro_f1(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of the per-class F1 over ``num_labels`` classes (a class never predicted nor present: 0)."""
    scores = []
    for c in range(num_labels):
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def classification_metrics(num_labels: int):
    def compute(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        predictions, references = np.argmax(logits, axis=-1), eval_pred.label_ids
        return {"accuracy": accuracy(predictions, references),
                "macro_f1": macro_f1(predictions, references, num_labels)}
    return compute


def seq2seq_metrics(tokenizer):
    """Exact match of the generated strings, BLEU over characters and chrF (both ``sacrebleu``, 0-100)."""
    import sacrebleu

    def compute(eval_pred) -> dict[str, float]:
        predictions = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        pad = tokenizer.pad_token_id
        hyps = tokenizer.batch_decode(np.where(predictions < 0, pad, predictions), skip_special_tokens=True)
        refs = tokenizer.batch_decode(np.where(eval_pred.label_ids < 0, pad, eval_pred.label_ids),
                                      skip_special_tokens=True)
        return {"exact_match": accuracy(np.array(hyps, dtype=object), np.array(refs, dtype=object)),
                "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score,
                "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score}
    return compute


def lm_logits_to_scores(task: str):
    """``preprocess_logits_for_metrics``: per-token NLL, argmax and a validity mask instead of full logits."""
    def reduce(logits, labels):
        logits = logits[0] if isinstance(logits, tuple) else logits
        if task == "causal_lm":
            logits, targets = logits[:, :-1], labels[:, 1:]
        else:
            targets = labels
        valid = targets != -100
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets.masked_fill(~valid, 0),
                                                reduction="none")
        return nll * valid, logits.argmax(-1), valid.float()
    return reduce


def lm_metrics(task: str):
    def compute(eval_pred) -> dict[str, float]:
        nll, predictions, valid = eval_pred.predictions
        labels = eval_pred.label_ids[:, 1:] if task == "causal_lm" else eval_pred.label_ids
        mask = valid == 1
        mean_nll = float(nll[mask].mean())
        return {"perplexity": float(np.exp(mean_nll)), "accuracy": accuracy(predictions[mask], labels[mask]),
                "tokens": int(mask.sum())}
    return compute
