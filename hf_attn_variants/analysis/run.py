"""Model + texts -> tidy per-(layer, head) tables of attention metrics and ranks.

``load_for_analysis(path)`` gives a Variant model (stock checkpoints are converted to the dense
variant, numerically the stock model) and its tokenizer. ``analyze(model, tokenizer, texts)``
runs the texts in batches with every attention module capturing its weights and scores, and
returns one row per layer and head: the metrics of ``metrics.per_head_metrics`` (averaged over
all real query tokens), the ranks of ``rank.attention_ranks`` for the scores and the softmax
weights (averaged over texts), the ranks of the bilinear form, and the rollout summary per layer.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from .importance import attention_layers
from .metrics import DEFAULT_WINDOWS, per_query_metrics
from .rank import RANK_MEASURES, attention_ranks, bilinear_ranks
from .rollout import rollout

Tensor = torch.Tensor


def load_for_analysis(model_or_path, tokenizer=None, *, eager: bool = True):
    """A Variant model ready for capture (eval mode) and its tokenizer, from a path, Hub id or model."""
    import transformers

    import hf_attn_variants as hv

    model = model_or_path
    path = model_or_path if isinstance(model_or_path, (str, os.PathLike)) else None
    if path is not None:
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=True)
        if config.model_type in ("variant_bert", "variant_gpt2"):
            model = transformers.AutoModel.from_pretrained(path, trust_remote_code=True)
        else:
            model = hv.convert_from_dense(path)
    elif not any(True for _ in _variant_modules(model)):
        model = hv.convert_from_dense(model)
    if tokenizer is None and path is not None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def _variant_modules(model: nn.Module):
    from ..hfav_attention import VariantAttention

    return (m for m in model.modules() if isinstance(m, VariantAttention))


# name -> function(split) giving a corpus's texts. The tools ship none: the research package
# registers mr, snli and shakespeare (``hf_attn_variants_research.texts``), keeping the tools free of
# any import of the research code.
TEXT_SOURCES: dict[str, Callable[[str], list[str]]] = {}


def register_text_source(name: str, texts_of_split: Callable[[str], list[str]]) -> None:
    """Make ``load_texts(name)`` (and ``--texts name``) give ``texts_of_split(split)``."""
    TEXT_SOURCES[name] = texts_of_split


def load_texts(source: str, n: int | None = None, seed: int = 0, split: str = "train") -> list[str]:
    """Texts from a file (one per line) or a registered corpus (``TEXT_SOURCES``; the research
    package registers mr, snli: premise and hypothesis sentences, shakespeare: lines), n of them
    sampled with a fixed seed."""
    if os.path.exists(source):
        with open(source, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    elif source in TEXT_SOURCES:
        texts = TEXT_SOURCES[source](split)
    elif os.sep in source or source.endswith(".txt"):
        raise FileNotFoundError(f"texts={source!r}: no such file")
    else:
        known = sorted(TEXT_SOURCES) or "none (hf_attn_variants_research.texts registers mr, snli, shakespeare)"
        raise ValueError(f"texts={source!r}: not a file and not a registered text source; registered: {known}")
    if n is not None and n < len(texts):
        texts = random.Random(seed).sample(texts, n)
    return texts


def batches(tokenizer, texts: Sequence[str], batch_size: int = 32, max_length: int = 64,
            shuffle_tokens: bool = False, seed: int = 0) -> Iterator[dict]:
    """Tokenised batches (right padding), sorted by length for speed; ``shuffle_tokens`` permutes
    each text's tokens, special tokens kept in place (the shuffled-text baseline)."""
    rng = random.Random(seed)
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    special = set(tokenizer.all_special_ids)
    if shuffle_tokens:
        shuffled = []
        for ids in enc:
            pos = [i for i, t in enumerate(ids) if t not in special]
            vals = [ids[i] for i in pos]
            rng.shuffle(vals)
            ids = list(ids)
            for i, v in zip(pos, vals):
                ids[i] = v
            shuffled.append(ids)
        enc = shuffled
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    pad = tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), t), pad, dtype=torch.long)
        mask = torch.zeros(len(idx), t, dtype=torch.long)
        for row, i in enumerate(idx):
            ids[row, :len(enc[i])] = torch.tensor(enc[i])
            mask[row, :len(enc[i])] = 1
        sp = torch.zeros_like(mask, dtype=torch.bool)
        for s in special - {pad}:
            sp |= ids == s
        if not sp.any():  # no special tokens (GPT-2): the first token is the sink candidate
            sp[:, 0] = True
        yield {"input_ids": ids, "attention_mask": mask, "special": sp & mask.bool(), "index": idx}


