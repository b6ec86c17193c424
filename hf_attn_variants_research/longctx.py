"""Long-context evidence: ListOps (Long Range Arena) and MQAR (Zoology), resumable in time budgets.

Usage:
    python -m hf_attn_variants_research.longctx run CONFIG [--budget-s S] [--records PATH] [--device cpu|cuda]
    python -m hf_attn_variants_research.longctx list CONFIG [--records PATH]     # the cells, done or not
    python -m hf_attn_variants_research.longctx table CONFIG [--records PATH]    # markdown tables (docs)
    python -m hf_attn_variants_research.longctx figure CONFIG [--records PATH] [--out-dir DIR]  # <task>-<stem>.png

CONFIG is a YAML file under configs/longctx/ (``gpu.yaml``: the papers' settings; ``cpu.yaml``: reduced
scale). A run is an ordered list of cells (task, variant, setting, seed). ``run`` reads the records file
(jsonl, one line per finished cell), skips the cells already there and runs cells while they fit the
budget: a cell starts when the time left covers its estimate (the longest recorded cell of the same task
and setting, else the setting's ``estimate_s``); the first cell of an invocation always starts (a budget
below one cell would otherwise never progress). Each finished cell appends one record (the code commit,
the settings, test accuracy, the guessing baseline for MQAR, mean step time, peak memory) by writing the
whole file to a temp path and renaming it. Data sets are cached under ``cache`` keyed on all their inputs.

Cell order: seed-major (every variant and setting once before any replicate), then the config's task,
setting and variant order, so the most informative cells come first.

Models: ListOps, the library's VariantBertForSequenceClassification (first-token pooling: a CLS token
is prepended; LRA pools CLS); MQAR, VariantGPT2LMHeadModel scored at the query positions only. Every
variant is a registry name (``hf_attn_variants.hfav_variants.VARIANTS``) plus its config fields.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from hf_attn_variants.hfav_variants import VARIANTS as REGISTRY

from . import listops, zoology_mqar

TASKS = ("listops", "mqar")
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- config and cells

def _bad(field: str, value, expected: str) -> ValueError:
    return ValueError(f"longctx config: {field}={value!r} is invalid: expected {expected}")


def load_config(path: str | Path) -> dict:
    import yaml

    cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict) or not isinstance(cfg.get("tasks"), dict):
        raise _bad("tasks", None if not isinstance(cfg, dict) else cfg.get("tasks"), "a mapping of task -> spec")
    for task, spec in cfg["tasks"].items():
        if task not in TASKS:
            raise _bad("tasks", task, f"one of {TASKS}")
        for v in spec.get("variants", []):
            if v.get("attention_variant") not in REGISTRY:
                raise _bad(f"tasks.{task}.variants.attention_variant", v.get("attention_variant"),
                           f"a registry variant {sorted(REGISTRY)}")
            if "name" not in v:
                raise _bad(f"tasks.{task}.variants.name", None, "a label")
        if not spec.get("settings"):
            raise _bad(f"tasks.{task}.settings", spec.get("settings"), "a non-empty list")
        if not spec.get("seeds"):
            raise _bad(f"tasks.{task}.seeds", spec.get("seeds"), "a non-empty list")
    return cfg


def cells(cfg: dict) -> list[dict]:
    """The ordered cells: seed index first, then task, setting and variant order."""
    out = []
    depth = max(len(s["seeds"]) for s in cfg["tasks"].values())
    for i in range(depth):
        for task, spec in cfg["tasks"].items():
            if i >= len(spec["seeds"]):
                continue
            for setting in spec["settings"]:
                for variant in spec["variants"]:
                    if variant["name"] not in setting.get("variants", [variant["name"]]):
                        continue
                    out.append({"task": task, "variant": variant["name"], "setting": setting["name"],
                                "seed": spec["seeds"][i]})
    return out


def cell_key(cell: dict) -> str:
    return f"{cell['task']}|{cell['setting']}|{cell['variant']}|seed={cell['seed']}"


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path, record: dict) -> None:
    """Whole file rewritten to a temp path, then renamed (a killed run leaves the old file intact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(old + json.dumps(record, sort_keys=True) + "\n")
    os.replace(tmp, path)


def commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- data (cached)

def _cache_path(cfg: dict, kind: str, inputs: dict) -> Path:
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cfg.get("cache", "outputs/longctx_cache")) / f"{kind}-{digest}.pt"


def _cached(cfg: dict, kind: str, inputs: dict, make):
    path = _cache_path(cfg, kind, inputs)
    if path.exists():
        return torch.load(path)
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)
    return data


