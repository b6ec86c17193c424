"""Attention kernels of hf-attn-variants, each with a naive, readable reference beside it.

Every kernel takes per-head tensors shaped ``(B, H, T, D)`` (batch, heads, time, head dim)
and returns ``(B, H, Tq, Dv)``. Queries are the *last* ``Tq`` of the ``Tk`` key positions
(``Tq == Tk`` in a full forward pass, ``Tq < Tk`` when decoding with a cache).

Masking rule shared by all kernels (``allowed_mask``): query i may read key j when the
structure allows it (causal: j <= i; band: |i - j| <= w, or 0 <= i - j <= w when causal)
and key j is a real token. A query always may read itself, so a padded query whose whole
neighbourhood is padding still gets a finite output (its value is never used).

The references build the full ``(B, H, Tq, Tk)`` score matrix (and, for additive attention,
the full ``(B, H, Tq, Tk, a)`` tanh tensor): slow but obviously right. Tests compare every
kernel to its reference, forward and backward.

This file is Hub code: it imports only torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- masks


def allowed_mask(
    tq: int,
    tk: int,
    *,
    causal: bool,
    window: int | None = None,
    key_mask: Tensor | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Boolean ``(B or 1, 1, tq, tk)`` mask: True where query i may attend to key j.

    ``key_mask`` is ``(B, tk)`` bool, True for real tokens. Query i sits at key position
    ``i + tk - tq``.
    """
    q_pos = torch.arange(tq, device=device) + (tk - tq)
    k_pos = torch.arange(tk, device=device)
    diff = q_pos[:, None] - k_pos[None, :]  # (tq, tk): how far back key j lies
    allowed = torch.ones(tq, tk, dtype=torch.bool, device=device)
    if causal:
        allowed &= diff >= 0
    if window is not None:
        allowed &= diff <= window if causal else diff.abs() <= window
    allowed = allowed[None, None]  # (1, 1, tq, tk)
    if key_mask is not None:
        allowed = allowed & (key_mask[:, None, None, :] | (diff == 0))
    return allowed


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
    key_mask: Tensor | None = None, window: int | None = None, dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Vaswani et al. 2017: softmax(q kᵀ · scale) v, written out. Returns (out, weights, scores)."""
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Tq, Tk)
    allowed = allowed_mask(q.shape[-2], k.shape[-2], causal=causal, window=window,
                           key_mask=key_mask, device=q.device)
    out, weights = masked_softmax_attention(scores, v, allowed, dropout_p)
    return out, weights, scores


def dense_attention(
    q: Tensor, k: Tensor, v: Tensor, *, scale: float, causal: bool,
    key_mask: Tensor | None = None, window: int | None = None, dropout_p: float = 0.0,
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
    allowed = allowed_mask(tq, tk, causal=causal, window=window, key_mask=key_mask, device=q.device)
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


# ----------------------------------------------------------------------------- band


def band_attention_reference(q, k, v, *, window: int, **kw) -> tuple[Tensor, Tensor, Tensor]:
    """Guo et al. 2019, band module: dense scores kept only where |i - j| <= w
    (bidirectional) or 0 <= i - j <= w (causal); the rest is -inf. (B, H, T, D) in."""
    return dense_attention_reference(q, k, v, window=window, **kw)


def band_block_size(window: int) -> int:
    """Query block of the blocked band kernel: about the window, within [16, 128]."""
    return max(16, min(128, 1 << max(0, window).bit_length()))


def band_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float, causal: bool,
    key_mask: Tensor | None = None, dropout_p: float = 0.0, block_size: int | None = None,
) -> Tensor:
    """Exact band attention that skips the blocks outside the band. O(T·(b + 2w)) time and memory.

    Queries are cut into blocks of b; block n reads only keys [n·b - w, n·b + b - 1 + w]
    (or [n·b - w, n·b + b - 1] when causal), gathered with ``unfold`` from a padded copy of
    k and v. Each block runs as one SDPA call with its small (b, b + L + R) mask.
    q, k, v: (B, H, T, D). Decoding (Tq < Tk) and windows covering the sequence go to the
    dense kernel, which is exact and no slower there.
    """
    B, H, T, D = q.shape
    if k.shape[-2] != T or window >= T - 1:
        return dense_attention(q, k, v, scale=scale, causal=causal, key_mask=key_mask,
                               window=None if window >= k.shape[-2] - 1 else window, dropout_p=dropout_p)
    b = block_size or band_block_size(window)
    nb = math.ceil(T / b)
    left, right = window, 0 if causal else window
    span = b + left + right  # keys one block of queries can reach
    tail = nb * b - T  # queries padded at the end so that T divides into blocks
    q = F.pad(q, (0, 0, 0, tail))
    k_win = F.pad(k, (0, 0, left, tail + right)).unfold(2, span, b)  # (B, H, nb, D, span)
    v_win = F.pad(v, (0, 0, left, tail + right)).unfold(2, span, b)
    valid = torch.ones(B, T, dtype=torch.bool, device=q.device) if key_mask is None else key_mask
    valid = F.pad(valid, (left, tail + right), value=False).unfold(1, span, b)  # (B, nb, span)

    qi = torch.arange(b, device=q.device)[:, None]
    kj = torch.arange(span, device=q.device)[None, :]
    diff = qi + left - kj  # (b, span): query position minus key position
    band = (diff >= 0) & (diff <= window) if causal else diff.abs() <= window
    allowed = band & (valid[:, :, None, :] | (diff == 0))  # (B, nb, b, span)

    # (B, H, nb·b, D) -> (B·nb, H, b, D): one SDPA batch entry per block
    qb = q.view(B, H, nb, b, D).transpose(1, 2).reshape(B * nb, H, b, D)
    kb = k_win.permute(0, 2, 1, 4, 3).reshape(B * nb, H, span, D)
    vb = v_win.permute(0, 2, 1, 4, 3).reshape(B * nb, H, span, v.shape[-1])
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed.view(B * nb, 1, b, span),
                                         dropout_p=dropout_p, scale=scale)
    out = out.view(B, nb, H, b, -1).transpose(1, 2).reshape(B, H, nb * b, -1)  # (B, H, nb·b, Dv)
    return out[:, :, :T]


# ----------------------------------------------------------------------------- additive


def additive_scores(q: Tensor, k: Tensor, w: Tensor) -> Tensor:
    """Bahdanau et al. 2015: e_ij = wᵀ tanh(q_i + k_j), q_i = W_q x_i + b, k_j = W_k x_j.

    q (B, H, Tq, a), k (B, H, Tk, a), w (H, a) -> scores (B, H, Tq, Tk).
    Builds the (B, H, Tq, Tk, a) tensor: call it on query chunks.
    """
    return torch.einsum("bhqka,ha->bhqk", torch.tanh(q.unsqueeze(3) + k.unsqueeze(2)), w)


def additive_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, w: Tensor, *, causal: bool, key_mask: Tensor | None = None,
    window: int | None = None, dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Additive attention written out: full (B, H, Tq, Tk, a) tanh, masked softmax, dot with v."""
    scores = additive_scores(q, k, w)
    allowed = allowed_mask(q.shape[-2], k.shape[-2], causal=causal, window=window,
                           key_mask=key_mask, device=q.device)
    out, weights = masked_softmax_attention(scores, v, allowed, dropout_p)
    return out, weights, scores


