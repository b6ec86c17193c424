"""An interactive attention viewer in one self-contained HTML file (a tool, not Hub code).

``view(model, tokenizer, text)`` returns an HTML fragment for a notebook (``IPython.display.HTML``);
``hf-attn-variants view MODEL --text ... --out page.html`` writes a whole page. The page has no
external URL: its data (the model's ``output_attentions``, per-head metrics, thumbnails, singular
values) and its code (``viewer_assets/viewer.js``, ``viewer.css``) are inline, so it opens from
disk in any browser, offline.

Views (bertviz-style, for every variant and for stock BERT / GPT-2):
- head view: the tokens on both sides, lines weighted by attention, a layer selector, head toggles;
- model view: a layer x head grid of thumbnails (precomputed here, max-pooled); click one to open it;
- matrix view: the heatmap of one head, the band window (w, and the global tokens when set) outlined
  for band heads, the LSTMN intra-attention over its tape (with the zero slot), and the singular
  values of the head's pre-softmax score matrix beside it;
- per-head numbers of ``analysis.metrics.per_head_metrics`` on hover.
Compare mode lays two models on the same text side by side.

Data layout (JSON inside ``<script type="application/json">``): ``{"version": 1, "models": [...]}``
with per model ``attention[layer][head]``: the (T, T) matrix as base64 of little-endian float16
(default) or float32, row-major, optionally zlib-compressed (``encoding``). ``read_view_data``
decodes it back.

Singular values: those of the head's score matrix S = scale * Q_h K_hᵀ over the text's tokens
(before masking and softmax), with Q_h, K_h (T, d) the head's query/key projections; for
``low_rank_band`` the low-rank module's pair (its band-only heads under ``band_combine="heads"``
use their dot-product pair). Computed as the singular values of R_q R_kᵀ from the QR factors of
Q_h and K_h (d x d, exact and cheap at any T). At most r of them are non-zero for a rank-r head.
"""

from __future__ import annotations

import argparse
import base64
import html
import inspect
import json
import os
import re
import tempfile
import uuid
import zlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .commands import user_mode
from .metrics import DEFAULT_WINDOWS, per_head_metrics, per_query_metrics
from .rollout import rollout

Tensor = torch.Tensor

PRECISIONS = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "uint8": np.dtype("u1")}
ENCODINGS = ("base64", "zlib+base64")
# "auto": pages up to this many stored weights (all layers, heads, models: about 16 MB as float16)
# keep float16 without compression; larger ones (e.g. 512 tokens x 144 heads = 37.7M) use uint8 + zlib
AUTO_LIMIT = 8 * 2**20
THUMB_SIZE = 40
METRIC_KEYS = ("entropy", "uniform_entropy", "mean_distance", "sink_mass", "prev_token", "next_token")
DEFAULT_METRIC_WINDOW = 16  # "mass within w" for models without a band window (and no band partner)


# ----------------------------------------------------------------------------- the model's attention


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def _family(config) -> str:
    return "gpt2" if config.model_type in ("gpt2", "variant_gpt2") else "bert"


def _is_causal(config) -> bool:
    if hasattr(config, "variant_for_layer"):
        return bool(config.is_causal)
    return _family(config) == "gpt2" or bool(getattr(config, "is_decoder", False))


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every layer, in order (Variant, stock BERT or stock GPT-2)."""
    names = ("VariantAttention", "LSTMNAttention", "BertSelfAttention", "GPT2Attention")
    found = [m for m in _base(model).modules() if any(c.__name__ in names for c in type(m).__mro__)]
    return [m for m in found if not getattr(m, "is_cross_attention", False)]


def _drawing(config, layer: int):
    """The spec's ``draw`` of a layer (``variants.Drawing``); a stock model draws as dense."""
    from hf_attn_variants.hfav_variants import STOCK, spec_of

    variant = config.variant_for_layer(layer) if hasattr(config, "variant_for_layer") else STOCK
    return variant, spec_of(variant).draw(config)


