"""Does attention help as inputs grow? Bahdanau et al. 2015's length claim, on several dates at once.

Usage:
    python -m hf_attn_variants_research.dates_length run [--quick] [--models additive,mean] [--seeds 0,1,2]
    python -m hf_attn_variants_research.dates_length report      # tables + figure from the committed records

Bahdanau et al. (their Figure 2) show that an encoder-decoder whose decoder reads only a fixed-length summary
of the source (RNNenc) degrades as sentences grow, while the attentive one (RNNsearch) does not. Here the
source is k = 1..5 dates written in mixed locales and formats (``dates.py``), joined by " ; ", and the
target their ISO forms joined by spaces: "3/14/21 ; mardi 3 avril 2029" -> "2021-03-14 2029-04-03". The
source grows with k (about 16 to 90 characters) and so does what the decoder must reproduce.

Models: ``transformers.EncoderDecoderModel`` of a Variant BERT encoder and a Variant GPT-2 decoder (character
tokens, hidden 64, 2 layers, 2 heads each, dense self-attention), which differ only in the decoder's
cross-attention (``cross_attention_variant``): ``additive`` (Bahdanau's alignment model), ``dense``
(dot product), ``mean`` (no attention: every decoder position reads the mean of the encoder's values, a
fixed 64-number summary: the RNNenc baseline). Same data order, steps and learning rate for all.

Each (model, seed) writes a record (settings, code version, per-example test results) under
``runs/dates_length/records``; ``run`` packs them into ``results/dates/length-records.jsonl.gz`` (committed)
and ``report`` writes ``results/dates/length.md`` and ``length.png`` from that file alone: exact match by
number of dates k, mean over seeds with a Student t interval over seeds, and paired differences to
``additive`` (same seed, same test examples) with Bonferroni intervals over the comparisons made.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np

from . import dates

OUT = Path("runs/dates_length")
RESULTS = Path("results/dates")
RECORDS = RESULTS / "length-records.jsonl.gz"
SETTINGS = {
    "max_dates": 5, "train_steps": 2000, "batch_size": 64, "lr": 2e-3, "warmup": 0.05, "weight_decay": 0.01,
    "hidden": 64, "layers": 2, "heads": 2, "intermediate": 128, "dropout": 0.1,
    "validation_size": 500, "test_size": 2000, "eval_every": 500, "separator": " ; ",
}
QUICK = {"train_steps": 20, "validation_size": 32, "test_size": 64, "eval_every": 10, "batch_size": 16}
MODELS = ("additive", "dense", "mean")
BASELINE = "additive"


# ----------------------------------------------------------------------------- the data


def compose(pool: dict[str, list[str]], n: int, max_dates: int, seed) -> dict[str, list]:
    """n examples of k ~ U{1..max_dates} dates drawn from ``pool`` (``dates.generate`` rows): source = the
    written dates joined by the separator, target = their ISO forms joined by spaces."""
    rng = np.random.default_rng(seed)
    size, sep = len(pool["source"]), SETTINGS["separator"]
    out: dict[str, list] = {"source": [], "target": [], "k": []}
    for _ in range(n):
        k = int(rng.integers(1, max_dates + 1))
        picks = rng.integers(0, size, k)
        out["source"].append(sep.join(pool["source"][i] for i in picks))
        out["target"].append(" ".join(pool["target"][i] for i in picks))
        out["k"].append(k)
    return out


def build_splits(settings: dict) -> dict[str, dict]:
    """Train / validation / test, each composed from its own split of single dates (no test date's
    written form occurs in train). Deterministic."""
    single = dates.build_dates()
    need = {"train": settings["train_steps"] * settings["batch_size"], "validation": settings["validation_size"],
            "test": settings["test_size"]}
    return {name: compose(single[name].to_dict(), n, settings["max_dates"], [dates.DATES_SEED, 7, i])
            for i, (name, n) in enumerate(need.items())}


class Chars:
    """Character vocabulary: [PAD]=0, [BOS]=1, [EOS]=2, then every character of the data, sorted."""

    def __init__(self, texts):
        self.chars = sorted({c for t in texts for c in t})
        self.index = {c: i + 3 for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars) + 3

    def encode(self, texts: list[str], eos: bool = True):
        import torch

        rows = [[self.index[c] for c in t] + ([2] if eos else []) for t in texts]
        out = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)  # (B, T), right-padded with 0
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out

    def decode(self, ids) -> str:
        chars = []
        for i in ids:
            if i == 2:
                break
            if i >= 3:
                chars.append(self.chars[i - 3])
        return "".join(chars)


# ----------------------------------------------------------------------------- the model


def build_model(cross: str, vocab: int, settings: dict, max_source: int, max_target: int):
    from transformers import EncoderDecoderModel

    import hf_attn_variants as hv

    s = settings
    encoder = hv.VariantBertModel(hv.VariantBertConfig(
        vocab_size=vocab, hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        intermediate_size=s["intermediate"], max_position_embeddings=max_source, pad_token_id=0,
        hidden_dropout_prob=s["dropout"], attention_probs_dropout_prob=s["dropout"]), add_pooling_layer=False)
    decoder = hv.VariantGPT2LMHeadModel(hv.VariantGPT2Config(
        vocab_size=vocab, n_embd=s["hidden"], n_layer=s["layers"], n_head=s["heads"], n_inner=s["intermediate"],
        n_positions=max_target, add_cross_attention=True, is_decoder=True, cross_attention_variant=cross,
        resid_pdrop=s["dropout"], embd_pdrop=s["dropout"], attn_pdrop=s["dropout"],
        pad_token_id=0, bos_token_id=1, eos_token_id=2))
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.bos_token_id, config.eos_token_id, config.pad_token_id = 1, 1, 2, 0
    return model


def exact_matches(model, chars: Chars, split: dict, max_new: int, batch: int = 250) -> tuple[list[int], list[int]]:
    """Greedy decoding -> per example: whole output exact (0/1), and how many of its k dates are right
    (the i-th generated ISO date equals the i-th target date)."""
    import torch

    exact, dates_right = [], []
    model.eval()
    with torch.no_grad():
        for lo in range(0, len(split["source"]), batch):
            src = chars.encode(split["source"][lo:lo + batch])
            out = model.generate(input_ids=src, attention_mask=(src != 0).long(), max_new_tokens=max_new,
                                 do_sample=False, num_beams=1)
            for ids, target in zip(out.tolist(), split["target"][lo:lo + batch]):
                text = chars.decode(ids[1:])
                exact.append(int(text == target))
                dates_right.append(sum(a == b for a, b in zip(text.split(" "), target.split(" "))))
    model.train()
    return exact, dates_right


# ----------------------------------------------------------------------------- one run


def run_one(cross: str, seed: int, settings: dict, splits: dict) -> dict:
    """Train one model for ``train_steps`` batches (the same batches, in the same order, for every model
    of a seed) and evaluate it; returns the record."""
    import torch

    from .experiments import code_version, set_determinism

    set_determinism(seed)
    chars = Chars(splits["train"]["source"] + splits["train"]["target"])
    max_source = max(len(s) for sp in splits.values() for s in sp["source"]) + 2
    max_target = max(len(t) for sp in splits.values() for t in sp["target"]) + 2
    model = build_model(cross, len(chars), settings, max_source, max_target)
    steps, bs = settings["train_steps"], settings["batch_size"]
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
    warm = max(1, int(settings["warmup"] * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then linear decay to 0
        opt, lambda i: min((i + 1) / warm, max(0.0, (steps - i) / (steps - warm))))
    order = np.random.default_rng(seed).permutation(len(splits["train"]["source"]))  # the seed's data order
    train = splits["train"]
    losses, val_curve, start = [], [], time.time()
    for step in range(steps):
        rows = order[step * bs:(step + 1) * bs]
        src = chars.encode([train["source"][i] for i in rows])
        tgt = chars.encode([train["target"][i] for i in rows])
        labels = tgt.masked_fill(tgt == 0, -100)
        loss = model(input_ids=src, attention_mask=(src != 0).long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if (step + 1) % settings["eval_every"] == 0 or step + 1 == steps:
            exact, _ = exact_matches(model, chars, splits["validation"], max_target)
            val_curve.append([step + 1, float(np.mean(exact))])
    train_seconds = time.time() - start
    exact, right = exact_matches(model, chars, splits["test"], max_target)
    test = splits["test"]
    return {
        "model": cross, "seed": seed, "settings": settings, "code": code_version(),
        "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(train_seconds, 1),
        "train_loss_curve": [[i + 1, round(float(np.mean(losses[max(0, i - 49):i + 1])), 4)]
                             for i in range(49, steps, max(1, steps // 20))],
        "val_curve": val_curve, "test_exact": float(np.mean(exact)),
        "test": {"k": test["k"], "source_chars": [len(s) for s in test["source"]], "exact": exact,
                 "dates_right": right},
        "torch": torch.__version__,
    }


def record_path(cross: str, seed: int, tag: str = "") -> Path:
    return OUT / ("records" + (f"-{tag}" if tag else "")) / f"{cross}__seed={seed}.json"


def results_name(stem: str, tag: str = "") -> Path:
    """results/dates/<stem>[-<tag>]<suffixes>: length-records.jsonl.gz, length-table.md, length.png."""
    name, dot, suffix = stem.partition(".")
    return RESULTS / (name + (f"-{tag}" if tag else "") + dot + suffix)


def pack(paths: list[Path], tag: str = "") -> None:
    """The records as one gzip JSON-lines file, written to a temp path and renamed (mtime 0: reproducible)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = results_name("length-records.jsonl.gz", tag)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        for p in sorted(paths):
            f.write((json.dumps(json.loads(p.read_text()), sort_keys=True) + "\n").encode())
    tmp.replace(target)


