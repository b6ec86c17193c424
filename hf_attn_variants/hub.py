"""Hub-ready folders, model cards and publishing (a tool: never imported by the Hub code).

``card_data`` (a dict, every key optional):

- ``task``: ``classification``, ``pair_classification``, ``masked_lm`` or ``causal_lm`` (sets the
  pipeline tag and the evaluation results' task type);
- ``datasets``: a dataset id or a list of them (card metadata);
- ``dataset_name``: a human-readable dataset name for the evaluation table (default: the first id);
- ``metrics``: ``{name: value}`` of test-set results (card metadata ``model-index`` and
  ``eval_results.json``);
- ``base_model``: the dense checkpoint the model was converted from;
- ``license``: an SPDX-style licence id (default ``apache-2.0``);
- ``extra_tags``: more tags;
- ``model_name``: the card's title (default: the folder or repo name);
- ``training``: a free-text paragraph on how it was trained.

    folder = save_hub_folder(model, tokenizer, "out/model", card_data={"task": "classification", ...})
    publish(model, tokenizer, "user/my-model", card_data=...)      # builds the folder and uploads it
    publish(model, tokenizer, "user/my-model", card_data=..., dry_run_dir="out/model")  # builds only
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .hfav_variants import PAPERS, VARIANTS

CARD_KEYS = ("task", "datasets", "dataset_name", "metrics", "base_model", "license", "extra_tags", "model_name",
             "training")
TEMPLATE_NAME = "variant_model_card.md"
PIPELINE_TAGS = {"classification": "text-classification", "pair_classification": "text-classification",
                 "masked_lm": "fill-mask", "causal_lm": "text-generation"}
TASK_SENTENCES = {"classification": "It classifies single sentences.",
                  "pair_classification": "It classifies sentence pairs (natural language inference).",
                  "masked_lm": "It is a masked language model.",
                  "causal_lm": "It is a causal (left-to-right) language model."}
AUTO_CLASS_BY_SUFFIX = (("ForSequenceClassification", "AutoModelForSequenceClassification"),
                        ("ForTokenClassification", "AutoModelForTokenClassification"),
                        ("ForMaskedLM", "AutoModelForMaskedLM"), ("LMHeadModel", "AutoModelForCausalLM"))


def template_path() -> Path:
    """The model-card template: package data in a wheel, ``model_cards/`` of the source tree otherwise."""
    try:
        packaged = resources.files("hf_attn_variants.model_cards") / TEMPLATE_NAME
        if packaged.is_file():
            return Path(str(packaged))
    except ModuleNotFoundError:
        pass
    source_tree = Path(__file__).resolve().parent.parent / "model_cards" / TEMPLATE_NAME
    if source_tree.is_file():
        return source_tree
    raise FileNotFoundError(f"model-card template {TEMPLATE_NAME!r} not found (package data or {source_tree})")


def _check_card_data(card_data: dict) -> dict:
    if not isinstance(card_data, dict):
        raise ValueError(f"card_data={card_data!r} is invalid: expected a dict")
    unknown = sorted(set(card_data) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"card_data has unknown keys {unknown}: expected some of {CARD_KEYS}")
    task = card_data.get("task")
    if task is not None and task not in PIPELINE_TAGS:
        raise ValueError(f"card_data['task']={task!r} is invalid: expected one of {tuple(PIPELINE_TAGS)}")
    metrics = card_data.get("metrics") or {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"card_data['metrics'][{name!r}]={value!r} is invalid: expected a number")
    return card_data


def _layer_rows(config) -> list[dict]:
    """One row per layer: its variant and the settings its spec says it reads."""
    rows = []
    for i in range(config.num_hidden_layers):
        variant = config.variant_for_layer(i)
        settings = [f"{field}={_setting(config, field)}" for field in VARIANTS[variant].settings]
        rows.append({"layer": i, "variant": variant, "settings": ", ".join(settings) or "-"})
    return rows


def _setting(config, field: str):
    """A config field as the model uses it: derived ones (``resolved_<field>()``, e.g. lstmn_direction) resolved."""
    resolve = getattr(config, f"resolved_{field}", None)
    return resolve() if callable(resolve) else getattr(config, field)


def _papers(variants: list[str]) -> list[str]:
    """The papers of the given variants, each with every registered variant it describes."""
    keys = dict.fromkeys(VARIANTS[v].paper for v in variants)
    return [PAPERS[key] + " (" + ", ".join(f"`{name}`" for name, spec in VARIANTS.items() if spec.paper == key) + ")."
            for key in keys]


def _auto_class(model) -> str:
    """The Auto class that loads the model's class: its entry in the config's ``auto_map``, else by suffix."""
    name = type(model).__name__
    auto_map = getattr(model.config, "auto_map", None) or {}
    mapped = [auto for auto, ref in auto_map.items() if ref.split(".")[-1] == name and auto != "AutoConfig"]
    if mapped:
        return mapped[0]
    return next((auto for suffix, auto in AUTO_CLASS_BY_SUFFIX if name.endswith(suffix)), "AutoModel")


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def build_model_card(model, card_data: dict, repo_id: str = "path/to/this/folder") -> ModelCard:
    """A rendered ``ModelCard`` for a Variant model (metadata + body; see the module docstring)."""
    card_data = _check_card_data(dict(card_data))
    config = model.config
    variants = sorted({config.variant_for_layer(i) for i in range(config.num_hidden_layers)})
    task, metrics = card_data.get("task"), dict(card_data.get("metrics") or {})
    datasets = _as_list(card_data.get("datasets"))
    dataset_name = card_data.get("dataset_name") or (datasets[0] if datasets else "unknown")
    model_name = card_data.get("model_name") or repo_id.rstrip("/").rsplit("/", 1)[-1]
    eval_results = [EvalResult(task_type=PIPELINE_TAGS.get(task, "other"), dataset_type=datasets[0] if datasets
                               else dataset_name, dataset_name=dataset_name, dataset_split="test",
                               metric_type=name, metric_name=name, metric_value=float(value))
                    for name, value in metrics.items()]
    tags = ["hf-attn-variants", "attention-variants", config.model_type,
            *[f"attention-{v.replace('_', '-')}" for v in variants], *variants, *_as_list(card_data.get("extra_tags"))]
    data = ModelCardData(
        library_name="transformers", license=card_data.get("license", "apache-2.0"),
        tags=list(dict.fromkeys(tags)), datasets=datasets or None, base_model=card_data.get("base_model"),
        metrics=list(metrics) or None, pipeline_tag=PIPELINE_TAGS.get(task), model_name=model_name,
        eval_results=eval_results or None)
    family = "BERT-style" if config.model_type == "variant_bert" else "GPT-2-style"
    summary = ", ".join(f"`{v}`" for v in variants) + (" (mixed, per layer)" if len(variants) > 1 else "")
    return ModelCard.from_template(
        data, template_path=str(template_path()), model_name=model_name, family_name=family,
        variant_summary=summary, task_sentence=TASK_SENTENCES.get(task, ""), layers=_layer_rows(config),
        base_model=card_data.get("base_model"),
        papers=_papers(variants), summaries=[(v, VARIANTS[v].summary) for v in variants],
        auto_class=_auto_class(model), repo_id=repo_id, metrics=metrics, dataset_name=dataset_name,
        training_summary=card_data.get("training") or "See the run configuration in the repository that built it.",
        num_parameters=f"{sum(p.numel() for p in model.parameters()):,}", license=data.license)


def _write_folder(model, tokenizer, folder: Path, card_data: dict, repo_id: str) -> None:
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    metrics = card_data.get("metrics") or {}
    if metrics:
        (folder / "eval_results.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    build_model_card(model, card_data, repo_id).save(folder / "README.md")
    config = json.loads((folder / "config.json").read_text())
    if not (folder / "model.safetensors").is_file() and not (folder / "model.safetensors.index.json").is_file():
        raise RuntimeError(f"save_pretrained wrote no safetensors weights into {folder}")
    if "auto_map" not in config:
        raise RuntimeError(f"config.json in {folder} has no auto_map: is {type(model).__name__} a Variant model?")


def save_hub_folder(model, tokenizer, folder: str | os.PathLike, *, card_data: dict,
                    repo_id: str | None = None) -> Path:
    """Build a complete Hub-ready folder atomically; return its path.

    It holds the weights (safetensors), ``config.json`` with ``auto_map``, the flat Hub code, the
    tokenizer (when given), ``eval_results.json`` (when ``card_data`` has metrics) and ``README.md``
    (the model card). Everything is written into a temporary folder next to ``folder`` and renamed
    into place; an existing ``folder`` is replaced only once the new one is complete.
    """
    _check_card_data(card_data)
    folder = Path(folder).resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    from .analysis.commands import user_mode

    try:
        _write_folder(model, tokenizer, tmp, card_data, repo_id or str(folder))
        # the user's umask, not mkdtemp's 0700 (kept by the rename) nor the 0600 safetensors writes with
        for path in [tmp, *tmp.rglob("*")]:
            os.chmod(path, user_mode(directory=path.is_dir()))
        if folder.exists():
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
            folder.rename(old / folder.name)
            try:
                tmp.rename(folder)
            except OSError:
                (old / folder.name).rename(folder)  # put the previous folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _is_local_dir(repo_id: str) -> bool:
    """A local directory rather than a Hub repo id (``owner/name`` or ``name``)."""
    return (os.path.isabs(repo_id) or repo_id.startswith((".", "~")) or repo_id.count("/") > 1
            or os.path.isdir(repo_id))


def publish(model, tokenizer, repo_id: str, *, card_data: dict, dry_run_dir: str | os.PathLike | None = None,
            token: str | None = None, private: bool = False, commit_message: str = "Upload variant model"):
    """Build the Hub folder and upload it to ``repo_id`` (``create_repo`` + ``upload_folder``).

    With ``dry_run_dir``, or a local directory as ``repo_id``, only the folder is built and its
    path returned; otherwise the ``CommitInfo`` of the upload is returned.
    """
    if dry_run_dir is not None or _is_local_dir(repo_id):
        target = Path(dry_run_dir) if dry_run_dir is not None else Path(repo_id).expanduser()
        name = repo_id if dry_run_dir is not None else None
        return save_hub_folder(model, tokenizer, target, card_data=card_data, repo_id=name)
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf-attn-variants-publish-") as tmp:
        folder = save_hub_folder(model, tokenizer, Path(tmp) / "repo", card_data=card_data, repo_id=repo_id)
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=commit_message)