def listops_data(cfg: dict, data: dict) -> dict:
    fields = {k: data[k] for k in ("max_depth", "max_args", "min_length", "max_length", "num_train", "num_valid",
                                   "num_test")}
    settings = listops.Settings(**fields)
    workers = int(data.get("workers", 1))
    inputs = {**fields, "seed": data["seed"], "workers": workers, "v": 1}

    def make():
        sp = listops.splits(data["seed"], settings, workers=workers)
        return {k: listops.encode(v, settings.max_length + 1) for k, v in sp.items()}

    return _cached(cfg, "listops", inputs, make)


def mqar_data(cfg: dict, data: dict) -> dict:
    s = zoology_mqar.Settings(vocab=data["vocab"], length=data["length"], pairs=data["pairs"],
                              power_a=data.get("power_a", 0.01))
    inputs = {"vocab": s.vocab, "length": s.length, "pairs": s.pairs, "power_a": s.power_a, "seed": data["seed"],
              "num_train": data["num_train"], "num_test": data["num_test"], "v": 1}

    def make():
        out = {"train": zoology_mqar.generate(data["num_train"], data["seed"], s),
               "valid": zoology_mqar.generate(data["num_test"], data["seed"] + 1, s),
               "test": zoology_mqar.generate(data["num_test"], data["seed"] + 2, s)}
        out["guess"] = zoology_mqar.guess_baseline(*out["test"], s.vocab)
        return out

    return _cached(cfg, "mqar", inputs, make)


# ----------------------------------------------------------------------------- models and training

def model_config(task: str, variant: dict, size: dict, data: dict):
    """The library config of a cell's model (validated by the library: a bad field raises ValueError)."""
    import hf_attn_variants as hv

    fields = {k: v for k, v in variant.items() if k != "name"}
    if task == "listops":
        return hv.VariantBertConfig(
            vocab_size=len(listops.VOCAB), hidden_size=size["hidden"], num_hidden_layers=size["layers"],
            num_attention_heads=size["heads"], intermediate_size=size["intermediate"],
            max_position_embeddings=data["max_length"] + 1, num_labels=listops.NUM_CLASSES,
            pad_token_id=listops.TOKEN_ID[listops.PAD], hidden_dropout_prob=size.get("dropout", 0.1),
            attention_probs_dropout_prob=size.get("dropout", 0.1), **fields)
    return hv.VariantGPT2Config(
        vocab_size=data["vocab"], n_embd=size["hidden"], n_layer=size["layers"], n_head=size["heads"],
        n_inner=size.get("intermediate"), n_positions=data["length"], attn_pdrop=0.0, resid_pdrop=0.0,
        embd_pdrop=size.get("dropout", 0.0), **fields)


def build_model(task: str, variant: dict, size: dict, data: dict) -> torch.nn.Module:
    import hf_attn_variants as hv

    config = model_config(task, variant, size, data)
    if task == "listops":
        return hv.VariantBertForSequenceClassification(config)
    return hv.VariantGPT2LMHeadModel(config)


def cell_parts(cfg: dict, cell: dict) -> tuple[dict, dict, dict, dict]:
    """(data, model size, train, variant fields) of a cell: the task's, with its setting's overrides."""
    spec = cfg["tasks"][cell["task"]]
    setting = next(s for s in spec["settings"] if s["name"] == cell["setting"])
    data_cfg = {**spec["data"], **setting.get("data", {})}
    size = {**spec["model"], **setting.get("model", {})}
    train = {**spec["train"], **setting.get("train", {})}
    variant = {**next(v for v in spec["variants"] if v["name"] == cell["variant"]),
               **setting.get("variant_fields", {}).get(cell["variant"], {})}
    return data_cfg, size, train, variant


def lr_factor(train: dict):
    """LRA's ``constant * linear_warmup * rsqrt_decay`` or Zoology's cosine annealing, per step (0-based)."""
    steps, warmup = train["steps"], train.get("warmup", 0)
    if train["schedule"] == "lra_rsqrt":
        return lambda s: min(1.0, (s + 1) / warmup) / math.sqrt(max(s + 1, warmup))
    if train["schedule"] == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    raise _bad("train.schedule", train["schedule"], "lra_rsqrt or cosine")


def _logits(task: str, model, ids, mask, targets=None):
    if task == "listops":
        return model(input_ids=ids, attention_mask=mask).logits
    hidden = model.transformer(input_ids=ids).last_hidden_state
    return model.lm_head(hidden[targets != zoology_mqar.IGNORE])  # only the query positions


