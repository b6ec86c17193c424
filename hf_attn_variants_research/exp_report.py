"""Aggregation of the experiment suite's job records: learning rate chosen on validation, then mean,
standard deviation and a 95 % interval of the test metric, as markdown tables, JSON and PNG plots
under the grid's ``results`` folder. Not imported by the package.

Records: the runner's per-job JSON files (git-ignored) are packed into one committed, gzipped JSON-lines
file (``records`` in the grid, default ``<results>/records.jsonl.gz``: per run its job settings, seed,
code version, metrics, curves and per-example test results); the report reads only that file, so
anyone can regenerate every table and figure from a checkout. Records made by another code version
than the suite's majority are listed and left out, never mixed in silently.

Intervals: a cell's interval is Student's t over its seeds' test metrics (mean ± t(0.975, n-1) · sd/√n):
it is about the seed-to-seed variation of training on this fixed test set, and its coverage is nominal
at any n ≥ 2 for normal seed means (``tests/test_experiments.py`` simulates it at 5 seeds). A cell with
one seed has no seed interval: it is labelled "1 seed" and its bracket (a bootstrap over test examples)
covers test-set sampling only. Comparisons with dense are paired by seed (the per-seed difference of the
test metrics; same test examples), with a t interval over seeds and, beside it, a Bonferroni interval at
level 1 - 0.05/k for the k comparisons the suite makes. Cells without records are listed as not run.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

LOWER_IS_BETTER = {"loss"}
RESAMPLES = 10_000


# ----------------------------------------------------------------------------- statistics

def bootstrap_interval(values, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs when fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def t_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of ``values`` (NaNs when fewer than 2 values)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(1 - (1 - level) / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def t_coverage(n_seeds: int, sd: float = 0.05, trials: int = 4000, level: float = 0.95, seed: int = 0,
               interval=None) -> float:
    """Simulated coverage of an interval method (default: ``t_interval``) for the mean of ``n_seeds``
    normal seed-level values with standard deviation ``sd``: the fraction of trials whose interval
    holds the true mean."""
    interval = interval or (lambda v: t_interval(v, level))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        lo, hi = interval(0.7 + sd * rng.standard_normal(n_seeds))
        hits += lo <= 0.7 <= hi
    return hits / trials


def summarise(values) -> dict:
    """n, mean, sample standard deviation (ddof 1; NaN for one value) and the t interval over the values."""
    values = np.asarray(values, dtype=float)
    lo, hi = t_interval(values)
    return {"n": len(values), "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
            else float("nan"), "lo": lo, "hi": hi}


def paired_difference(pairs: list[tuple], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Mean difference of a per-example score between two models trained with the same seeds and
    scored on the same test examples, with a two-level percentile bootstrap 95 % interval.

    pairs: one ``(scores_a, scores_b)`` per seed, each an array over the same test examples (1/0
    correctness, or a per-block loss). The estimate is the mean over seeds of mean(a - b). Each
    resample draws the seeds with replacement (when there are two or more) and the test examples
    with replacement (the same examples for both models: the comparison is paired), so the
    interval covers seed-to-seed variation and test-set sampling. Returns mean, lo, hi, the seeds
    used and ``above``: the fraction of resamples with a difference > 0.
    """
    diffs = np.stack([np.asarray(a, dtype=float) - np.asarray(b, dtype=float) for a, b in pairs])  # (S, N)
    n_seeds, n_examples = diffs.shape
    rng = np.random.default_rng(seed)
    picked_seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds)) if n_seeds > 1 \
        else np.zeros((resamples, 1), dtype=int)
    means = np.empty(resamples)
    for i in range(resamples):
        by_example = diffs[picked_seeds[i]].mean(0)  # (N,): the resampled seeds' mean per example
        means[i] = by_example[rng.integers(0, n_examples, size=n_examples)].mean()
    return {"mean": float(diffs.mean()), "lo": float(np.percentile(means, 2.5)),
            "hi": float(np.percentile(means, 97.5)), "above": float((means > 0).mean()), "seeds": n_seeds}


# ----------------------------------------------------------------------------- the committed records file

PACKED_DROP = ("test_loss_by_block_position",)  # too large for git; the LM tables then pair by seed only


def records_file(grid: dict) -> Path:
    return Path(grid.get("records") or Path(grid["results"]) / "records.jsonl.gz")


def _bits(values) -> str:
    return "".join("1" if int(v) else "0" for v in values)


def pack_records(grid: dict, jobs: list[dict]) -> Path:
    """Merge the runner's per-job records (``<out>/records``) into the committed records file: one
    JSON line per run (suite, job settings, seed, code version, metrics, curves, per-example test
    correctness as a 0/1 string), a record of the same suite and job id replacing the older one.
    The first lines hold per-suite facts the report needs (classification: the test set's majority
    class rate). Written to a temp file, then renamed."""
    import gzip
    import io

    path = records_file(grid)
    meta, old = load_packed(path)
    merged = {(r["suite"], r["job"]["id"]): r for rows in old.values() for r in rows}
    for suite in grid["suites"]:
        for rec in load_records(grid["out"], suite):
            merged[(suite, rec["job"]["id"])] = {"suite": suite, **rec}
    for name, suite in grid["suites"].items():
        if suite["kind"] == "classification" and name not in meta:
            job = next((j for j in jobs if j["suite"] == name), None)
            majority = _majority(grid, job) if job else None
            if majority is not None:
                meta[name] = majority
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8") as f:  # mtime 0: the same records give the same bytes
        for name, facts in sorted(meta.items()):
            f.write(json.dumps({"meta": name, **facts}) + "\n")
        for key in sorted(merged):
            rec = {k: v for k, v in merged[key].items() if k not in PACKED_DROP}
            if "test_correct" in rec:
                rec["test_correct"] = _bits(rec["test_correct"])
            f.write(json.dumps(rec, default=float, separators=(",", ":")) + "\n")
    tmp.replace(path)
    return path