def layer_info(config, layer: int, heads: int) -> dict:
    """What the page needs to draw one layer, as its variant's spec says (``draw``): the variant,
    head names, which heads have a band (window and global tokens outlined), each head's rank bound."""
    variant, drawing = _drawing(config, layer)
    band_heads = [h for h in drawing.band_heads() if h < heads]
    served = drawing.pair_of_head()
    names = list(drawing.head_names[:heads]) or [f"head {h}" for h in range(heads)]
    split = len(drawing.pairs) > 1 and sum(len(p.heads) for p in drawing.pairs) == len(served)
    if split:  # the layer's heads are divided between its pairs: name each by its pair
        names = [f"head {h} ({served[h].label})" if h in served else names[h] for h in range(heads)]
    return {"variant": variant, "heads": heads, "head_names": names, "band_heads": band_heads,
            "window": config.attention_window if band_heads else None,
            "global_tokens": int(getattr(config, "attention_global_tokens", 0) or 0) if band_heads else 0,
            "ranks": [served[h].rank if h in served else None for h in range(heads)],
            "band_combine": drawing.note, "kind": drawing.kind}


def _score_pairs(module: nn.Module, x: Tensor) -> list[tuple[Tensor, Tensor, float]] | None:
    """Per head (q (T, d), k (T, d), scale) of a Variant attention module for its input x (1, T, hidden):
    the dot-product pair its spec draws for each head (``variants.Drawing.pair_of_head``)."""
    from hf_attn_variants.hfav_variants import PAIR_FIELDS, VARIANTS, Projected

    variant = getattr(module, "variant", None)
    if variant not in VARIANTS or not hasattr(module, "_project"):
        return None
    served = VARIANTS[variant].draw(module.config).pair_of_head()
    if not served:
        return None
    heads = [module.qk_heads, module.qk_heads, module.num_heads, module.low_rank_heads, module.low_rank_heads]
    p = Projected(*(module.split_heads(t, n)[0] for t, n in zip(module._project(x), heads)))  # each (heads, T, d)
    out = []
    for h in sorted(served):
        pair = served[h]
        q, k = (getattr(p, f) for f in PAIR_FIELDS[pair.projection])
        i = pair.heads.index(h)
        out.append((q[i], k[i], getattr(module, pair.scale)))
    return out


def _stock_pairs(module: nn.Module, outputs: dict) -> list[tuple[Tensor, Tensor, float]]:
    """Per head (q, k, scale) of a stock BertSelfAttention / GPT2Attention from hooked projections."""
    if "qkv" in outputs:  # GPT-2: c_attn -> [q | k | v]
        q, k, _ = outputs["qkv"][0].split(module.embed_dim, dim=-1)
        heads = module.num_heads
    else:
        q, k = outputs["query"][0], outputs["key"][0]
        heads = module.num_attention_heads
    d = q.shape[-1] // heads
    q, k = q.view(-1, heads, d).transpose(0, 1), k.view(-1, heads, d).transpose(0, 1)  # (heads, T, d)
    scale = getattr(module, "scaling", d**-0.5)
    return [(q[h], k[h], scale) for h in range(heads)]


def score_singular_values(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """Singular values of scale * q kᵀ (q, k (..., T, d), batched) via QR: svd(R_q R_kᵀ), min(T, d) values each."""
    r_q = torch.linalg.qr(q.double(), mode="r")[1]
    r_k = torch.linalg.qr(k.double(), mode="r")[1]
    return torch.linalg.svdvals(scale * r_q @ r_k.transpose(-1, -2)).float()


class _Recorder:
    """Forward hooks that keep what the singular values need (each layer's input or q/k projections)."""

    def __init__(self, modules: list[nn.Module]):
        self.modules, self.handles = modules, []
        self.inputs: dict[int, Tensor] = {}
        self.stock: dict[int, dict[str, Tensor]] = {}
        for i, m in enumerate(modules):
            if hasattr(m, "variant"):  # Variant modules: their input
                self.handles.append(m.register_forward_pre_hook(self._keep_input(i)))
            elif hasattr(m, "c_attn"):
                self.handles.append(m.c_attn.register_forward_hook(self._keep_output(i, "qkv")))
            else:
                for name in ("query", "key"):
                    self.handles.append(getattr(m, name).register_forward_hook(self._keep_output(i, name)))

    def _keep_input(self, i: int) -> Callable:
        def hook(module, args, kwargs=None):
            self.inputs[i] = args[0].detach()
        return hook

    def _keep_output(self, i: int, name: str) -> Callable:
        def hook(module, args, output):
            self.stock.setdefault(i, {})[name] = output.detach()
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def singular_values(self, i: int) -> list[list[float]] | None:
        m = self.modules[i]
        if i in self.inputs:
            pairs = _score_pairs(m, self.inputs[i])
        else:
            pairs = _stock_pairs(m, self.stock[i]) if i in self.stock else None
        if pairs is None:
            return None
        same = len({(q.shape, s) for q, k, s in pairs}) == 1  # batch the heads when they agree (all but 'heads')
        if same:
            q, k = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])  # (H, T, d)
            return score_singular_values(q, k, pairs[0][2]).tolist()
        return [score_singular_values(q, k, s).tolist() for q, k, s in pairs]


