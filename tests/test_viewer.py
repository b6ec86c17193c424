"""The attention viewer's page (hf_attn_variants.analysis.viewer), read back in Python: its data equals
the model's output_attentions for every variant x both families and for stock BERT / GPT-2; it has no
external URL; its per-head numbers, singular values and band outlines are the right ones; the CLI
writes it. (tests/test_viewer_browser.py loads it in a real browser.)"""

from __future__ import annotations

import os
import re
import stat

import pytest
import torch
from conftest import CASE_IDS, VARIANT_CASES, tiny_model
from hub_helpers import TOKENIZERS
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

from hf_attn_variants.analysis import metrics
from hf_attn_variants.analysis.viewer import (
    AUTO_LIMIT,
    decode_matrix,
    encode_matrix,
    page,
    read_view_data,
    score_singular_values,
    storage,
    view,
)
from hf_attn_variants_research.cli import main as cli_main

TEXT = "the cat sat on the mat"
PAIR = "a dog ran in the park"


@pytest.fixture(scope="module")
def tokenizers():
    return {family: TOKENIZERS[family]() for family in TOKENIZERS}


def model_for(family, variant, fields, tokenizer, seed=0):
    return tiny_model(family, variant, vocab_size=len(tokenizer), seed=seed, **fields)


def reference_attentions(model, tokenizer, text, text_pair=None):
    enc = tokenizer(text, text_pair, return_tensors="pt")
    with torch.no_grad():
        out = model(**enc, output_attentions=True)
    return [a[0] for a in out.attentions], enc


@pytest.mark.parametrize("variant,fields", VARIANT_CASES, ids=CASE_IDS)
def test_embedded_attention_equals_output_attentions(family, variant, fields, tokenizers):
    tok = tokenizers[family]
    model = model_for(family, variant, fields, tok)
    text_pair = PAIR if family == "bert" else None
    data = read_view_data(view(model, tok, TEXT, text_pair, precision="float32"))
    (m,) = data["models"]
    expected, enc = reference_attentions(model, tok, TEXT, text_pair)
    assert m["length"] == enc["input_ids"].shape[1] == len(m["tokens"])
    assert len(m["attentions"]) == len(expected) == model.config.num_hidden_layers
    for got, want, layer in zip(m["attentions"], expected, m["layers"]):
        assert torch.equal(got, want.float())  # float32: bit for bit
        assert layer["variant"] == variant and layer["heads"] == want.shape[0]
        assert set(layer["metrics"]) >= {"entropy", "mean_distance", "sink_mass", f"mass_within_{m['metric_window']}"}
    if variant == "lstmn":  # intra-attention over the tape: the first step reads only the zero slot
        for zero, layer in zip(m["zero_slots"], m["layers"]):
            assert zero[0, 0] == pytest.approx(1.0) and zero[0, 1:].max() < 1
            assert layer["head_names"][0] == "forward tape"
            if family == "bert":  # the backward direction starts at the last token
                assert zero[1, -1] == pytest.approx(1.0) and layer["head_names"][1] == "backward tape"


def test_float16_and_uint8_pages_hold_the_rounded_weights(tokenizers):
    tok = tokenizers["bert"]
    model = model_for("bert", "low_rank_band", {"band_combine": "sum"}, tok)  # rows sum to 2: value_max 2
    expected, _ = reference_attentions(model, tok, TEXT)
    half = read_view_data(view(model, tok, TEXT))["models"][0]  # auto on a small page: float16, not compressed
    assert (half["precision"], half["encoding"]) == ("float16", "base64")
    for got, want in zip(half["attentions"], expected):
        assert torch.equal(got, want.half().float())
    small = read_view_data(view(model, tok, TEXT, precision="uint8", encoding="zlib+base64"))["models"][0]
    for got, want, layer in zip(small["attentions"], expected, small["layers"]):
        assert layer["value_max"] == 2.0
        assert (got - want).abs().max() <= 2.0 / 255
        assert (got - want).abs().max() > 0  # lossy, and the bound above is what it promises


def test_storage_auto_switches_on_size():
    assert storage(1000) == ("float16", "base64")
    assert storage(AUTO_LIMIT + 1) == ("uint8", "zlib+base64")
    assert storage(10, "float32", "zlib+base64") == ("float32", "zlib+base64")
    with pytest.raises(ValueError, match="precision='int4'"):
        storage(10, "int4")
    with pytest.raises(ValueError, match="encoding='gzip'"):
        storage(10, "float16", "gzip")


