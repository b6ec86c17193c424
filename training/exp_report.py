"""Aggregation of the experiment suite's job records: learning rate chosen on validation, then mean,
standard deviation and a bootstrap 95 % interval of the test metric, as markdown tables, JSON and
PNG plots under the grid's ``results`` folder. Not imported by the package.

The interval is a percentile bootstrap (10,000 resamples, seeded) over the seeds of a cell; a cell
with a single seed gets one over its test examples instead when the records hold per-example
results (classification: test examples; probes: scored test positions), and the table says which.
Paired differences to dense (same seeds, same test examples) and, for LM suites, loss by position
range come with two-level bootstrap intervals. Cells without records are listed as not run.
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


def summarise(values) -> dict:
    """n, mean, sample standard deviation (ddof 1; NaN for one value) and the bootstrap interval."""
    values = np.asarray(values, dtype=float)
    lo, hi = bootstrap_interval(values)
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
            stats["over"] = "seeds"
            if stats["n"] == 1 and "test_correct" in chosen[0]:
                stats["lo"], stats["hi"] = bootstrap_interval(chosen[0]["test_correct"])
                stats["over"] = "test examples"
            row.update(metric=metric, lr=lr, val_by_lr=val, parameters=chosen[0]["parameters"], records=chosen,
                       seconds=float(np.mean([r["seconds"] for r in chosen])), **stats)
        rows.append(row)
    return rows


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
            "CI over", "s/job"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        point = [str(row["params"].get(a, "—")) for a in axes]
        if "mean" not in row:
            lines.append("| " + " | ".join([row["model"], *point] + ["not run"] + [""] * (len(head) - len(axes) - 2))
                         + " |")
            continue
        val = ", ".join(f"{lr:g}: {v:.4f}" for lr, v in sorted(row["val_by_lr"].items()))
        seeds = f"{row['n']}/{row['planned'] // max(1, len(row['val_by_lr']))}"
        lines.append("| " + " | ".join([
            row["model"], *point, f"{row['parameters']:,}", f"{row['lr']:g}", val, seeds,
            fmt(row["mean"]), fmt(row["std"]), f"[{fmt(row['lo'])}, {fmt(row['hi'])}]", row["over"],
            f"{row['seconds']:.0f}"]) + " |")
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
    return None


def baseline_row(row: dict, rows: list[dict], baseline: str) -> dict | None:
    """The baseline's row at the same sweep point (on the axes the baseline has)."""
    for ref in rows:
        if ref["model"] == baseline and "mean" in ref and \
                all(row["params"].get(k) == v for k, v in ref["params"].items()):
            return ref
    return None


def comparisons(rows: list[dict], baseline: str = "dense", bucket: tuple[int, int] | None = None) -> list[dict]:
    """Each model's paired difference to ``baseline`` (same seeds, same test examples), per sweep point."""
    out = []
    for row in rows:
        ref = baseline_row(row, rows, baseline) if row["model"] != baseline and "mean" in row else None
        if ref is None:
            continue
        by_seed = {rec["job"]["seed"]: rec for rec in ref["records"]}
        pairs = [(example_scores(rec, bucket), example_scores(by_seed[rec["job"]["seed"]], bucket))
                 for rec in row["records"] if rec["job"]["seed"] in by_seed]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None and len(a) == len(b)]
        if pairs:
            out.append({"row": row, **paired_difference(pairs)})
    return out


