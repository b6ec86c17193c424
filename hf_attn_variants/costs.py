"""Fair cost accounting: parameters and forward FLOPs of each variant's attention sublayer.

FLOPs count a multiply-add as 2 and a tanh or exp as 1, over exactly the (query, key) pairs a
variant reads (band: the band; causal: the lower triangle), not over the blocks a kernel
happens to compute. Softmax and masking are left out (O(pairs), the same for every variant).

    python -m hf_attn_variants.costs [--family bert|gpt2] [--seq-len 512] [--hidden 768] [--heads 12]

Not Hub code (a tool).
"""

from __future__ import annotations

import argparse

from .attention import projection_shapes
from .configuration_variants import VARIANTS, VariantBertConfig, VariantGPT2Config


def attended_pairs(seq_len: int, causal: bool, window: int | None = None) -> int:
    """Number of (i, j) pairs with j readable from i (padding-free)."""
    total = 0
    for i in range(seq_len):
        lo = max(0, i - window) if window is not None else 0
        hi = i if causal else (min(seq_len - 1, i + window) if window is not None else seq_len - 1)
        total += hi - lo + 1
    return total


def layer_costs(config, layer_idx: int, seq_len: int) -> dict[str, int]:
    """Parameters and forward FLOPs of one layer's attention sublayer (output projection included)."""
    variant = config.variant_for_layer(layer_idx)
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim, causal = d // heads, config.is_causal
    out_proj = {"params": d * d + d, "flops": 2 * seq_len * d * d}
    if variant == "lstmn":
        return _add(out_proj, _lstmn_costs(config, seq_len))
    shapes = projection_shapes(config, variant)
    main_heads, main_dim = shapes["main"]
    low_heads, rank = shapes.get("low_rank", (0, 0))
    qk_out = 2 * (main_heads * main_dim + low_heads * rank)
    params = (qk_out + d) * (d + 1)  # q, k (and low-rank q, k) and v, with biases
    flops = 2 * seq_len * d * (qk_out + d)
    full, band = attended_pairs(seq_len, causal), attended_pairs(seq_len, causal, config.attention_window)
    if variant == "dense":
        flops += 4 * full * heads * head_dim
    elif variant == "low_rank":
        flops += 2 * full * heads * (rank or main_dim) + 2 * full * heads * head_dim
    elif variant == "band":
        flops += 4 * band * heads * head_dim
    elif variant == "additive":
        params += heads * main_dim
        flops += 4 * full * heads * main_dim + 2 * full * heads * head_dim  # add, tanh, multiply-add; then ·v
    elif variant == "low_rank_band":
        both = 2 * full * low_heads * (rank + head_dim) + 4 * band * main_heads * head_dim
        if config.band_combine == "gate":
            params += heads
        if config.band_combine == "sequential":
            flops += 2 * seq_len * d * d  # the band queries projected from the low-rank output
        flops += both
    return _add(out_proj, {"params": params, "flops": flops})


def _lstmn_costs(config, seq_len: int) -> dict[str, int]:
    d_in = config.hidden_size
    sizes = [d_in // 2, d_in - d_in // 2] if config.lstmn_direction == "bidirectional" else [d_in]
    params = flops = 0
    for d in sizes:
        params += d * d * 2 + d_in * d + d + 4 * d * (d + d_in) + 4 * d
        per_token = 2 * d * d * 2 + 2 * d_in * d + 2 * 4 * d * (d + d_in) + 10 * d  # W_h, W_h̃, W_x, gates, cell
        tape_reads = sum(t + 1 for t in range(seq_len))  # slots read, the zero slot included
        flops += seq_len * per_token + tape_reads * (4 * d + 4 * d)  # scores; h̃ and c̃ sums
    return {"params": params, "flops": flops}


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a[k] + b[k] for k in a}


def model_costs(config, seq_len: int) -> dict[str, int]:
    """Attention parameters and FLOPs summed over all layers."""
    total = {"params": 0, "flops": 0}
    for i in range(config.num_hidden_layers):
        total = _add(total, layer_costs(config, i, seq_len))
    return total


def cost_table(family: str, seq_len: int, **config_fields) -> str:
    """A markdown table: every variant (and band_combine) against dense, for one model size."""
    config_class = VariantBertConfig if family == "bert" else VariantGPT2Config
    cases = [(v, {}) for v in VARIANTS if v != "low_rank_band"]
    cases += [("low_rank_band", {"band_combine": c}) for c in ("sum", "gate", "heads", "sequential")]
    dense = model_costs(config_class(**config_fields), seq_len)
    rows = ["| variant | attention params | vs dense | attention GFLOPs | vs dense |", "|---|---:|---:|---:|---:|"]
    for variant, extra in cases:
        config = config_class(attention_variant=variant, **extra, **config_fields)
        c = model_costs(config, seq_len)
        name = variant + (f" ({extra['band_combine']})" if extra else "")
        rows.append(f"| {name} | {c['params']:,} | {c['params'] / dense['params']:.2f} | "
                    f"{c['flops'] / 1e9:.2f} | {c['flops'] / dense['flops']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["bert", "gpt2"], default="bert")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--rank", type=int, default=None, help="attention_rank (default head size // 4)")
    parser.add_argument("--window", type=int, default=64, help="attention_window")
    args = parser.parse_args(argv)
    fields = {"hidden_size": args.hidden, "num_attention_heads": args.heads, "num_hidden_layers": args.layers,
              "attention_rank": args.rank, "attention_window": args.window, "max_position_embeddings": args.seq_len}
    print(f"{args.family}, hidden {args.hidden}, {args.heads} heads, {args.layers} layers, T = {args.seq_len}, "
          f"r = {args.rank or args.hidden // args.heads // 4}, w = {args.window}: attention sublayers only")
    print(cost_table(args.family, args.seq_len, **fields))


if __name__ == "__main__":
    main()