def _majority(grid: dict, job: dict) -> dict | None:
    """The test split's majority-class rate, from the prepared dataset (None when it is absent)."""
    import torch

    from . import experiments

    data = experiments.data_path(grid["data"], job["dataset"], job["train"])
    if not Path(data).exists():
        return None
    labels = torch.load(data, weights_only=False)["test"]["labels"]
    counts = np.bincount(labels)
    return {"test_majority": float(counts.max() / counts.sum()), "test_size": int(counts.sum())}


def load_packed(path: str | Path) -> tuple[dict, dict]:
    """(per-suite facts, records by suite) from a records file; ({}, {}) when it does not exist."""
    import gzip

    meta, out = {}, defaultdict(list)
    if not Path(path).exists():
        return meta, out
    with gzip.open(path, "rt") as f:
        for line in f:
            rec = json.loads(line)
            if "meta" in rec:
                meta[rec.pop("meta")] = rec
                continue
            if isinstance(rec.get("test_correct"), str):
                rec["test_correct"] = [int(c) for c in rec["test_correct"]]
            out[rec["suite"]].append(rec)
    return meta, out


def one_code_version(records: list[dict]) -> tuple[list[dict], list[dict], str | None]:
    """(records of the suite's majority code version, records of other versions, that version's hash).
    Records without a code version count as one unknown version."""
    if not records:
        return [], [], None
    versions = defaultdict(list)
    for r in records:
        versions[(r.get("code") or {}).get("hash", "unknown")].append(r)
    main = max(versions, key=lambda h: len(versions[h]))
    return versions[main], [r for h, rs in versions.items() if h != main for r in rs], main


# ----------------------------------------------------------------------------- records to cells

def load_records(out: str | Path, suite: str) -> list[dict]:
    folder = Path(out) / "records" / suite
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def cell_key(job: dict) -> tuple:
    return job["model"], tuple(sorted(job["params"].items()))


def current_records(jobs: list[dict], records: list[dict]) -> list[dict]:
    """The records whose job settings are still the grid's (a record whose job changed is stale)."""
    def key(job: dict) -> str:
        return json.dumps(job, sort_keys=True, default=float)

    current = {key(j) for j in jobs}
    return [r for r in records if "id" not in r["job"] or key(r["job"]) in current]


def choose_lr(records: list[dict]) -> float:
    """The learning rate with the best mean validation metric over ``records`` (ties: the smaller)."""
    by_lr = defaultdict(list)
    for r in records:
        by_lr[r["job"]["lr"]].append(r["val"])
    sign = -1 if records[0]["metric"] in LOWER_IS_BETTER else 1
    val = {lr: float(np.mean(v)) for lr, v in by_lr.items()}
    return max(sorted(val), key=lambda k: sign * val[k])


def cells(jobs: list[dict], records: list[dict], lr_seeds: list[int] | None = None) -> list[dict]:
    """One row per (model, sweep point): the learning rate with the best mean validation metric
    over the seeds that ran (only the ``lr_seeds``, when given: the seeds that ran every rate), and
    the test statistics at that learning rate over every seed that ran at it."""
    planned = defaultdict(set)
    for job in jobs:
        planned[cell_key(job)].add((job["lr"], job["seed"]))
    done = defaultdict(lambda: defaultdict(list))
    for rec in current_records(jobs, records):
        done[cell_key(rec["job"])][rec["job"]["lr"]].append(rec)
    rows = []
    for key, runs in planned.items():
        model, params = key
        by_lr = done.get(key, {})
        row = {"model": model, "params": dict(params), "planned": len(runs),
               "ran": sum(len(v) for v in by_lr.values())}
        if by_lr:
            metric = next(iter(by_lr.values()))[0]["metric"]
            sweep = [r for recs in by_lr.values() for r in recs if lr_seeds is None or r["job"]["seed"] in lr_seeds]
            sweep = sweep or [r for recs in by_lr.values() for r in recs]
            val = {lr: float(np.mean(v)) for lr, v in _group(sweep).items()}
            lr = choose_lr(sweep)
            chosen = sorted(by_lr[lr], key=lambda r: r["job"]["seed"])
            stats = summarise([r["test"] for r in chosen])
            stats["over"] = f"t over {stats['n']} seeds"
            if stats["n"] == 1:
                stats["over"] = "1 seed: no seed interval"
                if "test_correct" in chosen[0]:
                    stats["lo"], stats["hi"] = bootstrap_interval(chosen[0]["test_correct"])
                    stats["over"] = "1 seed: test examples only"
            row.update(metric=metric, lr=lr, val_by_lr=val, parameters=chosen[0]["parameters"], records=chosen,
                       seconds=float(np.mean([r["seconds"] for r in chosen])), lr_edge=_at_edge(lr, val), **stats)
            if "test_baseline" in chosen[0]:
                row["baseline"] = float(np.mean([r["test_baseline"] for r in chosen]))
            if all(r.get("val_curve") for r in chosen):
                late = [r["val_curve"][-1][1] - r["val_curve"][-2][1] for r in chosen if len(r["val_curve"]) > 1]
                row["val_last_quarter"] = float(np.mean(late)) if late else float("nan")
        rows.append(row)
    return rows