def test_encode_decode_round_trip_shapes():
    g = torch.Generator().manual_seed(1)
    x = torch.softmax(torch.randn(7, 7, generator=g), -1)
    for precision, tol in (("float32", 0.0), ("float16", 1e-3), ("uint8", 1 / 255)):
        for encoding in ("base64", "zlib+base64"):
            back = decode_matrix(encode_matrix(x, precision, encoding), (7, 7), precision, encoding)
            assert back.shape == (7, 7) and (back - x).abs().max() <= tol


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_stock_models(family, tokenizers):
    """Stock BertModel / GPT2Model (eager attention): same data, and singular values from their projections."""
    tok = tokenizers[family]
    torch.manual_seed(0)
    if family == "bert":
        config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
        model = BertModel(config).eval()
    else:
        config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                            attn_implementation="eager")
        model = GPT2Model(config).eval()
    m = read_view_data(view(model, tok, TEXT, precision="float32"))["models"][0]
    expected, enc = reference_attentions(model, tok, TEXT)
    for got, want in zip(m["attentions"], expected):
        assert torch.equal(got, want)
    assert m["causal"] is (family == "gpt2")
    # singular values of layer 0 head 1 against an explicit q kᵀ from the stock projections
    x = model.get_input_embeddings()(enc["input_ids"])
    if family == "bert":
        x = model.embeddings(enc["input_ids"])
        att = model.encoder.layer[0].attention.self
        q, k = att.query(x)[0], att.key(x)[0]
    else:
        x = model.drop(x + model.wpe(torch.arange(x.shape[1])))
        q, k, _ = model.h[0].attn.c_attn(model.h[0].ln_1(x))[0].split(32, dim=-1)
    q, k = q.view(-1, 4, 8)[:, 1], k.view(-1, 4, 8)[:, 1]  # head 1: (T, 8)
    want = torch.linalg.svdvals((q @ k.T).double() * 8**-0.5)[:8]
    got = torch.tensor(m["layers"][0]["singular_values"][1], dtype=torch.double)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_stock_model_on_sdpa_is_read_on_eager_and_set_back(tokenizers):
    tok = tokenizers["bert"]
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, attn_implementation="sdpa")).eval()
    m = read_view_data(view(model, tok, TEXT, precision="float32"))["models"][0]
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    expected, _ = reference_attentions(model, tok, TEXT)
    assert len(m["attentions"]) == 2 and all(torch.equal(a, b) for a, b in zip(m["attentions"], expected))


def test_singular_values_show_the_rank(tokenizers):
    """A low-rank head has at most r singular values above noise; a dense head of size D has D."""
    tok = tokenizers["bert"]
    text = "the cat sat on the mat and the dog sat in the sun at dawn"
    low = read_view_data(view(model_for("bert", "low_rank", {"attention_rank": 3}, tok), tok, text))["models"][0]
    dense = read_view_data(view(model_for("bert", "dense", {}, tok), tok, text))["models"][0]
    for sv in low["layers"][0]["singular_values"]:
        assert len(sv) == 3 and sv[-1] > 0
    for sv in dense["layers"][0]["singular_values"]:
        assert len(sv) == 8 and sum(s > 1e-4 * sv[0] for s in sv) == 8


@pytest.mark.parametrize("t,d", [(9, 4), (3, 8), (16, 16)])
def test_score_singular_values_equal_the_full_svd(t, d):
    g = torch.Generator().manual_seed(t * d)
    q, k = torch.randn(t, d, generator=g), torch.randn(t, d, generator=g)
    want = torch.linalg.svdvals(0.3 * q.double() @ k.double().T)[:min(t, d)]
    assert torch.allclose(score_singular_values(q, k, 0.3).double(), want, rtol=1e-5, atol=1e-6)