def _byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    return "ByteLevel" in repr(pre) or "GPT2" in type(tokenizer).__name__


def model_limit(config, tokenizer=None) -> int | None:
    """The most tokens the model takes: its position table (BERT max_position_embeddings, GPT-2 n_positions)."""
    limits = [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")]
    limits = [int(x) for x in limits if isinstance(x, int) and x > 0]
    return min(limits) if limits else None


def _encode_inputs(tokenizer, text: str, text_pair: str | None, max_length: int | None = None,
                   truncate: bool = True) -> tuple[dict, list[str], Tensor | None, dict]:
    """The model inputs, the tokens as shown, the special-token mask and ``extra``: ``pair_start`` (the
    first token of the second text, or None) and ``truncated`` ({from, to, limit} or None)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"text={text!r} is invalid: expected a non-empty string")
    full = len(tokenizer(text, text_pair)["input_ids"])
    truncated = None
    kwargs = {}
    if max_length is not None and full > max_length:
        if not truncate:
            raise ValueError(f"the text has {full} tokens, more than max_length={max_length} (the most this model "
                             "or --max-length allows): shorten it or let the viewer truncate it")
        kwargs = {"truncation": True, "max_length": max_length}
    enc = tokenizer(text, text_pair, return_tensors="pt", return_special_tokens_mask=True, **kwargs)
    if kwargs:
        truncated = {"from": full, "to": int(enc["input_ids"].shape[1]), "limit": max_length}
    pair_start = None
    if text_pair is not None:
        types = enc.get("token_type_ids")
        seq = enc.sequence_ids(0) if getattr(enc, "is_fast", False) else None
        if seq is not None and 1 in seq:
            pair_start = seq.index(1)
        elif types is not None and bool((types[0] == 1).any()):
            pair_start = int((types[0] == 1).nonzero()[0, 0])
    special = enc.pop("special_tokens_mask").bool()
    if not special.any():
        special = None  # no [CLS]/[SEP] (GPT-2): metrics take the first token as the sink
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    if _byte_level(tokenizer):  # GPT-2's byte-level BPE: 'Ġthe' -> ' the'
        tokens = [tokenizer.convert_tokens_to_string([t]) for t in tokens]
    return dict(enc), tokens, special, {"pair_start": pair_start, "truncated": truncated}


def _forward(model: nn.Module, inputs: dict) -> tuple[tuple | None, _Recorder]:
    recorder = _Recorder(_attention_modules(model))
    try:
        with torch.no_grad():
            out = model(**inputs, output_attentions=True, return_dict=True)
    finally:
        recorder.close()
    attentions = out.attentions
    return (None if not attentions or any(a is None for a in attentions) else attentions), recorder


def _run(model: nn.Module, inputs: dict) -> tuple[list[Tensor], _Recorder]:
    """The model's output_attentions (each (H, T, T)) and the recorder of what it computed. A stock
    model on sdpa/flash returns none: it runs once more on eager attention, then is set back."""
    attentions, recorder = _forward(model, inputs)
    before = getattr(model.config, "_attn_implementation", None)
    if attentions is None and before not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
        try:
            attentions, recorder = _forward(model, inputs)
        finally:
            model.set_attn_implementation(before)
    if attentions is None:
        raise ValueError(f"attn_implementation={before!r} returned no attention weights: load the model with "
                         "attn_implementation='eager' (Variant models return them on output_attentions=True)")
    return [a[0].detach().float() for a in attentions], recorder


def _metrics(weights: Tensor, special: Tensor | None, causal: bool, windows: tuple[int, ...]) -> dict:
    """per_head_metrics of one layer's (H, T, T) weights, rows normalised (band_combine='sum' sums to 2)."""
    rows = weights / weights.sum(-1, keepdim=True).clamp_min(1e-30)
    kwargs = {"windows": windows, "special_positions": special}
    if "causal" in inspect.signature(per_head_metrics).parameters:
        kwargs["causal"] = causal
    out = per_head_metrics(rows[None], None, **kwargs)
    keep = [*METRIC_KEYS, *(f"mass_within_{w}" for w in windows)]
    return {k: [round(float(v), 5) for v in out[k]] for k in keep if k in out}


def _thumbnail(weights: Tensor, size: int) -> list[str]:
    """(H, T, T) -> per head a size x size uint8 image (max-pooled, scaled to the head's max, sqrt)."""
    pooled = nn.functional.adaptive_max_pool2d(weights[:, None], size)[:, 0]  # (H, s, s)
    peak = pooled.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    img = (pooled / peak).sqrt().mul(255).round().to(torch.uint8).numpy()
    return [base64.b64encode(img[h].tobytes()).decode("ascii") for h in range(img.shape[0])]


def encode_matrix(matrix: Tensor, precision: str = "float16", encoding: str = "base64", value_max: float = 1.0
                  ) -> str:
    """One (T, T) (or (T,)) tensor of weights in [0, value_max] as base64 of little-endian float32 /
    float16, or of uint8 u = round(255 sqrt(w / value_max)) (absolute error <= value_max / 255);
    zlib-compressed first when encoding is "zlib+base64"."""
    x = matrix.detach().cpu().float()
    if precision == "uint8":
        x = (x / value_max).clamp(0, 1).sqrt().mul(255).round()
    raw = x.numpy().astype(PRECISIONS[precision]).tobytes()
    return base64.b64encode(zlib.compress(raw, 1) if encoding == "zlib+base64" else raw).decode("ascii")


def decode_matrix(text: str, shape: tuple[int, ...], precision: str = "float16", encoding: str = "base64",
                  value_max: float = 1.0) -> Tensor:
    """The inverse of ``encode_matrix`` (what the page's JavaScript computes too)."""
    raw = base64.b64decode(text)
    raw = zlib.decompress(raw) if encoding == "zlib+base64" else raw
    x = torch.from_numpy(np.frombuffer(raw, dtype=PRECISIONS[precision]).astype(np.float32).reshape(shape))
    return (x / 255).square() * value_max if precision == "uint8" else x


def storage(weights: int, precision: str = "auto", encoding: str | None = None) -> tuple[str, str]:
    """(precision, encoding) for a page storing ``weights`` numbers: "auto" picks float16 without
    compression up to AUTO_LIMIT, uint8 with zlib above (so a 512-token, 12 x 12-head page stays small)."""
    large = weights > AUTO_LIMIT
    if precision == "auto":
        precision = "uint8" if large else "float16"
    if encoding is None:
        encoding = "zlib+base64" if large else "base64"
    _check_options(precision, encoding)
    return precision, encoding


def _check_options(precision: str, encoding: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is invalid: expected 'auto' or one of {tuple(PRECISIONS)}")
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r} is invalid: expected one of {ENCODINGS}")


def attention_data(model: nn.Module, tokenizer, text: str, text_pair: str | None = None, *, name: str | None = None,
                   windows: tuple[int, ...] = DEFAULT_WINDOWS, metric_window: int | None = None,
                   precision: str = "float16", encoding: str = "base64", max_length: int | None = None,
                   truncate: bool = True, importance=None) -> dict:
    """Everything the page shows of one model on one text (JSON-ready)."""
    return _attention_data(model, tokenizer, text, text_pair, name=name, windows=windows, metric_window=metric_window,
                           precision=precision, encoding=encoding, max_length=max_length, truncate=truncate,
                           importance=importance)[0]


def _limit(model: nn.Module, tokenizer, max_length: int | None) -> int | None:
    limit = model_limit(model.config, tokenizer)
    if max_length is not None:
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length={max_length!r} is invalid: expected a positive integer")
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length={max_length} is more than this model takes ({limit} positions)")
        return max_length
    return limit


def _attention_data(model: nn.Module, tokenizer, text: str, text_pair: str | None = None, *, name: str | None = None,
                    windows: tuple[int, ...] = DEFAULT_WINDOWS, metric_window: int | None = None,
                    precision: str = "float16", encoding: str = "base64", max_length: int | None = None,
                    truncate: bool = True, importance=None) -> tuple[dict, list[Tensor], Tensor | None]:
    """(the page data of one model, its per-layer (H, T, T) weights, its (1, T) special-token mask or None)."""
    _check_options(precision, encoding)
    config = model.config
    inputs, tokens, special, extra = _encode_inputs(tokenizer, text, text_pair, _limit(model, tokenizer, max_length),
                                                    truncate)
    inputs = {k: v.to(next(model.parameters()).device) for k, v in inputs.items()}
    attentions, recorder = _run(model, inputs)
    causal = _is_causal(config)
    window = getattr(config, "attention_window", None) if hasattr(config, "variant_for_layer") else None
    metric_window = metric_window or window or DEFAULT_METRIC_WINDOW
    windows = tuple(sorted({*windows, metric_window}))
    t = len(tokens)
    layers = []
    for i, weights in enumerate(attentions):
        heads = weights.shape[0]
        info = layer_info(config, i, heads)
        # LSTMN: each step's softmax runs over [zero slot, earlier tokens]; what the tokens do not take
        # is the zero slot's (the output drops that column)
        zero = (1 - weights.sum(-1)).clamp_min(0) if info["kind"] == "lstmn" else None  # (directions, T)
        value_max = 2.0 if info["band_combine"] == "sum" else 1.0  # band_combine="sum": L + B, rows sum to 2
        value_max = max(value_max, float(weights.max()))
        enc = (precision, encoding, value_max)
        info.update(
            attention=[encode_matrix(weights[h], *enc) for h in range(heads)],
            thumbnails=_thumbnail(weights, min(t, THUMB_SIZE)),
            metrics=_metrics(weights, special, causal, windows),
            singular_values=recorder.singular_values(i),
            zero_slot=None if zero is None else [encode_matrix(zero[h], *enc) for h in range(heads)],
            max_weight=round(float(weights.max()), 6),
            value_max=value_max,
        )
        layers.append(info)
    rolled = rollout([a[None] for a in attentions])[:, 0]  # (L, T, T), rows sum to 1
    data = {"name": name or _short_name(getattr(config, "_name_or_path", "")) or type(model).__name__,
            "model_class": type(model).__name__, "family": _family(config), "causal": causal,
            "tokens": tokens, "length": t, "precision": precision, "encoding": encoding,
            "metric_window": metric_window, "thumb_size": min(t, THUMB_SIZE), "layers": layers,
            "pair_start": extra["pair_start"], "truncated": extra["truncated"],
            "rollout": [encode_matrix(r, precision, encoding, 1.0) for r in rolled],
            "importance": read_importance(importance, len(layers), [L["heads"] for L in layers])}
    return data, attentions, special


def _short_name(path: str | os.PathLike | None) -> str:
    """A model's name for a title: the last component of its folder or Hub id, never a whole local path."""
    text = str(path or "").rstrip("/\\")
    return re.split(r"[/\\]", text)[-1] if text else ""


def read_importance(source, layers: int, heads: list[int]) -> dict | None:
    """Head importance for the attribution view: None, a dict {column: (L, H) values}, or the path of the
    ``importance.csv`` that ``hf-attn-variants analyze`` writes (columns layer, head, grad_importance,
    uniform_delta_loss) or of the folder holding it."""
    if source is None:
        return None
    description = "from hf-attn-variants analyze: grad_importance = mean |dL/d gate| (Michel et al. 2019); " \
                  "uniform_delta_loss = loss change when the head attends uniformly"
    if isinstance(source, dict):
        columns = {k: [[float(x) for x in row] for row in np.asarray(v, dtype=float).tolist()] for k, v in
                   source.items()}
        description = "given to view()"
    else:
        import csv

        path = Path(source)
        path = path / "importance.csv" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"importance={str(source)!r} is invalid: no such file (expected the importance.csv "
                             "written by `hf-attn-variants analyze`, or its folder)")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        keys = [k for k in (rows[0] if rows else {}) if k not in ("layer", "head")]
        if not rows or "layer" not in rows[0] or "head" not in rows[0] or not keys:
            raise ValueError(f"importance={str(source)!r} is invalid: expected columns layer, head and values")
        columns = {k: [[float("nan")] * heads[layer] for layer in range(layers)] for k in keys}
        for r in rows:
            layer, head = int(r["layer"]), int(r["head"])
            if layer >= layers or head >= heads[layer]:
                raise ValueError(f"importance={str(source)!r}: layer {layer} head {head} is not in this model "
                                 f"({layers} layers)")
            for k in keys:
                columns[k][layer][head] = float(r[k])
        description += f" ({path.name})"
    for k, v in columns.items():
        if len(v) != layers or any(len(row) != heads[i] for i, row in enumerate(v)):
            raise ValueError(f"importance[{k!r}] has shape {[len(r) for r in v]}: expected heads per layer {heads}")
    return {"columns": columns, "description": description}


