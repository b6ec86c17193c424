"""Rank of attention at three levels: the pre-softmax score matrix, the softmax matrix, and the
bilinear form W_Qᵀ W_K of each head.

Three summaries of a spectrum s_1 >= s_2 >= ... (singular values):
- ``energy90`` / ``energy99``: the smallest k with Σ_{i<=k} s_i² >= 0.9 (0.99) Σ s_i²;
- ``stable``: ||A||_F² / ||A||_2² = Σ s_i² / s_1² (Rudelson & Vershynin 2007);
- ``entropy``: exp(-Σ p_i log p_i), p_i = s_i / Σ s_j, the effective rank of Roy & Vetterli 2007.
Attention matrices are measured on each sequence's real tokens only and divided by that length.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
RANK_MEASURES = ("energy90", "energy99", "stable", "entropy")


def spectrum_ranks(s: Tensor) -> dict[str, Tensor]:
    """s (..., K) singular values (any order, >= 0) -> the four rank summaries, each (...)."""
    s = s.double().sort(dim=-1, descending=True).values
    energy = s.square()
    total = energy.sum(-1, keepdim=True).clamp_min(1e-300)
    cum = energy.cumsum(-1) / total
    p = s / s.sum(-1, keepdim=True).clamp_min(1e-300)
    plogp = torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
    return {
        "energy90": (cum < 0.9 - 1e-12).sum(-1).double() + 1,
        "energy99": (cum < 0.99 - 1e-12).sum(-1).double() + 1,
        "stable": total[..., 0] / s[..., 0].square().clamp_min(1e-300),
        "entropy": (-plogp.sum(-1)).exp(),
    }


def attention_ranks(mats: Tensor, key_mask: Tensor | None = None) -> dict[str, Tensor]:
    """mats (B, H, T, T) (scores or weights) -> each rank summary divided by the sequence's real
    length, averaged over the batch: (H,) per measure. Rows/columns of padding are dropped."""
    b, h, t, _ = mats.shape
    if key_mask is None:
        key_mask = torch.ones(b, t, dtype=torch.bool, device=mats.device)
    sums = {m: torch.zeros(h, dtype=torch.float64) for m in RANK_MEASURES}
    for i in range(b):
        idx = key_mask[i].nonzero().squeeze(-1)
        sub = mats[i][:, idx][:, :, idx].double()  # (H, n, n)
        sub = torch.nan_to_num(sub, nan=0.0, posinf=0.0, neginf=0.0)
        ranks = spectrum_ranks(torch.linalg.svdvals(sub))
        for m in RANK_MEASURES:
            sums[m] += ranks[m].cpu() / len(idx)
    return {m: (v / b).float() for m, v in sums.items()}


def head_qk(module, head: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One head's main query/key projection of a Variant attention module: wq, wk (d, in), bq, bk (d,)."""
    d = module.qk_dim
    if hasattr(module, "c_attn"):  # GPT-2 Conv1D, weight (in, out)
        qk = module.qk_heads * d
        w, bias = module.c_attn.weight, module.c_attn.bias
        wq, bq = w[:, head * d:(head + 1) * d].T, bias[head * d:(head + 1) * d]
        wk, bk = w[:, qk + head * d:qk + (head + 1) * d].T, bias[qk + head * d:qk + (head + 1) * d]
        return wq, bq, wk, bk
    sl = slice(head * d, (head + 1) * d)
    return module.query.weight[sl], module.query.bias[sl], module.key.weight[sl], module.key.bias[sl]


def bilinear_spectrum(module, head: int) -> Tensor:
    """Singular values of one head's bias-augmented bilinear form [W_q b_q]ᵀ[W_k b_k] (length d)."""
    from ..convert import low_rank_factors

    wq, bq, wk, bk = (t.detach().float() for t in head_qk(module, head))
    return low_rank_factors(wq, bq, wk, bk, rank=wq.shape[0])[4].float()


def bilinear_ranks(module) -> tuple[dict[str, Tensor], Tensor]:
    """Rank summaries of every head's bilinear form (not divided by anything; the head's q/k
    size bounds them) and the stacked spectra (H, d)."""
    spectra = torch.stack([bilinear_spectrum(module, h) for h in range(module.qk_heads)])
    return {m: v.float() for m, v in spectrum_ranks(spectra).items()}, spectra