def test_band_window_and_heads_metadata(tokenizers):
    tok = tokenizers["gpt2"]
    m = read_view_data(view(model_for("gpt2", "low_rank_band", {"band_combine": "heads", "attention_window": 2},
                                      tok), tok, TEXT))["models"][0]
    layer = m["layers"][0]
    assert layer["window"] == 2 and layer["band_heads"] == [2, 3] and layer["band_combine"] == "heads"
    assert layer["head_names"][0].endswith("(low-rank)") and layer["head_names"][3].endswith("(band)")
    assert m["metric_window"] == 2  # "mass within w" at the band's w
    # band heads put all their mass within w (causal: 0 <= i - j <= w)
    assert min(layer["metrics"]["mass_within_2"][2:]) > 0.999
    dense = read_view_data(view(model_for("gpt2", "dense", {}, tok), tok, TEXT))["models"][0]
    assert dense["layers"][0]["window"] is None and dense["layers"][0]["band_heads"] == []


def test_metrics_are_the_analysis_modules(tokenizers):
    tok = tokenizers["bert"]
    model = model_for("bert", "additive", {"additive_dim": 6}, tok)
    m = read_view_data(view(model, tok, TEXT, precision="float32"))["models"][0]
    expected, enc = reference_attentions(model, tok, TEXT)
    special = torch.tensor(tok(TEXT, return_special_tokens_mask=True)["special_tokens_mask"]).bool()[None]
    want = metrics.per_head_metrics(expected[1][None], None, windows=(1, 2, 4, 8, 16, 32), special_positions=special)
    for key in ("entropy", "mean_distance", "sink_mass", "mass_within_16"):
        assert m["layers"][1]["metrics"][key] == pytest.approx(want[key].tolist(), abs=1e-4)


def test_compare_mode_two_models_side_by_side(tokenizers):
    tok = tokenizers["bert"]
    dense, band = model_for("bert", "dense", {}, tok), model_for("bert", "band", {"attention_window": 1}, tok)
    data = read_view_data(view(dense, tok, TEXT, compare=band, names=("dense", "band")))
    assert [m["name"] for m in data["models"]] == ["dense", "band"]
    assert data["models"][0]["metric_window"] == data["models"][1]["metric_window"] == 1
    assert data["models"][0]["tokens"] == data["models"][1]["tokens"]


def test_page_is_self_contained_and_escapes_tokens(tokenizers):
    tok = tokenizers["gpt2"]
    text = 'the cat </script><script>alert("x")</script> & <b>'
    model = model_for("gpt2", "band", {"attention_window": 2}, tok)
    html = page(view(model, tok, text), "t")
    # no URL and no src/href with a literal value (the export buttons set href to a blob: URL they make)
    assert not re.search(r"https?://|//cdn|\bsrc\s*=\s*[\"']|\bhref\s*=\s*[\"']|\.src\s*=|@import|url\(", html)
    assert html.count("</script>") == 3 and "alert(" not in html.split("hav-data")[1].split("</script>")[0]
    data = read_view_data(html)
    assert "".join(data["models"][0]["tokens"]) == text


def test_bad_input_is_a_clear_error(tokenizers):
    tok = tokenizers["bert"]
    model = model_for("bert", "dense", {}, tok)
    with pytest.raises(ValueError, match="text=''"):
        view(model, tok, "")
    with pytest.raises(ValueError, match="precision='int8'"):
        view(model, tok, TEXT, precision="int8")
    with pytest.raises(ValueError, match="no attention-viewer data"):
        read_view_data("<html></html>")


