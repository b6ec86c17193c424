"""The allowed-pairs rule: which keys a query may read. Written once, used by every kernel,
reference, mask and cost count of hf-attn-variants.

Query i (at key position ``q``) may read key j (at position ``k``) when

- the structure allows it: ``|q - k| <= window`` (no window: every pair), or one of the two is
  a global token (``q < global_tokens`` or ``k < global_tokens``: the first g positions read and
  are read by every position, ``attention_global_tokens``); and, when causal, ``k <= q`` (so in a
  causal model every later query reads the g global keys, and a global query reads its past); and
- key j is a real token (``key_real``), or it is the query itself: a padded query whose whole
  neighbourhood is padding still reads itself and gets a finite output (its value is never used).

``pair_allowed`` is the rule, elementwise on broadcastable position tensors: the dense masks of
the references, the blocked band kernel's per-block masks, flex attention's ``mask_mod`` and the
cost counter all call it. ``key_range`` derives from it the keys a run of queries can reach at
all (the tiles a kernel may skip), and tests check the two agree.

Hub code: imports only torch.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def pair_allowed(q_pos: Tensor, k_pos: Tensor, *, causal: bool, window: int | None = None,
                 key_real: Tensor | None = None, global_tokens: int = 0) -> Tensor:
    """True where the query at position ``q_pos`` may read the key at ``k_pos`` (bool, broadcast shape).

    q_pos, k_pos: integer tensors that broadcast against each other (and against ``key_real``,
    True for real tokens, given at the key positions).
    """
    diff = q_pos - k_pos  # how far back the key lies
    allowed = diff.abs() <= window if window is not None else torch.ones_like(diff, dtype=torch.bool)
    if global_tokens > 0 and window is not None:
        allowed = allowed | (q_pos < global_tokens) | (k_pos < global_tokens)
    if causal:
        allowed = allowed & (diff >= 0)
    if key_real is not None:
        allowed = allowed & (key_real | (diff == 0))
    return allowed


def allowed_mask(
    tq: int,
    tk: int,
    *,
    causal: bool,
    window: int | None = None,
    key_mask: Tensor | None = None,
    device: torch.device | None = None,
    global_tokens: int = 0,
) -> Tensor:
    """Boolean ``(B or 1, 1, tq, tk)`` mask of ``pair_allowed``: True where query i may read key j.

    ``key_mask`` is ``(B, tk)`` bool, True for real tokens. Query i sits at key position
    ``i + tk - tq`` (the queries are the last tq of the tk positions).
    """
    q_pos = (torch.arange(tq, device=device) + (tk - tq))[:, None]  # (tq, 1)
    k_pos = torch.arange(tk, device=device)[None, :]  # (1, tk)
    real = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, tk)
    allowed = pair_allowed(q_pos, k_pos, causal=causal, window=window, key_real=real, global_tokens=global_tokens)
    return allowed if allowed.dim() == 4 else allowed[None, None]


def key_range(q_lo: int, q_hi: int, tk: int, *, causal: bool, window: int | None = None,
              global_tokens: int = 0) -> tuple[int, int]:
    """Keys [lo, hi) that the queries at positions [q_lo, q_hi) may read at all under
    ``pair_allowed`` (padding aside): a tile outside it is all False and may be skipped."""
    unbounded = window is None or q_lo < global_tokens  # a global query reads every key
    lo = 0 if unbounded or global_tokens > 0 else max(0, q_lo - window)
    hi = q_hi if causal else (tk if unbounded else min(tk, q_hi + window))
    return lo, min(hi, tk)


def tile_mask(q_lo: int, q_hi: int, k_lo: int, k_hi: int, *, causal: bool, window: int | None = None,
              key_mask: Tensor | None = None, device: torch.device | None = None, global_tokens: int = 0) -> Tensor:
    """``pair_allowed`` for the queries at positions [q_lo, q_hi) and the keys [k_lo, k_hi):
    (B or 1, 1, q_hi - q_lo, k_hi - k_lo) bool. ``key_mask`` (B, Tk) covers all key positions."""
    q_pos = torch.arange(q_lo, q_hi, device=device)[:, None]
    k_pos = torch.arange(k_lo, k_hi, device=device)[None, :]
    real = None if key_mask is None else key_mask[:, None, None, k_lo:k_hi]
    allowed = pair_allowed(q_pos, k_pos, causal=causal, window=window, key_real=real, global_tokens=global_tokens)
    return allowed if allowed.dim() == 4 else allowed[None, None]
