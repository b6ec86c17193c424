"""The experiment suite: one declared grid of variants x tasks x seeds (x a learning-rate sweep and
task parameters), run resumably, in parallel processes when asked, and aggregated into tables and plots.

Usage:
    hf-attn-variants experiments run configs/experiments/full.yaml [--quick] [--jobs N] [--device cuda]
                                   [--only SUITE,...] [--limit N]
    hf-attn-variants experiments aggregate configs/experiments/full.yaml [--quick]
    hf-attn-variants experiments list configs/experiments/full.yaml [--quick]     # the jobs, done or not
    hf-attn-variants experiments verify configs/experiments/full.yaml [--only SUITE] [--per-model N]
                                   [--ids SUITE/ID,...] [--max-seconds S]   # rerun records on this code (exp_verify)

A grid file (``configs/experiments/*.yaml``) names where job records go (``out``), where tables and plots go
(``results``) and optionally where the tokenised datasets go (``data``, default ``<out>/data``; grids that
share it share one tokenizer per dataset), and declares suites. A suite has a ``kind`` (classification, lm,
probe), ``models`` (attention variants and, for classification, the baselines ``bag_of_embeddings`` and
``bilstm``), ``seeds``, ``learning_rates`` (the same sweep for every model, chosen on validation), ``size``
(hidden, layers, heads, intermediate, architecture), ``variant`` (attention_rank, attention_window, ...),
``train`` (steps or epochs, batch size, ...), ``probe`` (probe name and its parameters) and ``sweep`` (axes:
any of those fields, each value a job). A variant field in a sweep expands only for the models that use it
(``attention_window`` for band and low_rank_band, ...). A suite's ``quick`` mapping is merged over it under
``--quick``.

Each job writes one JSON record ``<out>/records/<suite>/<job id>.json`` (temp file, then rename);
a rerun skips jobs that have a record of the same settings (a record whose job settings changed is
stale and reruns), so a killed run loses at most the jobs in flight. A job is
deterministic given its seed on one machine: one torch thread per process, seeded init and data
order, and one tokenizer per dataset trained once (``<out>/data``) before any job starts.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from hf_attn_variants.hfav_variants import VARIANTS as REGISTRY  # noqa: E402  (name -> spec)

KINDS = ("classification", "lm", "probe")
SUITE_FIELDS = ("kind", "dataset", "models", "seeds", "learning_rates", "size", "variant", "train", "probe", "sweep",
                "quick", "plot", "description", "lr_seeds", "model_learning_rates", "sweep_models")
SIZE_FIELDS = ("hidden", "layers", "heads", "intermediate", "architecture")
TRAIN_FIELDS = ("epochs", "steps", "batch_size", "max_length", "train_size", "vocab_size", "eval_size", "weight_decay",
                "warmup", "min_steps")
BASELINES = ("bag_of_embeddings", "bilstm")  # exp_models.BASELINES (not imported here: it loads the models)


def variant_names() -> tuple[str, ...]:
    """The attention variants a suite may name: the registry's (``hf_attn_variants.VARIANTS``)."""
    return tuple(REGISTRY)


def variant_uses() -> dict[str, tuple[str, ...]]:
    """variant field -> the variants that read it (their specs' ``settings``)."""
    uses: dict[str, tuple[str, ...]] = {}
    for name, spec in REGISTRY.items():
        for field in spec.settings:
            uses[field] = (*uses.get(field, ()), name)
    return uses


# ----------------------------------------------------------------------------- the grid

