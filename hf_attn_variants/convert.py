"""Turn a stock (dense) BERT / GPT-2 model into the matching Variant model, carrying every weight.

``convert_from_dense(model_or_path, attention_variant="low_rank", attention_rank=8)`` returns a
Variant model whose parameters are copied from the dense one wherever the shapes agree. The
low-rank query/key projections (of ``low_rank`` and of ``low_rank_band``'s global module) are
the best rank-r factorisation of each head's bias-augmented bilinear form (Eckart-Young):

    M_h = [W_q,h  b_q,h]ᵀ [W_k,h  b_k,h]        ((in + 1) x (in + 1), rank <= D)
    scale_dense · x̃_iᵀ M_h x̃_j  ≈  scale_low_rank · (A x̃_i) · (B x̃_j),   A, B: (r, in + 1)

so at r = head size the converted model reproduces the dense one. Not Hub code (a tool).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import torch
import transformers
from torch import nn

from .configuration_variants import VariantBertConfig, VariantFields, VariantGPT2Config
from .hfav_attention import VariantAttention
from .hfav_variants import STOCK, VARIANTS, ScorePair
from .modeling_bert_variants import (
    VariantBertForMaskedLM,
    VariantBertForSequenceClassification,
    VariantBertForTokenClassification,
    VariantBertModel,
)
from .modeling_gpt2_variants import VariantGPT2ForSequenceClassification, VariantGPT2LMHeadModel, VariantGPT2Model

logger = logging.getLogger(__name__)
Tensor = torch.Tensor

# stock (or dense Variant) class name -> the Variant class it converts to
TARGETS: dict[str, type[nn.Module]] = {
    "BertModel": VariantBertModel,
    "BertForMaskedLM": VariantBertForMaskedLM,
    "BertForPreTraining": VariantBertForMaskedLM,
    "BertForSequenceClassification": VariantBertForSequenceClassification,
    "BertForTokenClassification": VariantBertForTokenClassification,
    "GPT2Model": VariantGPT2Model,
    "GPT2LMHeadModel": VariantGPT2LMHeadModel,
    "GPT2ForSequenceClassification": VariantGPT2ForSequenceClassification,
}
TARGETS.update({cls.__name__: cls for cls in list(TARGETS.values())})
# the settings of the registered variants whose config default is derived from the model size (None until
# the config fills it in): a converted config re-derives them for the new variant unless they are given
SIZE_DERIVED = tuple(f.name for f in dataclasses.fields(VariantFields) if f.default is None
                     and any(f.name in spec.settings for spec in VARIANTS.values()))
_CONFIG_KEYS_DROPPED = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path")


def low_rank_factors(wq: Tensor, bq: Tensor, wk: Tensor, bk: Tensor, rank: int, ratio: float = 1.0):
    """Best rank-r factors of one head's bias-augmented bilinear form.

    wq, wk (D, in), bq, bk (D,). Returns (wq_r, bq_r, wk_r, bk_r, singular_values) with
    wq_r, wk_r (r, in), bq_r, bk_r (r,) such that [wq_r bq_r]ᵀ[wk_r bk_r] is the best rank-r
    approximation of ratio · [wq bq]ᵀ[wk bk]; singular_values are those of the unscaled form.
    Computed in float64 through QR factors, so only a D x D matrix is decomposed.
    """
    q_aug = torch.cat([wq, bq[:, None]], dim=1).double()  # (D, in + 1)
    k_aug = torch.cat([wk, bk[:, None]], dim=1).double()
    q_basis, q_r = torch.linalg.qr(q_aug.T)  # (in + 1, D), (D, D)
    k_basis, k_r = torch.linalg.qr(k_aug.T)
    u, s, vh = torch.linalg.svd(q_r @ k_r.T)  # M = q_basis · u s vh · k_basisᵀ
    root = (s[:rank] * ratio).sqrt()  # split √(ratio · s) onto both sides
    a = root[:, None] * (q_basis @ u[:, :rank]).T  # (r, in + 1)
    b = root[:, None] * (k_basis @ vh[:rank].T).T
    dtype = wq.dtype
    return a[:, :-1].to(dtype), a[:, -1].to(dtype), b[:, :-1].to(dtype), b[:, -1].to(dtype), s


def _load(path: str | os.PathLike) -> nn.Module:
    if not os.path.exists(path) and os.path.sep in str(path):
        raise FileNotFoundError(f"model path {str(path)!r} does not exist")
    config = transformers.AutoConfig.from_pretrained(path)  # this package registered the Variant families
    arch = next((a for a in (config.architectures or []) if a in TARGETS), None)
    if arch is None:
        arch = {"bert": "BertModel", "gpt2": "GPT2Model", "variant_bert": "VariantBertModel",
                "variant_gpt2": "VariantGPT2Model"}.get(config.model_type)
    if arch is None:
        raise ValueError(f"model_type={config.model_type!r} at {str(path)!r}: expected a BERT or GPT-2 checkpoint "
                         "(stock or a dense Variant model)")
    cls = getattr(transformers, arch, None) or TARGETS[arch]  # a stock class, or the Variant class itself
    return cls.from_pretrained(path)


def _is_gpt2(module: VariantAttention) -> bool:
    return hasattr(module, "c_attn")


def _stock_qkv(source: dict[str, Tensor], prefix: str, gpt2: bool) -> list[Tensor]:
    """Dense [wq, bq, wk, bk, wv, bv] of one layer, weights in Linear convention (out, in)."""
    if gpt2:
        w, b = source[f"{prefix}.c_attn.weight"].T, source[f"{prefix}.c_attn.bias"]
        ws, bs = w.chunk(3, dim=0), b.chunk(3, dim=0)
        return [ws[0], bs[0], ws[1], bs[1], ws[2], bs[2]]
    return [source[f"{prefix}.{n}.{p}"] for n in ("query", "key", "value") for p in ("weight", "bias")]


def _pair_storage(module: VariantAttention, projection: str) -> list[str]:
    """Names of the modules storing a query/key pair (``variants.PAIR_FIELDS``), in either family."""
    suffix = "" if projection == "main" else "_" + projection
    return [f"c_attn{suffix}"] if _is_gpt2(module) else [f"query{suffix}", f"key{suffix}"]


def _set(module: VariantAttention, projection: str, tensors: list[Tensor]) -> None:
    """Write a pair's q/k (and, for the main pair, v when given) into a Variant attention module,
    weights in Linear convention, in either family's storage."""
    with torch.no_grad():
        if _is_gpt2(module):
            conv = getattr(module, _pair_storage(module, projection)[0])
            weights, biases = tensors[0::2], tensors[1::2]
            conv.weight[:, : sum(w.shape[0] for w in weights)].copy_(torch.cat(weights).T)
            conv.bias[: sum(b.shape[0] for b in biases)].copy_(torch.cat(biases))
            return
        names = _pair_storage(module, projection) + (["value"] if projection == "main" else [])
        for name, w, b in zip(names, tensors[0::2], tensors[1::2]):
            getattr(module, name).weight.copy_(w)
            getattr(module, name).bias.copy_(b)


