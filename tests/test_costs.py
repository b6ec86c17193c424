"""The cost accounting agrees with the models it describes."""

from __future__ import annotations

import torch
from conftest import tiny_config, tiny_model
from torch.utils.flop_counter import FlopCounterMode

from hf_attn_variants.costs import attended_pairs, cost_table, model_costs
from hf_attn_variants.hfav_attention import LSTMNAttention, VariantAttention


def attention_parameter_count(model) -> int:
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, (VariantAttention, LSTMNAttention)):
            total += sum(p.numel() for p in module.parameters())
        if name.endswith("attention.output"):  # BERT keeps the output projection outside the attention
            total += module.dense.weight.numel() + module.dense.bias.numel()
    return total


def test_parameter_counts_match_the_models(family, case):
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    assert model_costs(model.config, 16)["params"] == attention_parameter_count(model)


def test_attended_pairs():
    assert attended_pairs(5, causal=False) == 25
    assert attended_pairs(5, causal=True) == 15
    assert attended_pairs(5, causal=False, window=1) == 13
    assert attended_pairs(5, causal=True, window=1) == 9


def test_dense_and_low_rank_flops_match_torch_counter(family):
    for variant in ("dense", "low_rank"):
        model = tiny_model(family, variant, attention_rank=4)
        module = next(m for m in model.modules() if isinstance(m, VariantAttention))
        x = torch.randn(1, 24, 32)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module.capture = True  # the reference path: plain matmuls, all of them counted
            out, _ = module(x)
        expected = model_costs(tiny_config(family, variant, attention_rank=4, num_hidden_layers=1), 24)["flops"]
        counted = counter.get_total_flops()
        if family == "bert":  # the output projection lives outside BERT's self-attention module
            counted += 2 * 24 * 32 * 32
        if family == "gpt2":  # causal: the counter sees the full square, the accounting the triangle
            pairs_full, pairs_causal = 24 * 24, attended_pairs(24, True)
            head_dims = 4 * (8 + (4 if variant == "low_rank" else 8))
            counted -= 2 * (pairs_full - pairs_causal) * head_dims
        assert counted == expected


def test_cost_table_lists_every_variant():
    table = cost_table("bert", 64, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                       max_position_embeddings=64, attention_window=4)
    assert table.count("\n") == 1 + 9 and "| dense | " in table and "1.00 | " in table
