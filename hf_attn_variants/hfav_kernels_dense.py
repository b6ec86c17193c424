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


# Whether ``dense_attention`` zero-pads q, k narrower than v (low_rank: r < D) to v's head size, per
# device type. The padding costs two (B, H, T, D) copies and D/r times the score FLOPs; it pays only
# where SDPA would otherwise leave its fused kernels.
# - cpu: True. SDPA's fused CPU kernel needs equal head sizes; q/k at r send it to the math path
#   (T x T scores in memory). Measured side by side: `python benchmarks/bench_kernels.py --only low_rank`
#   (columns low_rank = padded, unpadded), see docs/speed-gpu.md.
# - cuda: False. The memory-efficient kernel takes q/k at r and v at D. Measured on an H200
#   (2026-12-04, commit c0344d2, bf16, r=16, D=64, T=512/2048): SDPA unpadded 0.98-1.28x dense,
#   padded 0.43-0.55x dense forward and 0.61-0.82x forward+backward.
# Other device types: pad (the safe choice where not measured).
PAD_QK_TO_V = {"cpu": True, "cuda": False}


def pads_qk(device_type: str) -> bool:
    """Whether q, k narrower than v are zero-padded to v's head size on this device type (``PAD_QK_TO_V``)."""
    return PAD_QK_TO_V.get(device_type, True)


def dense_attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float, causal: bool,
    key_mask: Tensor | None = None, window: int | None = None, dropout_p: float = 0.0, global_tokens: int = 0,
) -> Tensor:
    """Scaled dot-product attention through ``F.scaled_dot_product_attention``.

    q, k (B, H, T, Dqk), v (B, H, T, Dv). A q/k head size different from v's sends SDPA to
    its slow math path on CPU, so there q and k are zero-padded to Dv (the scores do not change);
    on CUDA they are not (``PAD_QK_TO_V``).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    if q.shape[-1] < v.shape[-1] and pads_qk(q.device.type):
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
    """Fast low-rank attention: SDPA on q, k at r, zero-padded to D where that keeps SDPA's fused
    kernel (CPU; ``PAD_QK_TO_V``, see ``dense_attention``)."""
    return dense_attention(q, k, v, scale=scale or q.shape[-1] ** -0.5, **kw)

