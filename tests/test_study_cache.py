"""The MiniLM study's caches are keyed on their inputs (sentences AND labels, model content, settings,
code): a cache built for other inputs is never reused silently. Also the study's statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers

from hf_attn_variants_research import study
from hf_attn_variants_research.study_cache import Cache, StaleCacheError, data_hash, model_hash
from hf_attn_variants_research.study_stats import draw_interval, spearman_test, t_interval

WORDS = "[PAD] [UNK] [CLS] [SEP] [MASK] the cat sat on mat a dog ran far away and then home good bad".split()


def _save_tiny(folder, seed: int = 0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    cfg = transformers.BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(seed)
    transformers.BertModel(cfg).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def _data(seed: int = 0, n_pool: int = 24):
    rng = np.random.default_rng(seed)
    content = WORDS[5:]
    pool = [" ".join(rng.choice(content, size=rng.integers(3, 9))) for _ in range(n_pool)]
    labels = np.array([int("good" in t) for t in pool])
    texts = [" ".join(rng.choice(content, size=5)) for _ in range(6)]
    return {"texts": texts, "drift_texts": texts[:4], "pool_texts": pool, "pool_labels": labels,
            "draws": study.probe_draws(n_pool, 16, 8, 3)}


def _run(folder, cache_dir, data, compute: bool = True):
    """The study's dense reference and one conversion, through the study's own cached functions."""
    path = str(folder)
    stock = transformers.AutoModel.from_pretrained(path).eval()
    from hf_attn_variants.analysis.run import load_for_analysis

    model, tokenizer = load_for_analysis(path)
    cache = Cache(cache_dir, compute=compute)
    keys = study.study_keys(path, data)
    dense = study.dense_reference(cache, keys, model, tokenizer, data)
    row = study.conversion_quality(cache, keys, stock, tokenizer, data, dense, "band_w1_g0",
                                   {"attention_variant": "band", "attention_window": 1})
    return cache, dense, row


@pytest.fixture()
def tiny(tmp_path):
    return _save_tiny(tmp_path / "tiny")


def test_same_inputs_reuse_the_cache(tiny, tmp_path):
    data = _data()
    _, dense, row = _run(tiny, tmp_path / "cache", data)
    cache, dense2, row2 = _run(tiny, tmp_path / "cache", data, compute=False)  # nothing may be computed
    assert cache.stale == []
    assert dense2["probe"] == dense["probe"] and row2 == row
    assert np.array_equal(dense2["pool"], dense["pool"])


@pytest.mark.parametrize("change", ["label_order", "sentences"])
def test_cache_for_other_labels_or_sentences_is_not_reused(tiny, tmp_path, change):
    data = _data()
    _run(tiny, tmp_path / "cache", data)
    other = dict(data)
    if change == "label_order":  # same sentences, the labels in another order (the stale-cache bug of issue 17)
        perm = np.random.default_rng(1).permutation(len(data["pool_labels"]))
        other["pool_labels"] = data["pool_labels"][perm]
        assert not np.array_equal(other["pool_labels"], data["pool_labels"])
    else:
        other["pool_texts"] = data["pool_texts"][::-1]
        other["drift_texts"] = ["the dog sat on the mat"] + data["drift_texts"][1:]
    # with computing off, the stale entry is refused loudly
    with pytest.raises(StaleCacheError, match="dense_embeddings.*differs in: data"):
        _run(tiny, tmp_path / "cache", other, compute=False)
    # with computing on, it is recomputed: the results equal a run on an empty cache
    cache, dense, row = _run(tiny, tmp_path / "cache", other)
    assert "dense_embeddings" in cache.stale and "convert_band_w1_g0" in cache.stale
    fresh_cache, fresh_dense, fresh_row = _run(tiny, tmp_path / "fresh", other)
    assert fresh_cache.stale == []
    assert dense["probe"] == fresh_dense["probe"] and row == fresh_row
    assert np.allclose(dense["pool"], fresh_dense["pool"])


def test_cache_for_other_weights_is_not_reused(tmp_path):
    folder = _save_tiny(tmp_path / "m", seed=0)
    data = _data()
    h0 = model_hash(folder)
    _run(folder, tmp_path / "cache", data)
    _save_tiny(folder, seed=1)  # same path, same config, same file size: other weights
    assert model_hash(folder) != h0
    with pytest.raises(StaleCacheError, match="differs in: model"):
        _run(folder, tmp_path / "cache", data, compute=False)


def test_unkeyed_legacy_cache_is_not_reused(tiny, tmp_path):
    data = _data()
    (tmp_path / "cache").mkdir()
    np.savez(tmp_path / "cache" / "dense_embeddings.npz", drift=np.zeros((4, 32)), pool=np.zeros((24, 32)))
    (tmp_path / "cache" / "convert_band_w1_g0.json").write_text(json.dumps({"probe_accuracy": 0.5}))
    cache, dense, _ = _run(tiny, tmp_path / "cache", data)
    assert {"dense_embeddings", "convert_band_w1_g0"} <= set(cache.stale)
    assert np.abs(dense["pool"]).sum() > 0


def test_data_hash_depends_on_labels_and_order():
    assert data_hash(["a", "b"], [0, 1]) != data_hash(["a", "b"], [1, 0])
    assert data_hash(["a", "b"], [0, 1]) != data_hash(["b", "a"], [0, 1])
    assert data_hash(["a", "b"]) != data_hash(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        data_hash(["a", "b"], [0])


def test_spearman_exact_permutation_p_and_interval():
    x = [1, 2, 3, 4, 5, 6]
    res = spearman_test(x, [2, 1, 4, 3, 6, 5])
    assert res["perm_exact"] and res["n"] == 6
    assert math.isclose(res["stat"], 1 - 6 * 6 / (6 * 35))  # sum d^2 = 6
    perfect = spearman_test(x, x)
    assert perfect["stat"] == 1.0 and math.isclose(perfect["p_perm"], 2 / 720)  # rho = 1 and rho = -1
    assert res["p_perm"] > perfect["p_perm"]
    assert res["ci_lo"] <= res["stat"] <= res["ci_hi"] + 1e-12
    big = spearman_test(np.arange(40), np.random.default_rng(0).normal(size=40), n_perm=2000, n_boot=200)
    assert not big["perm_exact"] and 0.0 < big["p_perm"] <= 1.0


def test_t_and_draw_intervals():
    ci = t_interval([0.70, 0.72, 0.74])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert math.isclose(ci["lo"], 0.72 - half) and math.isclose(ci["hi"], 0.72 + half)
    d = draw_interval(np.arange(101) / 100)
    assert math.isclose(d["lo"], 0.025) and math.isclose(d["hi"], 0.975) and math.isclose(d["mean"], 0.5)


def test_probe_draws_are_disjoint_and_seeded():
    draws = study.probe_draws(50, 30, 15, 4)
    assert draws == study.probe_draws(50, 30, 15, 4)
    for d in draws:
        assert len(d["train"]) == 30 and len(d["test"]) == 15 and not set(d["train"]) & set(d["test"])
    assert draws[0]["test"] != draws[1]["test"]
    with pytest.raises(ValueError, match="pool"):
        study.probe_draws(10, 8, 5, 1)


def test_mix_search_is_greedy_bottom_up_and_counts_every_mix():
    import hf_attn_variants as hv

    cfg = hv.VariantBertConfig(vocab_size=50, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=64)
    lengths = (16, 64)
    cost = {v: study.mix_costs(cfg, [v, "dense", "dense"], lengths)["flops_T64"] for v in ("band", "low_rank")}
    cheap, dear = sorted(cost, key=cost.get)
    assert cost[cheap] < cost[dear]
    calls = []

    def quality(name, fields):  # the second-cheapest option passes in layer 0 only
        calls.append(fields["layer_variants"])
        ok = fields["layer_variants"] == [dear, "dense", "dense"]
        return {"probe_mean": 0.8, "probe_lo": 0.7, "probe_hi": 0.9, "diff_mean": -0.005 if ok else -0.02,
                "diff_lo": -0.1, "diff_hi": 0.1, "drift": 0.1}

    res = study._mix_search(quality, cfg, {"probe_lo": 0.75}, lengths)  # passes: mean difference >= -0.01
    assert res["order_tried"] == [cheap, dear]  # cheapest first, by FLOPs at the last length
    assert res["final_layers"] == [dear, "dense", "dense"] and res["final"] == study.mix_name(res["final_layers"])
    # layer 0: cheap fails, dear passes; layers 1 and 2: both fail (on top of layer 0's choice)
    assert calls == [[cheap, "dense", "dense"], [dear, "dense", "dense"], [dear, cheap, "dense"],
                     [dear, dear, "dense"], [dear, "dense", cheap], [dear, "dense", dear]]
    assert res["evaluated_mixes"] == 6 == len(res["evaluated"])
    row = res["final_row"]
    assert row["passed"] and 0 < row["flops_saving_T64"] < 1


def test_peek_never_computes_and_reports_stale(tmp_path):
    cache = Cache(tmp_path / "c")
    assert cache.peek("x", {"data": "a"}) is None and not (tmp_path / "c" / "x.json").exists()
    assert cache.get("x", {"data": "a"}, lambda: [1, 2]) == [1, 2]
    assert cache.peek("x", {"data": "a"}) == [1, 2]
    assert cache.peek("x", {"data": "b"}) is None and cache.stale == ["x"]
    with pytest.raises(StaleCacheError):
        Cache(tmp_path / "c", compute=False).peek("x", {"data": "b"})
