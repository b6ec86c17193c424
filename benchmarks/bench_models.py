"""End-to-end benchmark: training-step time and peak memory of every variant against `dense`,
for a small BERT-style (masked LM) and GPT-2-style (causal LM) model at T = 128, 512, 2048.

Usage (from the repository root, no install needed):

    python benchmarks/bench_models.py            # full run, ~10 min on 2 cores
    python benchmarks/bench_models.py --quick    # T = 128, 512 only, fewer repeats, ~2 min
    python benchmarks/bench_models.py --family gpt2 --variants dense band
    python benchmarks/bench_models.py --device cuda --dtype bf16 --quick   # on a GPU, bf16 autocast

Model: hidden 256, 4 layers, 4 heads (head size 64), FFN 1024, vocab 1000, dropout off;
low_rank r = 16, band w = 128, low_rank_band = sum of both, additive a = 64 (eager up to
T = 512, and with ``attention_compile=True`` as ``additive+compile``), lstmn bidirectional in BERT.
On CUDA (``--device cuda``) the step runs under ``torch.autocast`` with ``--dtype`` (bf16 as
``TrainingArguments(bf16=True)``; fp16 with a ``GradScaler``), memory is the peak of allocated CUDA
memory, and the results go to ``gpu-models[-quick].md`` with the GPU and versions named.
At T = 2048 each variant is timed once (one warm-up step before). Every step sees 2048 tokens
(batch 2048 / T). A step = forward, loss,
backward, AdamW update. Variants of one (family, T) are timed interleaved (medians); memory is
the growth of peak RSS during one step after a warm-up step (see ``benchmarks/common.py``).
The limit is 3 x the forward FLOPs (attention by ``hf_attn_variants.costs``, plus FFN and LM
head) at the matmul rate measured in the same run. Writes ``benchmarks/results/models.md``
(``models-quick.md``) and ``models_<family>_{time,memory}.png``.
"""

from __future__ import annotations

import argparse

from common import (DTYPES, RESULTS, add_device_args, check_device, device_line, interleaved, markdown_table,
                    matmul_rate, peak_memory, plot, reexec_with_mmap_threshold, results_name)

import torch

import hf_attn_variants as hv
from hf_attn_variants.costs import model_costs
from hf_attn_variants.hfav_variants import STOCK

TOKENS, HIDDEN, LAYERS, HEADS, FFN, VOCAB = 2048, 256, 4, 4, 1024, 1000
# every registered variant with the fields of its run configs (head size 64, as here), w = 128 below; a variant
# with a compiled kernel also as "+compile" (additive's fused tiles; band compiles itself on CUDA)
VARIANTS = {name: {k: v for k, v in spec.example_fields.items() if k != "attention_window"}
            for name, spec in hv.VARIANTS.items()}
VARIANTS["additive+compile"] = {**VARIANTS["additive"], "attention_compile": True}
EAGER_ADDITIVE_MAX_T = 512  # beyond, the eager additive step takes minutes here; its compiled tiles run instead


def make_model(family: str, variant: str):
    fields = dict(attention_variant=variant.split("+")[0], attention_window=128, **VARIANTS[variant])
    if family == "bert":
        config = hv.VariantBertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                      num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=2048,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **fields)
        return hv.VariantBertForMaskedLM(config), config
    config = hv.VariantGPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=FFN,
                                  n_positions=2048, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **fields)
    return hv.VariantGPT2LMHeadModel(config), config


