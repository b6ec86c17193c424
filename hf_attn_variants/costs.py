"""Fair cost accounting: parameters and forward FLOPs of each variant's attention sublayer.

FLOPs count a multiply-add as 2 and a tanh or exp as 1, over exactly the (query, key) pairs a
variant reads (band: the band; causal: the lower triangle), not over the blocks a kernel
happens to compute. Softmax and masking are left out (O(pairs), the same for every variant).

    python -m hf_attn_variants.costs [--family bert|gpt2] [--seq-len 512] [--hidden 768] [--heads 12]

Not Hub code (a tool).
"""

from __future__ import annotations

import argparse
from functools import lru_cache

import torch

from .configuration_variants import VARIANTS, VariantBertConfig, VariantGPT2Config
from .hfav_attention import attention_class
from .hfav_pairs import pair_allowed
from .hfav_variants import spec_of


@lru_cache(maxsize=256)
def attended_pairs(seq_len: int, causal: bool, window: int | None = None, global_tokens: int = 0) -> int:
    """Number of (i, j) pairs with j readable from i (padding-free), counted with the kernels' own
    rule (``pairs.pair_allowed``), a block of rows at a time."""
    k_pos = torch.arange(seq_len)[None, :]
    total = 0
    for start in range(0, seq_len, 1024):
        q_pos = torch.arange(start, min(seq_len, start + 1024))[:, None]
        total += int(pair_allowed(q_pos, k_pos, causal=causal, window=window, global_tokens=global_tokens).sum())
    return total


def _family(config) -> str:
    return "bert" if config.model_type == "variant_bert" else "gpt2"


def _sublayer_parameters(config, layer_idx: int) -> int:
    """Parameters of layer i's attention sublayer, counted on the module itself (built on the meta
    device: no memory, no init), output projection included."""
    with torch.device("meta"):
        module = attention_class(_family(config), config.variant_for_layer(layer_idx))(config, layer_idx)
    params = sum(p.numel() for p in module.parameters())
    if not hasattr(module, "c_proj"):  # BERT keeps the output projection outside the self-attention
        params += config.hidden_size * config.hidden_size + config.hidden_size
    return params


def layer_costs(config, layer_idx: int, seq_len: int) -> dict[str, int]:
    """Parameters and forward FLOPs of one layer's attention sublayer (output projection included).
    FLOPs come from the variant's spec (``variants.VariantSpec.flops``), parameters from the module."""
    spec = spec_of(config.variant_for_layer(layer_idx))
    d = config.hidden_size

    def pairs(band: bool) -> int:
        if not band:
            return attended_pairs(seq_len, config.is_causal)
        return attended_pairs(seq_len, config.is_causal, config.attention_window, config.attention_global_tokens)

    return {"params": _sublayer_parameters(config, layer_idx),
            "flops": 2 * seq_len * d * d + spec.flops(config, seq_len, pairs)}


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
    # every variant, once per field choice its test cases vary (low_rank_band: each band_combine)
    cases = [(name, {k: v for k, v in case.items() if isinstance(v, str)}) for name, spec in VARIANTS.items()
             for case in spec.test_cases]
    dense = model_costs(config_class(**config_fields), seq_len)
    rows = ["| variant | attention params | vs dense | attention GFLOPs | vs dense |", "|---|---:|---:|---:|---:|"]
    for variant, extra in cases:
        config = config_class(attention_variant=variant, **extra, **config_fields)
        c = model_costs(config, seq_len)
        name = variant + (f" ({', '.join(extra.values())})" if extra else "")
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