def capture(model: nn.Module, batch: dict) -> tuple[Tensor, list[dict]]:
    """One forward with every attention module capturing: (output hidden states, per-layer
    {"weights", "scores"})."""
    layers = attention_layers(model)
    for _, m in layers:
        m.capture = True
    try:
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for _, m in layers:
            m.capture = False
    caps = [m.captured for _, m in layers]
    for _, m in layers:
        m.captured = None
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0], caps


def analyze(model: nn.Module, tokenizer, texts: Sequence[str], *, condition: str = "model", batch_size: int = 32,
            max_length: int = 64, windows=DEFAULT_WINDOWS, shuffle_tokens: bool = False, ranks: bool = True,
            progress: bool = True, seed: int = 0) -> dict[str, list[dict]]:
    """Per-(layer, head) rows ("heads") and per-layer rollout rows ("layers") for the given texts."""
    layers = attention_layers(model)
    n_layers, n_heads = len(layers), layers[0][1].num_heads
    sums: dict[str, Tensor] = {}
    count = torch.zeros(n_layers, n_heads)
    rank_sums: dict[str, Tensor] = {}
    n_texts = 0
    roll_layers = torch.zeros(n_layers, 2)
    n_tokens = 0
    causal = bool(getattr(model.config, "is_causal", False))
    it = list(batches(tokenizer, texts, batch_size, max_length, shuffle_tokens, seed))
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"texts ({condition})", unit="batch")
    for batch in it:
        _, caps = capture(model, batch)
        mask = batch["attention_mask"].bool()
        weights = [c["weights"] for c in caps]
        for layer, w in enumerate(weights):
            pq = per_query_metrics(w, mask, windows=windows, special_positions=batch["special"], causal=causal)
            for k, v in pq.items():  # v (B, H, T), NaN at padding
                sums.setdefault(k, torch.zeros(n_layers, n_heads))[layer] += v.nan_to_num(0.0).sum(dim=(0, 2))
            count[layer] += mask.sum().item()
            if ranks:
                for level, mats in (("softmax", w), ("scores", caps[layer]["scores"])):
                    if mats is None:
                        continue
                    r = attention_ranks(mats, mask)
                    for m in RANK_MEASURES:
                        key = f"rank_{level}_{m}"
                        rank_sums.setdefault(key, torch.zeros(n_layers, n_heads))[layer] += r[m] * len(mask)
        n_texts += len(mask)
        r = rollout(weights, key_mask=mask)  # (L, B, T, T)
        t = mask.shape[1]
        dist = (torch.arange(t)[:, None] - torch.arange(t)[None]).abs().float()
        sink = batch["special"].float()[None, :, None, :]  # (1, B, 1, T)
        real_q = mask.float()[None, :, :]  # (1, B, T)
        roll_layers[:, 0] += ((r * sink).sum(-1) * real_q).sum(dim=(1, 2))
        roll_layers[:, 1] += ((r * dist).sum(-1) * real_q).sum(dim=(1, 2))
        n_tokens += mask.sum().item()
    rows = []
    bilinear = {}
    for layer, (_, module) in enumerate(layers):
        if module.qk_heads == n_heads:
            bilinear[layer], _ = bilinear_ranks(module)
    for layer in range(n_layers):
        for h in range(n_heads):
            row = {"condition": condition, "layer": layer, "head": h, "variant": layers[layer][1].variant}
            row.update({k: (v[layer, h] / count[layer, h]).item() for k, v in sums.items()})
            row.update({k: (v[layer, h] / n_texts).item() for k, v in rank_sums.items()})
            if layer in bilinear:
                row.update({f"rank_bilinear_{m}": bilinear[layer][m][h].item() for m in RANK_MEASURES})
                row["qk_dim"] = layers[layer][1].qk_dim
            rows.append(row)
    layer_rows = [{"condition": condition, "layer": layer, "rollout_sink": (roll_layers[layer, 0] / n_tokens).item(),
                   "rollout_distance": (roll_layers[layer, 1] / n_tokens).item()} for layer in range(n_layers)]
    return {"heads": rows, "layers": layer_rows}


def random_init_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """A freshly initialised model of the same class and config (the random-init baseline)."""
    torch.manual_seed(seed)
    fresh = type(model)(model.config)
    return fresh.eval()