def _svd_heads(module: VariantAttention, wq, bq, wk, bk, heads: range, rank: int, scale: float) -> list[Tensor]:
    """Rank-r factors for the given heads, stacked head after head: [wq, bq, wk, bk]."""
    d = module.head_dim
    ratio = module.scaling / scale
    parts = [low_rank_factors(wq[h * d:(h + 1) * d], bq[h * d:(h + 1) * d], wk[h * d:(h + 1) * d],
                              bk[h * d:(h + 1) * d], rank, ratio)[:4] for h in heads]
    return [torch.cat([p[i] for p in parts]) for i in range(4)]


def derived_pairs(module: VariantAttention) -> list[ScorePair]:
    """The dot-product pairs of a layer (its spec's ``draw``) that are not the dense pair as it is:
    a smaller q/k size or another scale (low-rank: set by SVD) or a subset of the heads (copied)."""
    heads = module.num_heads
    return [p for p in module.spec.draw(module.config).pairs
            if p.rank is not None or getattr(module, p.scale) != module.scaling or p.heads != range(heads)]


def _convert_attention(module: VariantAttention, source: dict[str, Tensor], prefix: str) -> list[str]:
    """Fill a layer's query/key pairs from the dense ones, as its spec draws them: each pair's heads
    are the dense heads it serves; a low-rank pair is their best rank-r factorisation (module
    docstring), a full-size pair their copy. Returns the prefixes of the modules written."""
    wq, bq, wk, bk, wv, bv = _stock_qkv(source, prefix, _is_gpt2(module))
    d, written = module.head_dim, []
    for pair in derived_pairs(module):
        if pair.rank is not None or getattr(module, pair.scale) != module.scaling:
            tensors = _svd_heads(module, wq, bq, wk, bk, pair.heads, pair.rank or d, getattr(module, pair.scale))
        else:
            rows = slice(pair.heads.start * d, pair.heads.stop * d)
            tensors = [wq[rows], bq[rows], wk[rows], bk[rows]]
        _set(module, pair.projection, tensors + ([wv, bv] if pair.projection == "main" else []))
        written += _pair_storage(module, pair.projection) + (["value"] if pair.projection == "main" else [])
    return written


