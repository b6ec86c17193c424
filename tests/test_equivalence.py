"""The equivalences that prove the variants right (docs/design.md): dense = stock, band with a wide
window = dense, band = stock with an explicit band mask, SVD-converted low rank = dense at
r = D and the Eckart-Young error below it, stock checkpoints load into every variant."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch, tiny_config, tiny_model
from transformers import BertConfig, BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel, GPT2Model

import hf_attn_variants as hv
from hf_attn_variants.convert import low_rank_factors
from hf_attn_variants.hfav_attention import VariantAttention

STOCK = {"bert": BertModel, "gpt2": GPT2Model}


def stock_model(family: str, attn: str = "sdpa", seed: int = 0):
    config = tiny_config(family).to_dict()
    for key in ("model_type", "attention_variant", "layer_variants", "attention_rank", "attention_window",
                "band_combine", "additive_dim", "lstmn_direction", "transformers_version"):
        config.pop(key, None)
    config_class = BertConfig if family == "bert" else GPT2Config
    torch.manual_seed(seed)
    return STOCK[family](config_class(**config, attn_implementation=attn)).eval()


def variant_from(stock, family: str, attn: str = "sdpa", **fields):
    model = tiny_model(family, **fields)
    model.load_state_dict(stock.state_dict(), strict=False)
    model.config._attn_implementation = attn
    return model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_dense_equals_stock(family, attn):
    stock = stock_model(family, attn)
    dense = variant_from(stock, family, attn)
    missing = set(dense.state_dict()) - set(stock.state_dict())
    assert not missing
    for padding in (None, "right"):
        ids, mask = random_batch(3, 13, padding, seed=5)
        with torch.no_grad():
            ours = dense(input_ids=ids, attention_mask=mask).last_hidden_state
            theirs = stock(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()  # padded query rows carry no meaning and may differ
        assert (ours[real] - theirs[real]).abs().max() <= 1e-5


def test_band_with_wide_window_equals_dense(family):
    ids, mask = random_batch(3, 20, "right", seed=2)
    dense = tiny_model(family, "dense")
    band = tiny_model(family, "band", attention_window=19)
    band.load_state_dict(dense.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(band(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   dense(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_band_equals_stock_with_explicit_band_mask(family):
    window, length = 3, 40
    stock = stock_model(family, "eager")
    band = variant_from(stock, family, "sdpa", attention_variant="band", attention_window=window)
    ids, _ = random_batch(2, length, None, seed=4)
    i, j = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
    keep = (i - j >= 0) & (i - j <= window) if family == "gpt2" else (i - j).abs() <= window
    mask4d = torch.zeros(2, 1, length, length).masked_fill(~keep, torch.finfo(torch.float32).min)
    with torch.no_grad():
        ours = band(input_ids=ids).last_hidden_state
        theirs = stock(input_ids=ids, attention_mask=mask4d).last_hidden_state
    assert (ours - theirs).abs().max() <= 1e-5


def test_convert_low_rank_at_full_rank_equals_dense(family):
    stock = stock_model(family)
    converted = hv.convert_from_dense(stock, attention_variant="low_rank", attention_rank=8).eval()
    assert converted.conversion_report["initialized"] == []
    ids, mask = random_batch(3, 15, "right", seed=1)
    with torch.no_grad():
        ours = converted(input_ids=ids, attention_mask=mask).last_hidden_state
        theirs = stock(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours - theirs)[mask.bool()].abs().max() <= 1e-4


def test_convert_low_rank_band_heads_full_rank_wide_window_equals_dense(family):
    """Half the heads low-rank at r = D, half band with w >= T - 1: every head is a dense head."""
    stock = stock_model(family)
    converted = hv.convert_from_dense(stock, attention_variant="low_rank_band", band_combine="heads",
                                      attention_rank=8, attention_window=63).eval()
    ids, _ = random_batch(2, 15, None, seed=2)
    with torch.no_grad():
        diff = converted(input_ids=ids).last_hidden_state - stock(input_ids=ids).last_hidden_state
    assert diff.abs().max() <= 1e-4


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_svd_error_is_the_discarded_singular_values(rank):
    g = torch.Generator().manual_seed(rank)
    wq, wk = torch.randn(8, 20, generator=g), torch.randn(8, 20, generator=g)
    bq, bk = torch.randn(8, generator=g), torch.randn(8, generator=g)
    form = torch.cat([wq, bq[:, None]], 1).double().T @ torch.cat([wk, bk[:, None]], 1).double()
    wq_r, bq_r, wk_r, bk_r, s = low_rank_factors(wq, bq, wk, bk, rank)
    approx = torch.cat([wq_r, bq_r[:, None]], 1).double().T @ torch.cat([wk_r, bk_r[:, None]], 1).double()
    error = torch.linalg.matrix_norm(form - approx)
    torch.testing.assert_close(error, s[rank:].pow(2).sum().sqrt(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s, torch.linalg.svdvals(form)[:8], rtol=1e-8, atol=1e-8)


def test_converted_low_rank_scores_are_the_truncated_dense_scores(family):
    """At r < D each head's pre-softmax scores are the best rank-r approximation of the dense ones."""
    stock = stock_model(family)
    converted = hv.convert_from_dense(stock, attention_variant="low_rank", attention_rank=3).eval()
    dense = variant_from(stock, family)
    ids, _ = random_batch(1, 30, None, seed=3)
    for model in (converted, dense):
        for module in model.modules():
            if isinstance(module, VariantAttention):
                module.capture = True
        with torch.no_grad():
            model(input_ids=ids)
    first = lambda m: next(x for x in m.modules() if isinstance(x, VariantAttention)).captured["scores"]
    low, full = first(converted)[0].double(), first(dense)[0].double()
    for head in range(4):  # the scores of a rank-3 form, and no worse than the rank-3 SVD of the scores
        assert torch.linalg.matrix_rank(low[head], atol=1e-4) <= 3
        assert torch.linalg.matrix_norm(low[head] - full[head]) >= torch.linalg.svdvals(full[head])[3:].norm() - 1e-4