def train_step(model, optimizer, ids, dtype: torch.dtype = torch.float32):
    """One training step, under ``torch.autocast(dtype)`` when dtype is not fp32 (fp16: loss scaling)."""
    device = ids.device.type
    scaler = torch.amp.GradScaler(device) if dtype == torch.float16 else None

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, labels=ids).loss
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 128, 512 only, fewer repeats")
    parser.add_argument("--family", nargs="*", choices=["bert", "gpt2"], default=["bert", "gpt2"])
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    add_device_args(parser)
    args = parser.parse_args()
    check_device(args.device)
    dtype = DTYPES[args.dtype]
    RESULTS.mkdir(parents=True, exist_ok=True)
    ts = [128, 512] if args.quick else [128, 512, 2048]
    repeats = 2 if args.quick else 3
    if args.device == "cuda":
        repeats *= 3  # a GPU step takes milliseconds: more repeats for the same wall time
    rate = matmul_rate(device=args.device, dtype=dtype)
    flags = (" --quick" if args.quick else "") + (f" --device {args.device} --dtype {args.dtype}"
                                                   if args.device != "cpu" or args.dtype != "fp32" else "")
    header = [f"# End-to-end training steps{' (quick)' if args.quick else ''}", "",
              f"Machine: {device_line(args.device)}.", f"Measured {args.dtype} matmul rate: {rate / 1e9:.0f} GFLOP/s.",
              f"Command: `python benchmarks/bench_models.py{flags}`.",
              f"Precision: {'fp32' if dtype == torch.float32 else f'torch.autocast({args.dtype})'} on {args.device}.",
              f"Model: hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, FFN {FFN}, vocab {VOCAB}, dropout off; "
              f"{TOKENS} tokens per step (batch {TOKENS} / T); step = forward + loss + backward + AdamW."]
    print("\n".join(header), flush=True)
    parts = []
    for family in args.family:
        rows, times, mems = [], {v: [] for v in args.variants}, {v: [] for v in args.variants}
        limits = []
        for t in ts:
            batch = TOKENS // t
            ids = torch.randint(1, VOCAB, (batch, t), generator=torch.Generator().manual_seed(t)).to(args.device)
            steps, flops = {}, {}
            variants = [v for v in args.variants if v != "additive" or t <= EAGER_ADDITIVE_MAX_T]
            for variant in variants:
                torch.manual_seed(0)
                model, config = make_model(family, variant)
                model.to(args.device).train()
                steps[variant] = train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-4), ids, dtype)
                non_attention = 2 * TOKENS * (LAYERS * 2 * HIDDEN * FFN + HIDDEN * VOCAB)
                flops[variant] = 3 * (batch * model_costs(config, t)["flops"] + non_attention)
            secs = interleaved(steps, repeats=repeats if t <= 512 else 1)
            for variant in args.variants:
                if variant not in steps:
                    times[variant].append(float("nan"))
                    mems[variant].append(float("nan"))
                    continue
                mem = peak_memory(steps[variant], args.device) / 2**20
                times[variant].append(secs[variant] * 1e3)
                mems[variant].append(mem)
                rows.append([t, batch, variant, secs[variant] * 1e3, f"{secs[variant] / secs[STOCK]:.2f}"
                             if STOCK in secs else "", mem, f"{mem / mems[STOCK][-1]:.2f}" if STOCK in mems
                             else "", flops[variant] / rate * 1e3, f"{flops[variant] / secs[variant] / 1e9:.0f}"])
                print(family, rows[-1], flush=True)
            limits.append(flops[STOCK] / rate * 1e3 if STOCK in flops else float("nan"))
            del steps
        name = "BERT-style (masked LM)" if family == "bert" else "GPT-2-style (causal LM)"
        prefix = "gpu_" if args.device == "cuda" else ""
        plot(RESULTS / f"{prefix}models_{family}_time.png", f"{name}: training step, {TOKENS} tokens", ts,
             {v: times[v] for v in args.variants}, "ms per step",
             limit=limits)
        plot(RESULTS / f"{prefix}models_{family}_memory.png", f"{name}: peak memory of a training step", ts,
             mems, "MiB")
        parts.append(f"### {name}\n\n" + markdown_table(
            ["T", "batch", "variant", "step ms", "vs dense", "peak MiB", "vs dense", "FLOP limit ms", "GFLOP/s"],
            rows))
        out = RESULTS / results_name(args.device, "models", args.quick)  # rewritten after every family
        out.write_text("\n".join(header) + "\n\nThe FLOP limit line in the plots is dense's.\n\n"
                       + "\n\n".join(parts) + "\n")
        print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    reexec_with_mmap_threshold()
    main()