def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_grid(path: str | Path, quick: bool = False) -> dict:
    """The grid file, checked; with ``quick``, each suite's ``quick`` mapping merged over it."""
    from .yaml_files import read_yaml

    grid = read_yaml(path)
    if not isinstance(grid, dict) or not isinstance(grid.get("suites"), dict):
        raise ValueError(f"grid {path}: expected a mapping with a 'suites' mapping")
    for field in ("out", "results"):
        if not isinstance(grid.get(field), str):
            raise ValueError(f"grid {path}: '{field}' must be a folder path")
    suites = {}
    for name, suite in grid["suites"].items():
        suite = deep_merge(suite, suite.get("quick") or {}) if quick else suite
        try:
            suites[name] = check_suite(name, {k: v for k, v in suite.items() if k != "quick"})
        except ValueError as e:
            raise ValueError(f"grid {path}: {e}") from e
    data = grid.get("data") or grid["out"] + ("-quick" if quick else "") + "/data"
    return {**grid, "suites": suites, "quick": quick, "path": str(path), "data": data,
            "out": grid["out"] + ("-quick" if quick else ""), "results": grid["results"] + ("/quick" if quick else "")}


def check_suite(name: str, suite: dict) -> dict:
    unknown = sorted(set(suite) - set(SUITE_FIELDS))
    if unknown:
        raise ValueError(f"suite {name}: unknown fields {unknown}, expected some of {SUITE_FIELDS}")
    if suite.get("kind") not in KINDS:
        raise ValueError(f"suite {name}: kind={suite.get('kind')!r} is invalid: expected one of {KINDS}")
    allowed = variant_names() + (BASELINES if suite["kind"] == "classification" else ())
    models = suite.get("models") or []
    bad = [m for m in models if m not in allowed]
    if not models or bad:
        raise ValueError(f"suite {name}: models={models!r} is invalid: expected a non-empty list from {allowed}")
    for field in ("seeds", "learning_rates"):
        if not isinstance(suite.get(field), list) or not suite[field]:
            raise ValueError(f"suite {name}: {field}={suite.get(field)!r} is invalid: expected a non-empty list")
    suite["learning_rates"] = [float(lr) for lr in suite["learning_rates"]]
    per_model = suite.get("model_learning_rates") or {}
    if not isinstance(per_model, dict) or any(m not in models or not isinstance(v, list) or not v
                                              for m, v in per_model.items()):
        raise ValueError(f"suite {name}: model_learning_rates={per_model!r} is invalid: expected a mapping from "
                         "the suite's models to non-empty lists")
    suite["model_learning_rates"] = {m: [float(lr) for lr in v] for m, v in per_model.items()}
    lr_seeds = suite.get("lr_seeds", suite["seeds"])
    if not isinstance(lr_seeds, list) or not lr_seeds or any(s not in suite["seeds"] for s in lr_seeds):
        raise ValueError(f"suite {name}: lr_seeds={lr_seeds!r} is invalid: expected a non-empty sublist of seeds")
    suite["lr_seeds"] = list(lr_seeds)
    for section in ("size", "variant", "train", "probe", "sweep", "plot"):
        suite[section] = dict(suite.get(section) or {})
    for axis, values in suite["sweep"].items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"suite {name}: sweep.{axis}={values!r} is invalid: expected a non-empty list")
        section_of(axis, suite)  # raises on an unknown axis
    if suite["kind"] == "probe" and not suite["probe"].get("name"):
        raise ValueError(f"suite {name}: a probe suite needs probe.name")
    if suite["kind"] != "probe" and not suite.get("dataset"):
        raise ValueError(f"suite {name}: a {suite['kind']} suite needs a dataset")
    return suite


def section_of(axis: str, suite: dict) -> str:
    if axis in variant_uses():
        return "variant"
    if axis in SIZE_FIELDS:
        return "size"
    if axis in TRAIN_FIELDS:
        return "train"
    if suite["kind"] == "probe":
        return "probe"
    raise ValueError(f"sweep axis {axis!r} is unknown: expected a variant field {sorted(variant_uses())}, a size "
                     f"field {SIZE_FIELDS} or a train field {TRAIN_FIELDS}")


