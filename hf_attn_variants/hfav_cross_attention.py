"""Cross-attention of the GPT-2 family: a decoder attending over an encoder (Bahdanau et al. 2015).

``VariantGPT2Block`` builds a ``GPT2CrossAttention`` when ``config.add_cross_attention`` is set, as
stock GPT-2 does, so a Variant GPT-2 decoder runs inside ``transformers.EncoderDecoderModel``.
``config.cross_attention_variant`` names a scoring rule of ``CROSS_SCORING``, this module's own small
registry (a ``CrossScoring`` class per rule; the self-attention specs of ``hfav_variants.py`` are another registry):

| scoring | e_ij (per head h) |
|---|---|
| ``dense`` | (W_q y_i) · (W_k h_j) / √D, stock GPT-2 cross-attention |
| ``additive`` | v_hᵀ tanh(W_q^h y_i + W_k^h h_j + b_h), Bahdanau et al.'s alignment model, size ``additive_dim`` |
| ``mean`` | 0: no attention; every query reads the mean of W_v h_j over the real encoder tokens (RNNenc) |

``mean`` is the fixed-length-summary baseline Bahdanau et al. compare with (their RNNenc): the decoder sees
one vector per source, the same at every step.

then α_ij = softmax_j(e_ij) over the real encoder tokens and c_i = Σ_j α_ij W_v h_j.

Reading of the paper: Bahdanau et al. score e_ij = vᵀ tanh(W s_{i-1} + U h_j) with s_{i-1} the
decoder's recurrent state *before* emitting y_i. A transformer decoder layer has no recurrent
state; its input at position i, y_i = ln_cross_attn(x_i), is the natural counterpart: it has
seen exactly the targets before i (through the causal self-attention below it), as s_{i-1} has.
h_j are the encoder's last hidden states (the paper's annotations), U h_j is computed once per
source sentence (the key projection, cached during generation) and b_h is the sum of the two
projection biases. Several heads score independently (one head with ``additive_dim`` = hidden
is the paper's single alignment model).

Storage follows stock ``GPT2Attention(is_cross_attention=True)``: ``q_attn`` (queries from the
decoder), ``c_attn`` ([keys | values] from the encoder), ``c_proj``; so a stock GPT-2 cross-attention
checkpoint loads into ``dense`` (and into ``additive`` when ``additive_dim`` = head size).

Padding: the encoder's padded positions are never attended to. Additive scores of a small problem
(B·H·Tq·Tk·a <= ``DIRECT_BUDGET``) are built in one tensor; larger ones go through
``kernels.additive_attention`` once per group of rows with the same number of real encoder tokens
(keys cut to that number), because the kernel's ``key_mask`` lets every query read the key on its
own diagonal, which is right for self-attention and wrong for a decoder reading an encoder.

Hub code: imports only torch, transformers and sibling files.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers.pytorch_utils import Conv1D

from .hfav_kernels import additive_attention, additive_scores, dense_attention

Tensor = torch.Tensor
DIRECT_BUDGET = 1 << 23  # (query, key, dim) triples below which additive scores are built in one tensor


def cross_allowed(key_mask: Tensor | None, tq: int, tk: int, device) -> Tensor:
    """(B or 1, 1, tq, tk) bool: query i may read encoder token j iff j is a real token."""
    if key_mask is None:
        return torch.ones(1, 1, tq, tk, dtype=torch.bool, device=device)
    return key_mask[:, None, None, :].expand(-1, 1, tq, tk)


def _softmax_values(scores: Tensor, v: Tensor, allowed: Tensor, dropout_p: float) -> tuple[Tensor, Tensor]:
    """softmax over the allowed keys (a row with none gets zeros), dropout, dot with v."""
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights


def _dot_product_scores(q: Tensor, k: Tensor, score_vector: Tensor | None, scale: float) -> Tensor:
    return (q @ k.transpose(-1, -2)) * scale


def _additive_scores(q: Tensor, k: Tensor, score_vector: Tensor | None, scale: float) -> Tensor:
    return additive_scores(q, k, score_vector)  # v_hᵀ tanh(q_i + k_j)


def cross_attention_reference(q: Tensor, k: Tensor, v: Tensor, *, scoring: str, key_mask: Tensor | None = None,
                              score_vector: Tensor | None = None, scale: float = 1.0,
                              dropout_p: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-attention written out, O(Tq·Tk·a): q (B, H, Tq, a), k (B, H, Tk, a), v (B, H, Tk, Dv),
    key_mask (B, Tk) bool (True = real encoder token), ``scoring`` a name in ``CROSS_SCORING``,
    score_vector (H, a) for ``additive``.
    Returns (out (B, H, Tq, Dv), weights (B, H, Tq, Tk), scores (B, H, Tq, Tk))."""
    scores = cross_scoring(scoring).scores(q, k, score_vector, scale)
    out, weights = _softmax_values(scores, v, cross_allowed(key_mask, q.shape[-2], k.shape[-2], q.device), dropout_p)
    return out, weights, scores


