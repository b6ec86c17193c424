"""Generation time per token and cache memory at long contexts, every variant beside dense.

Usage:
    python benchmarks/bench_generation.py            # contexts 512, 2048, 8192
    python benchmarks/bench_generation.py --quick    # contexts 256, 1024 (a minute)

For each variant a GPT-2-style LM (hidden 256, 4 layers, 4 heads, w = 64, r = 16) is prefilled
to each context length with a VariantCache, then decodes --steps tokens one at a time; the
median time per token and the bytes the cache holds are recorded. All variants run in the same
process, interleaved per context length, so the ratios to dense are comparable on a noisy
machine. Writes benchmarks/results/generation.md and generation.png.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

import hf_attn_variants as hv
from hf_attn_variants.hfav_variants import STOCK

BENCH_FIELDS = {"attention_rank": 16, "attention_window": 64}  # this benchmark's r and w, over the specs' own
# every registered variant with the fields of its run configs (head size 64, as here)
CASES = [(name, {**spec.example_fields, **BENCH_FIELDS}) for name, spec in hv.VARIANTS.items()]
RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def build(variant: str, fields: dict, max_len: int) -> hv.VariantGPT2LMHeadModel:
    torch.manual_seed(0)
    config = hv.VariantGPT2Config(vocab_size=1000, n_embd=256, n_layer=4, n_head=4, n_positions=max_len,
                                  attention_variant=variant, **fields)
    return hv.VariantGPT2LMHeadModel(config).eval()


@torch.no_grad()
def time_per_token(model, context: int, steps: int) -> tuple[float, int]:
    """Median seconds per decoded token after a prefill of ``context`` tokens, and cache bytes."""
    ids = torch.randint(0, 1000, (1, context))
    cache = model(input_ids=ids, use_cache=True).cache
    token, times = ids[:, -1:], []
    for _ in range(steps):
        start = time.perf_counter()
        out = model(input_ids=token, cache=cache, use_cache=True)
        times.append(time.perf_counter() - start)
        token, cache = out.logits[:, -1:].argmax(-1), out.cache
    return statistics.median(times), cache.memory_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    contexts = [256, 1024] if args.quick else [512, 2048, 8192]
    models = {v + (f"({f['band_combine']})" if f else ""): build(v, f, max(contexts) + args.steps + 1)
              for v, f in CASES}
    rows = {name: {} for name in models}
    for context in contexts:
        for name, model in models.items():
            rows[name][context] = time_per_token(model, context, args.steps)
            print(f"T={context:5d} {name:22s} {rows[name][context][0] * 1e3:7.2f} ms/token "
                  f"cache {rows[name][context][1] / 2**20:7.2f} MiB", flush=True)

    header = "| variant | " + " | ".join(f"ms/token @ {c}" for c in contexts) + " | " + \
             " | ".join(f"vs dense @ {c}" for c in contexts) + f" | cache MiB @ {contexts[-1]} |"
    lines = [f"Generation, GPT-2-style LM (hidden 256, 4 layers, 4 heads, w = 64, r = 16), batch 1, fp32, "
             f"median of {args.steps} decoded tokens after a prefill of T tokens.",
             f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}. Command: `python benchmarks/bench_generation.py"
             f"{' --quick' if args.quick else ''}`.", "", header,
             "|---|" + "---:|" * (2 * len(contexts) + 1)]
    for name, by_context in rows.items():
        times = [by_context[c][0] for c in contexts]
        ratios = [by_context[c][0] / rows[STOCK][c][0] for c in contexts]
        lines.append(f"| {name} | " + " | ".join(f"{t * 1e3:.2f}" for t in times) + " | "
                     + " | ".join(f"{r:.2f}" for r in ratios) + f" | {by_context[contexts[-1]][1] / 2**20:.2f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, contexts)


def plot(rows: dict, contexts: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name, by_context in rows.items():
        ax_t.plot(contexts, [by_context[c][0] * 1e3 for c in contexts], marker="o", label=name)
        ax_m.plot(contexts, [by_context[c][1] / 2**20 for c in contexts], marker="o", label=name)
    for ax, label in ((ax_t, "ms per new token"), (ax_m, "cache MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length T")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    fig.suptitle("Cached generation per token (band stays flat beyond its window)")
    fig.tight_layout()
    fig.savefig(RESULTS / "generation.png", dpi=120)


if __name__ == "__main__":
    main()