def additive_chunk_size(batch_heads: int, tk: int, dim: int, budget: int = 1 << 22) -> int:
    """Query rows per chunk so that one chunk's (B·H, c, Tk, a) tanh holds about ``budget`` floats."""
    return max(1, budget // max(1, batch_heads * tk * dim))


def additive_attention(
    q: Tensor, k: Tensor, v: Tensor, w: Tensor, *, causal: bool, key_mask: Tensor | None = None,
    window: int | None = None, dropout_p: float = 0.0, chunk_size: int | None = None,
) -> Tensor:
    """Additive attention without the (B, H, Tq, Tk, a) tensor.

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


# ----------------------------------------------------------------------------- LSTMN


def lstmn_gates(gates: Tensor, c_summary: Tensor) -> tuple[Tensor, Tensor]:
    """[i; f; o; ĉ] = [σ; σ; σ; tanh](gates); c = f ⊙ c̃ + i ⊙ ĉ; h = o ⊙ tanh(c)."""
    i, f, o, c_hat = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_summary + torch.sigmoid(i) * torch.tanh(c_hat)
    return torch.sigmoid(o) * torch.tanh(c), c


def lstmn_reference(cell, x: Tensor, key_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Cheng et al. 2016, LSTMN, one direction, step by step exactly as written:

        a_i^t = vᵀ tanh(W_h h_i + W_x x_t + W_h̃ h̃_{t-1}),  s^t = softmax_i(a^t), i < t
        [h̃_t; c̃_t] = Σ_i s_i^t [h_i; c_i]
        [i_t; f_t; o_t; ĉ_t] = [σ; σ; σ; tanh](W [h̃_t; x_t] + b)
        c_t = f_t ⊙ c̃_t + i_t ⊙ ĉ_t,   h_t = o_t ⊙ tanh(c_t)

    The tape starts with a zero slot (h_0 = c_0 = 0); the slots of padding tokens are never
    read. ``cell`` holds w_tape (W_h), w_input (W_x), w_summary (W_h̃), score (v), gates (W, b).
    x (B, T, d_in) -> h (B, T, d), and the attention s (B, T, T + 1) over [zero slot, tokens].
    """
    B, T, _ = x.shape
    d = cell.hidden_size
    tape_h, tape_c = [x.new_zeros(B, d)], [x.new_zeros(B, d)]
    readable = [torch.ones(B, dtype=torch.bool, device=x.device)]
    h_sum = x.new_zeros(B, d)
    outputs, attention = [], x.new_zeros(B, T, T + 1)
    for t in range(T):
        hs, cs = torch.stack(tape_h, 1), torch.stack(tape_c, 1)  # (B, t + 1, d)
        a = torch.tanh(cell.w_tape(hs) + cell.w_input(x[:, t])[:, None] + cell.w_summary(h_sum)[:, None])
        a = (a @ cell.score).masked_fill(~torch.stack(readable, 1), float("-inf"))  # (B, t + 1)
        s = torch.softmax(a, dim=-1)
        h_sum, c_sum = (s[..., None] * hs).sum(1), (s[..., None] * cs).sum(1)
        h, c = lstmn_gates(cell.gates(torch.cat([h_sum, x[:, t]], dim=-1)), c_sum)
        tape_h.append(h)
        tape_c.append(c)
        readable.append(key_mask[:, t] if key_mask is not None else readable[0])
        outputs.append(h)
        attention[:, t, : t + 1] = s.detach()
    return torch.stack(outputs, 1), attention


def lstmn_scan(cell, x: Tensor, key_mask: Tensor | None = None, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None]:
    """The LSTMN recurrence of ``lstmn_reference`` with the work hoisted out of the loop.

    W_x x_t and the x-part of the gates are computed for all t at once; each tape slot's key
    W_h h_i is computed once, when the slot is written, not once per step.
    x (B, T, d_in) -> h (B, T, d), attention (B, T, T + 1) or None.
    """
    B, T, _ = x.shape
    d = cell.hidden_size
    x_scores = cell.w_input(x)  # (B, T, d)
    fused = isinstance(cell.gates, torch.nn.Linear)  # else a wrapper (e.g. PEFT LoRA): called per step
    if fused:
        w_gates = cell.gates.weight  # (4d, d + d_in): columns [h̃ part | x part]
        x_gates = F.linear(x, w_gates[:, d:], cell.gates.bias)  # (B, T, 4d)
        w_gates_h = w_gates[:, :d]
    tape_h, tape_c, tape_k = [x.new_zeros(B, d)], [x.new_zeros(B, d)], [x.new_zeros(B, d)]
    readable = [torch.ones(B, dtype=torch.bool, device=x.device)]
    h_sum = x.new_zeros(B, d)
    outputs, attention = [], x.new_zeros(B, T, T + 1) if need_weights else None
    for t in range(T):
        query = x_scores[:, t] + cell.w_summary(h_sum)  # (B, d)
        a = torch.tanh(torch.stack(tape_k, 1) + query[:, None]) @ cell.score  # (B, t + 1)
        s = torch.softmax(a.masked_fill(~torch.stack(readable, 1), float("-inf")), dim=-1)
        h_sum = torch.einsum("bs,bsd->bd", s, torch.stack(tape_h, 1))
        c_sum = torch.einsum("bs,bsd->bd", s, torch.stack(tape_c, 1))
        gates = x_gates[:, t] + h_sum @ w_gates_h.T if fused else cell.gates(torch.cat([h_sum, x[:, t]], dim=-1))
        h, c = lstmn_gates(gates, c_sum)
        tape_h.append(h)
        tape_c.append(c)
        tape_k.append(cell.w_tape(h))
        readable.append(key_mask[:, t] if key_mask is not None else readable[0])
        outputs.append(h)
        if attention is not None:
            attention[:, t, : t + 1] = s.detach()
    return torch.stack(outputs, 1), attention
