"""Long-context probes on one GPU: long-range at T up to 8,192 and MQAR with 64+ pairs at T = 1,024,
4 layers x 256 wide, every variant of the registry, sized to a time budget (default 8 minutes on
one H200) by an estimate, and recorded in the experiment grid's format (the same report reads them).

    python -m hf_attn_variants_research.gpu_probes configs/experiments/gpu.yaml --device cuda        # plan, run, report
    python -m hf_attn_variants_research.gpu_probes configs/experiments/gpu.yaml --estimate           # the plan only
    python -m hf_attn_variants_research.gpu_probes configs/experiments/gpu.yaml --tiny --device cpu  # smoke test

The models are every name in ``hf_attn_variants.hfav_variants.VARIANTS``. Each job's time is ESTIMATED,
not measured (no GPU was available when this was written): a training step costs 3x the forward
FLOPs (2 x non-embedding parameters x tokens, plus the attention sublayers' FLOPs from
``hf_attn_variants.costs``, plus the readout), at an assumed sustained rate of ``--tflops`` (default 25
TFLOP/s: TF32 matmuls of width 256 run far below the H200's peak) for matmul work and ``--tflops-elementwise``
(default 2) for the additive variant's tanh pair work, plus ``--launch-ms`` per layer per step, plus, for a
variant without a scoring kernel (the registry's recurrent LSTMN: ``spec.forward is None``), T sequential
steps of 0.5 ms per layer, forward and backward (measured on an H200, docs/design.md). Jobs are planned in
order (every variant at the shortest setting first) and a job whose estimate would overrun the budget
is dropped and printed, never silently. Throughputs are assumptions to check on the first real run:
the records hold each job's measured seconds.
"""

from __future__ import annotations

import argparse
import copy
import sys

from . import experiments

LSTMN_STEP_S = 0.5e-3  # one recurrence step per layer on an H200 (launch-bound), docs/design.md


def registry_models() -> list[str]:
    from hf_attn_variants.hfav_variants import VARIANTS

    return list(VARIANTS)


def tiny(grid: dict) -> dict:
    """The same suites at toy size (CPU smoke test): 1 layer x 16 wide, T <= 40, 2 steps."""
    grid = copy.deepcopy(grid)
    for suite in grid["suites"].values():
        suite["size"] = {**suite["size"], "hidden": 16, "heads": 2, "layers": 1}
        suite["variant"] = {**suite["variant"], "attention_rank": 4, "attention_window": 4}
        suite["train"] = {**suite["train"], "steps": 2, "batch_size": 4, "eval_size": 8}
        if suite["probe"]["name"] == "long_range":
            suite["sweep"] = {"distance": [15, 31]}
        else:
            suite["probe"] = {**suite["probe"], "length": 32, "vocab": 48}
            suite["sweep"] = {"pairs": [4, 8]}
    return grid


def estimate_seconds(job: dict, tflops: float, tflops_elementwise: float, launch_ms: float) -> float:
    """Estimated wall time of one job (training steps plus one evaluation pass): see the module doc."""
    from hf_attn_variants import VariantGPT2Config
    from hf_attn_variants.costs import model_costs
    from hf_attn_variants.hfav_variants import spec_of

    from . import probes

    params = {k: v for k, v in job["probe"].items() if k != "name"}
    name, size, train = job["probe"]["name"], job["size"], job["train"]
    T = probes.max_length(name, params)
    d, layers = int(size["hidden"]), int(size["layers"])
    vocab = probes.vocab_size(name, params)
    out = vocab if name == "mqar" else 2
    config = VariantGPT2Config(n_embd=d, n_head=int(size["heads"]), n_layer=layers,
                               **{**job["variant"], "attention_variant": job["model"]})
    attention = model_costs(config, T)["flops"]  # per sequence, all layers, forward
    mlp = layers * 2 * T * (2 * d * 4 * d)  # the MLP blocks (full architecture)
    readout = 2 * T * d * out
    elementwise = attention if job["model"] == "additive" else 0
    matmul = attention - elementwise + mlp + readout
    steps, batch = int(train["steps"]), int(train["batch_size"])
    sequences = steps * batch * 3 + 2 * int(train.get("eval_size", 200))  # train (fwd + bwd) and evaluation
    seconds = sequences * (matmul / (tflops * 1e12) + elementwise / (tflops_elementwise * 1e12))
    seconds += steps * layers * launch_ms / 1e3
    if spec_of(job["model"]).forward is None:  # a recurrence: T sequential steps per layer
        seconds += (steps * 3 + 2) * layers * T * LSTMN_STEP_S
    return seconds


def plan(jobs: list[dict], budget_s: float, **rates) -> tuple[list[dict], list[tuple[dict, float]], float]:
    """(jobs that fit, in order; dropped jobs with their estimates; the planned total seconds)."""
    from . import probes

    def length(job):
        params = {k: v for k, v in job["probe"].items() if k != "name"}
        return probes.max_length(job["probe"]["name"], params)

    keep, dropped, total = [], [], 0.0
    for job in sorted(jobs, key=lambda j: (length(j), j["suite"], j["seed"])):
        s = estimate_seconds(job, **rates)
        if total + s <= budget_s:
            keep.append(job)
            total += s
        else:
            dropped.append((job, s))
    return keep, dropped, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-min", type=float, default=8.0)
    parser.add_argument("--tflops", type=float, default=25.0)
    parser.add_argument("--tflops-elementwise", type=float, default=2.0)
    parser.add_argument("--launch-ms", type=float, default=1.0)
    parser.add_argument("--estimate", action="store_true", help="print the plan, run nothing")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: a CPU smoke test")
    parser.add_argument("--out", default="", help="override the grid's out/results/records folders (tests)")
    args = parser.parse_args(argv)
    grid = experiments.load_grid(args.grid)
    for suite in grid["suites"].values():
        suite["models"] = registry_models()
    if args.tiny:
        grid = tiny(grid)
    if args.out:
        grid.update(out=f"{args.out}/runs", results=f"{args.out}/results", records=f"{args.out}/records.jsonl.gz")
    if args.device.startswith("cuda"):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    jobs = experiments.expand(grid)
    rates = {"tflops": args.tflops, "tflops_elementwise": args.tflops_elementwise, "launch_ms": args.launch_ms}
    keep, dropped, total = plan(jobs, args.budget_min * 60 if not args.tiny else float("inf"), **rates)
    for job in keep:
        print(f"plan {job['suite']}/{job['id']}: about {estimate_seconds(job, **rates):.0f} s", flush=True)
    for job, s in dropped:
        print(f"DROPPED {job['suite']}/{job['id']}: about {s:.0f} s would overrun the budget", flush=True)
    print(f"{len(keep)} jobs, about {total / 60:.1f} min estimated ({len(dropped)} dropped)", flush=True)
    if args.estimate:
        return 0
    failures = experiments.run_grid(grid, keep, device=args.device)
    from . import exp_report

    exp_report.write_results(grid, keep)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