@pytest.mark.parametrize(("variant", "fields", "added"), [
    ("band", {"attention_window": 8}, set()),
    ("additive", {}, {"score_vector"}),
    ("lstmn", {}, {"forward_cell", "backward_cell"}),
    ("low_rank_band", {"band_combine": "gate"}, {"query_low_rank", "key_low_rank", "band_gate"}),
])
def test_stock_checkpoint_loads_into_a_variant(tmp_path, variant, fields, added):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    model, info = hv.VariantBertForSequenceClassification.from_pretrained(
        tmp_path, attention_variant=variant, output_loading_info=True, **fields)
    assert model.config.attention_variant == variant and model.config.num_labels == 3
    missing = {key.split(".")[6] for key in info["missing_keys"]}  # bert.encoder.layer.N.attention.self.<param>
    assert missing == added
    assert all(".attention.self." in key for key in info["missing_keys"])


def test_convert_from_a_path_carries_the_head(tmp_path):
    torch.manual_seed(0)
    stock = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64)).eval()
    stock.save_pretrained(tmp_path)
    converted = hv.convert_from_dense(str(tmp_path), attention_variant="band", attention_window=63)
    assert isinstance(converted, hv.VariantGPT2LMHeadModel)
    ids, _ = random_batch(2, 12, None)
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(input_ids=ids).logits, stock(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)


def test_convert_rejects_what_it_cannot_convert(tmp_path):
    with pytest.raises(ValueError, match="cannot be converted"):
        hv.convert_from_dense(torch.nn.Linear(2, 2), attention_variant="band")
    with pytest.raises(ValueError, match="only dense"):
        hv.convert_from_dense(tiny_model("bert", "band"), attention_variant="low_rank")
    with pytest.raises((FileNotFoundError, OSError)):
        hv.convert_from_dense(str(tmp_path / "nowhere" / "model"), attention_variant="band")