def _at_edge(lr: float, val: dict) -> bool:
    """The chosen learning rate is the smallest or largest of a sweep of 2 or more rates."""
    return len(val) > 1 and lr in (min(val), max(val))


def _group(records: list[dict]) -> dict:
    out = defaultdict(list)
    for r in records:
        out[r["job"]["lr"]].append(r["val"])
    return out


# ----------------------------------------------------------------------------- tables

def fmt(x: float, digits: int = 4) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def table(rows: list[dict], axes: list[str]) -> str:
    head = ["model", *axes, "params", "lr (chosen on val)", "val by lr", "seeds", "test mean", "std", "95% CI",
            "CI", "Δval last 25% of steps", "s/job"]
    if any("baseline" in r for r in rows):
        head.insert(head.index("std"), "guess baseline")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        point = [str(row["params"].get(a, "—")) for a in axes]
        if "mean" not in row:
            lines.append("| " + " | ".join([row["model"], *point] + ["not run"] + [""] * (len(head) - len(axes) - 2))
                         + " |")
            continue
        val = ", ".join(f"{lr:g}: {v:.4f}" for lr, v in sorted(row["val_by_lr"].items()))
        cells_ = [row["model"], *point, f"{row['parameters']:,}", f"{row['lr']:g}" + (" (edge)" if row["lr_edge"]
                                                                                       else ""),
                  val, str(row["n"]), fmt(row["mean"]), fmt(row["std"]), f"[{fmt(row['lo'])}, {fmt(row['hi'])}]",
                  row["over"], f"{row['val_last_quarter']:+.4f}" if "val_last_quarter" in row else "—",
                  f"{row['seconds']:.0f}"]
        if "guess baseline" in head:
            cells_.insert(head.index("guess baseline"), fmt(row.get("baseline", float("nan"))))
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def sort_rows(rows: list[dict], models: list[str], axes: list[str]) -> list[dict]:
    def key(row):
        return (models.index(row["model"]), *[(str(type(row["params"].get(a))), row["params"].get(a) or 0)
                                               for a in axes])
    return sorted(rows, key=key)


# ----------------------------------------------------------------------------- paired comparisons

def position_buckets(length: int) -> list[tuple[int, int]]:
    """Position ranges [lo, hi) for loss-by-position tables: 0-8, 8-32, then doubling, up to ``length``."""
    edges = [0, 8] + [2 ** k for k in range(5, 20) if 2 ** k < length] + [length]
    return [(lo, hi) for lo, hi in zip(edges, edges[1:]) if lo < hi]


def example_scores(record: dict, bucket: tuple[int, int] | None = None) -> np.ndarray | None:
    """Per-test-example scores of a record: correctness (classification) or the mean loss of each
    test block over the positions in ``bucket`` (LM); None when the record has neither."""
    if "test_correct" in record:
        return np.asarray(record["test_correct"], dtype=float)
    if "test_loss_by_block_position" in record:
        losses = np.asarray(record["test_loss_by_block_position"], dtype=float)  # (blocks, length)
        lo, hi = bucket or (0, losses.shape[1])
        return losses[:, lo:hi].mean(1)
    if "test_loss_by_position" in record:  # packed records keep the per-position means only
        curve = np.asarray(record["test_loss_by_position"], dtype=float)
        lo, hi = bucket or (0, len(curve))
        return curve[lo:hi]
    return None


def baseline_row(row: dict, rows: list[dict], baseline: str) -> dict | None:
    """The baseline's row at the same sweep point (on the axes the baseline has)."""
    for ref in rows:
        if ref["model"] == baseline and "mean" in ref and \
                all(row["params"].get(k) == v for k, v in ref["params"].items()):
            return ref
    return None


def seed_difference(diffs, k: int = 1, level: float = 0.95) -> dict:
    """Per-seed paired differences -> their mean, the t interval over seeds, and a Bonferroni interval
    (level 1 - (1 - level)/k) for one of k comparisons. Fewer than 2 seeds: no interval (NaNs)."""
    diffs = np.asarray(diffs, dtype=float)
    lo, hi = t_interval(diffs, level)
    blo, bhi = t_interval(diffs, 1 - (1 - level) / max(1, k))
    return {"mean": float(diffs.mean()), "lo": lo, "hi": hi, "bonf_lo": blo, "bonf_hi": bhi,
            "seeds": len(diffs), "k": k, "per_seed": [float(d) for d in diffs]}


