"""Band attention (Guo et al. 2019, band module): the naive reference and the blocked kernel that
skips the blocks outside the band (flex attention on CUDA).

Hub code: imports only torch and sibling files.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .hfav_band_flex import band_flex_attention
from .hfav_kernels_dense import dense_attention, dense_attention_reference
from .hfav_pairs import pair_allowed

Tensor = torch.Tensor


def band_attention_reference(q, k, v, *, window: int, global_tokens: int = 0, **kw) -> tuple[Tensor, Tensor, Tensor]:
    """Guo et al. 2019, band module: dense scores kept only where |i - j| <= w
    (bidirectional) or 0 <= i - j <= w (causal); the rest is -inf. (B, H, T, D) in.
    With ``global_tokens`` g, the first g positions also read and are read by every position
    (causality still holds): ``pairs.pair_allowed``."""
    return dense_attention_reference(q, k, v, window=window, global_tokens=global_tokens, **kw)


def band_block_size(window: int) -> int:
    """Query block of the blocked band kernel: about a quarter of the window, within [16, 64]
    (smaller blocks waste fewer out-of-band scores, larger ones make fewer, bigger SDPA tiles;
    measured best for w = 128 on a 2-core CPU: 32)."""
    return max(16, min(64, (1 << max(0, window).bit_length()) // 4))


def band_attention(
    q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float, causal: bool,
    key_mask: Tensor | None = None, dropout_p: float = 0.0, block_size: int | None = None,
    flex: bool | None = None, global_tokens: int = 0,
) -> Tensor:
    """Exact band attention that skips the blocks outside the band. O(T·(b + 2w)) time and memory.

    It runs compiled ``flex_attention`` with a sliding-window block mask built once per forward
    (``hfav_band_flex.py``) where that applies: on CUDA (``flex`` None or True), and on CPU for no-grad
    calls when ``flex=True`` (``config.attention_compile``); a fallback from there warns once with
    its reason. The CUDA default never picks flex where the blocked kernel is known faster
    (``band_flex.FLEX_BY_DEFAULT``: attention dropout > 0, padding with holes). Otherwise:

    Queries are cut into blocks of b; block n reads only keys [n·b - w, n·b + b - 1 + w]
    (or [n·b - w, n·b + b - 1] when causal), gathered with ``unfold`` from a padded copy of
    k and v. Each block runs as one SDPA call with its small (b, b + L + R) mask.
    q, k, v: (B, H, T, D). Decoding (Tq < Tk) and windows covering the sequence go to the
    dense kernel, which is exact and no slower there.

    ``global_tokens`` g: every block also reads the g global keys (their positions inside a
    block's window are masked there, so no pair counts twice), and the g global query rows are
    computed apart, each over all T keys: O(T·(b + 2w + g)) in all, never T x T.
    """
    B, H, T, D = q.shape
    g = min(global_tokens, k.shape[-2])
    if flex is not False and window < T - 1:
        out = band_flex_attention(q, k, v, window=window, scale=scale, causal=causal, key_mask=key_mask,
                                  dropout_p=dropout_p, flex=flex, global_tokens=g)
        if out is not None:
            return out
    if k.shape[-2] != T or window >= T - 1:
        return dense_attention(q, k, v, scale=scale, causal=causal, key_mask=key_mask,
                               window=None if window >= k.shape[-2] - 1 else window, dropout_p=dropout_p,
                               global_tokens=g)
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
    allowed = pair_allowed(q_pos, k_pos, causal=causal, window=window, key_real=valid[:, :, None, :],
                           global_tokens=g)  # (B, nb, b, span)

    # (B, H, nb·b, D) -> (B·nb, H, b, D): one SDPA batch entry per block
    qb = q.view(B, H, nb, b, D).transpose(1, 2).reshape(B * nb, H, b, D)
    kb = k_win.permute(0, 2, 1, 4, 3).reshape(B * nb, H, span, D)
    vb = v_win.permute(0, 2, 1, 4, 3).reshape(B * nb, H, span, v.shape[-1])
    if g:  # the global keys join every block, once: inside the window they are masked
        allowed = allowed & (k_pos >= g)
        g_pos = torch.arange(g, device=q.device)[None, None, :]  # (1, 1, g)
        real = None if key_mask is None else key_mask[:, None, None, :g]
        allowed = torch.cat([pair_allowed(q_pos, g_pos, causal=causal, window=window, key_real=real,
                                          global_tokens=g).expand(B, nb, b, g), allowed], dim=-1)
        kb = torch.cat([k[:, None, :, :g].expand(B, nb, H, g, D).reshape(B * nb, H, g, D), kb], dim=2)
        vb = torch.cat([v[:, None, :, :g].expand(B, nb, H, g, v.shape[-1]).reshape(B * nb, H, g, -1), vb], dim=2)
    out = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=allowed.view(B * nb, 1, b, -1),
                                         dropout_p=dropout_p, scale=scale)
    out = out.view(B, nb, H, b, -1).transpose(1, 2).reshape(B, H, nb * b, -1)[:, :, :T]  # (B, H, T, Dv)
    if not g:
        return out
    # the g global query rows read every key (causal: every earlier one): (B, H, g, T) scores
    rows = pair_allowed(torch.arange(g, device=q.device)[:, None], torch.arange(T, device=q.device)[None, :],
                        causal=causal, window=window, global_tokens=g,
                        key_real=None if key_mask is None else key_mask[:, None, None, :])
    rows = rows if rows.dim() == 4 else rows[None, None]
    out_global = F.scaled_dot_product_attention(q[:, :, :g], k, v, attn_mask=rows, dropout_p=dropout_p, scale=scale)
    return torch.cat([out_global, out[:, :, g:]], dim=2)
