"""Dense and low-rank attention kernels (Vaswani et al. 2017; Guo et al. 2019, low-rank module),
each with its naive reference, and the masked softmax every reference shares.

(B, H, T, D) in; queries are the last Tq of the Tk key positions. Which pairs may be read:
``pairs.pair_allowed``.

Hub code: imports only torch and sibling files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .hfav_pairs import allowed_mask

Tensor = torch.Tensor


def masked_softmax_attention(
    scores: Tensor, value: Tensor, allowed: Tensor, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor]:
    """softmax(scores | allowed) @ value. scores (B, H, Tq, Tk), value (B, H, Tk, Dv).

    Returns the output (B, H, Tq, Dv) and the attention weights before dropout.
    """
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ value, weights


# ----------------------------------------------------------------------------- dense


def dense_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float, causal: bool,
    key_mask: Tensor | None = None, window: int | None = None, dropout_p: float = 0.0, global_tokens: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Vaswani et al. 2017: softmax(q kᵀ · scale) v, written out, over the pairs ``pairs.pair_allowed``
    allows (``window``, ``global_tokens``: the band rule). Returns (out, weights, scores)."""
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Tq, Tk)
    allowed = allowed_mask(q.shape[-2], k.shape[-2], causal=causal, window=window,
                           key_mask=key_mask, device=q.device, global_tokens=global_tokens)
    out, weights = masked_softmax_attention(scores, v, allowed, dropout_p)
    return out, weights, scores


def dense_attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float, causal: bool,
    key_mask: Tensor | None = None, window: int | None = None, dropout_p: float = 0.0, global_tokens: int = 0,
) -> Tensor:
    """Scaled dot-product attention through ``F.scaled_dot_product_attention``.

    q, k (B, H, T, Dqk), v (B, H, T, Dv). A q/k head size different from v's sends SDPA to
    its slow math path on CPU, so q and k are zero-padded to Dv (the scores do not change).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    if q.shape[-1] < v.shape[-1]:
        pad = (0, v.shape[-1] - q.shape[-1])
        q, k = F.pad(q, pad), F.pad(k, pad)
    if key_mask is None and window is None and (not causal or tq == tk):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal and tq > 1,
                                              scale=scale)
    allowed = allowed_mask(tq, tk, causal=causal, window=window, key_mask=key_mask, device=q.device,
                           global_tokens=global_tokens)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)


# ----------------------------------------------------------------------------- low rank


def low_rank_attention_reference(q, k, v, *, scale: float | None = None, **kw) -> tuple[Tensor, Tensor, Tensor]:
    """Guo et al. 2019, low-rank module: q, k (B, H, T, r) with r <= D, so rank(q kᵀ) <= r.

    Scores q·k/√r (``scale`` defaults to r^-1/2); values stay D-dimensional (B, H, T, D).
    """
    return dense_attention_reference(q, k, v, scale=scale or q.shape[-1] ** -0.5, **kw)


def low_rank_attention(q, k, v, *, scale: float | None = None, **kw) -> Tensor:
    """Fast low-rank attention: SDPA on q, k zero-padded from r to D (see ``dense_attention``)."""
    return dense_attention(q, k, v, scale=scale or q.shape[-1] ** -0.5, **kw)