def segment_blocks(length: int, pair_start: int | None) -> dict[str, tuple[slice, slice]]:
    """(query rows, key columns) of every segment filter: all, and for a pair A->A, A->B, B->A, B->B."""
    blocks = {"all": (slice(0, length), slice(0, length))}
    if pair_start:
        part = {"A": slice(0, pair_start), "B": slice(pair_start, length)}
        blocks.update({a + b: (part[a], part[b]) for a in "AB" for b in "AB"})
    return blocks


def attention_change(a: list[Tensor], b: list[Tensor], pair_start: int | None = None) -> dict[str, list[list[float]]]:
    """Per segment filter, per layer and head: the mean over the block's query rows of half the L1 distance
    between the two models' rows (restricted to the block's keys): 0 = the same, 1 = disjoint."""
    t = a[0].shape[-1]
    out = {}
    for key, (rows, cols) in segment_blocks(t, pair_start).items():
        out[key] = [[round(float(v), 6) for v in (x[:, rows, cols] - y[:, rows, cols]).abs().sum(-1).mean(-1) / 2]
                    for x, y in zip(a, b)]
    return out


DELTA_KEYS = ("entropy", "mean_distance", "sink_mass", "prev_token")  # and mass_within_{w}: the A - B view's deltas


def segment_metrics(weights: list[Tensor], pair_start: int | None, special: Tensor | None = None, causal: bool = False,
                    window: int = DEFAULT_METRIC_WINDOW) -> dict[str, list[dict[str, list[float | None]]]]:
    """The A - B view's per-head metrics on each segment block of a text pair (A->A, A->B, B->A, B->B).

    weights: per layer (H, T, T). For block (rows, cols) every query row i in rows is restricted to the keys in
    cols and renormalised to sum to 1 (where the row attends within the segment), then the metrics of
    ``analysis.metrics.per_query_metrics`` (positions, distances and special tokens of the whole text, so the
    distance from A to B is counted across A) are averaged over the block's rows that give the block any weight;
    None where none does (a causal model's A->B). "all" is not returned: the page's whole-text metrics are the
    same definition on the whole matrix.
    Returns {segment: per layer {key: per head value}} for DELTA_KEYS and mass_within_{window}; {} without a pair.
    """
    if not pair_start:
        return {}
    keys = (*DELTA_KEYS, f"mass_within_{window}")
    t = weights[0].shape[-1]
    out: dict[str, list[dict[str, list[float | None]]]] = {}
    for seg, (rows, cols) in segment_blocks(t, pair_start).items():
        if seg == "all":
            continue
        per_layer = []
        for w in weights:
            w = w.float() / w.float().sum(-1, keepdim=True).clamp_min(1e-30)  # rows to 1, as _metrics does
            block = torch.zeros_like(w)
            block[:, rows, cols] = w[:, rows, cols]
            mass = block.sum(-1)  # (H, T)
            block = block / mass[..., None].clamp_min(1e-30)
            per_q = per_query_metrics(block[None], None, windows=(window,), special_positions=special, causal=causal)
            live = mass[:, rows] > 1e-12  # (H, rows)
            layer = {}
            for k in keys:
                v = per_q[k][0][:, rows]  # (H, rows)
                n = live.sum(-1)
                mean = torch.where(live, v, torch.zeros_like(v)).sum(-1) / n.clamp_min(1)
                layer[k] = [round(float(x), 5) if int(c) else None for x, c in zip(mean, n)]
            per_layer.append(layer)
        out[seg] = per_layer
    return out


