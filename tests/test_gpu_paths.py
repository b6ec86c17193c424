"""The per-device choices of the kernels, tested on the CPU (issue 19): low_rank's q/k padding table
(``kernels_dense.PAD_QK_TO_V``), additive's tile table (``kernels_additive.ADDITIVE_TILES``), and the
LSTMN CUDA-graph flag (``lstmn_scan(..., cuda_graph=True)``: the flag logic and the graph-free
recurrence it captures; graph capture itself needs CUDA and is skipped without it). Every choice
leaves the result equal to the kernel's naive reference."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from hf_attn_variants import kernels as K
from hf_attn_variants import kernels_additive, kernels_dense

CUDA = torch.cuda.is_available()


# ----------------------------------------------------------------------------- low_rank


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed", range(2))
def test_low_rank_padding_choice_follows_the_table_and_keeps_the_result(pad, causal, seed, monkeypatch):
    """With the table saying pad (CPU's entry) SDPA sees q, k at D; saying not (CUDA's entry) it sees
    them at r. Either way the output and its gradients equal the reference's."""
    monkeypatch.setitem(kernels_dense.PAD_QK_TO_V, "cpu", pad)
    seen = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda q, *a, **kw: seen.append(q.shape[-1]) or
                        sdpa(q, *a, **kw))
    g = torch.Generator().manual_seed(seed)
    b, t, r, d = 2, int(torch.randint(3, 40, (1,), generator=g)), 4, 16
    q, k = (torch.randn(b, 3, t, r, generator=g, requires_grad=True) for _ in range(2))
    v = torch.randn(b, 3, t, d, generator=g, requires_grad=True)
    key_mask = torch.arange(t)[None] < torch.tensor([[t], [max(1, t - 3)]])
    out = K.low_rank_attention(q, k, v, causal=causal, key_mask=key_mask)
    ref = K.low_rank_attention_reference(q, k, v, causal=causal, key_mask=key_mask)[0]
    assert seen == [d if pad else r]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_low_rank_padding_table_entries():
    assert K.pads_qk("cpu") and not K.pads_qk("cuda")
    assert K.pads_qk("mps")  # not measured: the safe choice


# ----------------------------------------------------------------------------- additive


def test_additive_tile_key_prefers_the_capability_then_the_type(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert K.additive_tile_key("cuda") == "cuda:sm90"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert K.additive_tile_key("cuda:0") == "cuda"  # no sm80 entry: the device type's
    assert K.additive_tile_key("cpu") == "cpu"
    assert K.additive_tile_key("mps") == "cpu"  # no entry: the CPU's


def test_additive_tile_sizes_follow_the_table(monkeypatch):
    monkeypatch.setitem(kernels_additive.ADDITIVE_TILES, "cuda:sm90", (1 << 12, 8))
    assert K.additive_tile_sizes(2, 100, 4, device_type="cuda:sm90") == ((1 << 12) // (2 * 8 * 4), 8)
    budget, max_k = kernels_additive.ADDITIVE_TILES["cpu"]
    assert K.additive_tile_sizes(2, 100, 4) == (budget // (2 * 100 * 4), 100)  # tk < max_k: all keys
    assert K.additive_tile_sizes(2, 100, 4, device_type="unknown") == K.additive_tile_sizes(2, 100, 4)


@pytest.mark.parametrize("tiles", [(1 << 9, 5), (1 << 12, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_additive_equals_reference_under_any_tile_table_entry(tiles, causal, monkeypatch):
    """Whatever the table picks (here through the CPU entry: a tiny tile of 5 keys, a larger one),
    forward and gradients equal the reference."""
    monkeypatch.setitem(kernels_additive.ADDITIVE_TILES, "cpu", tiles)
    g = torch.Generator().manual_seed(sum(tiles))
    q, k = (torch.randn(2, 2, 23, 6, generator=g, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 2, 23, 5, generator=g, requires_grad=True)
    w = torch.randn(2, 6, generator=g, requires_grad=True)
    key_mask = torch.arange(23)[None] < torch.tensor([[23], [15]])
    out = K.additive_attention(q, k, v, w, causal=causal, key_mask=key_mask)
    ref = K.additive_attention_reference(q, k, v, w, causal=causal, key_mask=key_mask)[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(torch.autograd.grad(out.sum(), (q, k, v, w)), torch.autograd.grad(ref.sum(), (q, k, v, w))):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