# ----------------------------------------------------------------------------- the report


def load_records(path: Path = RECORDS) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m hf_attn_variants_research.dates_length run` first")
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def by_k(record: dict, field: str = "exact") -> dict[int, float]:
    """Per number of dates k: the mean of a per-example result (exact match, or the fraction of dates right)."""
    k = np.asarray(record["test"]["k"])
    values = np.asarray(record["test"][field], dtype=float) / (k if field == "dates_right" else 1)
    return {int(j): float(values[k == j].mean()) for j in np.unique(k)}


def summary(records: list[dict]) -> dict:
    """{model: {"k": {k: (mean, lo, hi, per-seed)}, "all": (...), "parameters", "seeds", "seconds"}} and
    paired differences to BASELINE per k (t over seeds; Bonferroni over every comparison in the table)."""
    from .exp_report import seed_difference, t_interval

    models = sorted({r["model"] for r in records}, key=lambda m: MODELS.index(m) if m in MODELS else 99)
    out: dict = {"models": {}, "diffs": {}}
    for m in models:
        rs = sorted((r for r in records if r["model"] == m), key=lambda r: r["seed"])
        ks = sorted(by_k(rs[0]))
        per = {j: [by_k(r)[j] for r in rs] for j in ks}
        overall = [r["test_exact"] for r in rs]
        out["models"][m] = {"k": {j: (float(np.mean(v)), *t_interval(v), v) for j, v in per.items()},
                            "all": (float(np.mean(overall)), *t_interval(overall), overall),
                            "parameters": rs[0]["parameters"], "seeds": [r["seed"] for r in rs],
                            "seconds": float(np.mean([r["seconds"] for r in rs]))}
    base = {r["seed"]: r for r in records if r["model"] == BASELINE}
    others = [m for m in models if m != BASELINE]
    ks = sorted(by_k(next(iter(base.values())))) if base else []
    n_comp = len(others) * len(ks)
    for m in others if base else []:  # no additive records (a partial run): no paired differences
        pairs = [(r, base[r["seed"]]) for r in records if r["model"] == m and r["seed"] in base]
        if not pairs:
            continue
        out["diffs"][m] = {j: seed_difference([by_k(a)[j] - by_k(b)[j] for a, b in pairs], k=n_comp) for j in ks}
    out["comparisons"] = n_comp
    return out


def fmt_interval(mean: float, lo: float, hi: float) -> str:
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if not math.isnan(lo) else f"{mean:.3f} (one seed)"


def report(records: list[dict]) -> str:
    from .exp_report import t_interval

    s = summary(records)
    first = records[0]["settings"]
    ks = sorted(next(iter(s["models"].values()))["k"])
    lines = ["| cross-attention | parameters | seeds | all | " + " | ".join(f"k = {j}" for j in ks) + " |",
             "|---|---:|---:|---|" + "---|" * len(ks)]
    for m, row in s["models"].items():
        lines.append(f"| {m} | {row['parameters']:,} | {len(row['seeds'])} | {fmt_interval(*row['all'][:3])} | "
                     + " | ".join(fmt_interval(*row["k"][j][:3]) for j in ks) + " |")
    right = ["| cross-attention | " + " | ".join(f"k = {j}" for j in ks) + " |", "|---|" + "---|" * len(ks)]
    for m in s["models"]:
        rs = sorted((r for r in records if r["model"] == m), key=lambda r: r["seed"])
        right.append(f"| {m} | " + " | ".join(fmt_interval(float(np.mean(v)), *t_interval(v)) for v in
                                                ([by_k(r, "dates_right")[j] for r in rs] for j in ks)) + " |")
    diff = ["| vs additive | " + " | ".join(f"k = {j}" for j in ks) + " |", "|---|" + "---|" * len(ks)]
    for m, per in s["diffs"].items():
        diff.append(f"| {m} − additive | " + " | ".join(
            f"{d['mean']:+.3f} [{d['bonf_lo']:+.3f}, {d['bonf_hi']:+.3f}]" if d["seeds"] > 1 else
            f"{d['mean']:+.3f} (one seed: no interval, no claim)" for d in (per[j] for j in ks)) + " |")
    codes = sorted({r["code"]["hash"] for r in records})
    return "\n".join([
        "Exact match on the test set (2,000 examples, greedy decoding), by number of dates k in the source: mean over "
        "seeds [95 % Student t interval over seeds]. An example counts only if its whole output is right.", "",
        *lines, "",
        "Fraction of the k dates right (the i-th generated ISO date equals the i-th target date), mean over seeds "
        "[95 % t interval over seeds]:", "", *right, "",
        *([f"Paired differences in exact match to additive (same seed, same test examples), mean [Bonferroni 95 % t "
           f"interval over seeds, k = {s['comparisons']} comparisons]:", "", *diff, ""] if s["diffs"] else
          ["No additive records: no paired differences.", ""]),
        f"Settings: {first['train_steps']} steps of batch {first['batch_size']} (each example seen once), AdamW lr "
        f"{first['lr']}, hidden {first['hidden']}, {first['layers']} layers, {first['heads']} heads, dropout "
        f"{first['dropout']}. Code version(s): {', '.join(codes)}. Mean training seconds per run: "
        + ", ".join(f"{m} {row['seconds']:.0f}" for m, row in s["models"].items()) + ".",
    ])


def plot(records: list[dict], path: Path) -> None:
    """Exact match and the fraction of dates right against k, mean over seeds with t-interval bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .exp_report import t_interval

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, field, ylabel in ((axes[0], "exact", "test exact match (all k dates)"),
                              (axes[1], "dates_right", "fraction of the k dates right")):
        for m in MODELS:
            rs = [r for r in records if r["model"] == m]
            if not rs:
                continue
            ks = sorted(by_k(rs[0]))
            per = [[by_k(r, field)[j] for r in rs] for j in ks]
            bands = [t_interval(v) for v in per]
            ax.plot(ks, [float(np.mean(v)) for v in per], marker="o",
                    label=f"{m} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
            ax.fill_between(ks, [b[0] for b in bands], [b[1] for b in bands], alpha=0.2)
        ax.set_xlabel("dates in the source (k)")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.02)
        ax.set_xticks(ks)
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="lower center", ncol=len(MODELS),
               frameon=False)  # below the panels: inside, it covered a curve
    fig.suptitle("Attention (additive) against a fixed summary (mean) as inputs grow; bands: 95 % t interval "
                 "over seeds", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)


def write_report(tag: str = "") -> None:
    records = load_records(results_name("length-records.jsonl.gz", tag))
    plot(records, results_name("length.png", tag))
    text = report(records)
    target = results_name("length-table.md", tag)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(target)
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="a smoke test: tiny sizes, records under runs/ only")
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: SETTINGS['train_steps'])")
    parser.add_argument("--tag", default="", help="a name for a run with other settings (--steps): its records and "
                        "results files get the suffix -<tag>, kept apart from the main run's")
    args = parser.parse_args(argv)
    if args.steps and not args.tag:
        parser.error("--steps needs a --tag: records of another budget must not mix with the main run's")
    if args.command == "report":
        write_report(args.tag)
        return 0
    import torch

    torch.set_num_threads(1)
    settings = {**SETTINGS, **(QUICK if args.quick else {}),
                **({"train_steps": args.steps, "eval_every": max(1, args.steps // 6)} if args.steps else {})}
    splits = build_splits(settings)
    done = []
    for seed in (int(x) for x in args.seeds.split(",")):
        for cross in args.models.split(","):
            quick = OUT / "quick" / f"{cross}__seed={seed}.json"
            path = quick if args.quick else record_path(cross, seed, args.tag)
            if path.exists() and json.loads(path.read_text())["settings"] == settings:
                done.append(path)
                continue  # resumable: a record with these settings exists
            record = run_one(cross, seed, settings, splits)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(path)
            done.append(path)
            print(f"{cross} seed {seed}: test exact {record['test_exact']:.3f}, {record['seconds']:.0f} s", flush=True)
    if not args.quick:
        pack(list(record_path("x", 0, args.tag).parent.glob("*.json")), args.tag)
        write_report(args.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
