"""The LSTMN recurrence (Cheng et al. 2016): one step, ``lstmn_step`` (the reference is its loop,
``lstmn_reference``; cached decoding, the attention weights, offloaded weights, wrapped projections
such as PEFT LoRA and the fusion model of ``modeling_lstmn_fusion.py`` all run it), and the second
implementation, the fast path ``lstmn_scan`` with a hand-written backward through time, tested
against the reference.

Hub code: imports only torch and sibling files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .hfav_kernels_additive import EXP_TANH_BOUND
from .hfav_precision import autocast_on, in_fp32

Tensor = torch.Tensor


def lstmn_gates(gates: Tensor, c_summary: Tensor, c_extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """[i; f; o; ĉ] = [σ; σ; σ; tanh](gates); c = f ⊙ c̃ + i ⊙ ĉ (+ c_extra); h = o ⊙ tanh(c).
    ``c_extra`` (B, d): a term added to the cell, deep fusion's r_t ⊙ α̃_t (Cheng et al. eq. 17)."""
    i, f, o, c_hat = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c_summary + torch.sigmoid(i) * torch.tanh(c_hat)
    if c_extra is not None:
        c = c + c_extra
    return torch.sigmoid(o) * torch.tanh(c), c


def tape_read(keys: Tensor, query: Tensor, score: Tensor, readable: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """One attentive read of a tape (Cheng et al. 2016: the intra-attention eq. 7-8, and the same form
    for fusion's inter-attention eq. 13-14): a_i = vᵀ tanh(k_i + q), s = softmax_i(a) over the readable
    slots, and Σ_i s_i m_i for each tape m in ``values``.
    keys (B, S, d), query (B, d), score v (d,), readable (B, S) bool, values (B, S, ·) -> (s (B, S), sums...)."""
    a = torch.tanh(keys + query[:, None]) @ score  # (B, S)
    s = torch.softmax(a.masked_fill(~readable, float("-inf")), dim=-1)
    return (s, *(torch.einsum("bs,bsd->bd", s, m) for m in values))


def lstmn_start(x: Tensor, hidden_size: int) -> dict[str, Tensor]:
    """An empty LSTMN state for a batch like x (B, ·, ·): the tape holds only the zero slot
    (h_0 = c_0 = 0, key W_h h_0 = 0, readable), and the summary h̃_0 = 0."""
    zeros = x.new_zeros(x.shape[0], 1, hidden_size)
    return {"h": zeros, "c": zeros, "k": zeros, "summary": zeros[:, 0],
            "readable": torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)}


