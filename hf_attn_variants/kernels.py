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

from .band_flex import band_flex_attention
from .precision import autocast_on, in_fp32

Tensor = torch.Tensor


# Where |z1|, |z2| <= EXP_TANH_BOUND, the additive and LSTMN kernels compute tanh(z1 + z2) as
# 1 - 2 / (1 + e^{2 z1} e^{2 z2}) from exponentials taken once per query and once per key: no
# overflow in fp32 (e^{80} < 3e38), and the absolute error is that of tanh itself.
EXP_TANH_BOUND = 20.0


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
    """Query block of the blocked band kernel: about a quarter of the window, within [16, 64]
    (smaller blocks waste fewer out-of-band scores, larger ones make fewer, bigger SDPA tiles;
    measured best for w = 128 on a 2-core CPU: 32)."""
    return max(16, min(64, (1 << max(0, window).bit_length()) // 4))


def band_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float, causal: bool,
    key_mask: Tensor | None = None, dropout_p: float = 0.0, block_size: int | None = None,
    flex: bool | None = None,
) -> Tensor:
    """Exact band attention that skips the blocks outside the band. O(T·(b + 2w)) time and memory.

    It runs compiled ``flex_attention`` with a sliding-window block mask built once per forward
    (``band_flex.py``) where that applies: on CUDA (``flex`` None or True), and on CPU for no-grad
    calls when ``flex=True``; a fallback from there warns once with its reason. Otherwise:

    Queries are cut into blocks of b; block n reads only keys [n·b - w, n·b + b - 1 + w]
    (or [n·b - w, n·b + b - 1] when causal), gathered with ``unfold`` from a padded copy of
    k and v. Each block runs as one SDPA call with its small (b, b + L + R) mask.
    q, k, v: (B, H, T, D). Decoding (Tq < Tk) and windows covering the sequence go to the
    dense kernel, which is exact and no slower there.
    """
    B, H, T, D = q.shape
    if flex is not False and window < T - 1:
        out = band_flex_attention(q, k, v, window=window, scale=scale, causal=causal, key_mask=key_mask,
                                  dropout_p=dropout_p, flex=flex)
        if out is not None:
            return out
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


# per device type: (floats in one tile's (B·H, tq, tk, a) tensor, most key columns per tile). CPU: a few
# MiB that stay in cache (measured on a 2-core EPYC). CUDA: no cache to fit, and each tile costs kernel
# launches, so tiles are as large as memory comfortably allows (64 MiB fp32; not measured yet: see
# benchmarks/gpu_session.sh, additive stage)
ADDITIVE_TILES = {"cpu": (1 << 20, 256), "cuda": (1 << 24, 4096)}


def additive_tile_sizes(batch_heads: int, tk: int, dim: int, budget: int | None = None,
                        device_type: str = "cpu") -> tuple[int, int]:
    """(query rows, key columns) of one tile of the tiled additive kernel, so that a tile's
    (B·H, tq, tk, a) tensor holds about ``budget`` floats (default: ``ADDITIVE_TILES`` of the device)."""
    default_budget, max_k = ADDITIVE_TILES.get(device_type, ADDITIVE_TILES["cpu"])
    tile_k = min(tk, max_k)
    return max(1, (budget or default_budget) // max(1, batch_heads * tile_k * dim)), tile_k


def _key_range(i0: int, i1: int, offset: int, tk: int, causal: bool, window: int | None) -> tuple[int, int]:
    """Keys [lo, hi) that queries i0..i1-1 (at key positions i + offset) may read at all."""
    lo = max(0, i0 + offset - window) if window is not None else 0
    hi = i1 + offset if causal else (min(tk, i1 + offset + window) if window is not None else tk)
    return lo, hi


def _tile_allowed(i0, i1, j0, j1, offset, causal, window, key_mask, device) -> Tensor:
    """``allowed_mask`` restricted to queries [i0, i1) and keys [j0, j1): (B or 1, 1, i1-i0, j1-j0)."""
    diff = (torch.arange(i0, i1, device=device) + offset)[:, None] - torch.arange(j0, j1, device=device)[None]
    allowed = torch.ones_like(diff, dtype=torch.bool)
    if causal:
        allowed &= diff >= 0
    if window is not None:
        allowed &= diff <= window if causal else diff.abs() <= window
    allowed = allowed[None, None]
    if key_mask is not None:
        allowed = allowed & (key_mask[:, None, None, j0:j1] | (diff == 0))
    return allowed


def _additive_tile_forward(qe: Tensor, ke: Tensor, w2: Tensor) -> Tensor:
    """Exp-path scores of one tile, written for ``torch.compile`` to fuse into one loop over a:
    qe (BH, tq, a) = e^{2q}, ke (BH, tk, a) = e^{2k}, w2 (BH, a) -> -2 Σ_a w_a R_ija (BH, tq, tk)."""
    r = torch.reciprocal(1 + qe[:, :, None, :] * ke[:, None, :, :])  # (BH, tq, tk, a), never stored when compiled
    return (r * w2[:, None, None, :]).sum(-1) * -2


def _additive_tile_backward(qe: Tensor, ke: Tensor, w2: Tensor, ds: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Exp-path gradients of one tile given ds = d loss / d score (BH, tq, tk): the parts of
    dq / w (BH, tq, a), dk / w (BH, tk, a) and dw (BH, a) (see ``_AdditiveTiled``)."""
    r = torch.reciprocal(1 + qe[:, :, None, :] * ke[:, None, :, :])  # (BH, tq, tk, a)
    g = ds[..., None] * (r - r * r) * 4
    dw = ds.sum((1, 2))[:, None] - 2 * (ds[..., None] * r).sum((1, 2))
    return g.sum(2), g.sum(1), dw


_COMPILED: dict = {}


def _compiled(fn):
    """``torch.compile(fn)`` made on first use (optional path: needs a working inductor backend)."""
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


class _AdditiveTiled(torch.autograd.Function):
    """Tiled additive attention (Bahdanau et al. 2015, e_ij = wᵀ tanh(q_i + k_j)), in the manner of
    FlashAttention: scores a (query tile, key tile) at a time, then the tile's masked softmax and
    its product with v; only the output (B, H, Tq, Dv) and the row log-sum-exp (B, H, Tq) are kept,
    and the backward pass recomputes every tile. A query tile keeps its whole score row
    (tile_q x Tk floats, no a) instead of an online softmax across key tiles: the same O(T·tile)
    bound, one exact softmax per row. Key tiles outside the mask (causal, window) are skipped.

    tanh(q_i + k_j) is evaluated as 1 - 2 / (1 + e^{2q_i} e^{2k_j}): the exponentials are
    O(T·a) and computed once, so a (query, key, dim) triple costs a multiply, an add and a
    reciprocal instead of a tanh. The constant Σ_a w_a drops out of the softmax, so the
    kernel scores with s_ij = -2 Σ_a w_a R_ija, R = 1 / (1 + e^{2q} e^{2k}), and
    d tanh / dz = 4 R (1 - R). Used when |q|, |k| <= ``EXP_TANH_BOUND``; otherwise the tiles call
    tanh directly (``exp_trick`` False).
    """

    @staticmethod
    def _scores(qe, ke, w3, exp_trick):
        """One tile: qe (BH, tq, a), ke (BH, tk, a), w3 (BH, a, 1) -> (scores (BH, tq, tk), R or tanh)."""
        bh, tq, a = qe.shape
        tk = ke.shape[1]
        if exp_trick:
            r = torch.addcmul(qe.new_ones(()), qe[:, :, None], ke[:, None]).reciprocal_()  # (BH, tq, tk, a)
            return (r.view(bh, tq * tk, a) @ w3).view(bh, tq, tk).mul_(-2), r
        t = torch.add(qe[:, :, None], ke[:, None]).tanh_()  # (BH, tq, tk, a)
        return (t.view(bh, tq * tk, a) @ w3).view(bh, tq, tk), t

    @staticmethod
    def _flatten(q, k, v, w, exp_trick: bool):
        """Heads folded into the batch: q, k (BH, T, a) (as e^{2q}, e^{2k} on the exp path),
        v (BH, Tk, Dv), w (BH, a, 1)."""
        B, H, _, a = q.shape
        qe = (q * 2).exp_() if exp_trick else q
        ke = (k * 2).exp_() if exp_trick else k
        w3 = w.unsqueeze(0).expand(B, H, a).reshape(B * H, a, 1)
        return qe.flatten(0, 1), ke.flatten(0, 1), v.flatten(0, 1), w3

    @staticmethod
    def forward(ctx, q, k, v, w, causal, key_mask, window, dropout_p, tile_q, tile_k, compiled):
        if autocast_on(q):  # mixed precision: this Function computes in fp32 (precision.py)
            return in_fp32(_AdditiveTiled.forward, ctx, q, k, v, w, causal, key_mask, window, dropout_p, tile_q,
                           tile_k, compiled)
        B, H, tq_all, a = q.shape
        tk_all, dv = k.shape[2], v.shape[3]
        offset = tk_all - tq_all
        exp_trick = (q.dtype in (torch.float32, torch.float64) and bool(q.abs().max() <= EXP_TANH_BOUND)
                     and bool(k.abs().max() <= EXP_TANH_BOUND))
        compiled = compiled and exp_trick
        qe, ke, vf, w3 = _AdditiveTiled._flatten(q, k, v, w, exp_trick)
        out = q.new_empty(B * H, tq_all, dv)
        lse = q.new_empty(B * H, tq_all)
        seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
        for n, i0 in enumerate(range(0, tq_all, tile_q)):
            i1 = min(tq_all, i0 + tile_q)
            lo, hi = _key_range(i0, i1, offset, tk_all, causal, window)
            if compiled:
                s = _compiled(_additive_tile_forward)(qe[:, i0:i1], ke[:, lo:hi], w3[..., 0])
            else:
                s = torch.cat([_AdditiveTiled._scores(qe[:, i0:i1], ke[:, j0:min(hi, j0 + tile_k)], w3, exp_trick)[0]
                               for j0 in range(lo, hi, tile_k)], dim=2)  # (BH, tq, hi - lo)
            allowed = _tile_allowed(i0, i1, lo, hi, offset, causal, window, key_mask, q.device)
            s = s.view(B, H, i1 - i0, hi - lo).masked_fill_(~allowed, float("-inf")).view(B * H, i1 - i0, -1)
            lse[:, i0:i1] = torch.logsumexp(s, dim=-1)
            p = s.sub_(lse[:, i0:i1, None]).exp_()
            if dropout_p > 0:
                p = p * _dropout_scale(p.shape, dropout_p, seed + n, p)
            out[:, i0:i1] = p @ vf[:, lo:hi]
        ctx.save_for_backward(q, k, v, w, out, lse, key_mask)
        ctx.cfg = (causal, window, dropout_p, tile_q, tile_k, exp_trick, seed, compiled)
        return out.view(B, H, tq_all, dv)

    @staticmethod
    def backward(ctx, grad_out):
        if autocast_on(grad_out):
            return in_fp32(_AdditiveTiled.backward, ctx, grad_out)
        q, k, v, w, out, lse, key_mask = ctx.saved_tensors
        causal, window, dropout_p, tile_q, tile_k, exp_trick, seed, compiled = ctx.cfg
        B, H, tq_all, a = q.shape
        tk_all, dv = k.shape[2], v.shape[3]
        offset = tk_all - tq_all
        qe, ke, vf, w3 = _AdditiveTiled._flatten(q, k, v, w, exp_trick)
        go = grad_out.reshape(B * H, tq_all, dv)
        delta = (go * out).sum(-1)  # (BH, Tq): rowsum(dO ⊙ O)
        dq, dk, dvv = torch.zeros_like(qe), torch.zeros_like(ke), torch.zeros_like(vf)
        dw = q.new_zeros(B * H, a)
        for n, i0 in enumerate(range(0, tq_all, tile_q)):
            i1 = min(tq_all, i0 + tile_q)
            lo, hi = _key_range(i0, i1, offset, tk_all, causal, window)
            allowed = _tile_allowed(i0, i1, lo, hi, offset, causal, window, key_mask, q.device)
            if compiled:
                tiles = []
                s = _compiled(_additive_tile_forward)(qe[:, i0:i1], ke[:, lo:hi], w3[..., 0])
            else:
                tiles = [_AdditiveTiled._scores(qe[:, i0:i1], ke[:, j0:min(hi, j0 + tile_k)], w3, exp_trick)
                         for j0 in range(lo, hi, tile_k)]
                s = torch.cat([t[0] for t in tiles], dim=2)  # (BH, tq, hi - lo)
            s = s.view(B, H, i1 - i0, hi - lo).masked_fill_(~allowed, float("-inf")).view(B * H, i1 - i0, -1)
            p = s.sub_(lse[:, i0:i1, None]).exp_()  # (BH, tq, hi - lo)
            dp = go[:, i0:i1] @ vf[:, lo:hi].transpose(1, 2)
            if dropout_p > 0:
                keep = _dropout_scale(p.shape, dropout_p, seed + n, p)
                dvv[:, lo:hi] += (p * keep).transpose(1, 2) @ go[:, i0:i1]
                dp.mul_(keep)
            else:
                dvv[:, lo:hi] += p.transpose(1, 2) @ go[:, i0:i1]
            ds = p.mul_(dp.sub_(delta[:, i0:i1, None]))  # (BH, tq, hi - lo): d loss / d score
            if compiled:
                dq_t, dk_t, dw_t = _compiled(_additive_tile_backward)(qe[:, i0:i1], ke[:, lo:hi], w3[..., 0], ds)
                dq[:, i0:i1] += dq_t
                dk[:, lo:hi] += dk_t
                dw += dw_t
            for j0, (_, r) in zip(range(lo, hi, tile_k), tiles):
                j1 = min(hi, j0 + tile_k)
                dsj = ds[:, :, j0 - lo:j1 - lo]  # (BH, tq, tk)
                # d loss / d w_a = Σ ds_ij tanh_ija; tanh = 1 - 2R on the exp path
                red = (dsj.reshape(B * H, 1, -1) @ r.view(B * H, -1, a)).squeeze(1)  # (BH, a)
                dw += dsj.sum((1, 2))[:, None] - 2 * red if exp_trick else red
                # d tanh / dz: 4R(1 - R), or 1 - tanh²
                g = r.addcmul_(r, r, value=-1).mul_(4) if exp_trick else r.mul_(r).neg_().add_(1)
                g.mul_(dsj.unsqueeze(-1))  # (BH, tq, tk, a)
                dq[:, i0:i1] += g.sum(2)
                dk[:, j0:j1] += g.sum(1)
        dq.mul_(w3.transpose(1, 2))
        dk.mul_(w3.transpose(1, 2))
        return (dq.view_as(q), dk.view_as(k), dvv.view_as(v), dw.view(B, H, a).sum(0),
                None, None, None, None, None, None, None)


def _dropout_scale(shape, p: float, seed: int, like: Tensor) -> Tensor:
    """Keep mask / (1 - p), drawn from its own seeded generator so that backward redraws it."""
    gen = torch.Generator(device=like.device).manual_seed(seed)
    keep = torch.rand(shape, generator=gen, device=like.device, dtype=like.dtype) >= p
    return keep.to(like.dtype).div_(1 - p)


def additive_attention(
    q: Tensor, k: Tensor, v: Tensor, w: Tensor, *, causal: bool, key_mask: Tensor | None = None,
    window: int | None = None, dropout_p: float = 0.0, chunk_size: int | None = None,
    tile_k: int | None = None, compiled: bool = False,
) -> Tensor:
    """Bahdanau et al. 2015 additive attention, tiled: softmax_j(wᵀ tanh(q_i + k_j)) v_j.

    q, k (B, H, Tq/Tk, a), v (B, H, Tk, Dv), w (H, a) -> (B, H, Tq, Dv). Works a tile of
    ``chunk_size`` queries x ``tile_k`` keys at a time (see ``_AdditiveTiled``), skips the key
    tiles the mask rules out (causal, window), keeps only the output and the row log-sum-exp
    and recomputes the tiles in the backward pass: memory O(T·a + tile·Tk·a), never O(T²·a)
    nor O(T²). Dropout masks are redrawn in the backward pass from a per-tile seed.
    ``compiled=True`` (optional; needs ``torch.compile`` with a C++/Triton toolchain) fuses each
    tile's scores and gradients into single loops over a, so the (tile, Tk, a) tensor is never
    written; the first call compiles for a while.
    """
    B, H, _, a = q.shape
    tile_q, tk_default = additive_tile_sizes(B * H, k.shape[-2], a, device_type=q.device.type)
    if compiled:
        tile_q = max(tile_q, 32)  # nothing of size (tile, Tk, a) is stored: bigger tiles, fewer calls
    return _AdditiveTiled.apply(q, k, v, w, causal, key_mask, window, dropout_p,
                                chunk_size or tile_q, tile_k or tk_default, compiled)


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


def _lstmn_exp_trick(xs: Tensor, w_tape: Tensor, w_summary: Tensor) -> bool:
    """Whether every key and query of the recurrence is bounded by ``EXP_TANH_BOUND``: |h| < 1 and
    h̃ is a convex mix of h's, so |W_h h| <= max row-sum |W_h| and |W_x x + W_h̃ h̃| <= |W_x x| + |W_h̃|."""
    if xs.dtype not in (torch.float32, torch.float64):
        return False
    key_bound = w_tape.abs().sum(1).max()
    query_bound = xs.abs().max() + w_summary.abs().sum(1).max()
    return bool(key_bound <= EXP_TANH_BOUND) and bool(query_bound <= EXP_TANH_BOUND)


def _lstmn_scores(keys: Tensor, query: Tensor, score: Tensor, exp_trick: bool) -> tuple[Tensor, Tensor]:
    """One step's tape scores: keys (B, n, d), query (B, d) -> (scores (B, n), R or tanh (B, n, d)).

    tanh path: a_i = vᵀ tanh(k_i + q). exp path: keys hold e^{2k_i}; R = 1 / (1 + e^{2k_i} e^{2q}),
    tanh = 1 - 2R, and a_i = -2 vᵀ R_i (the constant Σ v drops out of the softmax).
    """
    if exp_trick:
        r = (keys * (2 * query).exp_()[:, None]).add_(1).reciprocal_()
        return r @ (-2 * score), r
    u = torch.tanh(keys + query[:, None])
    return u @ score, u


class _LSTMNRecurrence(torch.autograd.Function):
    """The LSTMN recurrence (Cheng et al. 2016, eq. 7-10) with a hand-written backward through time.

    Inputs: xs (B, T, d) = W_x x_t, xg (B, T, 4d) = W_gx x_t + b (both for all t at once),
    W_h, W_h̃ (d, d), v (d,), W_gh (4d, d) and the readable mask (B, T + 1) of the tape slots.
    The forward pass runs without autograd and keeps only O(T·d) per sequence: the tape
    [h_i | c_i] and its keys W_h h_i, the queries W_x x_t + W_h̃ h̃_{t-1}, the summaries
    [h̃_t | c̃_t] and the gate pre-activations. The backward pass walks t = T-1 .. 0, recomputes
    step t's attention s^t from the stored keys and query, and sends gradients to the tape
    slots it read; when it reaches step t, every later read of slot t + 1 is accounted for.
    """

    @staticmethod
    def forward(ctx, xs, xg, w_tape, w_summary, score, w_gates_h, readable):
        if autocast_on(xs):  # mixed precision: this Function computes in fp32 (precision.py)
            return in_fp32(_LSTMNRecurrence.forward, ctx, xs, xg, w_tape, w_summary, score, w_gates_h, readable)
        B, T, d = xs.shape
        tape = xs.new_zeros(B, T + 1, 2 * d)  # [h | c]; slot 0 is the zero slot, slot t + 1 is token t
        keys = xs.new_zeros(B, T + 1, d)  # W_h h_i, once per slot
        queries, gates = xs.new_empty(B, T, d), xs.new_empty(B, T, 4 * d)
        sums = xs.new_zeros(B, T + 1, 2 * d)  # [h̃_{t-1} | c̃_{t-1}] at index t
        bias = torch.zeros(readable.shape, dtype=xs.dtype, device=xs.device).masked_fill_(~readable, float("-inf"))
        exp_trick = _lstmn_exp_trick(xs, w_tape, w_summary)
        if exp_trick:
            keys.fill_(1)  # keys hold e^{2 W_h h_i}
        for t in range(T):
            q = torch.addmm(xs[:, t], sums[:, t, :d], w_summary.T, out=queries[:, t])  # (B, d)
            a = _lstmn_scores(keys[:, : t + 1], q, score, exp_trick)[0]  # (B, t + 1)
            s = torch.softmax(a.add_(bias[:, : t + 1]), dim=-1)
            hc_sum = torch.bmm(s[:, None], tape[:, : t + 1], out=sums[:, t + 1, None]).squeeze(1)  # (B, 2d)
            g = torch.addmm(xg[:, t], hc_sum[:, :d], w_gates_h.T, out=gates[:, t])  # (B, 4d)
            sg = g.sigmoid()
            c = torch.addcmul(sg[:, d:2 * d] * hc_sum[:, d:], sg[:, :d], g[:, 3 * d:].tanh(), out=tape[:, t + 1, d:])
            h = torch.mul(sg[:, 2 * d:3 * d], c.tanh(), out=tape[:, t + 1, :d])
            k = torch.mm(h, w_tape.T, out=keys[:, t + 1])
            if exp_trick:
                k.mul_(2).exp_()
        ctx.exp_trick = exp_trick
        ctx.save_for_backward(w_tape, w_summary, score, w_gates_h, bias, tape, keys, queries, sums, gates)
        return tape[:, 1:, :d].clone()

    @staticmethod
    def backward(ctx, grad_h):
        if autocast_on(grad_h):
            return in_fp32(_LSTMNRecurrence.backward, ctx, grad_h)
        w_tape, w_summary, score, w_gates_h, bias, tape, keys, queries, sums, gates = ctx.saved_tensors
        B, T, d = grad_h.shape
        # what the gate derivatives need, for all t at once: σ(i, f, o), tanh ĉ, tanh c_t
        sg = gates.sigmoid()
        i, f, o = sg[..., :d], sg[..., d:2 * d], sg[..., 2 * d:3 * d]
        tanh_chat, tanh_c = gates[..., 3 * d:].tanh(), tape[:, 1:, d:].tanh()
        coef = torch.cat([tanh_chat * i * (1 - i), sums[:, 1:, d:] * f * (1 - f),
                          tanh_c * o * (1 - o), i * (1 - tanh_chat**2)], dim=-1)  # (B, T, 4d)
        dc_from_h = o * (1 - tanh_c**2)  # (B, T, d)
        d_tape, d_keys = torch.zeros_like(tape), torch.zeros_like(keys)
        d_queries, d_gates = torch.zeros_like(queries), torch.zeros_like(gates)
        d_sum, d_score = grad_h.new_empty(B, 2 * d), torch.zeros_like(score)
        d_h_sum_next = grad_h.new_zeros(B, d)  # from step t + 1's query W_h̃ h̃_t
        for t in range(T - 1, -1, -1):
            # slot t + 1 holds (h_t, c_t): every read of it (steps > t) is already in d_tape, d_keys
            dh = torch.addmm(grad_h[:, t] + d_tape[:, t + 1, :d], d_keys[:, t + 1], w_tape)  # (B, d)
            dc = torch.addcmul(d_tape[:, t + 1, d:], dh, dc_from_h[:, t])
            dg = torch.mul(torch.cat([dc, dc, dh, dc], dim=-1), coef[:, t], out=d_gates[:, t])  # (B, 4d)
            torch.addmm(d_h_sum_next, dg, w_gates_h, out=d_sum[:, :d])
            torch.mul(dc, f[:, t], out=d_sum[:, d:])  # d loss / d [h̃_t | c̃_t]
            # recompute step t's attention over slots 0..t
            a, u = _lstmn_scores(keys[:, : t + 1], queries[:, t], score, ctx.exp_trick)  # (B, t + 1), (B, t + 1, d)
            s = torch.softmax(a.add_(bias[:, : t + 1]), dim=-1)  # (B, t + 1)
            d_tape[:, : t + 1].baddbmm_(s[:, :, None], d_sum[:, None])
            ds = torch.bmm(tape[:, : t + 1], d_sum[:, :, None]).squeeze(-1)  # (B, t + 1)
            da = torch._softmax_backward_data(ds, s, -1, s.dtype)
            # d loss / d v = Σ da_i tanh_i and d loss / d(k_i + q_t) = da_i v (1 - tanh_i²), where on
            # the exp path tanh = 1 - 2R and 1 - tanh² = 4R(1 - R)
            if ctx.exp_trick:
                d_score.addmv_(u.view(-1, d).T, da.view(-1), alpha=-2).add_(da.sum())
                dz = da[..., None] * (4 * score)
                dz.mul_(u.addcmul_(u, u, value=-1))  # (B, t + 1, d)
            else:
                d_score.addmv_(u.view(-1, d).T, da.view(-1))
                dz = da[..., None] * score
                dz.addcmul_(dz * u, u, value=-1)  # (B, t + 1, d)
            d_keys[:, : t + 1] += dz
            dq = torch.sum(dz, 1, out=d_queries[:, t])
            d_h_sum_next = dq @ w_summary
        flat = lambda x: x.reshape(-1, x.shape[-1])  # (B, T, n) -> (B·T, n)
        d_w_tape = flat(d_keys[:, 1:]).T @ flat(tape[:, 1:, :d])
        d_w_summary = flat(d_queries).T @ flat(sums[:, :-1, :d])
        d_w_gates_h = flat(d_gates).T @ flat(sums[:, 1:, :d])
        return d_queries, d_gates, d_w_tape, d_w_summary, d_score, d_w_gates_h, None


def lstmn_scan(cell, x: Tensor, key_mask: Tensor | None = None, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None]:
    """The LSTMN recurrence of ``lstmn_reference``, fast and lean.

    W_x x_t and the x-part of the gates are computed for all t at once; each tape slot's key
    W_h h_i is computed once, when the slot is written; the recurrence itself runs in
    ``_LSTMNRecurrence`` (activation memory O(T·d), backward through time by hand).
    x (B, T, d_in) -> h (B, T, d), attention (B, T, T + 1) or None. ``need_weights`` takes the
    autograd path of ``lstmn_scan_autograd``, which records the attention.
    """
    plain = all(type(getattr(cell, n)) is torch.nn.Linear for n in ("w_tape", "w_summary", "gates"))
    if need_weights or not plain:  # wrapped projections (e.g. PEFT LoRA) must be called, not read
        return lstmn_scan_autograd(cell, x, key_mask, need_weights=need_weights)
    B, T, _ = x.shape
    d = cell.hidden_size
    w_gates = cell.gates.weight  # (4d, d + d_in): columns [h̃ part | x part]
    xs = cell.w_input(x)  # (B, T, d)
    xg = F.linear(x, w_gates[:, d:], cell.gates.bias)  # (B, T, 4d)
    first = torch.ones(B, 1, dtype=torch.bool, device=x.device)
    readable = torch.cat([first, key_mask.bool() if key_mask is not None else first.expand(B, T)], dim=1)
    h = _LSTMNRecurrence.apply(xs, xg, cell.w_tape.weight, cell.w_summary.weight, cell.score, w_gates[:, :d],
                               readable)
    return h, None


def lstmn_scan_autograd(cell, x: Tensor, key_mask: Tensor | None = None, need_weights: bool = False
               ) -> tuple[Tensor, Tensor | None]:
    """The LSTMN recurrence of ``lstmn_reference`` with the work hoisted out of the loop, under autograd
    (stores O(T²·d) activations; ``lstmn_scan`` uses it only when the weights are asked for).

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