def test_command_line_writes_the_page(tmp_path, tokenizers):
    """hf-attn-variants view BAND --text ... --text-pair ... --compare DENSE --out page.html"""
    tok = tokenizers["bert"]
    model = model_for("bert", "band", {"attention_window": 1}, tok)
    model.save_pretrained(tmp_path / "band")
    tok.save_pretrained(tmp_path / "band")
    dense = model_for("bert", "dense", {}, tok)
    dense.save_pretrained(tmp_path / "dense")
    out = tmp_path / "pages" / "view.html"
    assert cli_main(["view", str(tmp_path / "band"), "--text", TEXT, "--text-pair", PAIR, "--out", str(out),
                 "--compare", str(tmp_path / "dense"), "--precision", "float32"]) == 0
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and not list(out.parent.glob(".*tmp"))
    data = read_view_data(html)
    expected, _ = reference_attentions(model, tok, TEXT, PAIR)
    assert all(torch.equal(a, b) for a, b in zip(data["models"][0]["attentions"], expected))
    assert data["models"][1]["layers"][0]["variant"] == "dense"
    # titles: the folders' last components, never the local paths
    assert [m["name"] for m in data["models"]] == ["band", "dense"] and str(tmp_path) not in html
    assert "<title>attention: band vs dense</title>" in html
    out2 = tmp_path / "named.html"
    assert cli_main(["view", str(tmp_path / "band"), "--text", TEXT, "--out", str(out2), "--compare",
                     str(tmp_path / "dense"), "--names", "Band w=1", "Dense"]) == 0
    assert [m["name"] for m in read_view_data(out2.read_text())["models"]] == ["Band w=1", "Dense"]
    with pytest.raises(SystemExit, match="--names takes 2 name"):
        cli_main(["view", str(tmp_path / "band"), "--text", TEXT, "--out", str(out2), "--compare",
                  str(tmp_path / "dense"), "--names", "only one"])


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_are_written_with_the_users_umask(tmp_path, tokenizers, umask_022):
    """The page, and convert's output folder and files, get 0644 / 0755 under umask 022 (not the 0600 /
    0700 of mkstemp / mkdtemp), written atomically (no temporary left behind)."""
    from hf_attn_variants.analysis.viewer import write_text
    path = write_text(tmp_path / "a" / "page.html", "<p>x</p>")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == "<p>x</p>"
    assert sorted(p.name for p in path.parent.iterdir()) == ["page.html"]
    tok = tokenizers["bert"]
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(tmp_path / "stock")
    tok.save_pretrained(tmp_path / "stock")
    out = tmp_path / "converted"
    cli_main(["convert", str(tmp_path / "stock"), "--variant", "low_rank", "--rank", "4", "--out", str(out)])
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "svd_energy.json" in modes and "config.json" in modes
    assert set(modes.values()) == {0o644}, {k: oct(v) for k, v in modes.items() if v != 0o644}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_long_text_is_truncated_with_a_notice_or_refused(tmp_path, tokenizers):
    tok = tokenizers["bert"]
    model = model_for("bert", "dense", {}, tok)  # max_position_embeddings 64
    text = " ".join([TEXT] * 20)
    full = len(tok(text)["input_ids"])
    assert full > 64
    m = read_view_data(view(model, tok, text))["models"][0]
    assert m["length"] == 64 and m["truncated"] == {"from": full, "to": 64, "limit": 64}
    assert m["tokens"][-1] == "[SEP]"
    m = read_view_data(view(model, tok, text, max_length=20))["models"][0]
    assert m["length"] == 20 and m["truncated"]["limit"] == 20
    assert read_view_data(view(model, tok, TEXT))["models"][0]["truncated"] is None
    with pytest.raises(ValueError, match=f"the text has {full} tokens, more than max_length=64"):
        view(model, tok, text, truncate=False)
    with pytest.raises(ValueError, match="max_length=100 is more than this model takes \\(64 positions\\)"):
        view(model, tok, TEXT, max_length=100)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    with pytest.raises(SystemExit, match="more than max_length=30"):
        cli_main(["view", str(tmp_path / "m"), "--text", text, "--out", str(tmp_path / "p.html"), "--max-length", "30",
                  "--no-truncate"])


def test_pair_start_rollout_change_and_importance(tmp_path, tokenizers):
    from hf_attn_variants.analysis.rollout import rollout
    from hf_attn_variants.analysis.viewer import attention_change
    tok = tokenizers["bert"]
    dense, band = model_for("bert", "dense", {}, tok), model_for("bert", "band", {"attention_window": 1}, tok, seed=1)
    csv_path = tmp_path / "importance.csv"
    csv_path.write_text("layer,head,grad_importance,uniform_delta_loss\n" +
                        "".join(f"{lay},{h},{lay + h / 10},{-h}\n" for lay in range(2) for h in range(4)))
    html = view(dense, tok, TEXT, PAIR, compare=band, precision="float32", importance=(tmp_path, None))
    data = read_view_data(html)
    a, b = data["models"]
    start = a["pair_start"]
    assert a["tokens"][start - 1] == "[SEP]" and a["tokens"][start:start + 3] == ["a", "dog", "ran"]
    want = rollout([x[None] for x in a["attentions"]])[:, 0]
    assert torch.allclose(a["rollouts"], want, atol=1e-6)
    imp = a["importance"]["columns"]
    assert imp["grad_importance"][1][2] == pytest.approx(1.2) and imp["uniform_delta_loss"][0][3] == -3
    assert b["importance"] is None
    change = data["compare"]["change"]
    assert set(change) == {"all", "AA", "AB", "BA", "BB"}
    # the change of one head by hand: mean over A's query rows of half the L1 distance over B's keys
    x, y = a["attentions"][1][2], b["attentions"][1][2]
    assert change["AB"][1][2] == pytest.approx(float((x[:start, start:] - y[:start, start:]).abs().sum(-1).mean() / 2),
                                               abs=1e-5)
    assert change == attention_change(a["attentions"], b["attentions"], start)
    with pytest.raises(ValueError, match="importance='.*nothing.csv'.*no such file"):
        view(dense, tok, TEXT, importance=str(tmp_path / "nothing.csv"))


