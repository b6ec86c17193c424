"""The LSTMN sublayer (Cheng et al. 2016): the attention sublayer replaced by an LSTMN whose memory
tape is read by intra-attention. The recurrence itself is in ``hfav_kernels_lstmn.py``.

Hub code: imports only torch, transformers and sibling files.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .hfav_caching import LSTMNLayer
from .hfav_kernels_lstmn import lstmn_reference, lstmn_scan, lstmn_start
from .hfav_packing import Packing

Tensor = torch.Tensor


class LSTMNCell(nn.Module):
    """The parameters of one LSTMN direction (Cheng et al. 2016, eq. 7-10 with docs/design.md's names).

    w_tape: W_h (on tape slots h_i), w_input: W_x (on x_t), w_summary: W_h̃ (on h̃_{t-1}),
    score: v, gates: W and b on [h̃_t; x_t] -> [i; f; o; ĉ].
    """

    variant = "lstmn"  # its parameters are initialised by the lstmn spec (``variants.LSTMN.init``)

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.w_tape = nn.Linear(hidden_size, hidden_size, bias=False)
        self.w_input = nn.Linear(input_size, hidden_size, bias=False)
        self.w_summary = nn.Linear(hidden_size, hidden_size, bias=False)
        # zeros, not torch.empty: a cell built on its own never holds uninitialised memory (it was NaN at
        # times); inside a model the lstmn spec's init draws v, and zeros consume no random numbers
        self.score = nn.Parameter(torch.zeros(hidden_size))
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
        self.variant = config.variant_for_layer(layer_idx)  # the spec that built this sublayer (variants.LSTMN)
        self.bidirectional = config.resolved_lstmn_direction() == "bidirectional"
        forward_size = hidden // 2 if self.bidirectional else hidden
        self.forward_cell = LSTMNCell(hidden, forward_size)
        if self.bidirectional:
            self.backward_cell = LSTMNCell(hidden, hidden - forward_size)
        self.capture = False
        self.captured: dict | None = None

    def _run(self, cell: LSTMNCell, x: Tensor, key_mask: Tensor | None, need_weights: bool):
        if any(p.device != x.device for p in cell.parameters()):  # offloaded: a path that calls the modules
            return cell(lstmn_reference, x, key_mask)
        if need_weights:
            return lstmn_reference(cell, x, key_mask)
        return lstmn_scan(cell, x, key_mask)

    def forward(self, hidden_states: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: LSTMNLayer | None = None, packing: Packing | None = None,
                **kwargs) -> tuple[Tensor, Tensor | None]:
        """hidden_states (B, T, hidden), key_mask (B, T) bool; packing: the sequences of padding-free packed
        rows (``hfav_packing.Packing``), each run as its own row (its own tapes; no cache)."""
        if packing is not None:
            return packing.run(self, self._recur, hidden_states, need_weights, None)
        return self._recur(hidden_states, key_mask, need_weights, layer_cache)

    def _recur(self, hidden_states: Tensor, key_mask: Tensor | None, need_weights: bool,
               layer_cache: LSTMNLayer | None) -> tuple[Tensor, Tensor | None]:
        need_weights = need_weights or self.capture
        if layer_cache is not None:
            if self.bidirectional:
                raise ValueError("lstmn_direction='bidirectional' cannot decode with a cache")
            if not isinstance(layer_cache, LSTMNLayer):
                raise ValueError(f"lstmn layer {self.layer_idx} got a {type(layer_cache).__name__}: it needs an "
                                 "LSTMNLayer; build the cache with VariantCache(config=model.config)")
            if "h" in layer_cache or "pending_x" in layer_cache:  # decoding goes on from the tapes
                new_mask = None if key_mask is None else key_mask[:, -hidden_states.shape[1]:]
                out, attn = self.forward_cell.run(lstmn_continue, hidden_states, new_mask, layer_cache, need_weights)
                return out, None if attn is None else self._weights(attn[:, None])
            # the first forward (a prompt, or a training forward under config.use_cache) takes the fused path
            # below; its inputs are kept so that lstmn_continue builds the tapes only if decoding goes on
            layer_cache.pend(hidden_states.detach(), key_mask)
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
                layer_cache: LSTMNLayer | None = None, **kwargs) -> tuple[Tensor, Tensor | None]:
        out, weights = super().forward(hidden_states, key_mask, need_weights, layer_cache, **kwargs)
        return self.resid_dropout(self.c_proj(out)), weights


def lstmn_continue(cell: LSTMNCell, x: Tensor, key_mask: Tensor | None, state: LSTMNLayer | dict[str, Tensor],
                   need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
    """The LSTMN recurrence continued over new tokens x (B, n, d_in) from the tapes in ``state`` (a
    layer's ``caching.LSTMNLayer``, or a dict: started with the zero slot on first use, extended in place).
    key_mask (B, n) marks the new tokens that are real. Used for cached decoding: the same steps as
    ``lstmn_reference``. Once the layer records its past (``activate_past_recording``, for assisted
    decoding), the state also keeps the summary h̃ of every step from then on (``summaries``), so
    that a crop restores the last summary exactly.
    Returns h (B, n, d) and, if ``need_weights``, the intra-attention (B, n, S + n) over the slots
    (zero slot first), else None."""
    if "pending_x" in state:  # inputs of a first forward whose tapes were not built: build them now
        pending_x, pending_mask = state.pop("pending_x"), state.pop("pending_mask", None)
        with torch.no_grad():
            lstmn_continue(cell, pending_x, pending_mask, state)
    if "h" not in state:  # (the layer may hold other states: a decoder's cross-attention keys)
        for name, tensor in lstmn_start(x, cell.hidden_size).items():
            state[name] = tensor
    if getattr(state, "record_past", False) and "summaries" not in state:  # start it with the last step's h̃
        state["summaries"] = state["summary"][:, None]
    h, attn = lstmn_reference(cell, x, key_mask, state)  # extends the tapes (and summaries, if kept)
    return h, attn if need_weights else None