def convert_from_dense(model: nn.Module | str | os.PathLike, **variant_fields) -> nn.Module:
    """Convert a stock ``Bert*`` / ``GPT2*`` model (or a dense Variant model, or a path to either)
    into the matching ``Variant*`` class with the given variant fields.

    Every parameter whose name and shape agree is copied; the low-rank projections are set
    by per-head SVD (module docstring); what remains (e.g. additive's v, LSTMN cells) keeps
    its fresh initialisation and is listed in the log and in ``model.conversion_report``.
    """
    if isinstance(model, (str, os.PathLike)):
        model = _load(model)
    name = type(model).__name__
    if name not in TARGETS:
        raise ValueError(f"model of class {name!r} cannot be converted: expected one of {sorted(TARGETS)}")
    source_config = model.config
    if getattr(source_config, "attention_variant", STOCK) != STOCK or any(
            v != STOCK for v in getattr(source_config, "layer_variants", None) or []):
        raise ValueError(f"attention_variant={source_config.attention_variant!r}: only dense models convert")
    target_class = TARGETS[name]
    config_class = VariantBertConfig if issubclass(target_class.config_class, VariantBertConfig) else VariantGPT2Config
    fields = {k: v for k, v in source_config.to_dict().items() if k not in _CONFIG_KEYS_DROPPED}
    for key in SIZE_DERIVED:
        if key not in variant_fields:
            fields.pop(key, None)  # re-derive size-dependent defaults for the new variant
    fields.update(variant_fields)
    config = config_class(**fields)
    config._attn_implementation = source_config._attn_implementation or "sdpa"

    new = target_class(config).to(dtype=next(model.parameters()).dtype)
    source = {k: v.detach() for k, v in model.state_dict().items()}
    target = new.state_dict()
    copied = {k: source[k] for k, v in target.items() if k in source and source[k].shape == v.shape}
    new.load_state_dict(copied, strict=False)
    derived = []
    for prefix, module in new.named_modules():
        if isinstance(module, VariantAttention) and derived_pairs(module):
            written = tuple(f"{prefix}.{name}." for name in _convert_attention(module, source, prefix))
            derived += [k for k in target if k.startswith(written) and k not in copied]
    new.tie_weights()
    fresh = sorted(set(target) - set(copied) - set(derived))
    if fresh:
        logger.warning("convert_from_dense: newly initialised (not in the dense model): %s", ", ".join(fresh))
    new.conversion_report = {"copied": sorted(copied), "svd": sorted(derived), "initialized": fresh}
    return new.train(model.training)
