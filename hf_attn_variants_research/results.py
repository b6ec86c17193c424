"""Regenerate every results table and figure from the committed records, in one command.

Usage:
    hf-attn-variants results            # all of them (about a minute; no training, no model downloads)
    hf-attn-variants results --list     # what each step reads and writes

Each step reads only files committed under ``results/`` (no run folders, no caches) and rewrites the tables
and figures beside them; ``git diff`` afterwards shows whether anything changed. The MiniLM study is not a
step here: its tables come from the pretrained model itself (``hf-attn-variants study``, about 30 minutes, with
an input-keyed cache), not from records.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# (what, reads, writes, module:function, argv)
STEPS: list[tuple[str, str, str, str, list[str]]] = [
    ("experiment grid (MR, MQAR)", "results/experiments/records.jsonl.gz",
     "results/experiments/*.md, *.png", "hf_attn_variants_research.experiments:main",
     ["aggregate", "configs/experiments/full.yaml"]),
    ("dates: exact match by number of dates", "results/dates/length-records.jsonl.gz",
     "results/dates/length-table.md, length.png", "hf_attn_variants_research.dates_length:main", ["report"]),
    ("dates: the same at 3x the budget (6,000 steps, one seed)", "results/dates/length-records-steps6000.jsonl.gz",
     "results/dates/length-table-steps6000.md, length-steps6000.png", "hf_attn_variants_research.dates_length:main",
     ["report", "--tag", "steps6000"]),
    ("SNLI fusion learning curves", "results/snli_fusion/curve.json",
     "results/snli_fusion/curve.md, curve.png", "hf_attn_variants_research.snli_curve:main", ["--from-json"]),
    ("long context, CPU scale (ListOps, MQAR)", "results/longctx/cpu.jsonl",
     "results/longctx/*-cpu.png", "hf_attn_variants_research.longctx:main",
     ["figure", "configs/longctx/cpu.yaml", "--records", "results/longctx/cpu.jsonl"]),
]


def run_step(target: str, argv: list[str]) -> int:
    import importlib

    module, func = target.split(":")
    return int(getattr(importlib.import_module(module), func)(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-attn-variants results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the steps and exit")
    args = parser.parse_args(argv)
    failed = []
    for what, reads, writes, target, step_argv in STEPS:
        print(f"== {what}: {reads} -> {writes}", flush=True)
        if args.list:
            continue
        if not Path(reads).exists():
            raise FileNotFoundError(f"{reads} is missing (run from the repository root of a checkout)")
        if run_step(target, step_argv):
            failed.append(what)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