# ----------------------------------------------------------------------------- the page


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("viewer_assets", name).read_text(encoding="utf-8")


def _json_for_script(data: dict) -> str:
    """JSON that is safe inside <script>: no '<', '>', '&' (so no '</script>' in a token ends it)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(models: list[dict], *, title: str = "", compare: dict | None = None) -> str:
    """The HTML fragment (style, root element, data, code) for one or two ``attention_data`` dicts
    (``compare``: the per-head change between them, see ``attention_change``)."""
    uid = "hav-" + uuid.uuid4().hex[:12]
    data = {"version": 1, "title": title, "models": models, "compare": compare}
    return (f'<div class="hav-root" id="{uid}" data-ready="0">'
            f"<style>{_asset('viewer.css')}</style>"
            f'<script type="application/json" class="hav-data">{_json_for_script(data)}</script>'
            f"<script>{_asset('viewer.js')}</script>"
            f'<script>HAV.mount(document.getElementById("{uid}"));</script></div>')


def page(fragment: str, title: str) -> str:
    """A whole HTML document around a ``render`` fragment."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title></head><body>{fragment}</body></html>\n")


def _as_pair(other, tokenizer):
    return other if isinstance(other, (tuple, list)) else (other, tokenizer)


def view(model: nn.Module, tokenizer, text: str, text_pair: str | None = None, compare=None, *,
         names: tuple[str, ...] | None = None, precision: str = "auto", encoding: str | None = None,
         max_length: int | None = None, truncate: bool = True, importance=None) -> str:
    """The attention viewer for ``model`` on ``text`` (and ``text_pair``) as an HTML fragment.

    compare: a second model (same tokenizer) or a (model, tokenizer) pair, shown side by side, with an
    A - B view (per-head differences, the heads that changed most first).
    names: the titles of the model(s) (default: the last component of each model's folder or id).
    precision: "float32" (exact), "float16", "uint8" (sqrt-quantised, error <= 1/255) or "auto"
    (float16 for small pages, uint8 above AUTO_LIMIT weights); encoding: "base64" or "zlib+base64"
    (None: compressed exactly when large).
    max_length: the most tokens kept (default: the model's limit, its position table); a longer text is
    truncated with a notice on the page, or refused with a ValueError naming the limit when truncate=False.
    importance: head importance for the attribution view (the ``importance.csv`` of ``hf-attn-variants
    analyze``, its folder, or {name: (L, H) values}); a pair (A's, B's) in compare mode.
    In a notebook: ``IPython.display.HTML(view(model, tokenizer, "..."))``.
    """
    others = [] if compare is None else [_as_pair(compare, tokenizer)]
    pairs = [(model, tokenizer), *others]
    if names is not None and (isinstance(names, str) or len(names) < len(pairs)):
        raise ValueError(f"names={names!r} is invalid: expected one name per model ({len(pairs)})")
    imps = importance if isinstance(importance, (tuple, list)) else (importance, None)
    lengths = []
    for m, tok in pairs:
        limit = _limit(m, tok, max_length)
        n = len(tok(text, text_pair)["input_ids"])
        lengths.append(min(n, limit) if limit and truncate else n)
    stored = sum(n**2 * _num_layers(m.config) * m.config.num_attention_heads for n, (m, _) in zip(lengths, pairs))
    precision, encoding = storage(stored, precision, encoding)
    band = [getattr(m.config, "attention_window", None) for m, _ in pairs
            if hasattr(m.config, "variant_for_layer") and any(
                m.config.variant_for_layer(i) in ("band", "low_rank_band") for i in range(_num_layers(m.config)))]
    metric_window = band[0] if band else None  # compare: every model's "mass within w" at the band's w
    built = [_attention_data(m, tok, text, text_pair, name=names[i] if names else None, metric_window=metric_window,
                             precision=precision, encoding=encoding, max_length=max_length, truncate=truncate,
                             importance=imps[i] if i < len(imps) else None) for i, (m, tok) in enumerate(pairs)]
    models = [b[0] for b in built]
    compare_data = None
    if len(built) == 2 and models[0]["length"] == models[1]["length"]:
        start = models[0]["pair_start"]
        compare_data = {"change": attention_change(built[0][1], built[1][1], start),
                        "measure": "mean over query rows of 0.5 * sum over keys of |A - B|"}
        if start:  # a text pair: the deltas of each segment filter's block, per model
            compare_data["segment_metrics"] = [
                segment_metrics(w, start, special, m["causal"], m["metric_window"])
                for m, (_, w, special) in zip(models, built)]
    title = " vs ".join(m["name"] for m in models)
    return render(models, title=title, compare=compare_data)


