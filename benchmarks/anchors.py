"""Anchors of the benchmarks: earlier or simpler kernels the library's are measured against, kept
here (not in the Hub code) because nothing but a benchmark calls them."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from hf_attn_variants.hfav_kernels import additive_scores, allowed_mask, masked_softmax_attention

Tensor = torch.Tensor


def additive_chunk_size(batch_heads: int, tk: int, dim: int, budget: int = 1 << 22) -> int:
    """Query rows per chunk so that one chunk's (B·H, c, Tk, a) tanh holds about ``budget`` floats."""
    return max(1, budget // max(1, batch_heads * tk * dim))


def additive_attention_chunked(
    q: Tensor, k: Tensor, v: Tensor, w: Tensor, *, causal: bool, key_mask: Tensor | None = None,
    window: int | None = None, dropout_p: float = 0.0, chunk_size: int | None = None,
) -> Tensor:
    """Additive attention without the (B, H, Tq, Tk, a) tensor, the simple way (the benchmark baseline).

    Scores are computed a chunk of queries at a time; under autograd each chunk is
    checkpointed, so the backward pass recomputes its tanh instead of storing it.
    Memory O(B·H·Tq·Tk + chunk·Tk·a). q, k (B, H, T, a), v (B, H, Tk, Dv), w (H, a).
    """
    B, H, tq, a = q.shape
    c = chunk_size or additive_chunk_size(B * H, k.shape[-2], a)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or w.requires_grad)
    chunks = []
    for start in range(0, tq, c):
        qc = q[:, :, start:start + c]
        chunks.append(checkpoint(additive_scores, qc, k, w, use_reentrant=False) if grad
                      else additive_scores(qc, k, w))
    scores = torch.cat(chunks, dim=2)  # (B, H, Tq, Tk)
    allowed = allowed_mask(tq, k.shape[-2], causal=causal, window=window, key_mask=key_mask, device=q.device)
    return masked_softmax_attention(scores, v, allowed, dropout_p)[0]