def _dense_fast(m: GPT2CrossAttention, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None,
                dropout_p: float) -> Tensor:
    if key_mask is None:
        return dense_attention(q, k, v, scale=m.scaling, causal=False, dropout_p=dropout_p)
    allowed = cross_allowed(key_mask, 1, k.shape[-2], q.device)  # (B, 1, 1, Tk), broadcast over queries
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=m.scaling)
    return out.masked_fill(~key_mask.any(-1)[:, None, None, None], 0.0)


def _additive_fast(m: GPT2CrossAttention, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None,
                   dropout_p: float) -> Tensor:
    """Small problems (B·H·Tq·Tk·a <= ``m.direct_budget``) in one expression (the reference's); larger
    ones through the tiled kernel, once per group of rows with the same number of real encoder tokens."""
    if q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3] <= m.direct_budget:
        return cross_attention_reference(q, k, v, scoring=m.scoring.name, key_mask=key_mask,
                                         score_vector=m.score_vector, dropout_p=dropout_p)[0]
    if key_mask is None:
        return additive_attention(q, k, v, m.score_vector, causal=False, dropout_p=dropout_p)
    lengths = key_mask.sum(-1)  # (B,) real encoder tokens per row; right padding (EncoderDecoderModel's)
    if not bool((key_mask == (torch.arange(k.shape[-2], device=k.device) < lengths[:, None])).all()):
        raise ValueError("encoder_attention_mask must mark real tokens first (right padding) for additive "
                         "cross-attention")
    out = q.new_zeros(*q.shape[:-1], v.shape[-1])  # (B, H, Tq, Dv); rows without real tokens stay 0
    for length in lengths.unique().tolist():
        if length == 0:
            continue
        rows = (lengths == length).nonzero().squeeze(-1)  # the rows with this many real encoder tokens
        part = additive_attention(q[rows], k[rows, :, :length], v[rows, :, :length], m.score_vector,
                                  causal=False, dropout_p=dropout_p)
        out = out.index_copy(0, rows, part)
    return out


def _mean_scores(q: Tensor, k: Tensor, score_vector: Tensor | None, scale: float) -> Tensor:
    return q.new_zeros(*q.shape[:-1], k.shape[-2])  # e_ij = 0: uniform weights over the real encoder tokens


def _mean_fast(m: GPT2CrossAttention, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None,
               dropout_p: float) -> Tensor:
    """c_i = mean_j W_v h_j over the real encoder tokens, the same for every query i: (B, H, Tq, Dv).
    Dropout on the (uniform) weights goes through the reference."""
    if dropout_p > 0:
        return cross_attention_reference(q, k, v, scoring="mean", key_mask=key_mask, dropout_p=dropout_p)[0]
    if key_mask is None:
        summary = v.mean(-2, keepdim=True)  # (B, H, 1, Dv)
    else:
        real = key_mask[:, None, :, None].to(v.dtype)  # (B, 1, S, 1)
        summary = (v * real).sum(-2, keepdim=True) / real.sum(-2, keepdim=True).clamp(min=1)  # a row with none: 0
    return summary.expand(*q.shape[:-1], v.shape[-1]).contiguous()


def _head_dim(config) -> int:
    return config.hidden_size // config.num_attention_heads


def _additive_dim(config) -> int:
    return config.additive_dim


CROSS_SCORING: dict[str, type[CrossScoring]] = {}  # name -> rule, filled by defining the rules below


class CrossScoring:
    """A scoring rule of cross-attention; its class body is the rule (read, never instantiated), and
    defining a subclass registers it in ``CROSS_SCORING`` under its ``name``.

    qk_dim: config -> the per-head size a of queries and keys; scores: (q, k, score_vector, scale) ->
    e (B, H, Tq, Tk), the reference's; fast: (module, q, k, v, encoder key_mask, dropout_p) -> out
    (B, H, Tq, Dv); score_vector: whether the rule learns v_h (H, a).
    """

    name: str
    qk_dim: Callable[..., int]
    scores: Callable[..., Tensor]
    fast: Callable[..., Tensor]
    score_vector: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        CROSS_SCORING[cls.name] = cls


class DotProductCross(CrossScoring):
    name = "dense"
    qk_dim = _head_dim
    scores = _dot_product_scores
    fast = _dense_fast


class AdditiveCross(CrossScoring):
    name = "additive"
    qk_dim = _additive_dim
    scores = _additive_scores
    fast = _additive_fast
    score_vector = True


