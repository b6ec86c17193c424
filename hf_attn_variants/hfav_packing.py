"""Padding-free packing: several sequences in one row, ``position_ids`` restarting at each (transformers'
``DataCollatorWithFlattening``, ``test_*_padding_matches_padding_free_with_position_ids``). Every variant
honours it exactly, with no kernel change: each sequence is gathered into a row of its own around every
self-attention sublayer (``Packing``), so the pairs rule, band windows, global tokens (the first g tokens of
each sequence) and LSTMN tapes all start at the sequence's first token.

Hub code: imports only torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


def packed_starts(position_ids: Tensor, key_mask: Tensor | None) -> Tensor:
    """bool (B, T): True where a real token starts a sequence of a padding-free packed row. A sequence
    starts at a row's first real token and wherever a real token's position is not above the previous real
    token's (``position_ids`` restart: ``DataCollatorWithFlattening``'s cat(arange(len_i)), a length-1
    sequence included). Padding (key_mask False) belongs to no sequence, so left padding's positions (1 on
    padding, then 0, 1, ...) are no restart."""
    length = position_ids.shape[-1]
    real = torch.ones_like(position_ids, dtype=torch.bool) if key_mask is None else key_mask[..., -length:]
    # the position of the previous real token of the row (none before the first: -inf)
    index = torch.arange(length, device=position_ids.device).expand_as(position_ids)
    last_real = torch.where(real, index, -1).cummax(-1).values  # (B, T): index of the last real token so far
    previous = torch.cat([torch.full_like(last_real[..., :1], -1), last_real[..., :-1]], -1)
    has_previous = previous >= 0
    previous_position = position_ids.gather(-1, previous.clamp(min=0))
    return real & (~has_previous | (position_ids <= previous_position))


@dataclass
class Packing:
    """Padding-free packing: the sequences of packed rows (``position_ids`` restarting inside a row), each
    laid out as its own row so that every variant's kernel reads one sequence per row (exact for every pairs
    rule, band windows and global tokens per sequence, LSTMN tapes). Built once per forward by ``packing_of``;
    each self-attention sublayer calls ``run``: gather (B, T, C) -> (N, L, C), attend with ``key_mask``,
    scatter back to (B, T, C) and the weights to block-diagonal (B, H, T, T). Cost: a gather and a scatter of
    the sublayer input and output per layer (O(B·T·C) memory traffic, no extra attention work).

    index (N, L) long: flat index (row · T + t) of each slot of each sequence (0 on a slot past its end);
    valid (N, L) bool: the slot holds a token; inverse (B·T,) long: the flat slot (n · L + i) of each token
    (0 for padding); real (B, T) bool: the token belongs to a sequence (not padding); key_mask: ``valid``, or
    None when every sequence fills its row (the kernels' unmasked fast path); shape: (B, T)."""

    index: Tensor
    valid: Tensor
    inverse: Tensor
    real: Tensor
    key_mask: Tensor | None
    shape: tuple[int, int]

    def gather(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, L, ...), zeros on the slots past a sequence's end."""
        flat = x.reshape(self.shape[0] * self.shape[1], *x.shape[2:])[self.index]
        return flat * self.valid.view(*self.valid.shape, *(1,) * (x.dim() - 2)).to(flat.dtype)

    def scatter(self, y: Tensor) -> Tensor:
        """(N, L, ...) -> (B, T, ...), zeros on padding (a token of no sequence)."""
        flat = y.reshape(-1, *y.shape[2:])[self.inverse]
        flat = flat * self.real.reshape(-1, *(1,) * (y.dim() - 2)).to(flat.dtype)
        return flat.view(*self.shape, *y.shape[2:])

    def scatter_pairs(self, w: Tensor, fill: float = 0.0) -> Tensor:
        """Weights (N, H, L, L) -> block-diagonal (B, H, T, T): each sequence's block at its place, ``fill``
        elsewhere (between sequences and on padding)."""
        batch, length = self.shape
        seq, i, j = torch.nonzero(self.valid[:, :, None] & self.valid[:, None, :], as_tuple=True)
        query, key = self.index[seq, i], self.index[seq, j]  # flat (row · T + t) indices
        out = w.new_full((batch, length, length, w.shape[1]), fill)
        out = out.index_put((query // length, query % length, key % length), w.permute(0, 2, 3, 1)[seq, i, j])
        return out.permute(0, 3, 1, 2)

    def scatter_captured(self, captured: dict | None) -> dict | None:
        """What an attention module captured (``module.capture``), in the packed batch's layout: pair tensors
        (N, H, L, L) block-diagonal (scores -inf off the blocks), per-token ones (N, H, L) per token."""
        if captured is None:
            return None
        out = {}
        for name, value in captured.items():
            if value is None:
                out[name] = None
            elif value.dim() == 4:
                out[name] = self.scatter_pairs(value, float("-inf") if name == "scores" else 0.0)
            else:  # (N, H, L) -> (B, H, T)
                out[name] = self.scatter(value.transpose(1, 2)).transpose(1, 2)
        return out

    def run(self, module, attend, hidden_states: Tensor, *args) -> tuple[Tensor, Tensor | None]:
        """attend(gathered (N, L, C), key_mask (N, L) or None, *args) -> (out (N, L, C'), weights or None),
        returned as (B, T, C') and block-diagonal (B, H, T, T); ``module.captured`` likewise."""
        out, weights = attend(self.gather(hidden_states), self.key_mask, *args)
        if getattr(module, "capture", False):
            module.captured = self.scatter_captured(module.captured)
        return self.scatter(out), None if weights is None else self.scatter_pairs(weights)


def packing_of(position_ids: Tensor | None, key_mask: Tensor | None, *, cache=None,
               use_cache: bool | None = None) -> Packing | None:
    """The ``Packing`` of a forward whose ``position_ids`` restart inside a row (padding-free packing), else
    None. With an ``attention_mask`` too, its padding belongs to no sequence and the real tokens split where
    their positions restart (stock models ignore the restarts when a mask is given; here both hold). Not
    detected under ``torch.compile`` (deciding would break the graph). Refused, with the reason, together with
    a cache (a cache holds one sequence per row, so a packed row cannot be continued): a ``cache`` or
    ``past_key_values`` given, or ``use_cache=True`` (use_cache left to the config keeps no cache)."""
    if position_ids is None or position_ids.shape[-1] < 2 or torch.compiler.is_compiling():
        return None
    batch, length = position_ids.shape[0], position_ids.shape[-1]
    if key_mask is not None:
        batch = max(batch, key_mask.shape[0])
        key_mask = key_mask[..., -length:]
    position_ids = position_ids.expand(batch, length)
    starts = packed_starts(position_ids, key_mask)
    real = starts.new_ones(batch, length) if key_mask is None else key_mask.expand(batch, length)
    first = torch.where(real, torch.arange(length, device=real.device), length).min(-1).values  # (B,)
    restarts = starts & (torch.arange(length, device=real.device) > first[:, None])
    if not bool(restarts.any()):
        return None
    if cache is not None or use_cache:
        raise ValueError("position_ids restart within a row (padding-free packing of several sequences) together "
                         f"with a cache ({'cache/past_key_values given' if cache is not None else 'use_cache=True'}):"
                         " a cache holds one sequence per row, so a packed row cannot be continued; pass "
                         "use_cache=False (and no cache) for packed rows, or pad the batch and pass attention_mask.")
    flat_real = real.reshape(-1)
    seq_of = starts.reshape(-1).long().cumsum(0) - 1  # (B·T,): the sequence of each real token, in order
    count = int(starts.sum())
    tokens = torch.nonzero(flat_real, as_tuple=True)[0]  # flat indices of the real tokens
    seq = seq_of[tokens]
    rank = torch.arange(tokens.numel(), device=real.device)
    first_rank = torch.zeros(count, dtype=torch.long, device=real.device).scatter_reduce(
        0, seq, rank, reduce="amin", include_self=False)
    slot = rank - first_rank[seq]  # place of each real token inside its sequence (padding between is skipped)
    lengths = torch.bincount(seq, minlength=count)
    longest = int(lengths.max())
    index = torch.zeros(count, longest, dtype=torch.long, device=real.device)
    index[seq, slot] = tokens
    valid = torch.arange(longest, device=real.device) < lengths[:, None]
    inverse = torch.zeros(batch * length, dtype=torch.long, device=real.device)
    inverse[tokens] = seq * longest + slot
    return Packing(index=index, valid=valid, inverse=inverse, real=real,
                   key_mask=None if bool(valid.all()) else valid, shape=(batch, length))
