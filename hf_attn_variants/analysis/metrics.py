"""Per-head descriptive metrics of attention weights (pure tensor functions, no model).

All functions take attention ``weights`` (B, H, Tq, Tk) whose rows sum to 1 over the real keys,
an optional ``key_mask`` (B, Tk) bool (True = real token) and return per-head values averaged
over the real query tokens of every sequence and over the batch. Queries are taken to be the
last Tq positions of the Tk keys (Tq == Tk for a full forward pass).

Metrics (per query i, then averaged):
- ``entropy``: -Σ_j a_ij log a_ij (nats); ``uniform_entropy``: log(number of keys i may see),
  the entropy of uniform attention over the same lengths (``causal=True``: keys j <= i).
- ``mean_distance``: Σ_j a_ij |i - j|.
- ``mass_within_{w}``: Σ_{|i-j| <= w} a_ij.
- ``sink_mass``: Σ_{j special} a_ij (special = [CLS]/[SEP]/first token; default: the first real token).
- ``prev_token`` / ``next_token`` / ``self_token``: a_{i,i-1}, a_{i,i+1}, a_{i,i}.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

DEFAULT_WINDOWS = (1, 2, 4, 8, 16, 32)


def _check(weights: Tensor, key_mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if weights.dim() != 4:
        raise ValueError(f"weights must be (B, H, Tq, Tk), got shape {tuple(weights.shape)}")
    b, _, tq, tk = weights.shape
    if tq > tk:
        raise ValueError(f"weights has more queries ({tq}) than keys ({tk})")
    if key_mask is None:
        key_mask = torch.ones(b, tk, dtype=torch.bool, device=weights.device)
    if key_mask.shape != (b, tk):
        raise ValueError(f"key_mask must be (B, Tk) = {(b, tk)}, got {tuple(key_mask.shape)}")
    return weights.float(), key_mask.bool()


def first_real_token(key_mask: Tensor) -> Tensor:
    """(B, T) bool marking the first real token of each row (works with left padding)."""
    first = key_mask.float().argmax(dim=-1)  # (B,)
    return torch.nn.functional.one_hot(first, key_mask.shape[-1]).bool() & key_mask


def per_query_metrics(weights: Tensor, key_mask: Tensor | None = None, *, windows=DEFAULT_WINDOWS,
                      special_positions: Tensor | None = None, causal: bool = False) -> dict[str, Tensor]:
    """The metrics of the module docstring per query: each a (B, H, Tq) tensor (padded queries: NaN)."""
    w, key_mask = _check(weights, key_mask)
    b, h, tq, tk = w.shape
    dev = w.device
    q_pos = torch.arange(tk - tq, tk, device=dev)  # (Tq,) absolute positions of the queries
    k_pos = torch.arange(tk, device=dev)
    offset = q_pos[:, None] - k_pos[None, :]  # (Tq, Tk): i - j
    dist = offset.abs().float()
    km = key_mask[:, None, None, :]  # (B, 1, 1, Tk)
    w = w * km  # padded keys carry no mass
    if special_positions is None:
        special_positions = first_real_token(key_mask)
    special = (special_positions.bool() & key_mask)[:, None, None, :].float()  # (B, 1, 1, Tk)

    visible = key_mask[:, None, :].expand(b, tq, tk)  # (B, Tq, Tk)
    if causal:
        visible = visible & (offset >= 0)
    n_visible = visible.sum(-1).clamp(min=1).float()  # (B, Tq)

    plogp = torch.where(w > 0, w * w.clamp_min(1e-30).log(), torch.zeros_like(w))
    out = {
        "entropy": -plogp.sum(-1),
        "uniform_entropy": n_visible.log()[:, None, :].expand(b, h, tq),
        "mean_distance": (w * dist).sum(-1),
        "sink_mass": (w * special).sum(-1),
        "prev_token": (w * (offset == 1).float()).sum(-1),
        "next_token": (w * (offset == -1).float()).sum(-1),
        "self_token": (w * (offset == 0).float()).sum(-1),
    }
    for win in windows:
        out[f"mass_within_{win}"] = (w * (dist <= win).float()).sum(-1)
    real_q = key_mask[:, None, tk - tq:].expand(b, h, tq)  # (B, H, Tq)
    nan = torch.tensor(float("nan"), device=dev)
    return {k: torch.where(real_q, v, nan) for k, v in out.items()}


def per_head_metrics(weights: Tensor, key_mask: Tensor | None = None, *, windows=DEFAULT_WINDOWS,
                     special_positions: Tensor | None = None, causal: bool = False) -> dict[str, Tensor]:
    """Per-head metrics averaged over the real query tokens and the batch: each a (H,) tensor.

    weights (B, H, Tq, Tk) attention, rows summing to 1 over real keys; key_mask (B, Tk) bool;
    special_positions (B, Tk) bool marks the sink tokens ([CLS]/[SEP]/first token; default the
    first real token). Keys: entropy, uniform_entropy, mean_distance, sink_mass, prev_token,
    next_token, self_token and mass_within_{w} for each w in windows.
    """
    per_query = per_query_metrics(weights, key_mask, windows=windows, special_positions=special_positions,
                                  causal=causal)
    return {k: v.transpose(0, 1).flatten(1).nanmean(dim=1) for k, v in per_query.items()}  # (H,)
