"""Long-context training steps, model level: GPT-2 small and a BERT-base-size MLM at T=16384 and
T=65536, batch 1, bf16 autocast, fused AdamW, one optimizer step per timed call; variants dense, band,
low_rank_band, and band with the anchor kernel patched in. Every (family, variant, T, dropout) runs in
a fresh process (compile caches and dynamo's recompile counts do not leak between them), under its own
time limit, inside an overall budget.

    python benchmarks/bench_long.py --device cuda                 # the GPU table (benchmarks/gpu_session.sh)
    python benchmarks/bench_long.py --device cpu --smoke          # a tiny model at T=256: the code path only

Variants: dense = stock SDPA (flash on CUDA when attention dropout is 0); band = the project's band as
the models call it (compiled flex_attention with a pure-index block mask, or the blocked kernel; the
`kernel` column says which ran, from band_flex's state and warnings); low_rank_band = low-rank (r=16) +
band, `sum`; band+anchor = the band model with its band kernel replaced by torch's compiled
flex_attention on a sliding-window block mask built once from a pure-index mask_mod (what the band path
is held to: within 1.1x). Dropout: attention-probability dropout 0 (flash/flex) and 0.1 (the configs'
default; flex has no dropout, so band runs the blocked kernel, and band+anchor is not run).

Writes ``benchmarks/results/gpu-long.md`` (CUDA) or the ``--out`` path. Measured figures of
2026-12-04 (H200, commit c0344d2) are quoted in docs/speed-gpu.md; this script remeasures them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VARIANTS = ["dense", "band", "band+anchor", "low_rank_band"]
FAMILIES = ["gpt2", "bert"]


def _sizes(smoke: bool) -> dict:
    if smoke:  # the code path only: head size 16 (flex needs a power of two >= 16)
        return dict(vocab=1000, hidden=64, layers=2, heads=4, inner=128)
    return dict(vocab=32000, hidden=768, layers=12, heads=12, inner=3072)


def build_model(family: str, variant: str, t: int, window: int, rank: int, dropout: float, smoke: bool):
    import hf_attn_variants as hv

    s = _sizes(smoke)
    fields = {"attention_variant": "band" if variant == "band+anchor" else variant}
    if fields["attention_variant"] in ("band", "low_rank_band"):
        fields["attention_window"] = window
    if fields["attention_variant"] == "low_rank_band":
        fields["attention_rank"] = rank
    if family == "gpt2":
        config = hv.VariantGPT2Config(vocab_size=s["vocab"], n_embd=s["hidden"], n_layer=s["layers"],
                                      n_head=s["heads"], n_inner=s["inner"], n_positions=t, attn_pdrop=dropout,
                                      **fields)
        return hv.VariantGPT2LMHeadModel(config)
    config = hv.VariantBertConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                  num_attention_heads=s["heads"], intermediate_size=s["inner"],
                                  max_position_embeddings=t, attention_probs_dropout_prob=dropout, **fields)
    return hv.VariantBertForMaskedLM(config)


def patch_anchor(t: int, window: int, causal: bool, device: str) -> None:
    """Replace the models' band kernel by torch's compiled flex_attention on a block mask built once
    from a pure-index sliding-window mask_mod (batch 1, no padding: nothing else is needed)."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from hf_attn_variants import hfav_attention as attention
    from hf_attn_variants import hfav_variants as variants

    def sliding_window(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return ((d >= 0) & (d <= window)) if causal else ((d <= window) & (d >= -window))

    block_mask = create_block_mask(sliding_window, None, None, t, t, device=device)
    # CUDA: compiled, as torch's docs call it. CPU (the smoke test): compiled flex refuses inputs that
    # require grad, so the eager (unfused) flex_attention runs the same mask there
    flex = torch.compile(flex_attention) if device == "cuda" else flex_attention

    def anchor(q, k, v, *, window, scale, causal, key_mask=None, dropout_p=0.0, **kw):
        if dropout_p > 0 or key_mask is not None or q.shape[-2] != t:
            raise RuntimeError("the anchor kernel covers batch 1 without padding or dropout only")
        if device != "cuda":  # CPU flex has no backward: the smoke test runs the path, no gradient through it
            q, k, v = q.detach(), k.detach(), v.detach()
        return flex(q, k, v, block_mask=block_mask, scale=scale)

    for module in (variants, attention):
        if hasattr(module, "band_attention"):
            module.band_attention = anchor


def run_one(args) -> dict:
    """One (family, variant, T, dropout) in this process: first step, then the timed steps."""
    import torch

    from hf_attn_variants import hfav_band_flex as band_flex

    dev = args.device
    torch.manual_seed(0)
    warned: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            warned.append(record.getMessage())

    logging.getLogger("hf_attn_variants.hfav_band_flex").addHandler(Catch())
    if args.variant == "band+anchor":
        patch_anchor(args.t, args.window, args.family == "gpt2", dev)
    with torch.device(dev):
        model = build_model(args.family, args.variant, args.t, args.window, args.rank, args.dropout, args.smoke)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev == "cuda")
    ids = torch.randint(0, model.config.vocab_size, (1, args.t), device=dev)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    start = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - start
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for n in range(args.warmup + args.repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if n >= args.warmup:
            times.append(time.perf_counter() - start)
    ms = sorted(times)[len(times) // 2] * 1e3
    kernel = {"dense": "SDPA", "band+anchor": "flex (anchor mask)" if dev == "cuda" else
              "flex (anchor mask; CPU: no gradient through it)"}.get(args.variant)
    if kernel is None:  # band, low_rank_band: which band kernel ran
        flex_ran = bool(band_flex._STATE["families"])
        kinds = sorted({key[6] for key in band_flex._STATE["families"]})
        kernel = f"flex ({', '.join(kinds)})" if flex_ran else "blocked"
    return {"family": args.family, "variant": args.variant, "T": args.t, "dropout": args.dropout,
            "step_ms": ms, "tok_s": args.t / ms * 1e3, "first_s": first, "kernel": kernel,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else float("nan"),
            "warnings": sorted(set(warned))}


def plan(args) -> list[tuple[str, str, int, float]]:
    """The runs in priority order: dropout 0 first (every variant, 16k then 64k), then dropout 0.1
    (dense and band: which kernel runs and what it costs)."""
    runs = [(f, v, t, 0.0) for t in args.lengths for f in args.families for v in args.variants]
    runs += [(f, v, t, 0.1) for t in args.lengths for f in args.families for v in args.variants
             if v in ("dense", "band") and 0.1 in args.dropouts]
    return runs if 0.0 in args.dropouts else [r for r in runs if r[3] > 0]


def table(results: list[dict]) -> str:
    from common import markdown_table

    dense = {(r["family"], r["T"], r["dropout"]): r.get("step_ms") for r in results if r["variant"] == "dense"}
    anchor = {(r["family"], r["T"], r["dropout"]): r.get("step_ms") for r in results
              if r["variant"] == "band+anchor"}
    rows = []
    for r in results:
        key = (r["family"], r["T"], r["dropout"])
        ms = r.get("step_ms")
        ratio = lambda ref: f"{ref / ms:.2f}x" if ms and ref else "n/a"
        rows.append([r["family"], r["T"], r["dropout"], r["variant"], r.get("kernel", ""),
                     f"{ms:.1f}" if ms else r.get("status", "failed"),
                     f"{r['tok_s']:.0f}" if ms else "", ratio(dense.get(key)),
                     f"{ms / anchor[key]:.2f}x" if ms and anchor.get(key) and r["variant"] == "band" else "",
                     f"{r['first_s']:.1f}" if ms else "", f"{r['peak_gib']:.1f}" if ms else "",
                     "; ".join(r.get("warnings", []))[:200]])
    return markdown_table(["family", "T", "attn dropout", "variant", "kernel", "step ms", "tok/s", "dense/this",
                           "band/anchor", "first step s", "peak GiB", "warnings"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny model (hidden 64, 2 layers): the code path only")
    parser.add_argument("--families", nargs="*", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--variants", nargs="*", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--lengths", nargs="*", type=int, default=None, help="default 16384 65536 (smoke: 256)")
    parser.add_argument("--dropouts", nargs="*", type=float, default=[0.0, 0.1])
    parser.add_argument("--window", type=int, default=None, help="default 256 (smoke: 16)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-limit", type=float, default=60.0, help="seconds for one run (its process)")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for all runs together")
    parser.add_argument("--out", type=Path, default=None, help="results file (default gpu-long.md on CUDA)")
    parser.add_argument("--one", nargs=4, metavar=("FAMILY", "VARIANT", "T", "DROPOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lengths is None:
        args.lengths = [256] if args.smoke else [16384, 65536]
    if args.window is None:
        args.window = 16 if args.smoke else 256
    if args.one:
        args.family, args.variant, args.t, args.dropout = args.one[0], args.one[1], int(args.one[2]), \
            float(args.one[3])
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return

    from common import device_line  # benchmarks/ is on sys.path: this file runs as a script

    out = args.out or HERE / "results" / ("gpu-long.md" if args.device == "cuda" else "long-smoke.md")
    deadline = time.monotonic() + args.budget
    results = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for family, variant, t, dropout in plan(args):
        row = {"family": family, "variant": variant, "T": t, "dropout": dropout}
        left = deadline - time.monotonic()
        if variant == "band+anchor" and dropout > 0:
            continue
        if left < 5:
            results.append({**row, "status": "not run (budget)"})
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--one", family, variant, str(t), str(dropout),
               "--device", args.device, "--window", str(args.window), "--rank", str(args.rank),
               "--warmup", str(args.warmup), "--repeats", str(args.repeats)] + (["--smoke"] if args.smoke else [])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=min(args.run_limit, left), env=env)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if lines:
                results.append(json.loads(lines[-1][len("RESULT "):]))
            else:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results.append({**row, "status": f"failed: {tail[:150]}"})
        except subprocess.TimeoutExpired:
            results.append({**row, "status": f"timed out ({min(args.run_limit, left):.0f} s)"})
        print(json.dumps(results[-1]), flush=True)
    import torch

    text = "\n\n".join([
        f"# Long-context training steps{' (smoke: tiny model, code path only)' if args.smoke else ''}",
        f"Machine: {device_line(args.device)}; transformers {__import__('transformers').__version__}; "
        f"commit {commit()}.",
        f"Command: `python benchmarks/bench_long.py {' '.join(sys.argv[1:])}`.",
        f"Batch 1, {'bf16 autocast, fused AdamW' if args.device == 'cuda' else 'fp32, AdamW'}; window "
        f"{args.window}, rank {args.rank}; step = forward + backward + optimizer step, median of {args.repeats} "
        f"after {args.warmup} warm-up step(s) and the first (compiling) step; each row a fresh process. "
        "dense/this > 1: faster than dense; band/anchor: the band step over the anchor-patched one "
        f"(target <= 1.1x). torch {torch.__version__}.",
        table(results),
    ])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out)
    print(f"wrote {out}", flush=True)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("PROJECT_COMMIT", "unknown")


if __name__ == "__main__":
    main()
