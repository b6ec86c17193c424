"""Band attention (Guo et al. 2019, band module): the naive reference and the blocked kernel that
skips the blocks outside the band (flex attention on CUDA).

Hub code: imports only torch and sibling files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .kernels_dense import dense_attention, dense_attention_reference
from .pairs import pair_allowed

Tensor = torch.Tensor


def band_attention_reference(q, k, v, *, window: int, **kw) -> tuple[Tensor, Tensor, Tensor]:
    """Guo et al. 2019, band module: dense scores kept only where |i - j| <= w
    (bidirectional) or 0 <= i - j <= w (causal); the rest is -inf. (B, H, T, D) in."""
    return dense_attention_reference(q, k, v, window=window, **kw)


def band_block_size(window: int) -> int:
    """Query block of the blocked band kernel: about a quarter of the window, within [16, 64]
    (smaller blocks waste fewer out-of-band scores, larger ones make fewer, bigger SDPA tiles;
    measured best for w = 128 on a 2-core CPU: 32)."""
    return max(16, min(64, (1 << max(0, window).bit_length()) // 4))


_FLEX: dict = {}  # the compiled flex_attention, made on first use (CUDA only)


def _band_flex(q: Tensor, k: Tensor, v: Tensor, window: int, scale: float, causal: bool,
               key_mask: Tensor | None) -> Tensor:
    """Band attention through PyTorch's ``flex_attention`` with a sliding-window ``BlockMask``:
    the blocks outside the band are never visited. (B, H, T, D) in, T == Tk."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if "fn" not in _FLEX:
        _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    B, H, T, _ = q.shape

    def mask_mod(b, h, qi, kj):
        real = key_mask[b, kj] if key_mask is not None else None
        return pair_allowed(qi, kj, causal=causal, window=window, key_real=real)

    block_mask = create_block_mask(mask_mod, B if key_mask is not None else None, None, T, T, device=q.device)
    return _FLEX["fn"](q, k, v, block_mask=block_mask, scale=scale)


def _flex_usable(q: Tensor, k: Tensor, v: Tensor, dropout_p: float) -> bool:
    """flex_attention handles this call: CUDA, no dropout, q/k/v head sizes equal, a power of two >= 16."""
    d = q.shape[-1]
    return (q.is_cuda and dropout_p == 0 and q.shape[-2] == k.shape[-2] and k.shape[-1] == v.shape[-1] == d
            and d >= 16 and d & (d - 1) == 0)


def band_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float, causal: bool,
    key_mask: Tensor | None = None, dropout_p: float = 0.0, block_size: int | None = None,
    flex: bool | None = None,
) -> Tensor:
    """Exact band attention that skips the blocks outside the band. O(T·(b + 2w)) time and memory.

    On CUDA (``flex`` None or True) it runs ``flex_attention`` with a sliding-window block mask
    when that applies (no dropout, equal power-of-two head sizes, T == Tk); otherwise, and on CPU:

    Queries are cut into blocks of b; block n reads only keys [n·b - w, n·b + b - 1 + w]
    (or [n·b - w, n·b + b - 1] when causal), gathered with ``unfold`` from a padded copy of
    k and v. Each block runs as one SDPA call with its small (b, b + L + R) mask.
    q, k, v: (B, H, T, D). Decoding (Tq < Tk) and windows covering the sequence go to the
    dense kernel, which is exact and no slower there.
    """
    B, H, T, D = q.shape
    if flex is not False and window < T - 1 and _flex_usable(q, k, v, dropout_p):
        try:
            return _band_flex(q, k, v, window, scale, causal, key_mask)
        except Exception:  # an unsupported shape or a failed compile: the blocked path below is exact too
            if flex:
                raise
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

    starts = torch.arange(nb, device=q.device)[:, None, None] * b  # (nb, 1, 1): block n's first query
    q_pos = starts + torch.arange(b, device=q.device)[:, None]  # (nb, b, 1)
    k_pos = starts - left + torch.arange(span, device=q.device)[None, :]  # (nb, 1, span)
    # keys outside [0, T) are padding (valid False); so are the queries past T (their rows are dropped)
    allowed = pair_allowed(q_pos, k_pos, causal=causal, window=window,
                           key_real=valid[:, :, None, :])  # (B, nb, b, span)

    # (B, H, nb·b, D) -> (B·nb, H, b, D): one SDPA batch entry per block
    qb = q.view(B, H, nb, b, D).transpose(1, 2).reshape(B * nb, H, b, D)
    kb = k_win.permute(0, 2, 1, 4, 3).reshape(B * nb, H, span, D)
    vb = v_win.permute(0, 2, 1, 4, 3).reshape(B * nb, H, span, v.shape[-1])
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed.view(B * nb, 1, b, span),
                                         dropout_p=dropout_p, scale=scale)
    out = out.view(B, nb, H, b, -1).transpose(1, 2).reshape(B, H, nb * b, -1)  # (B, H, nb·b, Dv)
    return out[:, :, :T]

