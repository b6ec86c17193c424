"""Additive attention (Bahdanau et al. 2015, e_ij = wᵀ tanh(q_i + k_j)): the naive reference, the
tiled kernel with a recomputing backward (``_AdditiveTiled``). (The earlier chunked kernel is the
benchmarks' anchor: ``benchmarks/anchors.py``.)

Hub code: imports only torch and sibling files.
"""

from __future__ import annotations

import torch

from .hfav_kernels_dense import masked_softmax_attention
from .hfav_pairs import allowed_mask, key_range, tile_mask
from .hfav_precision import autocast_on, in_fp32

Tensor = torch.Tensor

# Where |z1|, |z2| <= EXP_TANH_BOUND, the additive and LSTMN kernels compute tanh(z1 + z2) as
# 1 - 2 / (1 + e^{2 z1} e^{2 z2}) from exponentials taken once per query and once per key: no
# overflow in fp32 (e^{80} < 3e38), and the absolute error is that of tanh itself.
EXP_TANH_BOUND = 20.0


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


# Tiles per device: (floats in one tile's (B·H, tq, tk, a) tensor, most key columns per tile), looked up
# by ``additive_tile_key``: "cuda:smXY" (compute capability X.Y) first, then the device type, then "cpu".
# - cpu: a few MiB that stay in cache (measured on a 2-core EPYC).
# - cuda: 2^22 floats (16 MiB fp32), the chunk of the chunked baseline. On an H200 (2026-12-04, commit
#   c0344d2, fp32, a=64, B·H=8, T=256/1024) the tiled kernel with 2^24-float tiles ran 25-27 G triples/s
#   forward where the chunked one, whose chunks hold 2^22 floats, ran 38-47 G/s. Whether 2^22 closes
#   the gap is not measured: benchmarks/gpu_session.sh (additive stage) times both tile sizes side by side.
# - cuda:sm90 (H100/H200): as cuda until measured; the entry is where a measured Hopper choice goes.
ADDITIVE_TILES = {"cpu": (1 << 20, 256), "cuda": (1 << 22, 4096), "cuda:sm90": (1 << 22, 4096)}


def additive_tile_key(device: torch.device | str) -> str:
    """The ``ADDITIVE_TILES`` entry for a device: "cuda:smXY" where the table has the device's compute
    capability, else its type if the table has it, else "cpu"."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        if f"cuda:sm{major}{minor}" in ADDITIVE_TILES:
            return f"cuda:sm{major}{minor}"
    return device.type if device.type in ADDITIVE_TILES else "cpu"


def additive_tile_sizes(batch_heads: int, tk: int, dim: int, budget: int | None = None,
                        device_type: str = "cpu") -> tuple[int, int]:
    """(query rows, key columns) of one tile of the tiled additive kernel, so that a tile's
    (B·H, tq, tk, a) tensor holds about ``budget`` floats (default: ``ADDITIVE_TILES[device_type]``,
    where device_type is a key of that table, e.g. from ``additive_tile_key``)."""
    default_budget, max_k = ADDITIVE_TILES.get(device_type, ADDITIVE_TILES["cpu"])
    tile_k = min(tk, max_k)
    return max(1, (budget or default_budget) // max(1, batch_heads * tile_k * dim)), tile_k


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
            return (r.reshape(bh, tq * tk, a) @ w3).view(bh, tq, tk).mul_(-2), r  # any strides of qe, ke
        t = torch.add(qe[:, :, None], ke[:, None]).tanh_()  # (BH, tq, tk, a)
        return (t.reshape(bh, tq * tk, a) @ w3).view(bh, tq, tk), t

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
        if autocast_on(q):  # mixed precision: this Function computes in fp32 (hfav_precision.py)
            return in_fp32(_AdditiveTiled.forward, ctx, q, k, v, w, causal, key_mask, window, dropout_p, tile_q,
                           tile_k, compiled)
        B, H, tq_all, a = q.shape
        tk_all, dv = k.shape[2], v.shape[3]
        offset = tk_all - tq_all
        exp_trick = _exp_trick(q, k)
        compiled = compiled and exp_trick
        qe, ke, vf, w3 = _AdditiveTiled._flatten(q, k, v, w, exp_trick)
        out = q.new_empty(B * H, tq_all, dv)
        lse = q.new_empty(B * H, tq_all)
        seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0 else 0
        for n, i0 in enumerate(range(0, tq_all, tile_q)):
            i1 = min(tq_all, i0 + tile_q)
            lo, hi = key_range(i0 + offset, i1 + offset, tk_all, causal=causal, window=window)
            if compiled:
                s = _compiled(_additive_tile_forward)(qe[:, i0:i1], ke[:, lo:hi], w3[..., 0])
            else:
                s = torch.cat([_AdditiveTiled._scores(qe[:, i0:i1], ke[:, j0:min(hi, j0 + tile_k)], w3, exp_trick)[0]
                               for j0 in range(lo, hi, tile_k)], dim=2)  # (BH, tq, hi - lo)
            allowed = tile_mask(i0 + offset, i1 + offset, lo, hi, causal=causal, window=window, key_mask=key_mask,
                               device=q.device)
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
            lo, hi = key_range(i0 + offset, i1 + offset, tk_all, causal=causal, window=window)
            allowed = tile_mask(i0 + offset, i1 + offset, lo, hi, causal=causal, window=window, key_mask=key_mask,
                               device=q.device)
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


def _exp_trick(q: Tensor, k: Tensor) -> bool:
    """Whether the tiles may take the exp path: float32/64 and every |q|, |k| <= ``EXP_TANH_BOUND``. Reading
    the bound is a host sync on the data, which ``torch.compile(fullgraph=True)`` cannot trace (compiled
    decoding over a static cache): there the tanh path runs, the same equation without the bound."""
    if torch.compiler.is_compiling() or q.dtype not in (torch.float32, torch.float64):
        return False
    return bool(q.abs().max() <= EXP_TANH_BOUND) and bool(k.abs().max() <= EXP_TANH_BOUND)


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
    tile_q, tk_default = additive_tile_sizes(B * H, k.shape[-2], a, device_type=additive_tile_key(q.device))
    if compiled:
        tile_q = max(tile_q, 32)  # nothing of size (tile, Tk, a) is stored: bigger tiles, fewer calls
    return _AdditiveTiled.apply(q, k, v, w, causal, key_mask, window, dropout_p,
                                chunk_size or tile_q, tile_k or tk_default, compiled)