def _num_layers(config) -> int:
    return getattr(config, "num_hidden_layers", None) or config.n_layer


def read_view_data(page_html: str) -> dict:
    """The data embedded in a viewer page/fragment, attention decoded: every model gets
    ``attentions``, a list per layer of (H, T, T) tensors (and ``zero_slots`` for LSTMN layers)."""
    match = re.search(r'<script type="application/json" class="hav-data">(.*?)</script>', page_html, re.S)
    if match is None:
        raise ValueError("page_html has no attention-viewer data (no <script class=\"hav-data\">)")
    data = json.loads(match.group(1))
    for m in data["models"]:
        t, args = m["length"], (m["precision"], m["encoding"])
        m["attentions"] = [torch.stack([decode_matrix(s, (t, t), *args, layer["value_max"])
                                        for s in layer["attention"]]) for layer in m["layers"]]
        m["zero_slots"] = [None if layer["zero_slot"] is None else
                           torch.stack([decode_matrix(s, (t,), *args, layer["value_max"]) for s in layer["zero_slot"]])
                           for layer in m["layers"]]
        if m.get("rollout"):
            m["rollouts"] = torch.stack([decode_matrix(r, (t, t), *args, 1.0) for r in m["rollout"]])
    return data


# ----------------------------------------------------------------------------- command line


