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

from hf_attn_variants import hfav_kernels as K
from hf_attn_variants import hfav_kernels_additive as kernels_additive
from hf_attn_variants import hfav_kernels_dense as kernels_dense

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
    q, k = (torch.randn(b, 3, t, r, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(b, 3, t, d, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = torch.arange(t)[None] < torch.tensor([[t], [max(1, t - 3)]])
    out = K.low_rank_attention(q, k, v, causal=causal, key_mask=key_mask)
    ref = K.low_rank_attention_reference(q, k, v, causal=causal, key_mask=key_mask)[0]
    assert seen == [d if pad else r]
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-7)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)


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
    q, k = (torch.randn(2, 2, 23, 6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v = torch.randn(2, 2, 23, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = torch.arange(23)[None] < torch.tensor([[23], [15]])
    out = K.additive_attention(q, k, v, w, causal=causal, key_mask=key_mask)
    ref = K.additive_attention_reference(q, k, v, w, causal=causal, key_mask=key_mask)[0]
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-7)
    for got, want in zip(torch.autograd.grad(out.sum(), (q, k, v, w)), torch.autograd.grad(ref.sum(), (q, k, v, w))):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)


# ----------------------------------------------------------------------------- LSTMN CUDA graphs

LSTMN_LOGGER = "hf_attn_variants.hfav_kernels_lstmn"


def _cell(d_in=6, d=5, seed=0, scale=None):
    from hf_attn_variants.hfav_attention import LSTMNCell

    torch.manual_seed(seed)
    cell = LSTMNCell(d_in, d).double()  # float64: the comparisons below are exact up to rounding
    with torch.no_grad():
        if scale is None:
            cell.score.normal_()  # the Linear layers keep their default init; v is drawn, never left at 0
        else:
            for p in cell.parameters():
                p.normal_(0, scale)
    return cell


@pytest.fixture
def fresh_graphs():
    from hf_attn_variants import hfav_kernels_lstmn as kernels_lstmn

    kernels_lstmn.reset_graphs()
    yield kernels_lstmn
    kernels_lstmn.reset_graphs()


def _x_and_mask(b, t, d_in, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d_in, generator=g, dtype=torch.float64, requires_grad=True)
    key_mask = torch.arange(t)[None] < torch.tensor([[t]] + [[max(1, t - 2)]] * (b - 1))
    return x, key_mask


@pytest.mark.parametrize("flag", [None, False, True])
def test_lstmn_graph_flag_off_and_on_cpu_give_the_eager_result(flag, fresh_graphs, caplog, monkeypatch):
    """Off (the default, or False): the graph code is never reached. On, on the CPU: one warning that
    names the reason, nothing captured, and the eager result (equal to the reference, forward and
    gradients)."""
    reached = []
    original = fresh_graphs.lstmn_graphed
    monkeypatch.setattr(fresh_graphs, "lstmn_graphed", lambda *a: reached.append(1) or original(*a))
    cell = _cell()
    x, key_mask = _x_and_mask(3, 9, 6, seed=1)
    with caplog.at_level(logging.WARNING, logger=LSTMN_LOGGER):
        for _ in range(2):
            h, _ = K.lstmn_scan(cell, x, key_mask, cuda_graph=flag)
    ref, _ = K.lstmn_reference(cell, x, key_mask)
    torch.testing.assert_close(h, ref, atol=1e-9, rtol=1e-7)
    params = (x, *cell.parameters())
    for got, want in zip(torch.autograd.grad(h.sum(), params), torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)
    assert len(reached) == (2 if flag else 0)
    assert fresh_graphs._GRAPHS["captures"] == 0 and not fresh_graphs._GRAPHS["graphs"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == (["LSTMN CUDA graphs need CUDA tensors (got cpu): the eager step loop runs"] if flag else [])


def test_lstmn_module_default_switch_turns_the_graph_path_on(fresh_graphs, monkeypatch):
    reached = []
    monkeypatch.setattr(fresh_graphs, "lstmn_graphed", lambda *a: reached.append(1) or None)
    cell = _cell()
    x, _ = _x_and_mask(2, 5, 6, seed=2)
    K.lstmn_scan(cell, x)
    monkeypatch.setattr(fresh_graphs, "USE_CUDA_GRAPHS", True)
    K.lstmn_scan(cell, x)
    K.lstmn_scan(cell, x, cuda_graph=False)
    assert reached == [1]


@pytest.mark.parametrize("scale", [None, 0.05])  # 0.05: weights where the eager loop takes the exp path
def test_the_captured_recurrence_equals_the_reference(scale, fresh_graphs):
    """What the graph captures (the recurrence with the tanh path fixed, no host reads) equals the
    step-by-step reference, forward and gradients, also where the eager loop would take the exp path."""
    cell = _cell(scale=scale, seed=3)
    x, key_mask = _x_and_mask(2, 11, 6, seed=3)
    captured = []
    original = fresh_graphs._LSTMNRecurrence.apply
    fresh_graphs._LSTMNRecurrence.apply = lambda *a: captured.append(a[-1]) or original(*a)
    try:
        d = cell.hidden_size
        w_gates = cell.gates.weight
        xs, xg = cell.w_input(x), torch.nn.functional.linear(x, w_gates[:, d:], cell.gates.bias)
        readable = torch.cat([torch.ones(2, 1, dtype=torch.bool), key_mask], dim=1)
        h = fresh_graphs._recurrence_for_capture(xs, xg, cell.w_tape.weight, cell.w_summary.weight, cell.score,
                                                 w_gates[:, :d], readable)
    finally:
        fresh_graphs._LSTMNRecurrence.apply = original
    assert captured == [False]
    if scale is not None:
        assert fresh_graphs._lstmn_exp_trick(xs, cell.w_tape.weight, cell.w_summary.weight)  # eager: exp path
    ref, _ = K.lstmn_reference(cell, x, key_mask)
    torch.testing.assert_close(h, ref, atol=1e-9, rtol=1e-7)
    params = (x, *cell.parameters())
    for got, want in zip(torch.autograd.grad(h.square().sum(), params),
                         torch.autograd.grad(ref.square().sum(), params)):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)


def test_lstmn_graph_key_separates_what_a_graph_is_specific_to(fresh_graphs):
    a = (torch.zeros(2, 3, 4), torch.zeros(2, 3, 16, requires_grad=True))
    key = fresh_graphs.lstmn_graph_key(a, grad=True)
    assert key == fresh_graphs.lstmn_graph_key(tuple(x.clone() for x in a), grad=True)  # same shapes: reused
    assert key != fresh_graphs.lstmn_graph_key(a, grad=False)
    assert key != fresh_graphs.lstmn_graph_key((torch.zeros(2, 4, 4), a[1]), grad=True)  # another T
    assert key != fresh_graphs.lstmn_graph_key((a[0].double(), a[1]), grad=True)
    assert key != fresh_graphs.lstmn_graph_key((a[0], a[1].detach()), grad=True)


@pytest.mark.skipif(not CUDA, reason="CUDA graph capture needs a GPU")
@pytest.mark.parametrize("grad", [True, False])
def test_cuda_lstmn_graph_path_equals_eager_and_captures_once_per_shape(grad, fresh_graphs):
    cell = _cell(d_in=32, d=32, seed=4).float().cuda()
    outs = {}
    for t in (16, 16, 24):
        x, key_mask = (z.cuda() for z in _x_and_mask(3, t, 32, seed=t))
        x = x.detach().float().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            h, _ = K.lstmn_scan(cell, x, key_mask, cuda_graph=True)
            ref, _ = K.lstmn_scan(cell, x, key_mask, cuda_graph=False)
        torch.testing.assert_close(h, ref, atol=1e-5, rtol=1e-5)
        if grad:
            params = (x, *cell.parameters())
            for got, want in zip(torch.autograd.grad(h.square().sum(), params),
                                 torch.autograd.grad(ref.square().sum(), params)):
                torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        outs[t] = fresh_graphs._GRAPHS["captures"]
    assert outs == {16: 1, 24: 2}  # the second T=16 call replayed the first capture