def evaluate(task: str, model, split, batch: int, device) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad(), _autocast(device):
        if task == "listops":
            ids, mask, labels = split
            for i in range(0, len(ids), batch):
                logits = _logits(task, model, ids[i:i + batch].to(device), mask[i:i + batch].to(device))
                right += (logits.argmax(-1).cpu() == labels[i:i + batch]).sum().item()
                total += len(logits)
        else:
            x, y = split
            for i in range(0, len(x), batch):
                tb = y[i:i + batch].to(device)
                logits = _logits(task, model, x[i:i + batch].to(device), None, tb)
                right += (logits.argmax(-1) == tb[tb != zoology_mqar.IGNORE]).sum().item()
                total += len(logits)
    model.train()
    return right / max(total, 1)


def _autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _rss_kib(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def fixed_mmap_threshold() -> None:
    """glibc: serve allocations >= 64 KiB by mmap and return them on free (a fixed threshold), so the peak
    RSS of one cell is not hidden by memory an earlier cell freed into the heap."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _reset_peak(device) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:  # "5" resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return -1
    return _rss_kib("VmRSS") * 1024


def _peak(device, start: int) -> tuple[float, str]:
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - start) / 2 ** 20, "cuda max_memory_allocated"
    if start < 0:
        return float("nan"), "not measured"
    return (_rss_kib("VmHWM") * 1024 - start) / 2 ** 20, "cpu peak RSS increase (VmHWM after clear_refs)"


def run_cell(cfg: dict, cell: dict, device, code: str = "") -> dict:
    data_cfg, size, train, variant = cell_parts(cfg, cell)
    task = cell["task"]
    data = listops_data(cfg, data_cfg) if task == "listops" else mqar_data(cfg, data_cfg)
    torch.manual_seed(cell["seed"])
    model = build_model(task, variant, size, data_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], betas=tuple(train.get("betas", (0.9, 0.999))),
                            eps=train.get("eps", 1e-8), weight_decay=train.get("weight_decay", 0.0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(train))
    g = torch.Generator().manual_seed(cell["seed"])
    train_split = data["train"]
    n = len(train_split[0])
    batch, steps = train["batch"], train["steps"]
    order = torch.randperm(n, generator=g)
    pos = 0
    step_times, losses, stopped_at = [], [], None
    start_mem = _reset_peak(device)
    t_cell = time.perf_counter()
    for step in range(steps):
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos:pos + batch]
        pos += batch
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with _autocast(device):
            if task == "listops":
                ids, mask, labels = (t[idx].to(device) for t in train_split)
                logits = _logits(task, model, ids, mask)
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            else:
                x, y = (t[idx].to(device) for t in train_split)
                logits = _logits(task, model, x, None, y)
                loss = torch.nn.functional.cross_entropy(logits.float(), y[y != zoology_mqar.IGNORE])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if train.get("clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), train["clip"])
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        every = train.get("eval_every")
        if every and train.get("stop_at") and (step + 1) % every == 0:
            if evaluate(task, model, data["valid"], train.get("eval_batch", batch), device) >= train["stop_at"]:
                stopped_at = step + 1
                break
    peak_mb, peak_kind = _peak(device, start_mem)
    timed = step_times[3:] or step_times
    record = {
        **cell, "key": cell_key(cell), "commit": code or commit(), "device": device.type,
        "scale": cfg.get("scale", "unspecified"), "config": cfg.get("_path", ""),
        "data": data_cfg, "model": size, "train": train, "variant_fields": variant,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps_run": len(step_times), "stopped_early_at": stopped_at,
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "valid_accuracy": evaluate(task, model, data["valid"], train.get("eval_batch", batch), device),
        "test_accuracy": evaluate(task, model, data["test"], train.get("eval_batch", batch), device),
        "step_time_s": sum(timed) / len(timed), "peak_memory_mb": peak_mb, "peak_memory_kind": peak_kind,
        "torch_threads": torch.get_num_threads(),
    }
    if task == "mqar":
        record["guess_baseline"] = data["guess"]
    if task == "listops":
        labels = data["test"][2]
        record["majority_baseline"] = torch.bincount(labels, minlength=10).max().item() / len(labels)
    record["cell_seconds"] = time.perf_counter() - t_cell
    return record


# ----------------------------------------------------------------------------- the resumable loop

def estimate(cfg: dict, cell: dict, records: list[dict]) -> float:
    same = [r["cell_seconds"] for r in records if r["task"] == cell["task"] and r["setting"] == cell["setting"]]
    if same:
        return max(same)
    setting = next(s for s in cfg["tasks"][cell["task"]]["settings"] if s["name"] == cell["setting"])
    return float(setting.get("estimate_s", 0.0))


def run(cfg: dict, records_path: Path, budget_s: float, device, log=print) -> list[dict]:
    """Runs the pending cells that fit the budget; returns the records written by this invocation."""
    t_start = time.perf_counter()
    code = commit()  # the code this process loaded (a later edit of the worktree does not change it)
    records = read_records(records_path)
    done = {r["key"] for r in records}
    written = []
    for cell in cells(cfg):
        key = cell_key(cell)
        if key in done:
            continue
        left = budget_s - (time.perf_counter() - t_start)
        need = estimate(cfg, cell, records)
        if written and need > left:
            log(f"[longctx] stop: {key} needs ~{need:.0f}s, {left:.0f}s left")
            break
        log(f"[longctx] run {key} (estimate {need:.0f}s, {left:.0f}s left)")
        record = run_cell(cfg, cell, device, code)
        append_record(records_path, record)
        records.append(record)
        written.append(record)
        done.add(key)
        log(f"[longctx] done {key}: test accuracy {record['test_accuracy']:.3f} in {record['cell_seconds']:.0f}s")
    pending = [c for c in cells(cfg) if cell_key(c) not in done]
    log(f"[longctx] {len(written)} cells this run, {len(pending)} pending")
    return written


# ----------------------------------------------------------------------------- tables

T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)  # t_{0.975, df}, df = 1..10


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the two-sided 95% Student-t interval over seeds, mean ± t_{0.975, n-1}·sd/√n (nan below 2
    seeds; more than 11 seeds use the normal 1.96)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def baselines(cfg: dict, task: str, rows: list[dict]) -> list[tuple[str, float]]:
    """The task's reference baselines for these records: MQAR the in-context guessing baseline (stored in the
    record); ListOps the majority class (stored) and the root-operator rule (recomputed from the records' data
    spec: the training split's most frequent answer per root operator, scored on the test split)."""
    if task == "mqar":
        return [("in-context guessing baseline", rows[0]["guess_baseline"])]
    d = listops_data(cfg, rows[0]["data"])
    root = listops.root_operator_baseline(d["train"][0], d["train"][2], d["test"][0], d["test"][2])
    return [("majority class", rows[0]["majority_baseline"]), ("root-operator rule", root)]


def table(cfg: dict, records: list[dict]) -> str:
    """One markdown table per (task, setting): accuracy (mean, 95% t interval over seeds), seeds, step-time
    ratio to dense (ratio of the per-variant means measured in these records), peak memory."""
    lines = []
    for task, spec in cfg["tasks"].items():
        for setting in spec["settings"]:
            rows = [r for r in records if r["task"] == task and r["setting"] == setting["name"]]
            if not rows:
                continue
            dense = [r["step_time_s"] for r in rows if r["variant_fields"]["attention_variant"] == "dense"]
            dense_t = sum(dense) / len(dense) if dense else float("nan")
            note = ", ".join(f"{label} {value:.3f}" for label, value in baselines(cfg, task, rows))
            lines += [f"**{task} / {setting['name']}** ({rows[0]['scale']}; {note})", "",
                      "| variant | test accuracy (mean) | 95% t interval | seeds | step time / dense | "
                      "peak memory (MiB) | parameters |", "|---|---|---|---|---|---|---|"]
            for v in spec["variants"]:
                rs = [r for r in rows if r["variant"] == v["name"]]
                if not rs:
                    continue
                mean, lo, hi = t_interval([r["test_accuracy"] for r in rs])
                st = sum(r["step_time_s"] for r in rs) / len(rs)
                mem = sum(r["peak_memory_mb"] for r in rs) / len(rs)
                ci = "n/a (1 seed)" if math.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"
                lines.append(f"| {v['name']} | {mean:.3f} | {ci} | {len(rs)} | {st / dense_t:.2f} | {mem:.0f} | "
                             f"{rs[0]['parameters']:,} |")
            lines.append("")
    return "\n".join(lines)


# Published, theirs: Long Range Arena (Tay et al., ICLR 2021), Table 1, ListOps test accuracy (%), 2K tokens;
# the same numbers as docs/longcontext.md's ListOps table (tests/test_longctx.py checks they agree).
LRA_TABLE1_LISTOPS = {"Transformer": 36.37, "Local Attention": 15.82}
LRA_LABEL = "LRA Table 1 (Tay et al. 2021), 2K tokens: theirs"


def figure(cfg: dict, records: list[dict], out_dir: str | Path, suffix: str = "cpu") -> list[Path]:
    """One PNG per task, ``<out_dir>/<task>-<suffix>.png``, one panel per setting: per variant the mean test
    accuracy with its two-sided 95% Student-t interval over seeds as error bars (``t_interval``), each seed as
    a dot, the task's baselines (``baselines``) as labelled horizontal lines, and for ListOps LRA Table 1's
    published Transformer and Local Attention accuracies as a marked reference (theirs, at 2K tokens). The
    y axis starts at 0. Files are written to a temporary name and renamed. Raises ValueError naming the task
    when a configured task has no records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in cfg["tasks"]:
        if not any(r["task"] == task for r in records):
            raise ValueError(f"figure: task {task!r} has no records (give a records file that contains it)")
    written = []
    for task, spec in cfg["tasks"].items():
        settings = [s["name"] for s in spec["settings"] if any(r["task"] == task and r["setting"] == s["name"]
                                                                for r in records)]
        fig, axes = plt.subplots(1, len(settings), figsize=(8.5 * len(settings), 6.0), squeeze=False)
        for ax, setting in zip(axes[0], settings):
            rows = [r for r in records if r["task"] == task and r["setting"] == setting]
            names = [v["name"] for v in spec["variants"] if any(r["variant"] == v["name"] for r in rows)]
            top = 0.0
            for i, name in enumerate(names):
                accs = [r["test_accuracy"] for r in rows if r["variant"] == name]
                mean, lo, hi = t_interval(accs)
                if math.isnan(lo):
                    ax.bar(i, mean, color="tab:blue", alpha=0.6)
                else:
                    ax.bar(i, mean, color="tab:blue", alpha=0.6, yerr=[[mean - lo], [hi - mean]], capsize=6)
                    top = max(top, hi)
                ax.scatter([i] * len(accs), accs, color="black", s=14, zorder=3,
                           label="one seed" if i == 0 else None)
                top = max(top, *accs)
            styles = ("--", ":", "-.")
            for k, (label, value) in enumerate(baselines(cfg, task, rows)):
                ax.axhline(value, color="tab:red", linestyle=styles[k % 3], label=f"{label} ({value:.3f})")
                top = max(top, value)
            if task == "listops":
                for k, (model, pct) in enumerate(LRA_TABLE1_LISTOPS.items()):
                    ax.plot([-0.5, len(names) - 0.5], [pct / 100] * 2, color="tab:gray", linewidth=1.4,
                            linestyle=styles[(k + 1) % 3], marker="Ds^"[k % 3], markevery=[1], markersize=7,
                            label=f"{LRA_LABEL}, {model} ({pct:.2f}%)")
                    top = max(top, pct / 100)
            ax.set_xticks(range(len(names)), names, rotation=15)
            ax.set_ylim(0, min(1.0, top * 1.15 + 0.02) if top < 0.95 else 1.02)
            ax.set_ylabel("test accuracy")
            seeds = sorted({r["seed"] for r in rows})
            ax.set_title(f"{task}, {setting}; scale: {rows[0]['scale']}\n"
                         f"bars: mean over {len(seeds)} seeds, error bars: 95% t interval", fontsize=10)
            ax.set_xlim(-0.6, len(names) - 0.4)
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
        fig.tight_layout()
        path = out_dir / f"{task}-{suffix}.png"
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            fig.savefig(tmp, format="png", dpi=110)
            os.replace(tmp, path)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_attn_variants_research.longctx",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "list", "table", "figure"))
    parser.add_argument("config")
    parser.add_argument("--records", default=None, help="jsonl of finished cells (default: the config's)")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out-dir", default=None, help="figure: folder for <task>-<config stem>.png "
                        "(default: the records file's folder)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg["_path"] = str(args.config)
    records_path = Path(args.records or cfg.get("records", "outputs/longctx/records.jsonl"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "list":
        done = {r["key"] for r in read_records(records_path)}
        for c in cells(cfg):
            print(("done    " if cell_key(c) in done else "pending ") + cell_key(c))
        return 0
    if args.command == "table":
        print(table(cfg, read_records(records_path)))
        return 0
    if args.command == "figure":
        try:
            paths = figure(cfg, read_records(records_path), args.out_dir or records_path.parent,
                           suffix=Path(args.config).stem)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for p in paths:
            print(p)
        return 0
    device = torch.device(args.device)
    if device.type == "cpu":
        fixed_mmap_threshold()
    run(cfg, records_path, args.budget_s, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
