"""Attention kernels of hf-attn-variants, each with a naive, readable reference beside it.

One file per variant family, gathered here:

| file | kernels (fast path, reference) |
|---|---|
| ``hfav_pairs.py`` | the allowed-pairs rule every kernel, mask and cost count uses |
| ``hfav_kernels_dense.py`` | ``dense_attention``, ``low_rank_attention`` (SDPA); references; the masked softmax |
| ``hfav_kernels_band.py`` | ``band_attention`` (blocked SDPA; flex attention on CUDA); reference |
| ``hfav_kernels_additive.py`` | ``additive_attention`` (tiled, recomputing backward); reference |
| ``hfav_kernels_lstmn.py`` | ``lstmn_scan`` (hand-written backward through time); ``lstmn_reference`` (step by step) |

Every attention kernel takes per-head tensors shaped ``(B, H, T, D)`` (batch, heads, time, head
dim) and returns ``(B, H, Tq, Dv)``. Queries are the *last* ``Tq`` of the ``Tk`` key positions
(``Tq == Tk`` in a full forward pass, ``Tq < Tk`` when decoding with a cache).

Masking rule shared by all kernels (``pairs.pair_allowed``): query i may read key j when the
structure allows it (causal: j <= i; band: |i - j| <= w, or 0 <= i - j <= w when causal, or
one of i, j among the first ``global_tokens`` positions) and key j is a real token. A query
always may read itself, so a padded query whose whole neighbourhood is padding still gets a
finite output (its value is never used).

The references build the full ``(B, H, Tq, Tk)`` score matrix (and, for additive attention,
the full ``(B, H, Tq, Tk, a)`` tanh tensor): slow but obviously right. Tests compare every
kernel to its reference, forward and backward.

This file is Hub code: it imports only its sibling files.
"""

from __future__ import annotations

from .hfav_kernels_additive import (
    EXP_TANH_BOUND,
    additive_attention,
    additive_attention_reference,
    additive_scores,
    additive_tile_key,
    additive_tile_sizes,
)
from .hfav_kernels_band import band_attention, band_attention_reference, band_block_size
from .hfav_kernels_dense import (
    dense_attention,
    dense_attention_reference,
    low_rank_attention,
    low_rank_attention_reference,
    masked_softmax_attention,
    pads_qk,
)
from .hfav_kernels_lstmn import (
    _lstmn_exp_trick,
    lstmn_gates,
    lstmn_reference,
    lstmn_scan,
    lstmn_start,
    lstmn_step,
    softmax_backward,
    tape_read,
)
from .hfav_pairs import allowed_mask, key_range, pair_allowed, tile_mask

__all__ = [
    "EXP_TANH_BOUND",
    "_lstmn_exp_trick",
    "additive_attention",
    "additive_attention_reference",
    "additive_scores",
    "additive_tile_key",
    "additive_tile_sizes",
    "allowed_mask",
    "band_attention",
    "band_attention_reference",
    "band_block_size",
    "dense_attention",
    "dense_attention_reference",
    "key_range",
    "low_rank_attention",
    "low_rank_attention_reference",
    "lstmn_gates",
    "lstmn_reference",
    "lstmn_scan",
    "lstmn_start",
    "lstmn_step",
    "masked_softmax_attention",
    "pads_qk",
    "pair_allowed",
    "softmax_backward",
    "tape_read",
    "tile_mask",
]