class MeanCross(CrossScoring):
    """No attention (the RNNenc baseline of Bahdanau et al. 2015): the decoder reads a fixed summary of the
    encoder. Its query and key projections exist (one layout for every rule) and get no gradient."""

    name = "mean"
    qk_dim = _head_dim
    scores = _mean_scores
    fast = _mean_fast


def cross_scoring(name: str) -> type[CrossScoring]:
    """The scoring rule of that name; ValueError naming the field otherwise."""
    if name not in CROSS_SCORING:
        raise ValueError(f"cross_attention_variant={name!r} is invalid: expected one of {tuple(CROSS_SCORING)}.")
    return CROSS_SCORING[name]


class GPT2CrossAttention(nn.Module):
    """Decoder-to-encoder attention of one GPT-2 block (see the module docstring).

    forward(hidden_states (B, T, hidden), encoder_hidden_states (B, S, hidden), encoder_key_mask
    (B, S) bool or None, need_weights, layer_cache) -> ((B, T, hidden), weights (B, H, T, S) or None).
    With a ``layer_cache`` (this layer's dict in a ``VariantCache``) the projected encoder keys and
    values are computed on the first call and read from the cache afterwards (``cross_k``, ``cross_v``).
    """

    is_cross_attention = True  # ``scoring`` is a rule of CROSS_SCORING (it has no self-attention ``variant``)

    def __init__(self, config, layer_idx: int):
        super().__init__()
        hidden = config.hidden_size
        self.layer_idx = layer_idx
        self.scoring = cross_scoring(config.cross_attention_variant)
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // self.num_heads
        self.qk_dim = self.scoring.qk_dim(config)
        self.scaling = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        self.attention_dropout = config.attn_pdrop
        qk = self.num_heads * self.qk_dim
        self.q_attn = Conv1D(qk, hidden)
        self.c_attn = Conv1D(qk + hidden, hidden)  # [keys | values]
        if self.scoring.score_vector:
            self.score_vector = nn.Parameter(torch.zeros(self.num_heads, self.qk_dim))  # v_h, (H, a): drawn by init
        self.direct_budget = DIRECT_BUDGET
        self.c_proj = Conv1D(hidden, hidden)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.capture = False
        self.captured: dict | None = None

    def split_heads(self, x: Tensor) -> Tensor:
        return x.view(*x.shape[:-1], self.num_heads, -1).transpose(1, 2)  # (B, T, H·d) -> (B, H, T, d)

    def encoder_keys_values(self, encoder_hidden_states: Tensor, layer_cache: dict | None) -> tuple[Tensor, Tensor]:
        """U h_j and W_v h_j per head, (B, H, S, a) and (B, H, S, D); computed once per source when cached."""
        if layer_cache is not None and "cross_k" in layer_cache:
            return layer_cache["cross_k"], layer_cache["cross_v"]
        k, v = self.c_attn(encoder_hidden_states).split([self.num_heads * self.qk_dim, self.num_heads * self.head_dim],
                                                        dim=-1)
        k, v = self.split_heads(k), self.split_heads(v)
        if layer_cache is not None:
            layer_cache["cross_k"], layer_cache["cross_v"] = k, v
        return k, v

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor | None,
                encoder_key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: dict | None = None) -> tuple[Tensor, Tensor | None]:
        if encoder_hidden_states is None and not (layer_cache and "cross_k" in layer_cache):
            raise ValueError("encoder_hidden_states is None: a decoder with add_cross_attention=True needs the "
                             "encoder's hidden states (or a cache that holds their projections)")
        q = self.split_heads(self.q_attn(hidden_states))  # (B, H, T, a)
        k, v = self.encoder_keys_values(encoder_hidden_states, layer_cache)
        dropout_p = self.attention_dropout if self.training else 0.0
        weights = None
        if need_weights or self.capture:
            out, weights, scores = cross_attention_reference(
                q, k, v, scoring=self.scoring.name, key_mask=encoder_key_mask,
                score_vector=getattr(self, "score_vector", None), scale=self.scaling, dropout_p=dropout_p)
            if self.capture:
                self.captured = {"weights": weights.detach(), "scores": scores.detach()}
        else:
            out = self.scoring.fast(self, q, k, v, encoder_key_mask, dropout_p)
        out = self.resid_dropout(self.c_proj(out.transpose(1, 2).flatten(2)))  # (B, H, T, D) -> (B, T, H·D)
        return out, weights if need_weights else None


def init_cross_attention(module: nn.Module, std: float, init) -> None:
    """Initialise the parameters cross-attention adds (``init`` is transformers.initialization)."""
    if isinstance(module, GPT2CrossAttention) and hasattr(module, "score_vector"):
        init.normal_(module.score_vector, mean=0.0, std=std)
