"""Kernel benchmarks: every fast kernel side by side with its baselines, in one run.

Usage (from the repository root, no install needed):

    python benchmarks/bench_kernels.py            # full run, ~15 min on 2 idle cores
    python benchmarks/bench_kernels.py --quick    # fewer sizes and repeats, ~3 min
    python benchmarks/bench_kernels.py --only band additive

    python benchmarks/bench_kernels.py --device cuda --dtype bf16 --quick --only band   # on a GPU

Writes ``benchmarks/results/kernels.md`` (``kernels-quick.md`` with --quick) and PNG plots
``benchmarks/results/<kernel>_{time,memory}.png``; on CUDA ``gpu-kernels[-quick][-<only>].md`` and
``gpu_<kernel>_*.png``, with the GPU, CUDA and torch versions named. The band rows time the anchors
in the same run: ``torch.compile(flex_attention)`` with a sliding-window block mask that torch's own
``create_block_mask`` builds from a pure-index mask_mod (not the project's plan), SDPA without a mask
(flash on CUDA) and SDPA with the dense band mask; on CPU also the compiled flex path for no-grad
forwards. CUDA band shapes: T=8192 w=128 and T=32768 w=256 (``--quick``: the first), no padding and
5% right padding, both directions.
fp32 (or --dtype), B=1, H=8, D=64 unless a table says otherwise; times are medians of interleaved
repeats (see ``benchmarks/common.py``), memory is the growth of peak RSS (CUDA: of the peak of
allocated memory) during one call. The FLOP limit is the kernel's own
FLOPs (over the pairs it must read) at the matrix-multiply rate measured in the same run;
backward counted as twice the forward.
"""

from __future__ import annotations

import argparse

from common import (DTYPES, RESULTS, add_device_args, check_device, device_line, interleaved, markdown_table,
                    matmul_rate, peak_memory, plot, reexec_with_mmap_threshold, results_name)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import anchors  # noqa: E402
from hf_attn_variants import hfav_band_flex as band_flex  # noqa: E402
from hf_attn_variants import hfav_kernels as K  # noqa: E402
from hf_attn_variants.hfav_attention import LSTMNCell  # noqa: E402

H, D = 8, 64
RUN = {"device": "cpu", "dtype": torch.float32}  # set by --device / --dtype


def cuda() -> bool:
    return RUN["device"] == "cuda"


def plot_path(name: str):
    return RESULTS / (f"gpu_{name}" if cuda() else name)


def qkv(t: int, dqk: int = D, dv: int = D, heads: int = H, grad: bool = True, scale: float = 1.0):
    g = torch.Generator().manual_seed(t)
    return [(torch.randn(1, heads, t, d, generator=g) * scale).to(RUN["device"], RUN["dtype"]).requires_grad_(grad)
            for d in (dqk, dqk, dv)]


def mem(fn) -> float:
    return peak_memory(fn, RUN["device"])


def fwd(fn):
    def run():
        with torch.no_grad():
            return fn()
    return run


def fwd_bwd(fn, inputs):
    def run():
        for x in inputs:
            x.grad = None
        out = fn()
        out.backward(torch.ones_like(out))
    return run


def ms(seconds: float) -> float:
    return seconds * 1e3


# ----------------------------------------------------------------------------- band


def _fresh_compiles() -> None:
    """Forget every compiled flex shape (the project's and the anchor's): each (shape, direction) of the
    band table compiles afresh, so no row meets the cap on shape families or dynamo's recompile limit
    (past it, flex runs unfused: T x T scores)."""
    band_flex.reset()
    torch._dynamo.reset()


def anchor_block_mask(t: int, window: int, causal: bool, device: str):
    """The anchor: a sliding-window block mask built with torch's own API from a mask_mod that is
    pure index arithmetic (no padding, nothing captured but ints), not with the project's plan."""
    from torch.nn.attention.flex_attention import create_block_mask

    def sliding_window(b, h, q_idx, kv_idx):
        d = q_idx - kv_idx
        return ((d >= 0) & (d <= window)) if causal else ((d <= window) & (d >= -window))
    return create_block_mask(sliding_window, None, None, t, t, device=device)


