"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Each layer's attention is averaged over heads, the residual connection is added as identity,
rows are renormalised, and the layers are multiplied from the bottom up:

    Â_l = 0.5 · mean_h A_l + 0.5 · I,   R_1 = Â_1,   R_l = Â_l R_{l-1}

R_L[i, j] is how much of output token i traces back to input token j.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def rollout(attentions: list[Tensor] | tuple[Tensor, ...], residual: float = 0.5,
            key_mask: Tensor | None = None) -> Tensor:
    """attentions: per layer (B, H, T, T), bottom layer first -> R (B, T, T) after every layer
    stacked as (L, B, T, T). Padded keys get no mass."""
    if not attentions:
        raise ValueError("attentions is empty: need at least one layer")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual={residual} must be in [0, 1]")
    b, _, t, _ = attentions[0].shape
    eye = torch.eye(t, device=attentions[0].device)
    out, current = [], None
    for a in attentions:
        a = a.float().mean(dim=1)  # (B, T, T)
        if key_mask is not None:
            a = a * key_mask[:, None, :]
        a_hat = (1 - residual) * a + residual * eye
        a_hat = a_hat / a_hat.sum(-1, keepdim=True).clamp_min(1e-30)
        current = a_hat if current is None else a_hat @ current
        out.append(current)
    return torch.stack(out)
