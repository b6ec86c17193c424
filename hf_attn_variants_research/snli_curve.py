"""SNLI learning curves of the fusion runs: is the gap to Cheng et al. 2016 budget or model?

Usage:
    hf-attn-variants train configs/snli_fusion/curve_deep.yaml
    hf-attn-variants train configs/snli_fusion/curve_dense.yaml
    python -m hf_attn_variants_research.snli_curve outputs/snli_fusion/curve_deep outputs/snli_fusion/curve_dense

Reads each run's ``log_history.json`` (Trainer's evaluations by step, written by ``train``) and
``model/eval_results.json`` (test metrics), and writes ``results/snli_fusion/curve.json`` (the curves: committed,
so the table and figure regenerate with ``--from-json``), ``curve.md`` and ``curve.png``. One seed per model:
the curve shows where a run is going, not a difference between models.
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
    return {"name": folder.name.removeprefix("curve_"),
            "pairs": [int(h["step"]) * BATCH_PAIRS for h in evals],
            "val": [float(h["eval_accuracy"]) for h in evals],
            "loss": [[int(h["step"]), float(h["loss"])] for h in history if "loss" in h],
            "test": json.loads(test_path.read_text())}


def table(runs: list[dict]) -> str:
    lines = ["| model | validation accuracy at 25 % / 50 % / 75 % / 100 % of the pairs | gain over the last quarter | "
             "test accuracy | test macro-F1 |", "|---|---|---:|---:|---:|"]
    for run in runs:
        n = len(run["val"])
        marks = [run["val"][max(0, round(n * f) - 1)] for f in (0.25, 0.5, 0.75, 1.0)]
        test = run["test"]
        lines.append(f"| {run['name']} | " + " / ".join(f"{v:.3f}" for v in marks)
                     + f" | {marks[3] - marks[2]:+.3f} | {test['accuracy']:.4f} | {test['macro_f1']:.4f} |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for run in runs:
        ax.plot([p / 1000 for p in run["pairs"]], run["val"], marker=".", label=f"{run['name']} (one seed)")
    ax.axhline(PAPER, color="grey", ls="--", lw=0.8)
    ax.text(0.5, PAPER - 0.035, "Cheng et al. 2016 deep fusion: 0.863 (550k pairs)", fontsize=7, color="grey")
    ax.axhline(1 / 3, color="grey", ls=":", lw=0.8)
    ax.text(0.5, 1 / 3 + 0.01, "chance (3 classes)", fontsize=7, color="grey")
    ax.set_xlabel("training pairs seen (thousands)")
    ax.set_ylabel("validation accuracy (500 pairs)")
    ax.set_ylim(0.3, 0.9)
    ax.legend(fontsize=8, loc="center right")
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