def comparison_table(comps: list[dict], axes: list[str], metric: str, baseline: str = "dense") -> str:
    head = ["model", *axes, f"Δ test {metric} − {baseline}", "95% CI (seeds x test examples)",
            "resamples with Δ > 0", "seeds paired"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in comps:
        point = [str(c["row"]["params"].get(a, "—")) for a in axes]
        lines.append("| " + " | ".join([c["row"]["model"], *point, f"{c['mean']:+.4f}",
                                        f"[{c['lo']:+.4f}, {c['hi']:+.4f}]", f"{c['above']:.3f}",
                                        str(c["seeds"])]) + " |")
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
    plt = _plt()
    rows = [r for r in rows if "mean" in r]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))
    means = [r["mean"] for r in rows]
    err = np.array([[r["mean"] - r["lo"], r["hi"] - r["mean"]] if not np.isnan(r["lo"]) else [0, 0] for r in rows]).T
    ax.barh(y, means, xerr=err, color="tab:blue", alpha=0.7, capsize=3)
    ax.set_yticks(y, [label(r) for r in rows])
    for text, value in (spec.get("anchors") or {}).items():
        ax.axvline(value, ls="--", color="gray")
        ax.text(value, len(rows) - 0.4, text, rotation=90, va="top", ha="right", fontsize=7)
    anchors = list((spec.get("anchors") or {}).values())
    lo = min([r["lo"] if not np.isnan(r["lo"]) else r["mean"] for r in rows] + anchors)
    ax.set_xlim(max(0.0, lo - 0.05), None)
    ax.set_xlabel(f"test {rows[0]['metric']} (mean over seeds, 95% bootstrap CI)")
    _finish(plt, fig, ax, name, path)


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
                 "learning rate, paired by seed and by test example; the interval resamples seeds and test examples "
                 "(two-level percentile bootstrap, 10,000 resamples)." + (" For loss, Δ < 0 is better than dense."
                                                                          if metric == "loss" else ""), "",
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
    """Tables (one markdown file per suite), the plots the suites ask for, a JSON summary and an
    index (``README.md``: what ran, how long it took, how to rerun it)."""
    folder = Path(grid["results"])
    folder.mkdir(parents=True, exist_ok=True)
    command = f"python training/experiments.py run {grid.get('path', 'GRID')}" + (" --quick" if grid.get("quick")
                                                                                 else "")
    summary, index, versions = {}, [], set()
    for name, suite in grid["suites"].items():
        suite_jobs = [j for j in jobs if j["suite"] == name]
        records = load_records(grid["out"], name)
        versions |= {(r.get("device", "?"), r.get("torch", "?")) for r in records}
        if not suite_jobs:
            continue
        rows = sort_rows(cells(suite_jobs, records, suite.get("lr_seeds")), suite["models"], list(suite["sweep"]))
        ran, planned = sum(r["ran"] for r in rows), sum(r["planned"] for r in rows)
        minutes = job_seconds(suite_jobs, records) / 60
        index.append(f"| [{name}]({name}.md) | {suite['kind']} | {len(suite['models'])} | {ran} of {planned} | "
                     f"{minutes:.0f} |" if records else f"| {name} | {suite['kind']} | {len(suite['models'])} | "
                     f"0 of {planned} (not run) | 0 |")
        if not records:
            continue
        text = suite_text(name, suite, rows, command, grid["out"], ran, planned, minutes)
        for kind in suite["plot"].get("kinds") or ([suite["plot"]["type"]] if suite["plot"].get("type") else []):
            png = folder / f"{name}-{kind}.png"
            PLOTS[kind](name, rows, suite["plot"], png)
            if png.exists():
                text.append(f"![{name} {kind}]({png.name})")
        _write_text(folder / f"{name}.md", "\n".join(text) + "\n")
        summary[name] = [{k: v for k, v in r.items() if k != "records"} for r in rows]
    _write_text(folder / "summary.json", json.dumps(summary, indent=1, default=str))
    _write_text(folder / "README.md", index_text(command, grid, index, versions))
    return summary


def suite_text(name: str, suite: dict, rows: list[dict], command: str, out: str, ran: int, planned: int,
               minutes: float) -> list[str]:
    axes = list(suite["sweep"])
    text = [f"# {name}", "", suite.get("description", "").strip(), "",
            f"Made by `{command}` (records: `{out}/records/{name}/`).", "",
            f"{ran} of {planned} planned jobs ran. Learning rate chosen per cell on the mean validation metric "
            "over seeds; test statistics at that learning rate. 95% CI: percentile bootstrap of the mean "
            "(10,000 resamples) over seeds, or over test examples (classification) / scored test positions "
            "(probes) when a cell has one seed (column \"CI over\").", "",
            table(rows, axes), "",
            f"Compute: {minutes:.0f} min of single-thread job time in all (the sum of the current records' seconds).",
            ""]
    return text + paired_sections(rows, axes, suite)


def index_text(command: str, grid: dict, index: list[str], versions: set) -> str:
    used = ", ".join(f"{device} / torch {torch}" for device, torch in sorted(versions)) or "—"
    return "\n".join([
        "# Experiment results", "",
        f"Written by `{command}` (this index, every table, plot and `summary.json`; "
        f"`python training/experiments.py aggregate {grid.get('path', 'GRID')}` rewrites them from the records "
        f"in `{grid['out']}/records/`, which stay outside git). Jobs ran on: {used}, one torch thread per job.", "",
        "| suite | kind | models | jobs ran | compute (min, single-thread) |", "|---|---|---|---|---|", *index, "",
        "Statistics: per cell (model x sweep point) the learning rate with the best mean validation metric, then "
        "the test metric's mean over seeds, sample standard deviation and a percentile-bootstrap 95 % interval. "
        "\"Paired with dense\" sections give each model's difference to dense attention at the same sweep point, "
        "paired by seed and test example, with a two-level bootstrap interval over seeds and test examples.", ""])