def naive_block_metrics(w: torch.Tensor, rows: range, cols: range, special: set[int], window: int) -> dict:
    """One head's (T, T) weights on one block, by loops: each row of the block restricted to its keys and
    renormalised, the metrics averaged over the rows that give the block any weight (None if none does)."""
    import math
    sums = {k: 0.0 for k in ("entropy", "mean_distance", "sink_mass", "prev_token", f"mass_within_{window}")}
    live = 0
    for i in rows:
        row = w[i] / w[i].sum()
        mass = sum(float(row[j]) for j in cols)
        if mass <= 1e-12:
            continue
        live += 1
        for j in cols:
            p = float(row[j]) / mass
            if p > 0:
                sums["entropy"] -= p * math.log(p)
            sums["mean_distance"] += p * abs(i - j)
            sums["sink_mass"] += p * (j in special)
            sums["prev_token"] += p * (i - j == 1)
            sums[f"mass_within_{window}"] += p * (abs(i - j) <= window)
    return {k: (v / live if live else None) for k, v in sums.items()}


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_segment_metrics_against_loops(causal):
    from hf_attn_variants.analysis.viewer import segment_metrics
    torch.manual_seed(3)
    t, start, heads, window = 9, 4, 3, 2
    scores = torch.randn(2, heads, t, t) * 2
    if causal:
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    weights = list(scores.softmax(-1))
    special = torch.zeros(1, t, dtype=torch.bool)
    special[0, [0, start - 1, t - 1]] = True  # [CLS] a a [SEP] b b b b [SEP]
    got = segment_metrics(weights, start, special, causal, window)
    assert set(got) == {"AA", "AB", "BA", "BB"}
    part = {"A": range(0, start), "B": range(start, t)}
    for seg, per_layer in got.items():
        for layer, w in enumerate(weights):
            for h in range(heads):
                want = naive_block_metrics(w[h], part[seg[0]], part[seg[1]], {0, start - 1, t - 1}, window)
                for key, value in want.items():
                    if value is None:
                        assert causal and seg == "AB" and per_layer[layer][key][h] is None
                    else:
                        assert per_layer[layer][key][h] == pytest.approx(value, abs=2e-5), (seg, layer, h, key)
    assert segment_metrics(weights, None) == {}


def test_compare_page_stores_segment_metrics_for_a_pair(tokenizers):
    from hf_attn_variants.analysis.viewer import segment_metrics
    tok = tokenizers["bert"]
    dense, band = model_for("bert", "dense", {}, tok), model_for("bert", "band", {"attention_window": 1}, tok, seed=1)
    data = read_view_data(view(dense, tok, TEXT, PAIR, compare=band, precision="float32"))
    a, b = data["models"]
    sm = data["compare"]["segment_metrics"]
    assert len(sm) == 2 and set(sm[0]) == {"AA", "AB", "BA", "BB"}
    special = torch.tensor([[tk in ("[CLS]", "[SEP]") for tk in a["tokens"]]])
    for m, stored in zip((a, b), sm):
        want = segment_metrics(m["attentions"], a["pair_start"], special, False, m["metric_window"])
        for seg in want:
            for layer in range(2):
                for key, vals in want[seg][layer].items():
                    assert stored[seg][layer][key] == pytest.approx(vals, abs=1e-4)
    # the AB block differs from the whole text (the deltas would not be the same numbers)
    assert sm[0]["AB"][0]["mean_distance"] != pytest.approx(a["layers"][0]["metrics"]["mean_distance"], abs=1e-3)
    assert "segment_metrics" not in (read_view_data(view(dense, tok, TEXT, compare=band))["compare"] or {})
