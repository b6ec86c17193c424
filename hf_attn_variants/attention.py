"""Self-attention modules of the variants, shared by the BERT and GPT-2 families.

A ``VariantAttention`` projects the layer input to per-head queries, keys and values and
hands them to one entry of ``VARIANT_FORWARD`` (a dict registry: variant name -> function).
The two families differ only in how the projections are stored (BERT: ``query``/``key``/
``value`` Linears; GPT-2: one fused ``c_attn`` Conv1D), so that stock checkpoints load.

``LSTMNAttention`` replaces the attention sublayer with Cheng et al.'s LSTMN.

Every module can record what it computed for analysis: set ``module.capture = True`` and the
next forward stores ``module.captured = {"weights": (B, H, Tq, Tk), "scores": ... or None}``.

Hub code: imports only torch, transformers and sibling files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.pytorch_utils import Conv1D

from .caching import extend
from .kernels import (
    additive_attention,
    additive_attention_reference,
    band_attention,
    band_attention_reference,
    dense_attention,
    dense_attention_reference,
    low_rank_attention,
    low_rank_attention_reference,
    lstmn_gates,
    lstmn_reference,
    lstmn_scan,
)

Tensor = torch.Tensor


@dataclass
class Projected:
    """Per-head projections, each (B, heads, T, dim). The low-rank pair only for low_rank_band."""

    q: Tensor
    k: Tensor
    v: Tensor
    q_low_rank: Tensor | None = None
    k_low_rank: Tensor | None = None


@dataclass
class Context:
    """What every kernel call of one forward shares."""

    causal: bool
    key_mask: Tensor | None  # (B, T_all) bool, True = real token; None = no padding
    dropout_p: float
    reference: bool  # use the naive kernels (they return weights and scores)
    attention_mask: object = "unprepared"  # dense: the mask the model built for transformers' attention interface

    def kwargs(self, k: Tensor) -> dict:
        """Kernel arguments for keys k (B, H, Tk, ·): the last Tk entries of the padding mask
        (a cache may hold fewer keys than the tokens seen, e.g. a band's last w)."""
        key_mask = None if self.key_mask is None else self.key_mask[:, -k.shape[-2]:]
        return {"causal": self.causal, "key_mask": key_mask, "dropout_p": self.dropout_p}


Result = tuple[Tensor, Tensor | None, Tensor | None]  # output (B, H, Tq, D), weights, scores


# ----------------------------------------------------------------------------- the modules per variant


def _low_rank_module(m: VariantAttention, q: Tensor, k: Tensor, v: Tensor, ctx: Context) -> Result:
    if ctx.reference:
        return low_rank_attention_reference(q, k, v, scale=m.low_rank_scaling, **ctx.kwargs(k))
    return low_rank_attention(q, k, v, scale=m.low_rank_scaling, **ctx.kwargs(k)), None, None


def _band_module(m: VariantAttention, q: Tensor, k: Tensor, v: Tensor, ctx: Context) -> Result:
    v = v[:, :, -k.shape[-2]:]  # a cache keeps only the band's keys; values may reach further back
    if ctx.reference:
        return band_attention_reference(q, k, v, window=m.window, scale=m.scaling, **ctx.kwargs(k))
    return band_attention(q, k, v, window=m.window, scale=m.scaling, **ctx.kwargs(k)), None, None


def _dense(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    if ctx.reference:
        return dense_attention_reference(p.q, p.k, p.v, scale=m.scaling, **ctx.kwargs(p.k))
    if isinstance(ctx.attention_mask, str):  # called without a mask built by the model: our SDPA kernel
        return dense_attention(p.q, p.k, p.v, scale=m.scaling, **ctx.kwargs(p.k)), None, None
    return _dense_interface(m, p, ctx)


def _dense_interface(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    """Dense attention dispatched like a stock model's: ``config._attn_implementation`` names the
    function in transformers' ``ALL_ATTENTION_FUNCTIONS`` (flex_attention, a registered one; "sdpa"
    and "eager" stay on our kernels), called with the mask the model built for it
    (``masks.dense_attention_mask``).
    Its output (B, Tq, H, D) is returned as (B, H, Tq, D)."""
    fn = ALL_ATTENTION_FUNCTIONS.get_interface(m.config._attn_implementation, None)
    out, _ = fn(m, p.q, p.k, p.v, ctx.attention_mask, dropout=ctx.dropout_p, scaling=m.scaling, is_causal=ctx.causal)
    return out.transpose(1, 2), None, None


def _low_rank(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    return _low_rank_module(m, p.q, p.k, p.v, ctx)


def _band(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    return _band_module(m, p.q, p.k, p.v, ctx)


def _additive(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    if ctx.reference:
        return additive_attention_reference(p.q, p.k, p.v, m.score_vector, **ctx.kwargs(p.k))
    return additive_attention(p.q, p.k, p.v, m.score_vector, **ctx.kwargs(p.k)), None, None


def _add(a: Tensor | None, b: Tensor | None, wa: Tensor | float = 1.0, wb: Tensor | float = 1.0):
    return None if a is None or b is None else wa * a + wb * b


def _combine_sum(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    """A = L + B: the output is the low-rank output plus the band output."""
    lr, bd = _low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v, ctx), _band_module(m, p.q, p.k, p.v, ctx)
    return lr[0] + bd[0], _add(lr[1], bd[1]), None


def _combine_gate(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    """g_h L + (1 - g_h) B with a learned per-head gate g_h = σ(band_gate_h)."""
    g = torch.sigmoid(m.band_gate).view(1, -1, 1, 1)  # (1, H, 1, 1)
    lr, bd = _low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v, ctx), _band_module(m, p.q, p.k, p.v, ctx)
    return g * lr[0] + (1 - g) * bd[0], _add(lr[1], bd[1], g, 1 - g), None


def _combine_heads(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    """The first H // 2 heads are low-rank (global), the others band (local)."""
    n = m.low_rank_heads
    lr = _low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v[:, :n], ctx)
    bd = _band_module(m, p.q, p.k, p.v[:, n:], ctx)
    weights = None if lr[1] is None else torch.cat([lr[1], bd[1]], dim=1)
    return torch.cat([lr[0], bd[0]], dim=1), weights, None


def _combine_sequential(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    """Band attention whose queries are W_q applied to the low-rank output y and whose keys and
    values come from the layer input: out = Band(W_q y, W_k x, W_v x), y = LowRank(x)."""
    y = _low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v, ctx)[0]  # (B, H, T, D)
    y = y.transpose(1, 2).flatten(2)  # (B, T, H·D)
    q = m.split_heads(m.project_query(y), m.qk_heads)  # (B, H, T, D)
    return _band_module(m, q, p.k, p.v, ctx)


BAND_COMBINE: dict[str, Callable[..., Result]] = {
    "sum": _combine_sum,
    "gate": _combine_gate,
    "heads": _combine_heads,
    "sequential": _combine_sequential,
}


def _low_rank_band(m: VariantAttention, p: Projected, ctx: Context) -> Result:
    return BAND_COMBINE[m.band_combine](m, p, ctx)


VARIANT_FORWARD: dict[str, Callable[[VariantAttention, Projected, Context], Result]] = {
    "dense": _dense,
    "low_rank": _low_rank,
    "band": _band,
    "low_rank_band": _low_rank_band,
    "additive": _additive,
}


def projection_shapes(config, variant: str) -> dict[str, tuple[int, int]]:
    """(heads, dim) of the query/key pair(s) a variant projects to: ``main`` and ``low_rank``."""
    heads, head_dim = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    rank = config.attention_rank
    if variant in ("dense", "band"):
        return {"main": (heads, head_dim)}
    if variant == "low_rank":
        return {"main": (heads, rank)}
    if variant == "additive":
        return {"main": (heads, config.additive_dim)}
    if variant == "low_rank_band":
        low = heads // 2 if config.band_combine == "heads" else heads
        main = heads - low if config.band_combine == "heads" else heads
        return {"main": (main, head_dim), "low_rank": (low, rank)}
    raise ValueError(f"attention_variant={variant!r} has no query/key projections")


class VariantAttention(nn.Module):
    """One layer's self-attention under any scoring variant (all but lstmn).

    Subclasses store the projections (``_build_projections``) and apply them (``_project``,
    ``project_query``). ``forward`` returns the merged heads (B, T, H·D) and the weights.
    """

    def __init__(self, config, layer_idx: int, attention_dropout: float, scaling: float):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.variant = config.variant_for_layer(layer_idx)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.causal = config.is_causal
        self.window = config.attention_window
        self.band_combine = config.band_combine
        self.attention_dropout = attention_dropout
        self.scaling = scaling
        shapes = projection_shapes(config, self.variant)
        self.qk_heads, self.qk_dim = shapes["main"]
        self.low_rank_heads, self.rank = shapes.get("low_rank", (0, config.attention_rank))
        self.low_rank_scaling = (self.rank if self.variant == "low_rank_band" else self.qk_dim) ** -0.5
        self._build_projections(config.hidden_size)
        if self.variant == "additive":
            self.score_vector = nn.Parameter(torch.empty(self.num_heads, self.qk_dim))  # v_h, (H, a)
        if self.variant == "low_rank_band" and self.band_combine == "gate":
            self.band_gate = nn.Parameter(torch.zeros(self.num_heads))  # σ(0) = ½: an even mix
        self.capture = False
        self.captured: dict | None = None

    # the family-specific storage of the projections
    def _build_projections(self, hidden: int) -> None:
        raise NotImplementedError

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        """x (B, T, hidden) -> q, k, v[, q_low_rank, k_low_rank], each (B, T, heads·dim)."""
        raise NotImplementedError

    def project_query(self, y: Tensor) -> Tensor:
        """The main query projection alone, applied to y (B, T, hidden)."""
        raise NotImplementedError

    @property
    def sizes(self) -> list[int]:
        main, value = self.qk_heads * self.qk_dim, self.num_heads * self.head_dim
        return [main, main, value]

    @property
    def low_rank_size(self) -> int:
        return self.low_rank_heads * self.rank

    def split_heads(self, x: Tensor, heads: int) -> Tensor:
        return x.view(*x.shape[:-1], heads, -1).transpose(1, 2)  # (B, T, h·d) -> (B, h, T, d)

    def cache_spec(self) -> dict[str, int | None]:
        """What a generation cache keeps: projection name -> how many last positions (None: all)."""
        if self.variant == "band":
            return {"k": self.window, "v": self.window}
        if self.variant == "low_rank_band":
            return {"k": self.window, "v": None, "k_low_rank": None}
        return {"k": None, "v": None}  # dense, low_rank (keys at rank r), additive (keys W_k x)

    def forward(self, hidden_states: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: dict[str, Tensor] | None = None,
                attention_mask: object = "unprepared") -> tuple[Tensor, Tensor | None]:
        """hidden_states (B, T, hidden), key_mask (B, T_past + T) bool, layer_cache: this layer's
        state in a ``VariantCache`` (extended in place), attention_mask: what dense layers hand to
        transformers' attention interface -> ((B, T, H·D), weights or None)."""
        proj = self._project(hidden_states)
        heads = [self.qk_heads, self.qk_heads, self.num_heads, self.low_rank_heads, self.low_rank_heads]
        p = Projected(*(self.split_heads(t, h) for t, h in zip(proj, heads)))
        if layer_cache is not None:
            for name, keep in self.cache_spec().items():  # past + new along time: (B, h, T_kept + T, d)
                setattr(p, name, extend(layer_cache, name, getattr(p, name), keep))
        eager = self.variant == "dense" and self.config._attn_implementation == "eager"
        ctx = Context(causal=self.causal, key_mask=key_mask,
                      dropout_p=self.attention_dropout if self.training else 0.0,
                      reference=need_weights or self.capture or eager, attention_mask=attention_mask)
        out, weights, scores = VARIANT_FORWARD[self.variant](self, p, ctx)
        if self.capture:
            self.captured = {"weights": weights.detach(), "scores": None if scores is None else scores.detach()}
        return out.transpose(1, 2).flatten(2), weights  # (B, H, T, D) -> (B, T, H·D)


class BertVariantSelfAttention(VariantAttention):
    """BERT storage: ``query``, ``key``, ``value`` (+ ``query_low_rank``, ``key_low_rank``) Linears."""

    def __init__(self, config, layer_idx: int):
        head_dim = config.hidden_size // config.num_attention_heads
        super().__init__(config, layer_idx, config.attention_probs_dropout_prob, head_dim**-0.5)

    def _build_projections(self, hidden: int) -> None:
        qk, _, value = self.sizes
        self.query, self.key, self.value = nn.Linear(hidden, qk), nn.Linear(hidden, qk), nn.Linear(hidden, value)
        if self.low_rank_heads:
            self.query_low_rank = nn.Linear(hidden, self.low_rank_size)
            self.key_low_rank = nn.Linear(hidden, self.low_rank_size)

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        out = (self.query(x), self.key(x), self.value(x))
        return out + (self.query_low_rank(x), self.key_low_rank(x)) if self.low_rank_heads else out

    def project_query(self, y: Tensor) -> Tensor:
        return self.query(y)


class GPT2VariantAttention(VariantAttention):
    """GPT-2 storage: one fused ``c_attn`` Conv1D [q | k | v] (+ ``c_attn_low_rank`` [q | k]),
    then the output projection ``c_proj`` and residual dropout, as in ``GPT2Attention``."""

    def __init__(self, config, layer_idx: int):
        scaling = (config.hidden_size // config.num_attention_heads) ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scaling /= float(layer_idx + 1)
        super().__init__(config, layer_idx, config.attn_pdrop, scaling)
        self.c_proj = Conv1D(config.hidden_size, config.hidden_size)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def _build_projections(self, hidden: int) -> None:
        self.c_attn = Conv1D(sum(self.sizes), hidden)
        if self.low_rank_heads:
            self.c_attn_low_rank = Conv1D(2 * self.low_rank_size, hidden)

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        out = tuple(self.c_attn(x).split(self.sizes, dim=-1))
        return out + tuple(self.c_attn_low_rank(x).chunk(2, dim=-1)) if self.low_rank_heads else out

    def project_query(self, y: Tensor) -> Tensor:
        qk = self.sizes[0]
        if not isinstance(self.c_attn, Conv1D) or self.c_attn.weight.device != y.device:
            # wrapped (a PEFT LoRA layer: adapter included) or offloaded (accelerate hooks load the weights when
            # the module is called, device_map with CPU/disk offload): call it
            return self.c_attn(y)[..., :qk]
        return torch.addmm(self.c_attn.bias[:qk], y.flatten(0, -2), self.c_attn.weight[:, :qk]).view(
            *y.shape[:-1], qk)

    def forward(self, hidden_states: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: dict[str, Tensor] | None = None, **kwargs) -> tuple[Tensor, Tensor | None]:
        out, weights = super().forward(hidden_states, key_mask, need_weights, layer_cache, **kwargs)
        return self.resid_dropout(self.c_proj(out)), weights


# ----------------------------------------------------------------------------- LSTMN


class LSTMNCell(nn.Module):
    """The parameters of one LSTMN direction (Cheng et al. 2016, eq. 7-10 with DESIGN.md's names).

    w_tape: W_h (on tape slots h_i), w_input: W_x (on x_t), w_summary: W_h̃ (on h̃_{t-1}),
    score: v, gates: W and b on [h̃_t; x_t] -> [i; f; o; ĉ].
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.w_tape = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_input = nn.Linear(input_size, hidden_size, bias=False)
        self.w_summary = nn.Linear(hidden_size, hidden_size, bias=False)
        self.score = nn.Parameter(torch.empty(hidden_size))
        self.gates = nn.Linear(hidden_size + input_size, 4 * hidden_size)

    def forward(self, fn: Callable, x: Tensor, *args):
        """fn(self, x, *args) inside a call of the cell: what offloaded weights need (accelerate's
        hooks load a module's own parameters, here ``score``, only while the module is called)."""
        return fn(self, x, *args)

    def run(self, fn: Callable, x: Tensor, *args):
        """fn(self, x, *args), through a call of the cell when its weights are offloaded (on another
        device than x, or on meta: device_map with CPU/disk offload)."""
        if any(p.device != x.device for p in self.parameters()):
            return self(fn, x, *args)
        return fn(self, x, *args)


class LSTMNAttention(nn.Module):
    """The attention sublayer replaced by an LSTMN, causal by nature.

    ``forward`` direction: one cell of size hidden. ``bidirectional``: a forward cell of size
    hidden // 2 and a backward cell (run on the reversed sequence) of the rest, concatenated.
    Returns (B, T, hidden) and, on request, the intra-attention weights (B, directions, T, T)
    in token coordinates; the mass a row puts on the initial zero slot is left out.
    """

    def __init__(self, config, layer_idx: int):
        super().__init__()
        hidden = config.hidden_size
        self.layer_idx = layer_idx
        self.variant = "lstmn"
        self.bidirectional = config.lstmn_direction == "bidirectional"
        forward_size = hidden // 2 if self.bidirectional else hidden
        self.forward_cell = LSTMNCell(hidden, forward_size)
        if self.bidirectional:
            self.backward_cell = LSTMNCell(hidden, hidden - forward_size)
        self.capture = False
        self.captured: dict | None = None

    def _run(self, cell: LSTMNCell, x: Tensor, key_mask: Tensor | None, need_weights: bool):
        if any(p.device != x.device for p in cell.parameters()):  # offloaded: a path that calls the modules
            return cell(_lstmn_by_calls, x, key_mask, need_weights)
        if need_weights:
            return lstmn_reference(cell, x, key_mask)
        return lstmn_scan(cell, x, key_mask)

    def forward(self, hidden_states: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: dict[str, Tensor] | None = None, **kwargs) -> tuple[Tensor, Tensor | None]:
        need_weights = need_weights or self.capture
        if layer_cache is not None:
            if self.bidirectional:
                raise ValueError("lstmn_direction='bidirectional' cannot decode with a cache")
            if layer_cache:  # decoding goes on from the tapes
                new_mask = None if key_mask is None else key_mask[:, -hidden_states.shape[1]:]
                out, attn = self.forward_cell.run(lstmn_continue, hidden_states, new_mask, layer_cache, need_weights)
                return out, None if attn is None else self._weights(attn[:, None])
            # the first forward (a prompt, or a training forward under config.use_cache) takes the fused path
            # below; its inputs are kept so that lstmn_continue builds the tapes only if decoding goes on
            extend(layer_cache, "pending_x", hidden_states.detach(), None, dim=1)
            if key_mask is not None:
                extend(layer_cache, "pending_mask", key_mask, None, dim=1)
        h, attn = self._run(self.forward_cell, hidden_states, key_mask, need_weights)
        outputs, weights = [h], [attn]
        if self.bidirectional:
            flipped = None if key_mask is None else key_mask.flip(1)
            h, attn = self._run(self.backward_cell, hidden_states.flip(1), flipped, need_weights)
            outputs.append(h.flip(1))
            weights.append(None if attn is None else torch.cat([attn[..., :1], attn[..., 1:].flip(1, 2)], -1))
        out = torch.cat(outputs, dim=-1)
        if not need_weights:
            return out, None
        return out, self._weights(torch.stack(weights, dim=1))

    def _weights(self, full: Tensor) -> Tensor:
        """(B, directions, Tq, 1 + Tk): [zero slot, tokens] -> the token weights (recorded if capturing)."""
        if self.capture:
            self.captured = {"weights": full[..., 1:], "scores": None, "zero_slot": full[..., 0]}
        return full[..., 1:]


class GPT2LSTMNAttention(LSTMNAttention):
    """LSTMN sublayer followed by GPT-2's output projection and residual dropout."""

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.c_proj = Conv1D(config.hidden_size, config.hidden_size)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: dict[str, Tensor] | None = None, **kwargs) -> tuple[Tensor, Tensor | None]:
        out, weights = super().forward(hidden_states, key_mask, need_weights, layer_cache, **kwargs)
        return self.resid_dropout(self.c_proj(out)), weights


def lstmn_continue(cell: LSTMNCell, x: Tensor, key_mask: Tensor | None, state: dict[str, Tensor],
                   need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """The LSTMN recurrence of ``kernels.lstmn_reference`` continued over new tokens x (B, n, d_in)
    from the tapes in ``state`` (started with the zero slot on first use), which it extends:
    h, c (B, S, d), keys k = W_h h (B, S, d), readable (B, S), the summary h̃ of the last step (B, d)
    and, once the layer records its past (``activate_past_recording``), the summaries of every step
    from then on (``summaries``, (B, 1 + steps, d)), so that a crop restores the summary exactly.
    key_mask (B, n) marks the new tokens that are real. Used for cached decoding.
    Returns h (B, n, d) and, if ``need_weights``, the intra-attention (B, n, S + n) over the slots
    (zero slot first), else None."""
    if "pending_x" in state:  # inputs of a training forward whose tapes were not built: build them now
        pending_x, pending_mask = state.pop("pending_x"), state.pop("pending_mask", None)
        for name in ("pending_x", "pending_mask"):
            getattr(state, "layout", {}).pop(name, None)
        with torch.no_grad():
            lstmn_continue(cell, pending_x, pending_mask, state)
    batch, n, _ = x.shape
    if not state:
        zeros = x.new_zeros(batch, 1, cell.hidden_size)
        state.update(h=zeros, c=zeros, k=zeros, summary=zeros[:, 0],
                     readable=torch.ones(batch, 1, dtype=torch.bool, device=x.device))
    record = getattr(state, "record_past", False) or "summaries" in state
    if record and "summaries" not in state:  # start the summaries tape with h̃ of the last step
        extend(state, "summaries", state["summary"][:, None], None, dim=1)
    outputs, slots = [], state["h"].shape[1]
    weights = x.new_zeros(batch, n, slots + n) if need_weights else None
    for t in range(n):
        query = cell.w_input(x[:, t]) + cell.w_summary(state["summary"])  # (B, d)
        a = torch.tanh(state["k"] + query[:, None]) @ cell.score  # (B, S)
        s = torch.softmax(a.masked_fill(~state["readable"], float("-inf")), dim=-1)
        if weights is not None:
            weights[:, t, :slots + t] = s
        h_sum = torch.einsum("bs,bsd->bd", s, state["h"])
        c_sum = torch.einsum("bs,bsd->bd", s, state["c"])
        h, c = lstmn_gates(cell.gates(torch.cat([h_sum, x[:, t]], dim=-1)), c_sum)
        readable = torch.ones_like(state["readable"][:, :1]) if key_mask is None else key_mask[:, t:t + 1]
        for name, value in (("h", h[:, None]), ("c", c[:, None]), ("k", cell.w_tape(h)[:, None]),
                            ("readable", readable)) + ((("summaries", h_sum[:, None]),) if record else ()):
            extend(state, name, value, None, dim=1)
        state["summary"] = h_sum
        outputs.append(h)
    return torch.stack(outputs, dim=1), weights


def _lstmn_by_calls(cell: LSTMNCell, x: Tensor, key_mask: Tensor | None, need_weights: bool):
    """The recurrence through module calls only (the path for offloaded weights): h (B, T, d) and
    the attention (B, T, 1 + T) or None, as ``kernels.lstmn_reference``."""
    return lstmn_continue(cell, x, key_mask, {}, need_weights)


BERT_ATTENTION: dict[str, type[nn.Module]] = {
    "dense": BertVariantSelfAttention, "low_rank": BertVariantSelfAttention, "band": BertVariantSelfAttention,
    "low_rank_band": BertVariantSelfAttention, "additive": BertVariantSelfAttention, "lstmn": LSTMNAttention,
}
GPT2_ATTENTION: dict[str, type[nn.Module]] = {
    "dense": GPT2VariantAttention, "low_rank": GPT2VariantAttention, "band": GPT2VariantAttention,
    "low_rank_band": GPT2VariantAttention, "additive": GPT2VariantAttention, "lstmn": GPT2LSTMNAttention,
}


def init_variant_parameters(module: nn.Module, std: float, init) -> None:
    """Initialise the parameters the variants add (``init`` is transformers.initialization)."""
    if isinstance(module, VariantAttention):
        if hasattr(module, "score_vector"):
            init.normal_(module.score_vector, mean=0.0, std=std)
        if hasattr(module, "band_gate"):
            init.zeros_(module.band_gate)
    elif isinstance(module, LSTMNCell):
        init.normal_(module.score, mean=0.0, std=std)
