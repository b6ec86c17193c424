"""SNLI learning curves of the fusion runs: is the gap to Cheng et al. 2016 budget or model?

Usage:
    hf-attn-variants train configs/snli_fusion/curve_deep.yaml          # seed 42 (the config's)
    hf-attn-variants train configs/snli_fusion/curve_deep.yaml training.seed=1 \
        training.output_dir=outputs/snli_fusion/curve_deep-seed1       # more seeds: -seed<N> folders
    ... the same for curve_dense.yaml ...
    python -m hf_attn_variants_research.snli_curve outputs/snli_fusion/curve_*

Reads each run's ``log_history.json`` (Trainer's evaluations by step, written by ``train``) and
``model/eval_results.json`` (test metrics), and writes ``results/snli_fusion/curve.json`` (the curves: committed,
so the table and figure regenerate with ``--from-json``), ``curve.md`` and ``curve.png``. A folder
``curve_<model>-seed<N>`` is seed N of that model (the same 50,000 pairs: ``data.sample_seed`` is fixed; the
seed sets initialisation and batch order); the table and figure give the mean over seeds with a Student t
95 % interval over seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path("results/snli_fusion")
BATCH_PAIRS = 64  # per_device_train_batch_size of the curve configs: pairs seen = step x 64
PAPER = 0.863  # Cheng et al. 2016, deep fusion LSTMN, SNLI test accuracy (550k training pairs, GloVe, hidden 450)


def read_run(folder: Path) -> dict:
    """{name, steps: [...], val: [...], loss: [[step, loss]...], test: {...}} of one train run folder."""
    history_path, test_path = folder / "log_history.json", folder / "model" / "eval_results.json"
    for path in (history_path, test_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: train the run first (see the usage of this module)")
    history = json.loads(history_path.read_text())
    evals = [h for h in history if "eval_accuracy" in h]
    name, _, seed = folder.name.removeprefix("curve_").partition("-seed")
    return {"name": name, "seed": int(seed) if seed else 42,
            "pairs": [int(h["step"]) * BATCH_PAIRS for h in evals],
            "val": [float(h["eval_accuracy"]) for h in evals],
            "loss": [[int(h["step"]), float(h["loss"])] for h in history if "loss" in h],
            "test": json.loads(test_path.read_text())}


def by_model(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in sorted(runs, key=lambda r: r["seed"]):
        out.setdefault(run["name"], []).append(run)
    return out


def interval(values: list[float]) -> str:
    from .exp_report import t_interval

    lo, hi = t_interval(values)
    mean = sum(values) / len(values)
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if len(values) > 1 else f"{mean:.3f} (one seed)"


def table(runs: list[dict]) -> str:
    lines = ["| model | seeds | validation accuracy at 25 % / 50 % / 75 % / 100 % of the pairs (mean over seeds) | "
             "gain over the last quarter [t interval] | test accuracy [t interval] | test macro-F1 [t interval] |",
             "|---|---:|---|---|---|---|"]
    for name, group in by_model(runs).items():
        n = min(len(r["val"]) for r in group)
        idx = [max(0, round(n * f) - 1) for f in (0.25, 0.5, 0.75, 1.0)]
        marks = [sum(r["val"][i] for r in group) / len(group) for i in idx]
        gain = [r["val"][idx[3]] - r["val"][idx[2]] for r in group]
        lines.append(f"| {name} | {len(group)} | " + " / ".join(f"{v:.3f}" for v in marks)
                     + f" | {interval(gain)} | {interval([r['test']['accuracy'] for r in group])} | "
                     f"{interval([r['test']['macro_f1'] for r in group])} |")
    groups = by_model(runs)
    names = list(groups)
    for other in names[1:]:  # paired by seed with the first model: same seed, same data, same test pairs
        first = {r["seed"]: r["test"]["accuracy"] for r in groups[names[0]]}
        diffs = [r["test"]["accuracy"] - first[r["seed"]] for r in groups[other] if r["seed"] in first]
        if len(diffs) > 1:
            lines += ["", f"Paired by seed (same seed, same training pairs, same test pairs): {other} − {names[0]} "
                      f"test accuracy {interval(diffs)} (Student t 95 % over {len(diffs)} seeds)."]
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    from .exp_report import t_interval

    for name, group in by_model(runs).items():
        n = min(len(r["val"]) for r in group)
        x = [p / 1000 for p in group[0]["pairs"][:n]]
        mean = [sum(r["val"][i] for r in group) / len(group) for i in range(n)]
        ax.plot(x, mean, marker=".", label=f"{name} ({len(group)} seed{'s' if len(group) > 1 else ''})")
        if len(group) > 1:
            bands = [t_interval([r["val"][i] for r in group]) for i in range(n)]
            ax.fill_between(x, [b[0] for b in bands], [b[1] for b in bands], alpha=0.2)
    ax.axhline(PAPER, color="grey", ls="--", lw=0.8)
    ax.text(0.5, PAPER - 0.035, "Cheng et al. 2016 deep fusion: 0.863 (550k pairs)", fontsize=7, color="grey")
    ax.axhline(1 / 3, color="grey", ls=":", lw=0.8)
    ax.text(0.5, 1 / 3 + 0.01, "chance (3 classes)", fontsize=7, color="grey")
    ax.set_xlabel("training pairs seen (thousands)")
    ax.set_ylabel("validation accuracy (500 pairs)")
    ax.set_title("SNLI learning curves (bands: 95 % t interval over seeds)", fontsize=9)
    ax.set_ylim(0.3, 0.9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)


def write(runs: list[dict], out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "curve.json.tmp"
    tmp.write_text(json.dumps(runs, indent=1) + "\n")
    tmp.replace(out / "curve.json")
    plot(runs, out / "curve.png")
    text = table(runs)
    tmp = out / "curve.md.tmp"
    tmp.write_text(text + "\n")
    tmp.replace(out / "curve.md")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="train run folders (output_dir of the curve configs)")
    parser.add_argument("--from-json", action="store_true", help="redraw from the committed curve.json")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.from_json:
        runs = json.loads((args.out / "curve.json").read_text())
    elif args.runs:
        runs = [read_run(folder) for folder in args.runs]
    else:
        parser.error("give the run folders, or --from-json")
    print(write(runs, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