def job_id(job: dict) -> str:
    parts = [job["model"]] + [f"{k}={v}" for k, v in sorted(job["params"].items())]
    parts += [f"lr={job['lr']:g}", f"seed={job['seed']}"]
    return "__".join(parts).replace("/", "_")


def expand(grid: dict, only: list[str] | None = None) -> list[dict]:
    """Every job of the grid: suite x model x sweep point x learning rate x seed, ordered by suite, then
    seed, then learning rate, then model and sweep point.

    A variant-field axis expands only for the models that use it; for the others it is absent
    (one job instead of one per value)."""
    jobs = []
    for name, suite in grid["suites"].items():
        if only and name not in only:
            continue
        start = len(jobs)
        uses = variant_uses()
        for model in suite["models"]:
            restrict = suite.get("sweep_models") or {}  # axis -> the models it applies to (default: all that use it)
            axes = {a: v for a, v in suite["sweep"].items() if (a not in uses or model in uses[a])
                    and model in restrict.get(a, [model])}
            for point in itertools.product(*axes.values()):
                params = dict(zip(axes, point))
                for lr, seed in itertools.product(learning_rates(suite, model), suite["seeds"]):
                    job = {"suite": name, "kind": suite["kind"], "model": model, "params": params, "lr": lr,
                           "seed": seed, **resolved(suite, params)}
                    job["id"] = job_id(job)
                    jobs.append(job)
        # seed-major within a suite: a partly run grid holds whole seeds of every model, not all seeds of a few
        # the learning-rate sweep's seeds first (later seeds run at the learning rate chosen on them)
        jobs[start:] = sorted(jobs[start:], key=lambda j, s=suite: (j["seed"] not in s["lr_seeds"],
                                                                    s["seeds"].index(j["seed"]), j["lr"]))
    ids = [(j["suite"], j["id"]) for j in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("the grid expands to duplicate jobs: check the sweep axes")
    return jobs


def learning_rates(suite: dict, model: str) -> list[float]:
    """The learning-rate sweep of one model (``model_learning_rates`` overrides the suite's)."""
    return (suite.get("model_learning_rates") or {}).get(model, suite["learning_rates"])


def chosen_jobs(grid: dict, jobs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split jobs into those to run now and those deferred. Jobs of the ``lr_seeds`` run at every
    learning rate; a job of any other seed runs only at its cell's learning rate chosen on the
    ``lr_seeds`` (best mean validation metric, ties to the smaller rate), so it is deferred until
    every sweep job of its cell has a record, and dropped when its rate was not chosen."""
    from . import exp_report

    run, deferred, by_cell = [], [], {}
    for job in jobs:
        suite = grid["suites"][job["suite"]]
        if job["seed"] in suite["lr_seeds"]:
            run.append(job)
            continue
        key = (job["suite"], exp_report.cell_key(job))
        if key not in by_cell:
            sweep = [j for j in expand(grid, [job["suite"]]) if exp_report.cell_key(j) == key[1]
                     and j["seed"] in suite["lr_seeds"]]
            records = [json.loads(record_path(grid["out"], j).read_text()) for j in sweep if is_done(grid["out"], j)]
            by_cell[key] = exp_report.choose_lr(records) if len(records) == len(sweep) else None
        lr = by_cell[key]
        if lr is None:
            deferred.append(job)
        elif job["lr"] == lr:
            run.append(job)
    return run, deferred


# the research files a record's numbers depend on (with every file of the library), hashed into its code version
RESULT_FILES = ("experiments.py", "exp_models.py", "probes.py", "corpora.py", "tasks.py", "dates.py",
                "dates_length.py")


def code_version() -> dict:
    """What code made a record: a hash of the files a job's result depends on (the package, the
    models, probes, data loading and this runner), and the git commit (``dirty`` when the hashed
    files differ from it)."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "hf_attn_variants").glob("*.py")) + [
        root / "hf_attn_variants_research" / f for f in RESULT_FILES]
    missing = [str(f) for f in files if not f.exists()]
    if missing:  # a renamed file must not silently drop out of the hash
        raise FileNotFoundError(f"code_version: files a result depends on are missing: {missing}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", *[str(f) for f in files]], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", True
    return {"hash": digest.hexdigest()[:16], "commit": commit, "dirty": dirty}