_ANCHOR: dict = {}


def anchor_flex():
    """``torch.compile(flex_attention)`` as torch's docs call it (made once per process)."""
    from torch.nn.attention.flex_attention import flex_attention

    if "fn" not in _ANCHOR:
        _ANCHOR["fn"] = torch.compile(flex_attention)
    return _ANCHOR["fn"]


def band_shapes(quick: bool) -> list[tuple[int, int]]:
    """(T, w) of the band table. CUDA: the issue's anchor shapes T=8192 w=128 and T=32768 w=256."""
    if cuda():
        return [(8192, 128)] if quick else [(8192, 128), (32768, 256)]
    return [(1024, 128), (4096, 128)] if quick else [(1024, 128), (2048, 128), (4096, 128), (8192, 128)]


def bench_band(quick: bool, rate: float, repeats: int) -> str:
    rows = []
    # candidates: band = band_attention as the models call it (CUDA: flex with the specialised mask_mod;
    # CPU: blocked); flex = band_attention(flex=True) (CPU: the compiled no-grad path); blocked =
    # band_attention(flex=False); anchor = torch.compile(flex_attention) with a pure-index sliding-window
    # block mask built beforehand by torch's API (no padding: the target the band path is held to);
    # SDPA = full attention without a mask (flash on CUDA); mask = SDPA with the dense band mask (T <= 16384)
    base = ["band", "blocked", "anchor", "SDPA", "mask"] if cuda() else ["band", "flex", "anchor", "SDPA", "mask"]
    for t, window in band_shapes(quick):
        for causal in (True, False):
            _fresh_compiles()
            q, k, v = qkv(t)
            anchor_mask = anchor_block_mask(t, window, causal, RUN["device"])
            for padding in ("none", "5% right"):
                key_mask = None if padding == "none" else (torch.arange(t)[None] < t - t // 20).to(RUN["device"])
                fwd_names = [n for n in base if n != "mask" or t <= 16384]
                fb_names = [n for n in fwd_names if cuda() or n in ("band", "SDPA", "mask")]
                mask = K.allowed_mask(t, t, causal=causal, window=window, key_mask=key_mask,
                                      device=RUN["device"]) if "mask" in fwd_names else None
                kw = dict(scale=D**-0.5, causal=causal, key_mask=key_mask)
                fns = {"band": lambda: K.band_attention(q, k, v, window=window, **kw),
                       "flex": lambda: K.band_attention(q, k, v, window=window, flex=True, **kw),
                       "blocked": lambda: K.band_attention(q, k, v, window=window, flex=False, **kw),
                       "anchor": lambda: anchor_flex()(  # CPU flex refuses inputs that require grad
                           *(x if torch.is_grad_enabled() else x.detach() for x in (q, k, v)),
                           block_mask=anchor_mask, scale=D**-0.5),
                       "SDPA": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=D**-0.5),
                       "mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=D**-0.5)}
                f = interleaved({n: fwd(fns[n]) for n in fwd_names}, repeats)
                fb = interleaved({n: fwd_bwd(fns[n], (q, k, v)) for n in fb_names}, max(3, repeats - 2))
                pairs = sum(min(i, window) + 1 + (0 if causal else min(t - 1 - i, window)) for i in range(t))
                limit = 4 * pairs * H * D / rate
                kind = band_flex.band_plan(t, window, causal, key_mask, q.device).kind if cuda() or \
                    "flex" in fwd_names else ""
                fb_anchor = f"{fb['band'] / fb['anchor']:.2f}x" if "anchor" in fb else "n/a"
                rows.append(["causal" if causal else "bidir", t, window, padding, kind,
                             *(ms(f.get(n, float("nan"))) for n in base),
                             f"**{f['band'] / f['anchor']:.2f}x**", f"{f['blocked'] / f['band']:.2f}x" if cuda()
                             else f"{f['band'] / f['flex']:.2f}x",
                             *(ms(fb.get(n, float("nan"))) for n in base), f"**{fb_anchor}**",
                             f"{fb['blocked'] / fb['band']:.2f}x" if cuda() else "n/a", ms(limit)])
                print(rows[-1], flush=True)
                mask = None  # free the T² mask before the next size
    second = "blocked/band" if cuda() else "band/flex"
    header = ["dir", "T", "w", "padding", "mask_mod kind", *(f"{n} fwd ms" for n in base),
              "band/anchor fwd", f"{second} fwd", *(f"{n} f+b ms" for n in base), "band/anchor f+b",
              "blocked/band f+b", "FLOP limit fwd ms"]
    return "\n\n".join([
        "### band (fwd = no-grad forward; f+b = forward+backward)",
        "band = `band_attention` as the models call it (CUDA: compiled flex_attention with the specialised "
        "mask_mod of the `mask_mod kind` column, or the blocked kernel where `band_flex.FLEX_BY_DEFAULT` says "
        "so; CPU: the blocked kernel); flex = `band_attention(flex=True)` (CPU: compiled flex_attention, no-grad "
        "only); blocked = `band_attention(flex=False)`; anchor = `torch.compile(flex_attention)` with a "
        "sliding-window block mask from a pure-index mask_mod built beforehand by torch's `create_block_mask` "
        "(no padding, not the project's code): band/anchor is the band path's cost over it (target <= 1.3x on "
        "CUDA); SDPA = full attention without a mask (flash on CUDA); mask = SDPA with the dense band mask "
        "(T <= 16384). nan: not run (CPU: no flex backward). Compiles happen in the warm-up call, not timed.",
        markdown_table(header, rows),
    ])


# ----------------------------------------------------------------------------- low rank


def bench_low_rank(quick: bool, rate: float, repeats: int) -> str:
    r = 16
    ts = [512, 2048] if quick else [512, 1024, 2048, 4096]
    rows, series = [], {"low_rank r=16 fwd+bwd": [], "dense SDPA D=64 fwd+bwd": [],
                        "unpadded SDPA fwd+bwd": []}
    for causal in (True, False):
        for t in ts:
            ql, kl, _ = qkv(t, dqk=r)
            q, k, v = qkv(t)
            qp, kp = (F.pad(x.detach(), (0, D - r)).requires_grad_() for x in (ql, kl))
            low = lambda: K.low_rank_attention(ql, kl, v, causal=causal)
            dense = lambda: K.dense_attention(q, k, v, scale=D**-0.5, causal=causal)
            unpadded = lambda: F.scaled_dot_product_attention(ql, kl, v, is_causal=causal, scale=r**-0.5)
            prepadded = lambda: F.scaled_dot_product_attention(qp, kp, v, is_causal=causal, scale=r**-0.5)
            fns = {"low": low, "dense": dense, "unpadded": unpadded, "prepadded": prepadded}
            inputs = {"low": (ql, kl, v), "dense": (q, k, v), "unpadded": (ql, kl, v), "prepadded": (qp, kp, v)}
            f = interleaved({n: fwd(fn) for n, fn in fns.items()}, repeats)
            fb = interleaved({n: fwd_bwd(fn, inputs[n]) for n, fn in fns.items()}, max(3, repeats - 2))
            pairs = t * (t + 1) // 2 if causal else t * t
            limit = 2 * pairs * H * (r + D) / rate
            rows.append(["causal" if causal else "bidir", t, ms(f["low"]), ms(f["dense"]), ms(f["unpadded"]),
                         ms(f["prepadded"]), f"**{f['dense'] / f['low']:.2f}x**", f"{f['dense'] / f['unpadded']:.2f}x",
                         f"{f['dense'] / f['prepadded']:.2f}x", ms(fb["low"]), ms(fb["dense"]), ms(fb["unpadded"]),
                         ms(fb["prepadded"]), f"**{fb['dense'] / fb['low']:.2f}x**",
                         f"{fb['dense'] / fb['unpadded']:.2f}x", f"{fb['dense'] / fb['prepadded']:.2f}x", ms(limit)])
            print(rows[-1], flush=True)
            if causal:
                for key, name in zip(series, ("low", "dense", "unpadded")):
                    series[key].append(ms(fb[name]))
    plot(plot_path("low_rank_time.png"), "low_rank r=16 vs dense, causal, fwd+bwd (H=8, D=64)", ts, series, "ms")
    return "\n\n".join([
        f"### low_rank (r = {r}, values D = {D}) against dense SDPA of the same shape",
        f"low_rank = `low_rank_attention` as the models call it (on {RUN['device']}: q, k "
        f"{'zero-padded from r to D' if K.pads_qk(RUN['device']) else 'at r, not padded'}, then SDPA: "
        "`kernels_dense.PAD_QK_TO_V`); unpadded = SDPA on q, k at r and v at D (CPU: its math path); "
        "prepadded = SDPA on q, k padded beforehand (the padding's cost is "
        "low_rank - prepadded). Ratios: dense time / candidate time (> 1: faster than dense).",
        markdown_table(["dir", "T", "low_rank fwd ms", "dense fwd ms", "unpadded fwd ms", "prepadded fwd ms",
                        "dense/low_rank fwd", "dense/unpadded fwd", "dense/prepadded fwd", "low_rank f+b ms",
                        "dense f+b ms", "unpadded f+b ms", "prepadded f+b ms", "dense/low_rank f+b",
                        "dense/unpadded f+b", "dense/prepadded f+b", "FLOP limit fwd ms (rank r)"], rows),
    ])


# ----------------------------------------------------------------------------- additive


def bench_additive(quick: bool, rate: float, repeats: int) -> str:
    a = 64
    if cuda():  # the target shape: T=2048, a=64
        ts = [2048] if quick else [256, 1024, 2048]
    else:
        ts = [256, 1024] if quick else [256, 512, 1024]
    rows, mem_rows = [], []
    series = {"tiled eager fwd+bwd": [], "tiled compiled fwd+bwd": [], "chunked eager fwd+bwd": [],
              "dense SDPA fwd+bwd": []}
    for causal in (False, True):
        for t in ts if not causal or cuda() else [t for t in ts if t <= 1024]:
            q, k, v = qkv(t, dqk=a, scale=0.5)
            w = (torch.randn(H, a) * a**-0.5).to(RUN["device"], RUN["dtype"]).requires_grad_()
            kw = dict(causal=causal)
            fns = {"tiled": lambda: K.additive_attention(q, k, v, w, **kw),
                   "compiled": lambda: K.additive_attention(q, k, v, w, compiled=True, **kw),
                   "chunked": lambda: anchors.additive_attention_chunked(q, k, v, w, **kw),
                   "dense": lambda: K.dense_attention(q, k, v, scale=D**-0.5, **kw)}
            if cuda():  # the previous CUDA tile (2^24 floats) beside the table's (ADDITIVE_TILES)
                big = K.additive_tile_sizes(H, t, a, budget=1 << 24, device_type="cuda")[0]
                fns["tiled 2^24"] = lambda: K.additive_attention(q, k, v, w, chunk_size=big, **kw)
            inputs = {"dense": (q, k, v)}
            if t > (2048 if cuda() else 1024):  # chunked: CPU seconds to minutes beyond
                del fns["chunked"]
            f = interleaved({n: fwd(fn) for n, fn in fns.items()}, repeats)
            fb = interleaved({n: fwd_bwd(fn, inputs.get(n, (q, k, v, w))) for n, fn in fns.items()},
                             max(2, repeats - 2))
            f.setdefault("chunked", float("nan"))
            fb.setdefault("chunked", float("nan"))
            triples = H * a * (t * (t + 1) // 2 if causal else t * t)
            gps = lambda s: triples / s / 1e9
            rows.append(["causal" if causal else "bidir", t, f"**{gps(f['tiled']):.2f}**",
                         f"**{gps(f['compiled']):.2f}**", f"{gps(f['chunked']):.2f}",
                         f"{f['chunked'] / f['tiled']:.1f}x", f"{f['chunked'] / f['compiled']:.1f}x",
                         f"{gps(fb['tiled']):.2f}", f"{gps(fb['compiled']):.2f}", f"{gps(fb['chunked']):.2f}",
                         f"{fb['chunked'] / fb['tiled']:.1f}x", f"{fb['chunked'] / fb['compiled']:.1f}x",
                         ms(f["tiled"]), ms(fb["tiled"]), ms(f["dense"]), ms(fb["dense"]),
                         f"{gps(f['tiled 2^24']):.2f}" if "tiled 2^24" in f else "n/a",
                         f"{gps(fb['tiled 2^24']):.2f}" if "tiled 2^24" in fb else "n/a"])
            print(rows[-1], flush=True)
            if not causal and not (cuda() and quick):  # the GPU session skips the memory rows
                for key, name in zip(series, ("tiled", "compiled", "chunked", "dense")):
                    series[key].append(ms(fb[name]))
                mem_mib = {n: mem(fwd_bwd(fn, inputs.get(n, (q, k, v, w)))) / 2**20 for n, fn in fns.items()}
                mem_rows.append([t, mem_mib["tiled"], mem_mib["compiled"], mem_mib.get("chunked", float("nan")),
                                 mem_mib["dense"]])
    if len(series["tiled eager fwd+bwd"]) > 1:
        plot(plot_path("additive_time.png"), f"additive a={a}, bidirectional, fwd+bwd (H=8)", ts, series, "ms")
    if len(mem_rows) > 1:
        plot(plot_path("additive_memory.png"), f"additive a={a}, bidirectional: peak memory of fwd+bwd",
             [row[0] for row in mem_rows], {name: [row[i] for row in mem_rows] for i, name in
                                            enumerate(["tiled eager", "tiled compiled", "chunked eager",
                                                       "dense SDPA"], start=1)}, "MiB")
    return "\n\n".join([
        f"### additive (a = {a}, Dv = {D}): throughput in G (query, key, dim) triples/s over the pairs read",
        "tiled = `additive_attention` (eager), compiled = `additive_attention(..., compiled=True)`, chunked = "
        "`anchors.additive_attention_chunked` (the previous kernel: eager chunks, checkpointed).",
        markdown_table(["dir", "T", "tiled fwd G/s", "compiled fwd G/s", "chunked fwd G/s", "tiled/chunked fwd",
                        "compiled/chunked fwd", "tiled f+b G/s", "compiled f+b G/s", "chunked f+b G/s",
                        "tiled/chunked f+b", "compiled/chunked f+b", "tiled fwd ms", "tiled f+b ms",
                        "dense SDPA fwd ms", "dense SDPA f+b ms", "tiled 2^24 fwd G/s (CUDA)",
                        "tiled 2^24 f+b G/s (CUDA)"], rows),
        "Peak memory of one forward+backward, bidirectional (MiB):",
        markdown_table(["T", "tiled eager", "tiled compiled", "chunked eager", "dense SDPA"], mem_rows),
    ])


# ----------------------------------------------------------------------------- lstmn


def bench_lstmn(quick: bool, rate: float, repeats: int) -> str:
    """lstmn_scan (eager step loop) beside the step-by-step reference; on CUDA also lstmn_scan with
    CUDA graphs (``cuda_graph=True``), and the reference only at T <= 256 there (it took most of the
    2026-12-04 stage's 50 s at T=1024). The issue's target: <= 150 ms f+b at T=1024, batch 8, hidden 256."""
    d, batch = 256, 8
    ts = ([1024] if quick else [256, 1024, 2048]) if cuda() else ([64, 256] if quick else [64, 128, 256])
    names = {"scan": "lstmn_scan", "graph": "lstmn_scan cuda_graph", "ref": "reference"}
    rows, series = [], {f"{label} fwd+bwd": [] for label in names.values()}
    torch.manual_seed(0)
    cell = LSTMNCell(d, d).to(RUN["device"], RUN["dtype"])
    with torch.no_grad():
        for p in cell.parameters():
            p.normal_(0, d**-0.5)
    params = tuple(cell.parameters())
    nan = float("nan")
    for t in ts:
        x = torch.randn(batch, t, d, device=RUN["device"], dtype=RUN["dtype"]).requires_grad_()
        fns = {"scan": lambda: K.lstmn_scan(cell, x)[0],
               "graph": lambda: K.lstmn_scan(cell, x, cuda_graph=True)[0],
               "ref": lambda: K.lstmn_reference(cell, x)[0]}
        if not cuda():
            del fns["graph"]
        elif t > 256:
            del fns["ref"]
        f = interleaved({n: fwd(fn) for n, fn in fns.items()}, max(2, repeats - 2))
        fb = interleaved({n: fwd_bwd(fn, (x, *params)) for n, fn in fns.items()}, max(2, repeats - 2))
        f_ = lambda n: ms(f.get(n, nan))
        fb_ = lambda n: ms(fb.get(n, nan))
        rows.append([t, f_("scan"), f_("graph"), f_("ref"), fb_("scan"), fb_("graph"), fb_("ref"),
                     f"**{fb_('ref') / fb_('scan'):.1f}x**", f"**{fb_('scan') / fb_('graph'):.2f}x**",
                     mem(fwd_bwd(fns["scan"], (x, *params))) / 2**20])
        print(rows[-1], flush=True)
        for n, label in names.items():
            series[f"{label} fwd+bwd"].append(fb_(n))
    if len(ts) > 1:
        plot(plot_path("lstmn_time.png"), f"LSTMN hidden {d}, batch {batch}: fwd+bwd", ts, series, "ms")
    return "\n\n".join([
        f"### lstmn (one direction, hidden {d}, input {d}, batch {batch})",
        "lstmn_scan = the eager step loop (hand-written backward through time); cuda_graph = the same with "
        "`cuda_graph=True` (CUDA only: its step loop replayed from a CUDA graph captured in the warm-up call); "
        "reference = `lstmn_reference`, step by step under autograd (not run on CUDA past T=256). nan: not run.",
        markdown_table(["T", "lstmn_scan fwd ms", "cuda_graph fwd ms", "reference fwd ms", "lstmn_scan f+b ms",
                        "cuda_graph f+b ms", "reference f+b ms", "ref/scan f+b", "scan/cuda_graph f+b",
                        "lstmn_scan f+b peak MiB"], rows),
    ])


SECTIONS = {"band": bench_band, "low_rank": bench_low_rank, "additive": bench_additive, "lstmn": bench_lstmn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run only these kernels")
    add_device_args(parser)
    args = parser.parse_args()
    check_device(args.device)
    RUN.update(device=args.device, dtype=DTYPES[args.dtype])
    RESULTS.mkdir(parents=True, exist_ok=True)
    repeats = 3 if args.quick else 5
    rate = matmul_rate(device=args.device, dtype=RUN["dtype"])
    flags = (" --quick" if args.quick else "") + (f" --only {' '.join(args.only)}" if args.only else "")
    flags += f" --device {args.device} --dtype {args.dtype}" if args.device != "cpu" or args.dtype != "fp32" else ""
    header = [f"# Kernel benchmarks{' (quick)' if args.quick else ''}", "",
              f"Machine: {device_line(args.device)}.",
              f"Measured {args.dtype} matmul rate: {rate / 1e9:.0f} GFLOP/s.",
              f"Command: `python benchmarks/bench_kernels.py{flags}`.",
              f"Tensors: {args.dtype} on {args.device}. Times: medians of interleaved repeats; compare within a row."]
    print("\n".join(header), flush=True)
    out = RESULTS / results_name(args.device, "kernels", args.quick, args.only)
    parts = []
    for name in args.only or SECTIONS:  # the file is rewritten after every section
        parts.append(SECTIONS[name](args.quick, rate, repeats))
        out.write_text("\n".join(header) + "\n\n" + "\n\n".join(parts) + "\n")
        print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    reexec_with_mmap_threshold()
    main()
