"""Compiled decoding over a static cache against eager decoding, every compileable variant beside stock GPT-2.

Usage:
    python benchmarks/bench_generation_compiled.py            # contexts 512, 2048
    python benchmarks/bench_generation_compiled.py --quick    # context 256 (a few minutes: compiling)

The anchor is transformers' own GPT2LMHeadModel of the same size, decoding over its ``StaticCache`` with the
forward compiled (``torch.compile(fullgraph=True, dynamic=False)``, inductor): what a user of stock GPT-2
gets. Each model (GPT-2-style, hidden 256, 4 layers, 4 heads, w = 64, r = 16, batch 1, fp32) is prefilled
eagerly to T tokens, then decodes ``--steps`` tokens one at a time, in two modes: eager with the dynamic
cache (the default of ``generate``) and compiled over the static cache (``cache_implementation="static"``
with a compile config; here the forward is compiled directly, so that the numbers are the decoding steps
alone). Reported: the median time per token after four warm-up steps (the compilation), and the ratios.
Every model and mode runs in one process, interleaved per context, so ratios compare on a noisy machine.
Writes benchmarks/results/generation-compiled.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, StaticCache

import hf_attn_variants as hv
from hf_attn_variants.hfav_caching import VariantCache
from hf_attn_variants.hfav_variants import compiles_fullgraph

RESULTS = Path(__file__).parent / "results"
SIZE = dict(vocab_size=1000, n_embd=256, n_layer=4, n_head=4)
FIELDS = {"dense": {}, "low_rank": {"attention_rank": 16}, "additive": {"additive_dim": 64},
          "band": {"attention_window": 64},
          "low_rank_band": {"attention_rank": 16, "attention_window": 64, "band_combine": "sum"}}
STOCK = "stock GPT-2 (transformers)"
WARMUP = 4  # steps not timed: compiling, and the first calls of a compiled graph


def ours(variant: str, positions: int) -> hv.VariantGPT2LMHeadModel:
    torch.manual_seed(0)
    config = hv.VariantGPT2Config(**SIZE, n_positions=positions, attention_variant=variant, **FIELDS[variant])
    model = hv.VariantGPT2LMHeadModel(config).eval()
    assert compiles_fullgraph(config), variant
    return model


def stock(positions: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(**SIZE, n_positions=positions, attn_implementation="sdpa")).eval()


def compiled(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False)


@torch.no_grad()
def decode(model, context: int, steps: int, mode: str) -> float:
    """Median seconds per decoded token (after ``WARMUP`` steps) after an eager prefill of ``context`` tokens."""
    ids = torch.randint(0, SIZE["vocab_size"], (1, context), generator=torch.Generator().manual_seed(context))
    length = context + steps + WARMUP + 1
    is_stock = isinstance(model, GPT2LMHeadModel)
    if is_stock:
        cache = StaticCache(config=model.config, max_cache_len=length) if mode == "compiled" else None
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
    else:
        cache = VariantCache(config=model.config, max_cache_len=length) if mode == "compiled" else None
        out = model(input_ids=ids, cache=cache, use_cache=True)
        cache = out.cache
    step = compiled(model.forward) if mode == "compiled" else model.forward
    token, times = out.logits[:, -1:].argmax(-1), []
    for n in range(steps + WARMUP):
        start = time.perf_counter()
        if is_stock:
            position = torch.tensor([context + n])
            out = step(input_ids=token, past_key_values=cache, cache_position=position, use_cache=True)
        else:
            out = step(input_ids=token, cache=cache, use_cache=True)
        times.append(time.perf_counter() - start)
        token = out.logits[:, -1:].argmax(-1)
    return statistics.median(times[WARMUP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()
    contexts = [256] if args.quick else [512, 2048]
    positions = max(contexts) + args.steps + WARMUP + 1
    models = {STOCK: stock(positions), **{v: ours(v, positions) for v in FIELDS}}
    rows = {name: {} for name in models}
    for model in models.values():  # the process's first calls (lazy initialisation) are not timed
        decode(model, 16, 1, "eager")
    for context in contexts:
        for mode in ("eager", "compiled"):
            for name, model in models.items():
                torch.compiler.reset()
                rows[name][(context, mode)] = decode(model, context, args.steps, mode)
                print(f"T={context:5d} {mode:8s} {name:28s} {rows[name][(context, mode)] * 1e3:7.2f} ms/token",
                      flush=True)
    cols = [(c, m) for c in contexts for m in ("eager", "compiled")]
    lines = [
        f"Decoding, GPT-2-style LM ({SIZE['n_embd']} wide, {SIZE['n_layer']} layers, {SIZE['n_head']} heads; band "
        "w = 64, low_rank r = 16, low_rank_band their sum, additive a = 64), batch 1, fp32: median ms per new "
        f"token over {args.steps} tokens after an eager prefill of T tokens and {WARMUP} warm-up steps. eager: the "
        "dynamic cache, eager forward (generate's default); compiled: the static cache, the forward compiled with "
        "`torch.compile(fullgraph=True, dynamic=False)` (inductor), one graph for every step. Anchor: "
        "transformers' own GPT2LMHeadModel with its StaticCache, compiled the same way.",
        f"Machine: {torch.get_num_threads()} threads, torch {torch.__version__}. Command: "
        f"`python benchmarks/bench_generation_compiled.py{' --quick' if args.quick else ''}` (one process, "
        "interleaved per context).", "",
        "| model | " + " | ".join(f"{m} ms @ {c}" for c, m in cols) + " | "
        + " | ".join(f"compiled / eager @ {c}" for c in contexts) + " | "
        + " | ".join(f"compiled vs stock compiled @ {c}" for c in contexts) + " |",
        "|---|" + "---:|" * (len(cols) + 2 * len(contexts))]
    for name, by in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{by[col] * 1e3:.2f}" for col in cols) + " | "
                     + " | ".join(f"{by[(c, 'compiled')] / by[(c, 'eager')]:.2f}" for c in contexts) + " | "
                     + " | ".join(f"{by[(c, 'compiled')] / rows[STOCK][(c, 'compiled')]:.2f}" for c in contexts)
                     + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "generation-compiled" + ("-quick" if args.quick else "") + ".md"
    tmp = RESULTS / f".{name}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(RESULTS / name)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
