"""The ``analyze`` and ``convert`` commands of the ``hf-attn-variants`` command line."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from .metrics import DEFAULT_WINDOWS
from .paths import check_model_path


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, so that it is never changed, even briefly)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the user's umask (mkstemp/mkdtemp give 0600/0700)."""
    return (0o777 if directory else 0o666) & ~current_umask()


def write_table(rows: list[dict], path: str | os.PathLike) -> Path:
    """Rows (dicts) -> CSV (union of keys, in first-seen order), written to a temp file then renamed."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, user_mode())
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def write_json(obj, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.fchmod(fd, user_mode())
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- losses for importance

def lm_loss_fn(model, seed: int = 0):
    """Per-example loss for models with an LM head: masked-LM (15% of real non-special tokens,
    seeded) or next-token; None for models without one."""
    config = model.config
    if hasattr(model, "cls"):  # BERT masked LM
        mask_id = getattr(config, "mask_token_id", None)

        def mlm(m, batch):
            ids, att, special = batch["input_ids"], batch["attention_mask"], batch["special"]
            g = torch.Generator().manual_seed(seed + int(ids.sum()))
            pick = (torch.rand(ids.shape, generator=g) < 0.15) & att.bool() & ~special
            pick[:, 1] |= ~pick.any(dim=1) & att[:, 1].bool()  # at least one target per text
            inputs = ids.masked_fill(pick, batch.get("mask_id", mask_id if mask_id is not None else 0))
            logits = m(input_ids=inputs, attention_mask=att).logits
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
            return (ce * pick).sum(1) / pick.sum(1).clamp_min(1)
        return mlm
    if hasattr(model, "lm_head"):
        def clm(m, batch):
            ids, att = batch["input_ids"], batch["attention_mask"]
            logits = m(input_ids=ids, attention_mask=att).logits[:, :-1]
            ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
            keep = att[:, 1:].float()
            return (ce * keep).sum(1) / keep.sum(1).clamp_min(1)
        return clm
    return None


# ----------------------------------------------------------------------------- analyze

def analyze_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-attn-variants analyze",
                                description="Per-layer/head attention metrics, ranks, rollout and head importance "
                                            "of a stock or Variant BERT/GPT-2 model, with baselines.")
    p.add_argument("model", help="path or Hub id of a stock or Variant BERT/GPT-2 checkpoint")
    p.add_argument("--texts", required=True, help="a text file (one per line) or mr | snli | shakespeare")
    p.add_argument("--out", required=True, help="output folder (tables, JSON, PNG)")
    p.add_argument("--n", type=int, default=200, help="number of texts sampled (default 200)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--windows", default=",".join(map(str, DEFAULT_WINDOWS)), help="comma-separated w list")
    p.add_argument("--text-index", type=int, default=0, help="which text the heatmaps show")
    p.add_argument("--no-baselines", action="store_true", help="skip the random-init and shuffled-token baselines")
    p.add_argument("--no-importance", action="store_true", help="skip head importance (models with an LM head)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def analyze(argv: list[str] | None = None) -> dict:
    from . import plots
    from .importance import attention_layers, gradient_importance, pruning_curve, uniform_replacement_delta
    from .rank import bilinear_ranks
    from .run import analyze as run_analyze
    from .run import batches, capture, load_texts, random_init_like

    args = analyze_parser().parse_args(argv)
    check_model_path(args.model)
    try:
        windows = tuple(int(w) for w in args.windows.split(","))
    except ValueError as e:
        raise ValueError(f"--windows={args.windows!r}: expected comma-separated integers") from e
    torch.manual_seed(args.seed)
    out = Path(args.out)
    model, tokenizer = _load_with_head(args.model)
    texts = load_texts(args.texts, args.n, seed=args.seed)
    kw = dict(batch_size=args.batch_size, max_length=args.max_length, windows=windows, progress=not args.quiet)
    base = _base(model)
    results = [run_analyze(base, tokenizer, texts, condition="model", **kw)]
    if not args.no_baselines:
        results.append(run_analyze(random_init_like(base, args.seed), tokenizer, texts, condition="random_init", **kw))
        results.append(run_analyze(base, tokenizer, texts, condition="shuffled", shuffle_tokens=True, **kw))
    heads = [r for res in results for r in res["heads"]]
    layers = [r for res in results for r in res["layers"]]
    files = {"heads": write_table(heads, out / "heads.csv"), "layers": write_table(layers, out / "layers.csv")}

    summary = {"model": str(args.model), "texts": args.texts, "n_texts": len(texts), "windows": list(windows)}
    loss_fn = None if args.no_importance else lm_loss_fn(model, args.seed)
    if loss_fn is not None:
        bl = list(batches(tokenizer, texts, args.batch_size, args.max_length))
        for b in bl:
            b["mask_id"] = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else 0
        grad = gradient_importance(model, bl, loss_fn)
        base_loss, delta = uniform_replacement_delta(model, bl, loss_fn, progress=not args.quiet)
        n_heads = grad.numel()
        kept = sorted({n_heads, *range(0, n_heads, max(1, n_heads // 10))}, reverse=True)
        curve = pruning_curve(model, bl, lambda m, bs: -_mean(m, bs, loss_fn), grad, kept)
        imp_rows = [{"layer": layer, "head": h, "grad_importance": grad[layer, h].item(),
                     "uniform_delta_loss": delta[layer, h].item()}
                    for layer in range(grad.shape[0]) for h in range(grad.shape[1])]
        files["importance"] = write_table(imp_rows, out / "importance.csv")
        files["pruning"] = write_table([{"heads_kept": r["heads_kept"], "loss": -r["metric"]} for r in curve],
                                       out / "pruning.csv")
        summary["base_loss"] = base_loss
        plots.lines({"loss": ([r["heads_kept"] for r in curve], [-r["metric"] for r in curve])},
                    out / "pruning_curve.png", "heads kept", "loss")
        plots.head_maps(imp_rows, ["grad_importance", "uniform_delta_loss"], out / "importance_maps.png")
    else:
        summary["importance"] = "skipped: the model has no LM head (or --no-importance)"

    model_rows = results[0]["heads"]
    plots.head_maps(model_rows, ["mean_distance", "sink_mass", "prev_token", "rank_softmax_entropy"],
                    out / "head_maps.png", title=str(args.model))
    plots.scatter(heads, f"mass_within_{windows[min(2, len(windows) - 1)]}", "rank_softmax_entropy",
                  out / "locality_vs_rank.png", groups="condition")
    idx = min(max(args.text_index, 0), len(texts) - 1)
    one = next(batches(tokenizer, [texts[idx]], 1, args.max_length))
    _, caps = capture(base, one)
    weights = torch.stack([c["weights"][0] for c in caps]).numpy()  # (L, H, T, T)
    tokens = tokenizer.convert_ids_to_tokens(one["input_ids"][0].tolist())
    plots.attention_heatmaps(weights, tokens, out / "attention_heatmaps.png")
    spectra = {i: bilinear_ranks(m)[1].numpy() for i, (_, m) in enumerate(attention_layers(base))
               if m.qk_heads == m.num_heads}
    if spectra:
        plots.spectra(spectra, out / "bilinear_spectra.png", title="singular values of W_Q^T W_K per head")
    summary["files"] = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    write_json(summary, out / "summary.json")
    print(f"wrote {len(summary['files'])} files to {out}")
    return summary


def _mean(model, bs, loss_fn) -> float:
    with torch.no_grad():
        return torch.cat([loss_fn(model, b) for b in bs]).mean().item()


def _base(model):
    """The encoder/decoder body (its forward returns hidden states) of a model with a head."""
    for name in ("bert", "transformer"):
        if hasattr(model, name):
            return getattr(model, name)
    return model


def _load_with_head(path):
    """A Variant model, with its LM head when the checkpoint has one, and the tokenizer."""
    import transformers

    import hf_attn_variants as hv

    from .run import load_for_analysis

    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=True)
    archs = config.architectures or []
    if config.model_type in ("variant_bert", "variant_gpt2"):
        for auto in (transformers.AutoModelForMaskedLM, transformers.AutoModelForCausalLM):
            if any(a.endswith(("ForMaskedLM", "LMHeadModel")) for a in archs):
                try:
                    model = auto.from_pretrained(path, trust_remote_code=True)
                    return load_for_analysis(model, transformers.AutoTokenizer.from_pretrained(path))
                except ValueError:
                    continue
        return load_for_analysis(path)
    model = hv.convert_from_dense(path)  # uses the checkpoint's architecture (head kept)
    return load_for_analysis(model, transformers.AutoTokenizer.from_pretrained(path))


# ----------------------------------------------------------------------------- convert

def convert_parser() -> argparse.ArgumentParser:
    from hf_attn_variants.hfav_variants import BAND_COMBINE, VARIANTS

    p = argparse.ArgumentParser(prog="hf-attn-variants convert",
                                description="Convert a stock dense BERT/GPT-2 checkpoint to a variant "
                                            "(convert_from_dense) and write a Hub-ready folder.")
    p.add_argument("src", help="path or Hub id of a stock checkpoint or of a dense Variant model")
    p.add_argument("--variant", required=True, choices=tuple(VARIANTS), help="attention_variant (the registry's)")
    p.add_argument("--rank", type=int, help="attention_rank r")
    p.add_argument("--window", type=int, help="attention_window w")
    p.add_argument("--global-tokens", type=int, help="attention_global_tokens g (band; needs a build that has it)")
    p.add_argument("--band-combine", choices=tuple(BAND_COMBINE), help="band_combine for low_rank_band")
    p.add_argument("--out", required=True, help="output folder")
    return p


def convert(argv: list[str] | None = None) -> dict:
    import transformers

    import hf_attn_variants as hv
    from hf_attn_variants.convert import derived_pairs

    from .rank import bilinear_spectrum

    args = convert_parser().parse_args(argv)
    check_model_path(args.src)
    fields = {"attention_variant": args.variant}
    for key, value in (("attention_rank", args.rank), ("attention_window", args.window),
                       ("attention_global_tokens", args.global_tokens), ("band_combine", args.band_combine)):
        if value is not None:
            fields[key] = value
    source = hv.convert_from_dense(args.src)  # dense Variant: numerically the stock model
    model = hv.convert_from_dense(args.src, **fields)
    rows = []
    src_layers = [m for m in source.modules() if isinstance(m, hv.hfav_attention.VariantAttention)]
    new_layers = [m for m in model.modules() if isinstance(m, hv.hfav_attention.VariantAttention)]
    for i, (src, new) in enumerate(zip(src_layers, new_layers)):
        for pair in derived_pairs(new):  # the low-rank pairs its spec draws: set by SVD
            if pair.rank is None:
                continue
            r = pair.rank
            for h in pair.heads:
                s = bilinear_spectrum(src, h).double()
                kept = (s[:r].square().sum() / s.square().sum()).item()
                rows.append({"layer": i, "head": h, "rank": r, "energy_kept": kept})
    if rows:
        print(f"SVD energy kept at r={rows[0]['rank']} (layer x head):")
        for i in sorted({r['layer'] for r in rows}):
            vals = " ".join(f"{r['energy_kept']:.3f}" for r in rows if r["layer"] == i)
            print(f"  layer {i}: {vals}")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(args.src)
    except (OSError, ValueError):
        tokenizer = None
    desc = ", ".join(f"{k}={v}" for k, v in fields.items())
    card = {"model_name": Path(args.out).name, "base_model": str(args.src),
            "training": f"Converted without training from `{args.src}` by `hf-attn-variants convert` ({desc})."}
    folder = hv.save_hub_folder(model, tokenizer, args.out, card_data=card)
    if rows:
        write_json({"fields": fields, "energy_kept": rows}, folder / "svd_energy.json")
    print(f"wrote {folder}")
    return {"folder": str(folder), "energy_kept": rows}