def lstmn_step(cell, state: dict[str, Tensor], x_t: Tensor, readable_t: Tensor,
               c_extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One step of Cheng et al. 2016's LSTMN (eq. 7-10), exactly as written:

        a_i^t = vᵀ tanh(W_h h_i + W_x x_t + W_h̃ h̃_{t-1}),  s^t = softmax_i(a^t), i < t
        [h̃_t; c̃_t] = Σ_i s_i^t [h_i; c_i]
        [i_t; f_t; o_t; ĉ_t] = [σ; σ; σ; tanh](W [h̃_t; x_t] + b)
        c_t = f_t ⊙ c̃_t + i_t ⊙ ĉ_t,   h_t = o_t ⊙ tanh(c_t)

    ``cell`` holds w_tape (W_h), w_input (W_x), w_summary (W_h̃), score (v), gates (W, b), called as
    modules (so wrapped projections such as PEFT LoRA work). ``state`` (see ``lstmn_start``): the
    tape h, c (B, S, d), its keys k = W_h h (B, S, d; each slot's key is taken once, when the slot
    is written), which slots are readable (B, S) and the summary h̃_{t-1} (B, d); the step appends
    slot (h_t, c_t), readable where ``readable_t`` (B,) is True. ``c_extra`` (B, d): a term added to the
    memory cell (deep fusion, ``lstmn_gates``). x_t (B, d_in) -> h_t (B, d), s^t (B, S).
    """
    query = cell.w_input(x_t) + cell.w_summary(state["summary"])  # (B, d)
    s, h_sum, c_sum = tape_read(state["k"], query, cell.score, state["readable"], state["h"], state["c"])
    h, c = lstmn_gates(cell.gates(torch.cat([h_sum, x_t], dim=-1)), c_sum, c_extra)
    for name, value in (("h", h), ("c", c), ("k", cell.w_tape(h)), ("readable", readable_t)):
        state[name] = torch.cat([state[name], value[:, None]], dim=1)
    state["summary"] = h_sum
    if "summaries" in state:  # a decoding cache keeps every step's summary (exact crops)
        state["summaries"] = torch.cat([state["summaries"], h_sum[:, None]], dim=1)
    return h, s


def lstmn_reference(cell, x: Tensor, key_mask: Tensor | None = None,
                    state: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Cheng et al. 2016, LSTMN, one direction: ``lstmn_step`` for t = 0 .. T-1.

    The tape starts with a zero slot (h_0 = c_0 = 0), or continues ``state`` (cached decoding:
    extended in place); the slots of padding tokens (``key_mask`` (B, T) False) are never read.
    x (B, T, d_in) -> h (B, T, d), and the attention s (B, T, S + T) over [tape before x, x's slots]
    (S = 1, the zero slot, for a fresh state).
    """
    B, T, _ = x.shape
    state = lstmn_start(x, cell.hidden_size) if state is None else state
    start = state["h"].shape[1]
    outputs, attention = [], x.new_zeros(B, T, start + T)
    real = torch.ones(B, T, dtype=torch.bool, device=x.device) if key_mask is None else key_mask.bool()
    for t in range(T):
        h, s = lstmn_step(cell, state, x[:, t], real[:, t])
        outputs.append(h)
        attention[:, t, : start + t] = s.detach()
    return torch.stack(outputs, 1), attention


def softmax_backward(grad: Tensor, s: Tensor) -> Tensor:
    """d loss / d a for s = softmax(a) along the last dim, given grad = d loss / d s:
    s ⊙ (grad - Σ_j grad_j s_j) (what torch's private ``_softmax_backward_data`` computes)."""
    return s * (grad - (grad * s).sum(-1, keepdim=True))


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
    def forward(ctx, xs, xg, w_tape, w_summary, score, w_gates_h, readable, exp_trick=None):
        if autocast_on(xs):  # mixed precision: this Function computes in fp32 (hfav_precision.py)
            return in_fp32(_LSTMNRecurrence.forward, ctx, xs, xg, w_tape, w_summary, score, w_gates_h, readable,
                           exp_trick)
        B, T, d = xs.shape
        tape = xs.new_zeros(B, T + 1, 2 * d)  # [h | c]; slot 0 is the zero slot, slot t + 1 is token t
        keys = xs.new_zeros(B, T + 1, d)  # W_h h_i, once per slot
        queries, gates = xs.new_empty(B, T, d), xs.new_empty(B, T, 4 * d)
        sums = xs.new_zeros(B, T + 1, 2 * d)  # [h̃_{t-1} | c̃_{t-1}] at index t
        bias = torch.zeros(readable.shape, dtype=xs.dtype, device=xs.device).masked_fill_(~readable, float("-inf"))
        if exp_trick is None:  # decided from the values (host syncs); False for CUDA-graph capture
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
            da = softmax_backward(ds, s)
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
        return d_queries, d_gates, d_w_tape, d_w_summary, d_score, d_w_gates_h, None, None


def lstmn_scan(cell, x: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
               cuda_graph: bool | None = None) -> tuple[Tensor, Tensor | None]:
    """The LSTMN recurrence of ``lstmn_reference``, fast and lean.

    W_x x_t and the x-part of the gates are computed for all t at once; each tape slot's key
    W_h h_i is computed once, when the slot is written; the recurrence itself runs in
    ``_LSTMNRecurrence`` (activation memory O(T·d), backward through time by hand).
    x (B, T, d_in) -> h (B, T, d), attention (B, T, T + 1) or None. ``need_weights``, and projections
    that are wrapped (e.g. PEFT LoRA: they must be called, not read), take ``lstmn_reference`` under
    autograd, which records the attention.

    ``cuda_graph`` (None: ``USE_CUDA_GRAPHS``, off by default): on CUDA, replay the recurrence's step
    loop (forward, and backward under autograd) as a captured CUDA graph, one per input shape
    (``lstmn_graphed``): a step launches ~20 small kernels, so on a GPU the loop is bound by launch
    latency, not FLOPs. Elsewhere, or when capture fails, the eager loop runs after a one-time warning.
    """
    plain = all(type(getattr(cell, n)) is torch.nn.Linear for n in ("w_tape", "w_summary", "gates"))
    if need_weights or not plain:
        h, attention = lstmn_reference(cell, x, key_mask)
        return h, attention if need_weights else None
    B, T, _ = x.shape
    d = cell.hidden_size
    w_gates = cell.gates.weight  # (4d, d + d_in): columns [h̃ part | x part]
    xs = cell.w_input(x)  # (B, T, d)
    xg = F.linear(x, w_gates[:, d:], cell.gates.bias)  # (B, T, 4d)
    first = torch.ones(B, 1, dtype=torch.bool, device=x.device)
    readable = torch.cat([first, key_mask.bool() if key_mask is not None else first.expand(B, T)], dim=1)
    args = (xs, xg, cell.w_tape.weight, cell.w_summary.weight, cell.score, w_gates[:, :d], readable)
    if USE_CUDA_GRAPHS if cuda_graph is None else cuda_graph:
        h = lstmn_graphed(*args)
        if h is not None:
            return h, None
    h = _LSTMNRecurrence.apply(*args)
    return h, None


# ----------------------------------------------------------------------------- CUDA graphs over the step loop

USE_CUDA_GRAPHS = False  # lstmn_scan's default for ``cuda_graph``
GRAPH_CACHE_SIZE = 4  # captured shapes kept per process (each holds its own memory pool)
_GRAPHS: dict = {"graphs": {}, "warned": {}, "captures": 0}


def _warn_once(reason: str) -> None:
    if reason not in _GRAPHS["warned"]:
        _GRAPHS["warned"][reason] = True
        from transformers.utils import logging

        logging.get_logger(__name__).warning(reason)


def _recurrence_for_capture(xs, xg, w_tape, w_summary, score, w_gates_h, readable):
    """The recurrence with the tanh path fixed (``exp_trick=False``): deciding the exp path reads values
    on the host, which a captured graph cannot do. Same equations (tested against the reference)."""
    return _LSTMNRecurrence.apply(xs, xg, w_tape, w_summary, score, w_gates_h, readable, False)


def lstmn_graph_key(args: tuple[Tensor, ...], grad: bool) -> tuple:
    """What a captured graph is specific to: every input's shape, dtype and requires_grad, the device,
    and whether it records the backward."""
    return (grad, str(args[0].device), tuple((tuple(a.shape), a.dtype, a.requires_grad) for a in args))


class _ForwardGraph:
    """A no-grad recurrence captured once: static inputs, copied into before each replay."""

    def __init__(self, args: tuple[Tensor, ...]):
        self.static = [a.detach().clone() for a in args]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(2):  # warm-up outside the graph (allocator, lazy init)
                _recurrence_for_capture(*self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph):
            self.out = _recurrence_for_capture(*self.static)

    def __call__(self, *args: Tensor) -> Tensor:
        for static, a in zip(self.static, args):
            static.copy_(a)
        self.graph.replay()
        return self.out.clone()


def lstmn_graph_skip_reason(args: tuple[Tensor, ...]) -> str | None:
    """Why the graph path cannot run these inputs (None: it can)."""
    if args[0].device.type != "cuda":
        return f"LSTMN CUDA graphs need CUDA tensors (got {args[0].device.type}): the eager step loop runs"
    if torch.cuda.is_current_stream_capturing():
        return "LSTMN CUDA graphs: already inside a graph capture, the eager step loop runs (it is captured there)"
    return None


def lstmn_graphed(xs, xg, w_tape, w_summary, score, w_gates_h, readable) -> Tensor | None:
    """``_LSTMNRecurrence`` replayed from a CUDA graph captured for these shapes (forward only under
    no_grad; forward and backward through ``torch.cuda.make_graphed_callables`` under autograd), or
    None (after a one-time warning) where graphs do not apply. Under autocast the inputs are cast to
    fp32 outside the graph, as the Function does itself (hfav_precision.py)."""
    args = (xs, xg, w_tape, w_summary, score, w_gates_h, readable)
    reason = lstmn_graph_skip_reason(args)
    if reason:
        _warn_once(reason)
        return None
    if autocast_on(xs):
        args = tuple(a.float() if a.is_floating_point() else a for a in args)
    grad = torch.is_grad_enabled() and any(a.requires_grad for a in args)
    key = lstmn_graph_key(args, grad)
    graphs = _GRAPHS["graphs"]
    fn = graphs.pop(key, None)
    if fn is None:
        try:
            with torch.autocast("cuda", enabled=False):
                if grad:
                    samples = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in args)
                    fn = torch.cuda.make_graphed_callables(_recurrence_for_capture, samples)
                else:
                    fn = _ForwardGraph(args)
        except RuntimeError as error:  # capture refused (an op that syncs, an old driver): eager from here on
            _warn_once(f"LSTMN CUDA graph capture failed, the eager step loop runs: {str(error).splitlines()[0]}")
            return None
        _GRAPHS["captures"] += 1
    graphs[key] = fn  # most recently used last
    while len(graphs) > GRAPH_CACHE_SIZE:
        graphs.pop(next(iter(graphs)))
    with torch.autocast("cuda", enabled=False):
        return fn(*args)


def reset_graphs() -> None:
    """Forget the captured graphs and the warnings given."""
    _GRAPHS.update(graphs={}, warned={}, captures=0)