def load_model(path: str) -> tuple[nn.Module, object]:
    """A stock or Variant BERT/GPT-2 (path or Hub id) in eval mode, with eager attention for stock ones
    (importing this package registered the Variant families with the Auto classes)."""
    config = AutoConfig.from_pretrained(path)
    kwargs = {} if config.model_type.startswith("variant_") else {"attn_implementation": "eager"}
    model = AutoModel.from_pretrained(path, **kwargs).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model, tokenizer


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write through a temporary file in the same folder, then rename (mode: the user's umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, user_mode())  # the user's umask, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hf-attn-variants view",
                                description="Write a self-contained, offline HTML attention viewer.")
    p.add_argument("model", help="a stock or Variant BERT/GPT-2 folder or Hub id")
    p.add_argument("--text", required=True)
    p.add_argument("--text-pair", default=None)
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--compare", default=None, help="a second model shown side by side on the same text")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder or id, if MODEL has none")
    p.add_argument("--names", nargs="+", default=None, metavar="NAME",
                   help="titles of the model(s) (default: the last component of each folder or id)")
    p.add_argument("--max-length", type=int, default=None,
                   help="the most tokens kept (default: the model's limit); longer texts are truncated, with a "
                        "notice on the page")
    p.add_argument("--no-truncate", action="store_true",
                   help="refuse a text longer than --max-length (or the model's limit) instead of truncating it")
    p.add_argument("--importance", nargs="+", default=None, metavar="CSV",
                   help="head importance for the attribution view: the importance.csv (or folder) that "
                        "`hf-attn-variants analyze` wrote, one per model")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="how the weights are stored: float32 exact, float16, uint8 (sqrt-quantised, error <= "
                        "1/255); auto: float16, or uint8 for large pages (default)")
    p.add_argument("--compress", action=argparse.BooleanOptionalAction, default=None,
                   help="zlib-compress the weights (default: only large pages; needs a browser with "
                        "DecompressionStream: Chrome 80+, Firefox 113+, Safari 16.4+)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    count = 2 if args.compare else 1
    if args.names is not None and len(args.names) != count:
        raise SystemExit(f"hf-attn-variants view: --names takes {count} name(s), one per model; got {args.names}")
    if args.importance is not None and len(args.importance) > count:
        raise SystemExit(f"hf-attn-variants view: --importance takes at most {count} file(s); got {args.importance}")
    from .paths import check_model_path

    for what, path in (("model", args.model), ("--compare", args.compare)):
        if path is not None:
            check_model_path(path, what)
    model, tokenizer = load_model(args.model)
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if tokenizer is None:
        raise ValueError(f"model={args.model!r} has no tokenizer: pass --tokenizer")
    compare = None
    if args.compare:
        other, other_tok = load_model(args.compare)
        compare = (other, other_tok or tokenizer)
    names = tuple(args.names) if args.names else tuple(_short_name(p) for p in (args.model, args.compare) if p)
    try:
        fragment = view(model, tokenizer, args.text, args.text_pair, compare, names=names, precision=args.precision,
                        encoding=None if args.compress is None else ("zlib+base64" if args.compress else "base64"),
                        max_length=args.max_length, truncate=not args.no_truncate,
                        importance=tuple(args.importance) if args.importance else None)
    except ValueError as e:
        raise SystemExit(f"hf-attn-variants view: {e}") from None
    out = write_text(args.out, page(fragment, "attention: " + " vs ".join(names)))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