def comparisons(rows: list[dict], baseline: str = "dense", bucket: tuple[int, int] | None = None) -> list[dict]:
    """Each model's difference to ``baseline`` at the same sweep point, paired by seed: per seed,
    this model's test metric minus the baseline's (mean of the per-example scores in ``bucket`` for
    LM suites), then ``seed_difference`` with k = the number of comparisons made here."""
    found = []
    for row in rows:
        ref = baseline_row(row, rows, baseline) if row["model"] != baseline and "mean" in row else None
        if ref is None:
            continue
        by_seed = {rec["job"]["seed"]: rec for rec in ref["records"]}
        diffs = []
        for rec in row["records"]:
            other = by_seed.get(rec["job"]["seed"])
            if other is None:
                continue
            a, b = example_scores(rec, bucket), example_scores(other, bucket)
            if bucket is not None and a is not None and b is not None and len(a) == len(b):
                diffs.append(float(np.mean(a) - np.mean(b)))
            else:
                diffs.append(float(rec["test"]) - float(other["test"]))
        if diffs:
            found.append((row, diffs))
    return [{"row": row, **seed_difference(diffs, k=len(found))} for row, diffs in found]


def comparison_table(comps: list[dict], axes: list[str], metric: str, baseline: str = "dense") -> str:
    k = comps[0]["k"] if comps else 0
    head = ["model", *axes, f"Δ test {metric} − {baseline} (mean over seeds)", "95% t interval over seeds",
            f"Bonferroni interval (k = {k})", "seeds paired", "reading"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in comps:
        point = [str(c["row"]["params"].get(a, "—")) for a in axes]
        if c["seeds"] < 2:
            interval, bonf, reading = "— (1 seed)", "—", "1 seed: no claim"
        else:
            interval = f"[{c['lo']:+.4f}, {c['hi']:+.4f}]"
            bonf = f"[{c['bonf_lo']:+.4f}, {c['bonf_hi']:+.4f}]"
            better = (c["bonf_lo"] > 0) if metric not in LOWER_IS_BETTER else (c["bonf_hi"] < 0)
            worse = (c["bonf_hi"] < 0) if metric not in LOWER_IS_BETTER else (c["bonf_lo"] > 0)
            reading = "above " + baseline if better else "below " + baseline if worse else \
                "no difference shown"
        lines.append("| " + " | ".join([c["row"]["model"], *point, f"{c['mean']:+.4f}", interval, bonf,
                                        str(c["seeds"]), reading]) + " |")
    return "\n".join(lines)


def position_table(rows: list[dict], axes: list[str], baseline: str = "dense") -> str:
    """Test loss by position bucket (mean over seeds), and each model's paired difference to the
    baseline in that bucket with its 95 % interval."""
    done = [r for r in rows if "mean" in r and "test_loss_by_position" in r["records"][0]]
    if not done:
        return ""
    buckets = position_buckets(len(done[0]["records"][0]["test_loss_by_position"]))
    head = ["model", *axes, *[f"pos {lo}-{hi - 1}" for lo, hi in buckets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    diffs = {b: {id(c["row"]): c for c in comparisons(done, baseline, b)} for b in buckets}
    for row in done:
        curve = np.mean([rec["test_loss_by_position"] for rec in row["records"]], axis=0)
        cells = []
        for b in buckets:
            text = f"{curve[b[0]:b[1]].mean():.3f}"
            c = diffs[b].get(id(row))
            cells.append(text + (f" ({c['mean']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}])" if c else ""))
        lines.append("| " + " | ".join([row["model"], *[str(row["params"].get(a, "—")) for a in axes], *cells])
                     + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label(row: dict, skip: tuple = ()) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in sorted(row["params"].items()) if k not in skip)
    return row["model"] + (f" ({extra})" if extra else "")


def _finish(plt, fig, ax, name: str, path: Path, legend: bool = False) -> None:
    """Title (and legend), then the PNG written and the figure closed."""
    ax.set_title(name)
    if legend:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(name: str, rows: list[dict], spec: dict, path: Path) -> None:
    """Test metric per cell with its t interval over seeds (none for 1-seed cells, which say so). The
    axis starts at the majority-class rate when known (marked), else at 0; probe baselines (MQAR's
    in-context guess) are drawn as black ticks."""
    plt = _plt()
    rows = [r for r in rows if "mean" in r]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(rows) + 1.8))
    y = np.arange(len(rows))
    means = [r["mean"] for r in rows]
    seeded = [r["n"] > 1 for r in rows]
    err = np.array([[r["mean"] - r["lo"], r["hi"] - r["mean"]] if ok else [0, 0] for r, ok in zip(rows, seeded)]).T
    ax.barh(y, means, xerr=err, color=["tab:blue" if ok else "tab:gray" for ok in seeded], alpha=0.75, capsize=3)
    ax.set_yticks(y, [f"{label(r)}\n{r['parameters'] / 1e3:.0f}k params, {r['n']} seed{'s' if r['n'] > 1 else ''}"
                      for r in rows], fontsize=7)
    for i, r in enumerate(rows):
        if "baseline" in r:
            ax.plot([r["baseline"]] * 2, [i - 0.4, i + 0.4], color="k", lw=2,
                    label="in-context guessing baseline" if i == 0 else None)
    for text, value in (spec.get("anchors") or {}).items():
        ax.axvline(value, ls="--", color="gray", lw=0.8)
        ax.text(value, len(rows) - 0.45, text, rotation=90, va="top", ha="right", fontsize=7)
    start = spec.get("majority")
    if start:
        ax.set_xlim(start, max(list(means) + list((spec.get("anchors") or {}).values())) + 0.03)
        ax.axvline(start, color="k", lw=1.5)
    else:
        ax.set_xlim(0, max(1.0, max(means)))
    if any("baseline" in r for r in rows):
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel(f"test {rows[0]['metric']}: mean over seeds, 95% t interval over seeds (gray: 1 seed, no interval)"
                  + (f"\naxis starts at the majority-class rate {start:.3f} (black line)" if start else ""), fontsize=8)
    _finish(plt, fig, ax, name, path)


def plot_val_curves(name: str, rows: list[dict], path: Path) -> None:
    """Validation metric against training step, one line per cell (mean over its seeds), and the
    seeds' spread as a band (min to max)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in rows:
        if "mean" not in r or not all(rec.get("val_curve") for rec in r["records"]):
            continue
        curves = [np.asarray(rec["val_curve"], dtype=float) for rec in r["records"]]
        steps = curves[0][:, 0]
        vals = np.stack([c[:, 1] for c in curves if len(c) == len(steps)])
        line, = ax.plot(steps, vals.mean(0), marker="o", ms=3, label=f"{label(r)} (lr {r['lr']:g})")
        if len(vals) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.12)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {rows[0].get('metric', 'metric')} (band: min-max over seeds)")
    ax.legend(fontsize=6, loc="best", framealpha=0.6)
    _finish(plt, fig, ax, name + ": validation curves", path)


def cost_section(name: str, rows: list[dict], costs: dict, path: Path) -> str:
    """Quality against measured cost: a table and a three-panel figure (training step time as a ratio
    to dense, measured side by side in one process; attention FLOPs from ``hf_attn_variants.costs``;
    activation memory saved for backward in one step), each with the cell's t interval over seeds."""
    plt = _plt()
    done = [(r, costs.get(label(r))) for r in rows if "mean" in r]
    done = [(r, c) for r, c in done if c]
    if not done:
        return ""
    fields = [("step_ratio", "train step time / dense (median, side by side)"),
              ("attention_gflops", "attention forward GFLOPs per sequence (costs.py)"),
              ("saved_mib", "activation memory saved for backward (MiB per step)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    for ax, (field, title) in zip(axes, fields):
        for r, c in done:
            yerr = [[r["mean"] - r["lo"]], [r["hi"] - r["mean"]]] if r["n"] > 1 else None
            xerr = [[c["step_ratio"] - c["step_ratio_q1"]], [c["step_ratio_q3"] - c["step_ratio"]]] \
                if field == "step_ratio" else None
            ax.errorbar([c[field]], [r["mean"]], yerr=yerr, xerr=xerr, marker="o", capsize=3,
                        label=f"{label(r)} ({r['parameters'] / 1e3:.0f}k params, {r['n']} seeds)")
        ax.set_xlabel(title, fontsize=8)
    axes[0].set_ylabel(f"test {done[0][0]['metric']} (95% t interval over seeds)")
    axes[0].set_title("horizontal bars: quartiles over timing rounds", fontsize=7)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{name}: quality against cost", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    head = "| model | params | test mean [95% t CI] | step time / dense [IQR over rounds] | attention GFLOPs | " \
           "saved activations (MiB) |"
    lines = ["## Quality beside cost", "", costs.get("_note", ""), "", head, "|---|---|---|---|---|---|"]
    for r, c in done:
        ci = f"[{fmt(r['lo'])}, {fmt(r['hi'])}]" if r["n"] > 1 else "(1 seed)"
        lines.append(f"| {label(r)} | {r['parameters']:,} | {fmt(r['mean'])} {ci} | {c['step_ratio']:.2f} "
                     f"[{c['step_ratio_q1']:.2f}, {c['step_ratio_q3']:.2f}] | {c['attention_gflops']:.4f} | "
                     f"{c['saved_mib']:.1f} |")
    lines += ["", f"![{name} cost]({path.name})"]
    return "\n".join(lines)


def plot_curve(name: str, rows: list[dict], spec: dict, path: Path) -> None:
    plt = _plt()
    x_axis = spec["x"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    groups = defaultdict(list)
    for r in rows:
        if "mean" in r:
            groups[label(r, (x_axis,))].append(r)
    for text, group in groups.items():
        group.sort(key=lambda r: r["params"][x_axis])
        xs = [r["params"][x_axis] for r in group]
        ax.plot(xs, [r["mean"] for r in group], marker="o", label=text)
        lo = [r["lo"] if not np.isnan(r["lo"]) else r["mean"] for r in group]
        hi = [r["hi"] if not np.isnan(r["hi"]) else r["mean"] for r in group]
        ax.fill_between(xs, lo, hi, alpha=0.15)
    if spec.get("log_x", True):
        ax.set_xscale("log", base=2 if spec.get("log2") else 10)
    for text, value in (spec.get("anchors") or {}).items():  # after the scale: the label sits at the left edge
        ax.axhline(value, ls="--", color="gray", lw=0.8)
        ax.text(ax.get_xlim()[0], value, " " + text, fontsize=7, va="bottom")
    ax.set_xlabel(x_axis)
    ax.set_ylabel(f"test {next(r['metric'] for r in rows if 'mean' in r)}")
    _finish(plt, fig, ax, name, path, legend=True)


def plot_positions(name: str, rows: list[dict], spec: dict, path: Path) -> None:
    """Test loss by position in the context (mean over seeds, smoothed over ``bucket`` positions)."""
    plt = _plt()
    bucket = int(spec.get("bucket", 8))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if "mean" not in r:
            continue
        curve = np.mean([rec["test_loss_by_position"] for rec in r["records"]], axis=0)
        n = len(curve) // bucket * bucket
        ax.plot(np.arange(0, n, bucket) + bucket / 2, curve[:n].reshape(-1, bucket).mean(1), label=label(r))
    ax.set_xlabel("position in the context")
    ax.set_ylabel(f"test loss (nats/char), mean over {bucket} positions")
    _finish(plt, fig, ax, name, path, legend=True)


def plot_phase(name: str, rows: list[dict], spec: dict, path: Path) -> None:
    """Heatmaps of the test metric over (x, y) for the models that use y, one per facet value,
    and beside them the models that do not use y as one column (y does not apply)."""
    plt = _plt()
    x_axis, y_axis, facets = spec["x"], spec["y"], spec.get("facets", [])
    done = [r for r in rows if "mean" in r]
    if not done:
        return
    facet_values = sorted({tuple(r["params"].get(f) for f in facets) for r in done}, key=str)
    models = list(dict.fromkeys(r["model"] for r in done))
    xs = sorted({r["params"][x_axis] for r in done})
    ys = sorted({r["params"][y_axis] for r in done if y_axis in r["params"]})
    fig, axes = plt.subplots(len(facet_values), len(models), squeeze=False,
                             figsize=(2.6 * len(models) + 1, 2.3 * len(facet_values) + 0.8))
    vmin, vmax = spec.get("vmin", 0.5), spec.get("vmax", 1.0)
    image = None
    for i, fv in enumerate(facet_values):
        for j, model in enumerate(models):
            ax = axes[i][j]
            mine = [r for r in done if r["model"] == model and tuple(r["params"].get(f) for f in facets) == fv]
            uses = any(y_axis in r["params"] for r in mine)
            rows_y = ys if uses else [None]
            grid = np.full((len(rows_y), len(xs)), np.nan)
            for r in mine:
                grid[rows_y.index(r["params"].get(y_axis)), xs.index(r["params"][x_axis])] = r["mean"]
            image = ax.imshow(grid, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto", origin="lower")
            ax.set_xticks(range(len(xs)), [str(x) for x in xs], fontsize=6, rotation=90)
            ax.set_yticks(range(len(rows_y)), [str(y) if y is not None else "—" for y in rows_y], fontsize=6)
            for (yi, xi), v in np.ndenumerate(grid):
                if not np.isnan(v):
                    ax.text(xi, yi, f"{v:.2f}", ha="center", va="center", fontsize=5, color="w" if v < 0.8 else "k")
            if spec.get("reach") and uses:  # the reach L·w of a stacked causal band
                layers = dict(zip(facets, fv)).get("layers")
                if layers:
                    for yi, w in enumerate(rows_y):
                        reach = [xi for xi, x in enumerate(xs) if x <= layers * w]
                        if reach:
                            ax.plot([max(reach) + 0.5] * 2, [yi - 0.5, yi + 0.5], color="r", lw=1.5)
            title = model + "".join(f", {f}={v}" for f, v in zip(facets, fv))
            ax.set_title(title, fontsize=7)
            ax.set_xlabel(x_axis, fontsize=7)
            ax.set_ylabel(y_axis if uses else "", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.6, label=f"test {done[0]['metric']}")
    fig.suptitle(name + (": red bar = reach L·w" if spec.get("reach") else ""), fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_lines(name: str, rows: list[dict], spec: dict, path: Path) -> None:
    """Metric against the probe parameter: one panel per facet value, a line per model (and per y value)."""
    plt = _plt()
    x_axis, facets = spec["x"], spec.get("facets", [])
    done = [r for r in rows if "mean" in r]
    if not done:
        return
    facet_values = sorted({tuple(r["params"].get(f) for f in facets) for r in done}, key=str)
    fig, axes = plt.subplots(1, len(facet_values), squeeze=False, figsize=(5 * len(facet_values), 4), sharey=True)
    for ax, fv in zip(axes[0], facet_values):
        groups = defaultdict(list)
        for r in done:
            if tuple(r["params"].get(f) for f in facets) == fv:
                groups[label(r, (x_axis, *facets))].append(r)
        for text, group in groups.items():
            group.sort(key=lambda r: r["params"][x_axis])
            ax.errorbar([r["params"][x_axis] for r in group], [r["mean"] for r in group],
                        yerr=[[0 if np.isnan(r["lo"]) else r["mean"] - r["lo"] for r in group],
                              [0 if np.isnan(r["hi"]) else r["hi"] - r["mean"] for r in group]],
                        marker="o", ms=3, capsize=2, label=text)
        if spec.get("log_x", True):
            ax.set_xscale("log", base=2)
        ax.set_xlabel(x_axis)
        ax.set_title(", ".join(f"{f}={v}" for f, v in zip(facets, fv)) or name, fontsize=8)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel(f"test {done[0]['metric']}")
    fig.suptitle(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


PLOTS = {"bars": plot_bars, "curve": plot_curve, "positions": plot_positions, "phase": plot_phase,
         "lines": plot_lines}


# ----------------------------------------------------------------------------- the results folder

def job_seconds(jobs: list[dict], records: list[dict]) -> float:
    return sum(r["seconds"] for r in current_records(jobs, records))


def paired_sections(rows: list[dict], axes: list[str], suite: dict) -> list[str]:
    """Markdown for the paired comparisons to dense, and for LM suites the loss by position."""
    text = []
    comps = comparisons(rows)
    if comps:
        metric = comps[0]["row"]["metric"]
        text += ["## Paired with dense", "",
                 f"Each model's test {metric} minus dense attention's at the same sweep point, both at their chosen "
                 "learning rate, paired by seed (same seed, same test examples): the mean of the per-seed "
                 f"differences, a Student's t 95% interval over seeds, and a Bonferroni interval for the "
                 f"{comps[0]['k']} comparisons made here (level 1 − 0.05/{comps[0]['k']}). \"reading\" uses the "
                 "Bonferroni interval; cells with one seed carry no claim. The intervals are about seed-to-seed "
                 "variation on this fixed test set, not test-set sampling." + (
                     " For loss, Δ < 0 is better than dense." if metric == "loss" else ""), "",
                 comparison_table(comps, axes, metric), ""]
    positions = position_table(rows, axes) if suite["kind"] == "lm" else ""
    if positions:
        text += ["## Loss by position in the context", "",
                 "Mean test loss (nats/char) over each range of positions; in brackets the paired difference to "
                 "dense in that range and its 95 % interval over test blocks (and seeds).", "", positions, ""]
    return text


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_results(grid: dict, jobs: list[dict]) -> dict:
    """Pack the runner's records into the committed records file (when there are any), then from that
    file alone: tables (one markdown file per suite), the plots the suites ask for, validation curves,
    quality against cost (when ``<results>/costs.json`` exists), a JSON summary and an index
    (``README.md``: what ran, on which code, how long it took, how to regenerate it)."""
    from . import exp_verify, experiments

    folder = Path(grid["results"])
    folder.mkdir(parents=True, exist_ok=True)
    if any(load_records(grid["out"], name) for name in grid["suites"]):
        pack_records(grid, jobs)
    meta, packed = load_packed(records_file(grid))
    costs_path = folder / "costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.exists() else {}
    here = experiments.code_version()["hash"]
    verifications = exp_verify.load_verifications(grid)
    command = f"hf-attn-variants experiments aggregate {grid.get('path', 'GRID')}" + (" --quick" if grid.get(
        "quick") else "")
    summary, index, versions = {}, [], set()
    for name, suite in grid["suites"].items():
        suite_jobs = [j for j in jobs if j["suite"] == name]
        kept, other, code = one_code_version(current_records(suite_jobs, packed.get(name, [])))
        versions |= {(r.get("device", "?"), r.get("torch", "?")) for r in kept}
        if not suite_jobs:
            continue
        rows = sort_rows(cells(suite_jobs, kept, suite.get("lr_seeds")), suite["models"], list(suite["sweep"]))
        ran, planned = sum(r["ran"] for r in rows), planned_runs(suite, suite_jobs)
        minutes = sum(r["seconds"] for r in kept) / 60
        index.append(f"| [{name}]({name}.md) | {suite['kind']} | {len(suite['models'])} | {ran} of {planned} | "
                     f"{minutes:.0f} | {code} |" if kept else f"| {name} | {suite['kind']} | "
                     f"{len(suite['models'])} | 0 of {planned} (not run) | 0 | — |")
        if not kept:
            continue
        checked = exp_verify.summary(verifications, name, code, here)
        code_note = (f"Records: {len(kept)} runs made by code version `{code}` (commit "
                     f"{kept[0].get('code', {}).get('commit', '?')[:10]}). This page was made on code version "
                     f"`{here}`" + (" (the same)." if here == code else
                                    (f", which differs; {checked}" if checked else
                                     ", which differs and was not checked: the numbers are those of the recorded "
                                     "version (`hf-attn-variants experiments verify` reruns some of its jobs on "
                                     "the current code and compares)."))
                     + (f" {len(other)} records of other code versions are left out: "
                        + ", ".join(sorted({r['job']['id'] for r in other})[:5]) + "." if other else ""))
        text = suite_text(name, suite, rows, command, records_file(grid), ran, planned, minutes, code_note)
        spec = {**suite["plot"], "majority": (meta.get(name) or {}).get("test_majority")}
        for kind in suite["plot"].get("kinds") or ([suite["plot"]["type"]] if suite["plot"].get("type") else []):
            png = folder / f"{name}-{kind}.png"
            PLOTS[kind](name, rows, spec, png)
            if png.exists():
                text.append(f"![{name} {kind}]({png.name})")
        if any(r.get("records") and r["records"][0].get("val_curve") for r in rows):
            png = folder / f"{name}-curves.png"
            plot_val_curves(name, rows, png)
            text += ["", "Validation curves (mean over the seeds at the chosen learning rate; the last point is "
                     "the final validation metric):", "", f"![{name} curves]({png.name})"]
        if costs.get(name):
            png = folder / f"{name}-cost.png"
            text += ["", cost_section(name, rows, costs[name], png)]
        _write_text(folder / f"{name}.md", "\n".join(text) + "\n")
        summary[name] = [{k: v for k, v in r.items() if k != "records"} for r in rows]
    _write_text(folder / "summary.json", json.dumps(summary, indent=1, default=str))
    _write_text(folder / "README.md", index_text(command, grid, index, versions))
    return summary


def planned_runs(suite: dict, jobs: list[dict]) -> int:
    """Runs the grid plans: every rate on the ``lr_seeds``, one rate on the other seeds."""
    lr_seeds = suite.get("lr_seeds") or suite["seeds"]
    return sum(1 for j in jobs if j["seed"] in lr_seeds) + len({(j["model"], json.dumps(j["params"], sort_keys=True),
                                                                 j["seed"]) for j in jobs if j["seed"] not in lr_seeds})


def suite_text(name: str, suite: dict, rows: list[dict], command: str, records: Path, ran: int, planned: int,
               minutes: float, code_note: str = "") -> list[str]:
    axes = list(suite["sweep"])
    lr_seeds = suite.get("lr_seeds") or suite["seeds"]
    text = [f"# {name}", "", suite.get("description", "").strip(), "",
            f"Made by `{command}` from `{records}`. {code_note}", "",
            (f"{ran} of {planned} planned runs ran. " if ran <= planned else
             f"{ran} runs are recorded for {planned} planned: the surplus ran at a rate that a later, wider sweep "
             "did not choose (kept in the records, not used in the tables). ")
            + f"Learning rate chosen per cell on the mean validation metric "
            f"of seeds {lr_seeds} (every rate of the sweep ran on them; \"(edge)\" marks a chosen rate at the end of "
            "its sweep); test statistics at that rate over every seed that ran it. 95% CI: Student's t over seeds "
            "(mean ± t(0.975, n-1)·sd/√n; coverage sound at any n ≥ 2 for normal seed means). A \"1 seed\" cell "
            "has no seed interval: its bracket covers test-set sampling only and it carries no better/worse "
            "claim. \"Δval last 25%\": mean change of the validation metric over the last quarter of training "
            "(near 0: the run had plateaued).", "",
            table(rows, axes), "",
            f"Compute: {minutes:.0f} min of single-thread job time in all (the sum of the records' seconds).", ""]
    return text + paired_sections(rows, axes, suite)


def index_text(command: str, grid: dict, index: list[str], versions: set) -> str:
    used = ", ".join(f"{device} / torch {torch}" for device, torch in sorted(versions)) or "—"
    return "\n".join([
        "# Experiment results", "",
        f"Every table and figure here: `{command}` (reads only the committed records file "
        f"`{records_file(grid)}`). To rerun the jobs: `hf-attn-variants experiments run "
        f"{grid.get('path', 'GRID')}` (resumable; packs its records into that file). Jobs ran on: {used}, one "
        "torch thread per job. The records file is gzipped JSON lines: first per-suite facts (`{\"meta\": suite, "
        "...}`: the test set's majority-class rate), then one line per run: `suite`, `job` (every setting, seed, "
        "learning rate), `code` (hash of the files a result depends on, git commit), `val`, `test`, `parameters`, "
        "`steps`, `seconds`, `val_curve`, `train_loss_curve`, `test_correct` (per test example or scored query, a "
        "0/1 string) and for MQAR `test_baseline`. Side-by-side costs: `costs.json` "
        "(`python -m hf_attn_variants_research.exp_costs " + f"{grid.get('path', 'GRID')}`). Whether later code "
        "still gives the recorded numbers: `hf-attn-variants experiments verify " + f"{grid.get('path', 'GRID')}` "
        "reruns some jobs exactly as recorded and compares every recorded number and per-example result "
        "(`verifications.jsonl`, one line per rerun; each suite page cites the reruns on the code it was made "
        "with). Written findings: `docs/findings-experiments.md`.", "",
        *([str(grid["notes"]).strip(), ""] if grid.get("notes") else []),
        "| suite | kind | models | runs | compute (min, wall time of single-thread jobs) | code version |",
        "|---|---|---|---|---|---|", *index, "",
        "Statistics (every suite page): learning rate chosen per cell on validation; test metric as mean over seeds "
        "with a Student's t 95% interval over seeds (coverage checked by simulation at 5 seeds in "
        "`tests/test_experiments.py`); comparisons with dense paired by seed, t interval over seeds and a "
        "Bonferroni interval for the number of comparisons made; one-seed cells are labelled and carry no claim. "
        "Records of another code version than a suite's majority are listed and left out.", ""])
