"""Cost of each cell of an experiment suite, measured side by side in one process: training step time
as a ratio to dense, attention FLOPs (``hf_attn_variants.costs``) and the activation memory one
training step saves for backward. Written to ``<results>/costs.json``, which the report
(``exp_report.cost_section``) draws beside each cell's quality.

    python -m hf_attn_variants_research.exp_costs configs/experiments/full.yaml \
        [--only mr,mqar] [--rounds 7] [--steps 3]

Step time: every round runs ``steps`` training steps of every cell on the same batches, in turn, after
two warm-up steps each; a cell's ratio is its round time over dense's in the same round, reported as
the median and quartiles over rounds (timings on a shared machine are noisy: only ratios measured
side by side are meaningful). Memory: the bytes of the tensors autograd saves for backward during one
forward of a training batch (``torch.autograd.graph.saved_tensors_hooks``), a deterministic stand-in
for peak activation memory on CPU. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import hf_attn_variants as hv  # noqa: E402
from hf_attn_variants.costs import model_costs  # noqa: E402

from . import experiments


def cell_jobs(grid: dict, suite: str) -> list[dict]:
    """One job per cell (model x sweep point) of a suite: its first seed and learning rate."""
    seen, out = set(), []
    for job in experiments.expand(grid, [suite]):
        key = (job["model"], json.dumps(job["params"], sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append(job)
    return out


def build(job: dict, grid: dict):
    """(model, a function giving the loss of batch i, attention FLOPs of one sequence)."""
    from . import exp_models, probes

    if job["kind"] == "classification":
        data = torch.load(experiments.data_path(grid["data"], job["dataset"], job["train"]), weights_only=False)
        model = exp_models.classifier(job["model"], job["variant"], job["size"], data["vocab_size"],
                                      len(data["labels"]), data["max_length"] + 2, data["pad_id"])
        batch = int(job["train"].get("batch_size", 32))
        widths = []

        def loss(i: int):
            rows = list(range(i * batch, (i + 1) * batch))
            ids, mask, types, labels = experiments.pad_batch(data["train"], rows, data["pad_id"], "cpu")
            widths.append(ids.shape[1])
            return torch.nn.functional.cross_entropy(model(ids, mask, types), labels)
        loss(0)
        seq_len = widths[0]
        flops = 0.0
        if job["model"] in experiments.variant_names():
            size = job["size"]
            config = hv.VariantBertConfig(hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                                          num_attention_heads=size["heads"], intermediate_size=size["intermediate"],
                                          **{**job["variant"], "attention_variant": job["model"]})
            flops = model_costs(config, seq_len)["flops"]
        return model, loss, flops, seq_len
    params = {k: v for k, v in job["probe"].items() if k != "name"}
    name, size = job["probe"]["name"], job["size"]
    sample = probes.make(name, 2, [0, 0], **params)
    model = exp_models.ProbeModel(
        job["model"], job["variant"], size.get("architecture", "attention_only"), int(size.get("hidden", 64)),
        int(size.get("heads", 1)), int(size.get("layers", 1)), probes.max_length(name, params),
        sample.num_classes, vocab=probes.vocab_size(name, params), mlp_readout=name in ("local", "long_range"))
    batch = int(job["train"].get("batch_size", 64))

    def loss(i: int):
        data = probes.make(name, batch, [0, 1, i], **params)
        return experiments.probe_metric(model(data.inputs), data)[0]
    seq_len = probes.max_length(name, params)
    config = hv.VariantGPT2Config(n_embd=int(size.get("hidden", 64)), n_head=int(size.get("heads", 1)),
                                  n_layer=int(size.get("layers", 1)), **{**job["variant"],
                                                                          "attention_variant": job["model"]})
    return model, loss, model_costs(config, seq_len)["flops"], seq_len


def saved_bytes(loss_fn, i: int = 0) -> int:
    """Bytes of the tensors saved for backward by one forward (each storage counted once)."""
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen:
            seen.add(key)
            total[0] += key[1]
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(i)
    return total[0]


def measure(grid: dict, suite: str, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    cells = []
    for job in cell_jobs(grid, suite):
        model, loss_fn, flops, seq_len = build(job, grid)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        cells.append({"job": job, "model": model, "loss": loss_fn, "opt": opt, "flops": flops, "seq_len": seq_len})

    def run(cell, first: int, n: int) -> float:
        start = time.perf_counter()
        for i in range(first, first + n):
            cell["opt"].zero_grad(set_to_none=True)
            cell["loss"](i).backward()
            cell["opt"].step()
        return time.perf_counter() - start

    for cell in cells:
        run(cell, 0, 2)  # warm-up
    times = np.zeros((rounds, len(cells)))
    for r in range(rounds):
        for c, cell in enumerate(cells):
            times[r, c] = run(cell, 2 + r * steps, steps)
    dense = next(i for i, c in enumerate(cells) if c["job"]["model"] == "dense")
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    out = {"_note": (f"Measured by `python -m hf_attn_variants_research.exp_costs {grid.get('path', 'GRID')} "
                     f"--only {suite} --rounds {rounds} --steps {steps}` on a shared 2-core CPU, one torch thread: "
                     f"{rounds} rounds of {steps} training steps per cell, in turn, on the same batches; ratio = the "
                     "cell's round time over dense's in that round, median [quartiles] over rounds. FLOPs: attention "
                     "sublayers' forward (`hf_attn_variants.costs`, padding-free) at the typical sequence length; "
                     f"memory: tensors saved for backward in one training step. Load average at the end: {load} "
                     "(1 / 5 / 15 min).")}
    from . import exp_report

    for c, cell in enumerate(cells):
        ratio = times[:, c] / times[:, dense]
        row = {"params": exp_report.label({"model": cell["job"]["model"], "params": cell["job"]["params"]}),
               "step_ms": float(np.median(times[:, c]) / steps * 1e3), "step_ratio": float(np.median(ratio)),
               "step_ratio_q1": float(np.percentile(ratio, 25)), "step_ratio_q3": float(np.percentile(ratio, 75)),
               "attention_gflops": cell["flops"] / 1e9, "seq_len": int(cell["seq_len"]),
               "saved_mib": saved_bytes(cell["loss"]) / 2**20,
               "parameters": sum(p.numel() for p in cell["model"].parameters())}
        out[row.pop("params")] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid")
    parser.add_argument("--only", default="")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    grid = experiments.load_grid(args.grid, args.quick)
    path = Path(grid["results"]) / "costs.json"
    costs = json.loads(path.read_text()) if path.exists() else {}
    for suite in [s for s in args.only.split(",") if s] or list(grid["suites"]):
        experiments.prepare_data(grid, experiments.expand(grid, [suite]))
        costs[suite] = measure(grid, suite, args.rounds, args.steps)
        print(suite, json.dumps({k: v for k, v in costs[suite].items() if k != "_note"}, indent=1), flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(costs, indent=1))
    tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