def resolved(suite: dict, params: dict) -> dict:
    """A job's sections with the sweep point applied."""
    out = {s: dict(suite[s]) for s in ("size", "variant", "train", "probe")}
    out["dataset"] = suite.get("dataset")
    for axis, value in params.items():
        out[section_of(axis, suite)][axis] = value
    return out


def record_path(out: str | Path, job: dict) -> Path:
    return Path(out) / "records" / job["suite"] / f"{job['id']}.json"


def write_json(path: Path, obj) -> None:
    """Write to a temp file, then rename: a killed writer leaves no half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


# ----------------------------------------------------------------------------- training helpers

def set_determinism(seed: int, threads: int = 1) -> None:
    import torch

    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def optimiser(model, lr: float, steps: int, train: dict):
    """AdamW with linear warmup (``warmup`` fraction, default 5 %) and linear decay to 0."""
    import torch

    decay = float(train.get("weight_decay", 0.01))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    warm = max(1, int(float(train.get("warmup", 0.05)) * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    return opt, schedule


def step(model, loss, opt, schedule) -> float:
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    schedule.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------- data of the real tasks

def data_path(folder: str | Path, dataset: str, train: dict) -> Path:
    if dataset == "shakespeare":
        return Path(folder) / "shakespeare-chars.pt"
    return Path(folder) / f"{dataset}-v{train.get('vocab_size', 8000)}-L{train.get('max_length', 64)}.pt"


def prepare_data(grid: dict, jobs: list[dict]) -> None:
    """Tokenise every dataset the jobs need, once, in this process (so every job shares one tokenizer)."""
    import torch

    seen = set()
    for job in jobs:
        if job["kind"] == "probe":
            continue
        path = data_path(grid["data"], job["dataset"], job["train"])
        if path in seen or path.exists():
            seen.add(path)
            continue
        seen.add(path)
        print(f"preparing {path}", flush=True)
        data = shakespeare_chars() if job["dataset"] == "shakespeare" else \
            encode_classification(job["dataset"], job["train"], Path(grid["data"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(data, tmp)
        tmp.replace(path)


def encode_classification(dataset: str, train: dict, folder: Path) -> dict:
    """Token ids, segment ids and labels of every split, with a WordPiece tokenizer trained once on train."""
    from . import corpora, tasks

    data = corpora.load_data({"dataset": dataset})
    columns = tasks.DEFAULT_COLUMNS[dataset]
    text, pair = columns["text_column"], columns.get("text_pair_column")
    names = tasks.label_names(data, columns["label_column"])
    vocab, max_length = int(train.get("vocab_size", 8000)), int(train.get("max_length", 64))
    tokenizer = tasks.get_tokenizer({"vocab_size": vocab}, "bert", data, [c for c in (text, pair) if c],
                                    folder / f"tokenizer-{dataset}-v{vocab}", max_length)
    out = {"vocab_size": len(tokenizer), "pad_id": tokenizer.pad_token_id, "labels": names, "max_length": max_length}
    for split, ds in data.items():
        ds = tasks.drop_unlabelled(ds, columns["label_column"], split)
        enc = tokenizer(list(ds[text]), list(ds[pair]) if pair else None, truncation=True, max_length=max_length)
        out[split] = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                      "labels": list(ds[columns["label_column"]])}
    return out


def shakespeare_chars() -> dict:
    """Character-level Shakespeare: the sorted character set of train (unknown characters -> id 0)."""
    import torch

    from . import corpora

    data = corpora.load_data({"dataset": "shakespeare"})
    texts = {split: "\n".join(ds["text"]) + "\n" for split, ds in data.items()}
    chars = sorted(set(texts["train"]))
    index = {c: i for i, c in enumerate(chars)}
    return {"chars": "".join(chars), **{split: torch.tensor([index.get(c, 0) for c in t], dtype=torch.uint8)
                                         for split, t in texts.items()}}


def pad_batch(split: dict, rows, pad_id: int, device):
    import torch

    ids = [split["input_ids"][i] for i in rows]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(ids), width), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, (x, t) in enumerate(zip(ids, (split["token_type_ids"][i] for i in rows))):
        input_ids[r, :len(x)], types[r, :len(t)], mask[r, :len(x)] = torch.tensor(x), torch.tensor(t), 1
    labels = torch.tensor([split["labels"][i] for i in rows])
    return input_ids.to(device), mask.to(device), types.to(device), labels.to(device)


def evaluate_classifier(model, split: dict, limit: int | None, pad_id: int, device, batch: int = 256) -> dict:
    import torch

    n = len(split["labels"]) if limit is None else min(limit, len(split["labels"]))
    correct = []
    model.eval()
    with torch.no_grad():
        for start in range(0, n, batch):
            rows = list(range(start, min(n, start + batch)))
            ids, mask, types, labels = pad_batch(split, rows, pad_id, device)
            correct += (model(ids, mask, types).argmax(-1) == labels).tolist()
    model.train()
    return {"accuracy": float(np.mean(correct)), "n": n, "correct": [int(c) for c in correct]}


# ----------------------------------------------------------------------------- the three kinds of job

def run_classification(job: dict, data_dir: str, device) -> dict:
    import torch

    from . import exp_models

    data = torch.load(data_path(data_dir, job["dataset"], job["train"]), weights_only=False)
    train = job["train"]
    set_determinism(job["seed"])
    model = exp_models.classifier(job["model"], job["variant"], job["size"], data["vocab_size"],
                                  len(data["labels"]), data["max_length"] + 2, data["pad_id"]).to(device)
    n_train = len(data["train"]["labels"])
    subset = np.random.default_rng(0).permutation(n_train)[:int(train.get("train_size") or n_train)]  # nested
    batch = int(train.get("batch_size", 32))
    per_epoch = math.ceil(len(subset) / batch)
    steps = max(int(train.get("min_steps", 0)), int(train.get("epochs", 1)) * per_epoch)
    if train.get("steps"):
        steps = int(train["steps"])
    opt, schedule = optimiser(model, job["lr"], steps, train)
    order = np.random.default_rng(job["seed"])
    limit = train.get("eval_size")
    checkpoints = {max(1, round(steps * f)) for f in (0.25, 0.5, 0.75)}  # validation curve (final added below)
    curve = []
    losses, done = [], 0
    while done < steps:
        perm = subset[order.permutation(len(subset))]
        for start in range(0, len(perm), batch):
            if done == steps:
                break
            ids, mask, types, labels = pad_batch(data["train"], perm[start:start + batch], data["pad_id"], device)
            loss = torch.nn.functional.cross_entropy(model(ids, mask, types), labels)
            losses.append(step(model, loss, opt, schedule))
            done += 1
            if done in checkpoints and done < steps:
                curve.append([done, evaluate_classifier(model, data["validation"], limit, data["pad_id"],
                                                        device)["accuracy"]])
    val = evaluate_classifier(model, data["validation"], limit, data["pad_id"], device)
    curve.append([steps, val["accuracy"]])
    test = evaluate_classifier(model, data["test"], None, data["pad_id"], device)
    return {"metric": "accuracy", "val": val["accuracy"], "test": test["accuracy"],
            "parameters": exp_models.count_parameters(model), "steps": steps, "train_examples": len(subset),
            "final_train_loss": float(np.mean(losses[-20:])), "test_correct": test["correct"], "val_curve": curve,
            "train_loss_curve": loss_curve(losses)}


def loss_curve(losses: list[float], points: int = 10) -> list[list[float]]:
    """Mean training loss over each tenth of training: [[last step of the chunk, mean loss], ...]."""
    edges = np.linspace(0, len(losses), points + 1).round().astype(int)
    return [[int(b), round(float(np.mean(losses[a:b])), 4)] for a, b in zip(edges, edges[1:]) if b > a]


def run_lm(job: dict, data_dir: str, device) -> dict:
    import torch

    from . import exp_models

    data = torch.load(data_path(data_dir, job["dataset"], job["train"]), weights_only=False)
    train = job["train"]
    length, batch, steps = int(train.get("max_length", 256)), int(train.get("batch_size", 16)), int(train["steps"])
    set_determinism(job["seed"])
    vocab = len(data["chars"])
    model = exp_models.causal_lm(job["model"], job["variant"], job["size"], vocab, length).to(device)
    opt, schedule = optimiser(model, job["lr"], steps, train)
    stream = data["train"].long()
    gen = torch.Generator().manual_seed(job["seed"])
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - length - 1, (batch,), generator=gen)
        block = torch.stack([stream[s:s + length + 1] for s in starts.tolist()]).to(device)
        logits = model(input_ids=block[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), block[:, 1:].flatten())
        losses.append(step(model, loss, opt, schedule))
    blocks = int(train.get("eval_size", 64))
    val = lm_loss_by_position(model, data["validation"].long(), length, blocks, device)
    test = lm_loss_by_position(model, data["test"].long(), length, blocks, device)
    return {"metric": "loss", "val": float(val.mean()), "test": float(test.mean()),
            "test_loss_by_position": [round(float(v), 5) for v in test.mean(0)], "eval_blocks": len(test),
            "test_loss_by_block_position": np.round(test, 3).tolist(),  # (blocks, length): paired comparisons
            "parameters": exp_models.count_parameters(model), "steps": steps,
            "final_train_loss": float(np.mean(losses[-20:]))}


def lm_loss_by_position(model, stream, length: int, blocks: int, device, batch: int = 32):
    """Next-character NLL (nats), ``(blocks, length)``, at each position 0..length-1 of the first
    ``blocks`` non-overlapping blocks of a split."""
    import torch

    blocks = min(blocks, (len(stream) - 1) // length)
    starts = [i * length for i in range(blocks)]
    rows = []
    model.eval()
    with torch.no_grad():
        for b in range(0, blocks, batch):
            block = torch.stack([stream[s:s + length + 1] for s in starts[b:b + batch]]).to(device)
            logits = model(input_ids=block[:, :-1]).logits
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), block[:, 1:], reduction="none")
            rows.append(nll.double().cpu())  # (batch, length)
    model.train()
    return torch.cat(rows).numpy()


def probe_metric(logits, batch) -> tuple:
    """(loss to train on, metric to report: accuracy, or R² = 1 - normalised MSE for regression)."""
    import torch

    targets = batch.targets.to(logits.device)
    if batch.num_classes == 0:
        scored = ~torch.isnan(targets)
        pred, y = logits[..., 0][scored], targets[scored]
        mse = torch.mean((pred - y) ** 2)
        return mse, float(1 - mse.detach() / torch.mean(y**2))
    scored = targets != -100
    pred, y = logits[scored], targets[scored]
    return torch.nn.functional.cross_entropy(pred, y), float((pred.argmax(-1) == y).float().mean())


def run_probe(job: dict, data_dir: str, device) -> dict:
    import torch

    from . import exp_models, probes

    params = {k: v for k, v in job["probe"].items() if k != "name"}
    name, train, size = job["probe"]["name"], job["train"], job["size"]
    set_determinism(job["seed"])
    sample = probes.make(name, 2, [job["seed"], 0], **params)
    tokens = sample.num_classes > 0
    model = exp_models.ProbeModel(
        job["model"], job["variant"], size.get("architecture", "attention_only"), int(size.get("hidden", 64)),
        int(size.get("heads", 1)), int(size.get("layers", 1)), probes.max_length(name, params),
        sample.num_classes if tokens else 1, vocab=probes.vocab_size(name, params),
        features=0 if tokens else sample.inputs.shape[-1], mlp_readout=name in ("local", "long_range"))
    model = model.to(device)
    steps, batch = int(train.get("steps", 500)), int(train.get("batch_size", 64))
    opt, schedule = optimiser(model, job["lr"], steps, train)
    losses, curve = [], []
    n_eval = int(train.get("eval_size", 1000))
    checkpoints = {max(1, round(steps * f)) for f in (0.25, 0.5, 0.75)}
    val_data = probes.make(name, min(n_eval, 200), [10**6, 1], **params)  # the curve: the first 200 of val
    for i in range(steps):
        data = probes.make(name, batch, [job["seed"], 1, i], **params)
        loss, _ = probe_metric(model(data.inputs.to(device)), data)
        losses.append(step(model, loss, opt, schedule))
        if i + 1 in checkpoints:
            model.eval()
            with torch.no_grad():
                curve.append([i + 1, probe_metric(model(val_data.inputs.to(device)), val_data)[1]])
            model.train()
    model.eval()
    with torch.no_grad():  # validation and test sets: fixed seeds, the same for every job of the suite
        val = probe_metric(model(probes.make(name, n_eval, [10**6, 1], **params).inputs.to(device)),
                           probes.make(name, n_eval, [10**6, 1], **params))[1]
        test_data = probes.make(name, n_eval, [10**6, 2], **params)
        test_logits = model(test_data.inputs.to(device))
        test = probe_metric(test_logits, test_data)[1]
    extra = {}
    if test_data.num_classes:  # per scored position (several per sequence in MQAR and induction)
        scored = test_data.targets != -100
        extra["test_correct"] = (test_logits.argmax(-1).cpu()[scored] == test_data.targets[scored]).int().tolist()
    if name == "mqar":  # the in-context guessing baseline: a uniform guess among the values in the context
        extra["test_baseline"] = probes.mqar_guess_baseline(test_data, int(params.get("pairs", 8)))
    return {"metric": "r2" if name == "regression" else "accuracy", "val": val, "test": test,
            "parameters": exp_models.count_parameters(model), "steps": steps,
            "final_train_loss": float(np.mean(losses[-20:])), "val_curve": curve + [[steps, val]],
            "train_loss_curve": loss_curve(losses), **extra}


RUNNERS = {"classification": run_classification, "lm": run_lm, "probe": run_probe}


def run_job(job: dict, out: str, device: str = "cpu", data_dir: str | None = None) -> dict:
    """Run one job and write its record (under ``out``); return the record. ``data_dir``: the
    prepared datasets (default ``<out>/data``)."""
    import torch

    start = time.time()
    result = RUNNERS[job["kind"]](job, data_dir or str(Path(out) / "data"), torch.device(device))
    record = {"job": job, **result, "seconds": round(time.time() - start, 2), "device": device,
              "torch": torch.__version__, "code": code_version()}
    write_json(record_path(out, job), record)
    return record


def _worker(args) -> tuple[str, float, str | None]:
    job, out, device, data_dir = args
    try:
        record = run_job(job, out, device, data_dir)
        return job["id"], record["seconds"], None
    except Exception:  # one failed job must not stop the grid; it stays pending and is reported, traceback kept
        return job["id"], 0.0, traceback.format_exc()


def is_done(out: str | Path, job: dict) -> bool:
    """A record exists for exactly this job (a record of a job whose settings changed since is stale)."""
    path = record_path(out, job)
    if not path.exists():
        return False
    return json.loads(path.read_text())["job"] == json.loads(json.dumps(job, default=float))


def pending(grid: dict, jobs: list[dict]) -> list[dict]:
    return [j for j in jobs if not is_done(grid["out"], j)]


def run_grid(grid: dict, jobs: list[dict], workers: int = 1, device: str = "cpu", aggregate_every: int = 0) -> int:
    """Run the jobs without a record; return how many failed. ``workers`` > 1: parallel processes."""
    todo, deferred = chosen_jobs(grid, pending(grid, jobs))
    print(f"{len(jobs)} jobs, {len(todo)} to run now, {len(deferred)} waiting for their learning rate", flush=True)
    failures = _run_jobs(grid, todo, workers, device, aggregate_every)
    if deferred:  # the sweep seeds are done: the other seeds at each cell's chosen learning rate
        todo, deferred = chosen_jobs(grid, deferred)
        print(f"then {len(todo)} at the chosen learning rates ({len(deferred)} still waiting)", flush=True)
        failures += _run_jobs(grid, todo, workers, device, aggregate_every) + len(deferred)
    return failures


def _run_jobs(grid: dict, todo: list[dict], workers: int, device: str, aggregate_every: int) -> int:
    if not todo:
        return 0
    prepare_data(grid, todo)
    failures, args = 0, [(j, grid["out"], device, grid["data"]) for j in todo]
    if workers > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(workers, initializer=set_determinism, initargs=(0,))
        results = pool.imap_unordered(_worker, args)
    else:
        pool, results = None, map(_worker, args)
    for n, (jid, seconds, error) in enumerate(results, 1):
        failures += error is not None
        print(f"[{n}/{len(todo)}] {jid}: " + (f"FAILED {error}" if error else f"{seconds:.1f} s"), flush=True)
        if aggregate_every and n % aggregate_every == 0:
            aggregate(grid)
    if pool is not None:
        pool.close()
        pool.join()
    return failures


def aggregate(grid: dict) -> None:
    from . import exp_report

    exp_report.write_results(grid, expand(grid))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "aggregate", "list", "verify"))
    parser.add_argument("grid")
    parser.add_argument("--quick", action="store_true", help="each suite's quick settings: a smoke test")
    parser.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="", help="comma-separated suite names")
    parser.add_argument("--limit", type=int, default=0, help="run at most N pending jobs")
    parser.add_argument("--aggregate-every", type=int, default=0, help="rewrite the results every N jobs")
    parser.add_argument("--ids", default="", help="verify: comma-separated suite/job ids to rerun")
    parser.add_argument("--per-model", type=int, default=1, help="verify: records of each model to rerun")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="verify: draw only among records that took at most this long")
    parser.add_argument("--seed", type=int, default=0, help="verify: the draw of the records to rerun")
    args = parser.parse_args(argv)
    grid = load_grid(args.grid, args.quick)
    jobs = expand(grid, [s for s in args.only.split(",") if s] or None)
    if args.command == "list":
        for job in jobs:
            print(("done " if is_done(grid["out"], job) else "todo ") + f"{job['suite']}/{job['id']}")
        return 0
    if args.command == "verify":
        from . import exp_verify

        if args.per_model < 1:
            raise ValueError(f"--per-model must be at least 1 (got {args.per_model})")
        outcomes = exp_verify.verify(grid, jobs, [i for i in args.ids.split(",") if i], args.per_model,
                                     args.max_seconds, args.seed, args.device)
        aggregate(grid)
        return 0 if all(o["identical"] for o in outcomes) else 1
    if args.command == "run":
        selected = pending(grid, jobs)[:args.limit] if args.limit else jobs
        failures = run_grid(grid, selected, args.jobs, args.device, args.aggregate_every)
        aggregate(grid)
        return 1 if failures else 0
    aggregate(grid)
    return 0


if __name__ == "__main__":  # python -m ...: the command line's error handling (one line; --debug)
    from .cli import main as cli_main

    sys.exit(cli_main(["experiments", *sys.argv[1:]]))
