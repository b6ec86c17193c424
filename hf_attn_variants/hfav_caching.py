"""The generation cache of the variant models: transformers cache layers that own their window.

``VariantCache`` is a ``transformers.Cache``; ``cache.layers[i]`` is a transformers cache layer
(``VariantLayer``, a ``DynamicLayer``; ``LSTMNLayer`` for LSTMN layers) with ``keys`` and
``values`` tensors in the stock layout (B, H, T_held, ·), plus the named tensors a variant needs
beside them (``layer["keys_low_rank"]``, LSTMN's tapes, cross-attention's encoder projections).

Layout per variant (what ``keys`` / ``values`` hold; the full contract is ``docs/cache.md``):

| variant | keys | values | beside them |
|---|---|---|---|
| dense | (B, H, T, D) | (B, H, T, D) | |
| low_rank | (B, H, T, r): keys at rank r | (B, H, T, D) | |
| additive | (B, H, T, a): W_k x_j, a = additive_dim | (B, H, T, D) | |
| band | (B, H, g + w, D): the window | (B, H, g + w, D) | |
| low_rank_band | (B, H_band, g + w, D): band keys, the window | (B, H, T, D) | ``keys_low_rank`` (B, H_lr, T, r) |
| lstmn | (B, 1, 1 + T, d): the tape keys W_h h_i | (B, 1, 1 + T, d): the tape h_i | tapes ``h``, ``c``, ``k`` |
| | | | (B, 1 + T, d), ``readable`` (B, 1 + T), ``summary`` (B, d) |

(T: tokens seen; g: ``attention_global_tokens``; w: ``attention_window``; slot 0 of an LSTMN
tape is its zero slot.)

The window has one owner: the layer's ``CacheRule``, declared by the variant's spec
(``variants.VariantSpec.cache``). A windowed layer holds positions [0, head) ∪ [start, seen):
after every update it keeps the first g and the last w positions (``positions`` lists them),
unless it records its past (``activate_past_recording``: assisted and prompt-lookup decoding),
in which case it keeps everything until the next ``crop``, which cuts it back to the window as
transformers' ``DynamicSlidingWindowLayer`` does. A crop that needs positions the layer no
longer holds raises a ValueError before anything changes. The attention reads the key-padding
mask of the positions it was handed with ``held_view``.

``cache_implementation="static"``: ``VariantStaticLayer``, the same rule in preallocated tensors
(max_cache_len positions, or min(max_cache_len, g + w) for windowed ones); band's and low_rank_band's
``VariantRingLayer`` (the window in g + w + 1 slots: globals, a ring, the newest; their decoding steps
compile); lstmn layers refuse it.

Hub code: imports only torch and transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicLayer

Tensor = torch.Tensor

RECORD_HINT = ("call cache.activate_past_recording() before the forward passes to be undone (generate() does this "
               "for assisted and prompt-lookup decoding)")


@dataclass(frozen=True)
class CacheRule:
    """Which positions a layer's cache holds, as a variant's spec declares it.

    ``window``: the last w positions (None: every position); ``global_tokens``: the first g
    positions, held besides; ``windowed``: which tensors follow the window (the others hold every
    position); ``recurrent``: the layer carries a recurrence's tapes (LSTMN) instead of keys;
    ``compileable``: the variant's decoding step compiles with ``torch.compile(fullgraph=True)``
    over a static layer (no data-dependent Python control flow in its kernels), so its static
    layer says ``is_compileable`` and ``generate`` compiles the decoding forward.
    """

    window: int | None = None
    global_tokens: int = 0
    windowed: tuple[str, ...] = ("keys", "values")
    recurrent: bool = False
    compileable: bool = False


class VariantLayer(DynamicLayer):
    """One attention layer's cache: ``keys``, ``values`` (B, H, T_held, ·), named tensors beside
    them, and the window rule that decides which positions are held.

    ``VariantLayer()`` holds every position (as ``DynamicLayer()``), ``VariantLayer(sliding_window=W)``
    the last W - 1 (as ``DynamicSlidingWindowLayer``), ``VariantLayer(rule=CacheRule(...))`` what a
    variant declares. Named tensors: ``layer[name]``; those given to ``extend`` grow along time
    (dim 2, every position), those assigned (``layer[name] = t``) are per sequence (no time axis).
    """

    is_croppable = True
    is_compileable = False
    supports_early_init = False

    def __init__(self, sliding_window: int | None = None, *, rule: CacheRule | None = None, **kwargs):
        super().__init__()
        if rule is None:
            rule = CacheRule(window=None if sliding_window is None else max(0, int(sliding_window) - 1))
        if rule.window is not None and rule.window < 0:
            raise ValueError(f"CacheRule.window={rule.window} must be >= 0 or None")
        self.rule = rule
        self.states: dict[str, Tensor] = {}
        self.time_states: set[str] = set()  # states with a time axis (dim 2, every position)
        self.seen = 0  # tokens seen
        self.head = 0  # windowed tensors hold positions [0, head) ∪ [start, seen)
        self.start = 0
        self.record_past = False
        self._handed = (0, 0)  # (head, start) of the tensors the last ``extend`` returned

    @property
    def is_sliding(self) -> bool:
        return self.rule.window is not None

    # ------------------------------------------------------------------ the named tensors beside keys/values

    def __getitem__(self, name: str) -> Tensor:
        return self.states[name]

    def __setitem__(self, name: str, tensor: Tensor) -> None:
        self.states[name] = tensor

    def __contains__(self, name: str) -> bool:
        return name in self.states

    def __iter__(self):
        return iter(self.states)

    def get(self, name: str, default=None):
        return self.states.get(name, default)

    def pop(self, name: str, *default):
        self.time_states.discard(name)
        return self.states.pop(name, *default)

    # ------------------------------------------------------------------ the window

    @property
    def positions(self) -> list[int]:
        """Absolute positions held by the windowed tensors (the others hold 0 .. seen - 1)."""
        return list(range(self.head)) + list(range(self.start, self.seen))

    def _target(self, seen: int) -> tuple[int, int]:
        """(head, start) the rule asks for after ``seen`` tokens."""
        head = min(self.rule.global_tokens, seen)
        start = head if self.rule.window is None else max(head, seen - self.rule.window)
        return head, start

    def _holds(self, a: int, b: int) -> bool:
        """Whether positions [a, b) are held."""
        return b <= a or b <= self.head or a >= self.start or self.start == self.head

    def _index(self, p: int) -> int:
        """Index along time of held position p."""
        return p if p < self.head or self.start == self.head else self.head + p - self.start

    def _select(self, t: Tensor, head: int, start: int, end: int, dim: int) -> Tensor:
        """Positions [0, head) ∪ [start, end) of t, whose held positions are this layer's layout."""
        if head == start:  # [0, end): a prefix of t
            return t.narrow(dim, 0, end)
        if head == 0:  # [start, end): a view, no copy
            return t.narrow(dim, self._index(start), end - start)
        first = t.narrow(dim, 0, head)
        last = t.narrow(dim, self._index(start), end - start) if end > start else t.narrow(dim, 0, 0)
        return torch.cat([first, last], dim=dim)

    def windows(self, name: str) -> bool:
        """Whether tensor `name` follows the window (else it holds every position)."""
        return self.rule.window is not None and name in self.rule.windowed

    def _tensors(self) -> dict[str, Tensor]:
        out = {name: getattr(self, name) for name in ("keys", "values") if getattr(self, name) is not None}
        out.update({name: self.states[name] for name in self.time_states})
        return out

    def _set(self, name: str, t: Tensor) -> None:
        if name in ("keys", "values"):
            setattr(self, name, t)
        else:
            self.states[name] = t

    def _hold(self, head: int, start: int, seen: int) -> None:
        """Keep positions [0, head) ∪ [start, seen) of the windowed tensors and [0, seen) of the others."""
        for name, t in self._tensors().items():
            if self.windows(name):
                self._set(name, self._select(t, head, start, seen, 2))
            elif t.shape[2] != seen:
                self._set(name, t.narrow(2, 0, seen))
        self.head, self.start, self.seen = head, start, seen

    def extend(self, key_states: Tensor, value_states: Tensor,
               states: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Append T new positions: keys (B, H, T, ·), values (B, H, T, D) and named tensors with a
        time axis (dim 2). Returns what the attention reads, the held positions and the new ones:
        (keys, values, states); ``held_view`` gives the key mask of the windowed ones."""
        states = states or {}
        if not self.is_initialized:
            self.device = key_states.device
            self.keys, self.values = key_states[:, :, :0], value_states[:, :, :0]
            self.is_initialized = True
        self.time_states.update(states)
        full = {"keys": torch.cat([self.keys, key_states], dim=2),
                "values": torch.cat([self.values, value_states], dim=2)}
        for name, new in states.items():
            old = self.states.get(name)
            full[name] = new if old is None else torch.cat([old, new], dim=2)
        for name, t in full.items():
            self._set(name, t)
        self._handed = (self.head, self.start)
        self.seen += key_states.shape[2]
        if not self.record_past:
            self._hold(*self._target(self.seen), self.seen)
        return full["keys"], full["values"], {name: full[name] for name in states}

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        """transformers' layer API: append keys and values, return what attention reads."""
        keys, values, _ = self.extend(key_states, value_states)
        return keys, values

    def held_view(self, t: Tensor | None, dim: int = 1) -> Tensor | None:
        """The positions the last ``extend`` handed to the attention as windowed tensors, taken from t
        laid out over every position along ``dim`` (a key mask (B, seen) or values (B, H, seen, D))."""
        head, start = self._handed
        if t is None or self.rule.window is None or head == start:  # every position was handed
            return t
        return torch.cat([t.narrow(dim, 0, head), t.narrow(dim, start, t.shape[dim] - start)], dim=dim)

    record_hint = RECORD_HINT

    def activate_past_recording(self) -> None:
        self.record_past = True

    # ------------------------------------------------------------------ the transformers layer protocol

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) over every position: what the masks of dense layers are built for."""
        return self.seen + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def _checked_crop(self, tokens_to_remove: int) -> int:
        """The number n of tokens a ``crop(tokens_to_remove)`` removes; ValueError, before anything changes,
        for a positive argument or a crop this layer cannot undo (``crop_error``)."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): pass a negative number of tokens to remove")
        error = self.crop_error(-tokens_to_remove)
        if error:
            raise ValueError(error)
        return -tokens_to_remove

    def crop_error(self, n: int) -> str | None:
        """Why the last ``n`` tokens cannot be removed exactly, or None if they can (an empty layer,
        as one transformers' Cache replicates lazily, crops to nothing: a no-op, as stock)."""
        if not self.is_initialized:
            return None
        if n > self.seen:
            return f"cannot crop {n} token(s): the layer has seen only {self.seen}"
        head, start = self._target(self.seen - n)
        if self.rule.window is not None and not (self._holds(0, head) and self._holds(start, self.seen - n)):
            return (f"cannot crop {n} token(s): the layer keeps the first {self.rule.global_tokens} and the last "
                    f"{self.rule.window} positions (attention_global_tokens, attention_window) and holds "
                    f"[0, {self.head}) and [{self.start}, {self.seen}); after the crop it would need "
                    f"[{start}, {self.seen - n}); {self.record_hint}")
        return None

    def crop(self, tokens_to_remove: int) -> None:
        """Remove the last ``-tokens_to_remove`` tokens (a negative int, as for ``DynamicLayer``), then
        cut the windowed tensors back to the window (``crop(0)`` only does that). ValueError, with
        nothing changed, when the positions needed afterwards are no longer held."""
        n = self._checked_crop(tokens_to_remove)
        if self.is_initialized:
            self._hold(*self._target(self.seen - n), self.seen - n)

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> None:
        if self.keys is not None:
            self.keys, self.values = fn(self.keys), fn(self.values)
        self.states = {name: fn(t) for name, t in self.states.items()}

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: keep, for each new beam, the state of the beam it came from."""
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        self._apply(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def offload(self) -> None:
        if self.is_initialized:
            self._apply(lambda t: t.to("cpu", non_blocking=True))

    def prefetch(self) -> None:
        if self.is_initialized:
            self._apply(lambda t: t.to(self.device, non_blocking=True))

    def to(self, device, non_blocking: bool = False) -> VariantLayer:
        """Move the tensors in place and return this same layer: accelerate's hooks (device_map,
        offload) send a module's inputs through ``.to``, and the attention module must extend the
        very layer the cache holds, not a copy."""
        self._apply(lambda t: t.to(device, non_blocking=non_blocking))
        return self

    def reset(self) -> None:
        super().reset()
        self.states.clear()
        self.time_states.clear()
        self.seen = self.head = self.start = 0
        self._handed = (0, 0)

    def memory_bytes(self) -> int:
        tensors = [t for t in (self.keys, self.values) if t is not None] + list(self.states.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule}, seen={self.seen}, held={self.head}+{self.seen - self.start})"


TAPES = ("h", "c", "k", "readable")  # the LSTMN state laid out along time (dim 1, zero slot first)


class LSTMNLayer(VariantLayer):
    """An LSTMN layer's cache (Cheng et al. 2016): the tapes h, c (B, 1 + T, d) with their keys
    k = W_h h and which slots are readable (B, 1 + T), the last summary h̃ (B, d) and, while the
    layer records its past, the summary of every step (``summaries`` (B, 1 + n, d)), so that a crop
    restores h̃ exactly. ``keys`` / ``values`` are the stock-layout views (B, 1, 1 + T, d) of the
    tape keys and of h. Before the tapes exist (a prefill takes the fused scan), the layer keeps the
    prefill's inputs (``pending_x`` (B, T, d_in), ``pending_mask``) and builds them on the next step.
    The layer is used as a mapping by ``kernels_lstmn.lstmn_step``.
    """

    VIEWS = {"k": "keys", "h": "values"}  # tape -> the stock-layout attribute that views it

    def __init__(self, *args, rule: CacheRule | None = None, **kwargs):
        super().__init__(rule=rule or CacheRule(recurrent=True))

    def __setitem__(self, name: str, tensor: Tensor) -> None:
        self.states[name] = tensor
        if name in self.VIEWS:  # (B, S, d) -> (B, 1, S, d)
            setattr(self, self.VIEWS[name], tensor[:, None])

    def _sync(self) -> None:
        for tape, view in self.VIEWS.items():
            setattr(self, view, self.states[tape][:, None] if tape in self.states else None)

    def _apply(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.states = {name: fn(t) for name, t in self.states.items()}
        self._sync()

    def get_seq_length(self) -> int:
        if "h" in self.states:
            return self.states["h"].shape[1] - 1
        return self.states["pending_x"].shape[1] if "pending_x" in self.states else 0

    def extend(self, *args, **kwargs):
        raise NotImplementedError("an LSTMN layer is extended by attention_lstmn.lstmn_continue")

    def pend(self, x: Tensor, key_mask: Tensor | None) -> None:
        """Keep the inputs of a prefill that ran the fused scan: the tapes are built from them on
        the next step (``lstmn_continue``), if decoding goes on."""
        for name, t in (("pending_x", x), ("pending_mask", key_mask)):
            if t is not None:
                self.states[name] = t if name not in self.states else torch.cat([self.states[name], t], dim=1)
        self.is_initialized = True

    def crop_error(self, n: int) -> str | None:
        if not self.states:
            return None
        if n > self.get_seq_length():
            return f"cannot crop {n} token(s): the layer has seen only {self.get_seq_length()}"
        summaries = self.states.get("summaries")
        if n and "summary" in self.states and (summaries is None or summaries.shape[1] <= n):
            return (f"cannot crop {n} token(s): the LSTMN summary h̃ of an earlier step is kept only while the "
                    f"cache records its past; {RECORD_HINT}")
        return None

    def crop(self, tokens_to_remove: int) -> None:
        """Remove the last n tokens of the tapes (and of the summaries, whose last entry becomes h̃)."""
        n = self._checked_crop(tokens_to_remove)
        if not n or not self.states:
            return
        for name in (*TAPES, "summaries", "pending_x", "pending_mask"):
            if name in self.states:
                t = self.states[name]
                self.states[name] = t.narrow(1, 0, t.shape[1] - n)
        if "summaries" in self.states:
            self.states["summary"] = self.states["summaries"][:, -1]
        self._sync()

    def reset(self) -> None:
        self.states.clear()
        self._sync()
        self.is_initialized = False

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.states.values())


class VariantStaticLayer(VariantLayer):
    """A ``VariantLayer`` with preallocated tensors (``cache_implementation="static"``), as
    transformers' ``StaticLayer`` / ``StaticSlidingWindowLayer``: ``keys`` / ``values`` (and the named
    tensors with a time axis) are buffers of ``max_cache_len`` positions, or of min(max_cache_len,
    g + w) for the tensors the rule windows, written in place. The attention reads the filled part.

    The memory is fixed before decoding starts; the window rule, ``held_view`` and the layout are
    the ``VariantLayer``'s. Not recordable: a windowed layer that has moved past its window cannot
    undo a crop (ValueError, as ``crop_error`` says), as transformers' static sliding layers.
    Eager: the attention reads the filled part ``buffer[:, :, :seen]``.

    Compiled decoding (``is_compileable``: a rule without a window whose variant declares
    ``compileable``): the buffers have one slot more, a scratch slot at the end. Under
    ``torch.compile`` ``extend`` writes the new token in place at the tensor ``cumulative_length`` (as
    transformers' ``StaticLayer``) and into the scratch slot, and hands the attention the whole buffers
    (B, H, max_cache_len + 1, ·) with ``step_key_mask``: the past slots and the scratch slot, where the
    kernels place the query (the last key position: it reads itself there, never an unwritten slot).
    Shapes and addresses stay fixed, so decoding steps reuse one graph. ``seen`` reads the tensor count.
    """

    def __init__(self, max_cache_len: int, sliding_window: int | None = None, *, rule: CacheRule | None = None,
                 **kwargs):
        # the count of positions written, as a tensor (compiled steps update it in place) and a Python int
        self.cumulative_length = torch.tensor(0, dtype=torch.long)
        super().__init__(sliding_window, rule=rule)
        if self.rule.recurrent:
            raise ValueError("a static cache layer cannot hold a recurrence's tapes (lstmn)")
        self.max_cache_len = int(max_cache_len)

    @property
    def is_compileable(self) -> bool:
        return self.rule.compileable and self.rule.window is None and not self.rule.recurrent

    @property
    def seen(self) -> int:
        """Positions written: for a compileable layer the tensor count (compiled steps move only that), else the
        Python int the ``VariantLayer`` code keeps."""
        return int(self.cumulative_length) if self.is_compileable else self._seen

    def __setattr__(self, name: str, value) -> None:
        """``seen = n`` (as the ``VariantLayer`` code writes it) sets the Python int and the tensor count."""
        if name == "seen":
            super().__setattr__("_seen", int(value))
            self.cumulative_length.fill_(int(value))
            return
        super().__setattr__(name, value)

    def step_key_mask(self) -> Tensor:
        """bool (max_cache_len + 1,): what a compiled step's query reads: the slots written before it and the
        scratch slot (itself). A tensor compare, no Python int: the same graph at every step."""
        slots = torch.arange(self.max_cache_len + 1, device=self.cumulative_length.device)
        return (slots < self.cumulative_length) | (slots == self.max_cache_len)

    def _extend_in_place(self, key_states: Tensor, value_states: Tensor,
                         states: dict[str, Tensor] | None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The compiled step: write the n new positions at ``cumulative_length`` in place and hand back the
        whole buffers (B, H, max_cache_len, ·); the unwritten slots are masked by the model."""
        new = {"keys": key_states, "values": value_states, **(states or {})}
        if not self.is_initialized:
            self._allocate(new, states)
        n = key_states.shape[2]
        if n != 1:
            raise ValueError(f"a compiled step over a static cache layer takes one new token (got {n})")
        position = self.cumulative_length + torch.arange(n, device=key_states.device)
        for name, t in new.items():
            buffer = self._buffer(name)
            buffer.index_copy_(2, position, t)
            buffer.narrow(2, self.max_cache_len, 1).copy_(t)  # the scratch slot, where the query sits
        self.cumulative_length.add_(n)
        return self.keys, self.values, {name: self.states[name] for name in states or {}}

    def _allocate(self, new: dict[str, Tensor], states: dict[str, Tensor] | None) -> None:
        self.device = new["keys"].device
        for name, t in new.items():
            size = min(self.max_cache_len, self.rule.global_tokens + self.rule.window) if self.windows(name) \
                else self.max_cache_len + int(self.is_compileable)  # (the scratch slot of compiled steps)
            buffer = t.new_zeros(*t.shape[:2], size, t.shape[3])
            if name in ("keys", "values"):
                setattr(self, name, buffer)
            else:
                self.states[name] = buffer
        self.time_states.update(states or {})
        self.cumulative_length = self.cumulative_length.to(self.device)
        self.is_initialized = True

    record_hint = ("a static windowed layer holds g + w positions in place and cannot record its past: use the "
                   "dynamic VariantCache (cache_implementation=None)")

    def get_max_length(self) -> int:
        return self.max_cache_len

    def activate_past_recording(self) -> None:
        """Nothing is ever dropped by a layer without a window; a windowed one refuses: it could not
        undo the crops that assisted and prompt-lookup decoding make."""
        if self.rule.window is not None:
            raise ValueError("assisted and prompt-lookup decoding crop drafts, which needs a cache that records its "
                             f"past; {self.record_hint}")

    def _length(self, name: str) -> int:
        """Positions of buffer ``name`` that hold data."""
        return self.head + self.seen - self.start if self.windows(name) else self.seen

    def _buffer(self, name: str) -> Tensor:
        return getattr(self, name) if name in ("keys", "values") else self.states[name]

    def _tensors(self) -> dict[str, Tensor]:
        names = [n for n in ("keys", "values") if getattr(self, n) is not None] + sorted(self.time_states)
        return {name: self._buffer(name).narrow(2, 0, self._length(name)) for name in names}

    def _set(self, name: str, t: Tensor) -> None:
        self._buffer(name).narrow(2, 0, t.shape[2]).copy_(t)

    def extend(self, key_states: Tensor, value_states: Tensor,
               states: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if torch.compiler.is_compiling() and self.is_compileable:
            return self._extend_in_place(key_states, value_states, states)
        new = {"keys": key_states, "values": value_states, **(states or {})}
        n = key_states.shape[2]
        if self.seen + n > self.max_cache_len:
            raise ValueError(f"the static cache holds max_cache_len={self.max_cache_len} positions: cannot add {n} "
                             f"after {self.seen}; pass a larger max_cache_len or max_new_tokens")
        if not self.is_initialized:
            self._allocate(new, states)
        full, head, start, seen = {}, *self._target(self.seen + n), self.seen + n
        for name, t in new.items():
            if self.windows(name):  # held + new, then the window of that is written back
                full[name] = torch.cat([self._buffer(name).narrow(2, 0, self._length(name)), t], dim=2)
            else:  # written in place
                self._buffer(name).narrow(2, self.seen, n).copy_(t)
                full[name] = self._buffer(name).narrow(2, 0, seen)
        self._handed = (self.head, self.start)
        for name, t in full.items():
            if self.windows(name):
                self._set(name, self._select(t, head, start, seen, 2))
        self.head, self.start, self.seen = head, start, seen
        return full["keys"], full["values"], {name: full[name] for name in states or {}}

    def _hold(self, head: int, start: int, seen: int) -> None:
        for name, t in self._tensors().items():
            if self.windows(name):
                self._set(name, self._select(t, head, start, seen, 2).clone())
        self.head, self.start, self.seen = head, start, seen

    def to(self, device, non_blocking: bool = False) -> VariantStaticLayer:
        super().to(device, non_blocking)
        self.cumulative_length = self.cumulative_length.to(device)
        return self

    def reset(self) -> None:
        for t in self._tensors().values():
            t.zero_()
        self.seen = self.head = self.start = 0
        self._handed = (0, 0)



class VariantRingLayer(VariantStaticLayer):
    """The static layer of a window rule whose variant decodes compiled (band, low_rank_band).

    Each tensor the rule windows has g + w + 1 slots: the first g positions in slots [0, g) (their home), a
    ring of w slots after them (position q >= g at home g + (q - g) mod w), and a last, scratch slot that
    holds the newest position. The others (low_rank_band's values and low-rank keys) hold every position
    and a scratch slot, as the compileable ``VariantStaticLayer``. Everything is written in place.

    Compiled decoding step (one new token at position p): the scratch slot's token p - 1 goes home (where
    it overwrites p - 1 - w, which p no longer reads), then p goes to the scratch slot; the attention reads
    all g + w + 1 slots with ``held_view``'s key mask (slots written, not padding), values outside the
    window gathered from the same positions (``held_view(v, dim=2)``). The kernels place the query on the
    last slot, where p sits (a query always reads its own position), and from there the band rule reads
    every slot: the globals, and the w ring slots within w of it. The ring holds exactly what p may read
    besides itself (the globals, positions p - w .. p - 1), and a softmax over a set of keys does not depend
    on their order: the positions are in the keys (learned absolute position embeddings). No shape, Python
    int or data-dependent branch changes between steps: one graph for every step.

    Eager steps (the prompt, uncompiled decoding) hand the attention the held positions in order (gathered
    from their slots) and the new ones, as ``VariantStaticLayer``, and leave the newest in the scratch slot;
    ``head`` and ``start`` follow from ``seen`` (compiled steps move only the tensor count).
    """

    def __init__(self, max_cache_len: int, sliding_window: int | None = None, *, rule: CacheRule | None = None,
                 **kwargs):
        super().__init__(max_cache_len, sliding_window, rule=rule)
        if self.rule.window is None or "keys" not in self.rule.windowed or not self.rule.compileable:
            raise ValueError(f"a ring layer holds a compileable window over the keys, not {self.rule}")
        self.scratch = self.rule.global_tokens + self.rule.window  # the last slot
        self.slots = self.scratch + 1

    @property
    def is_compileable(self) -> bool:
        return True

    # the window's bounds follow from the count of positions written (compiled steps move only that)
    @property
    def head(self) -> int:
        return min(self.rule.global_tokens, self.seen)

    @property
    def start(self) -> int:
        return max(self.head, self.seen - self.rule.window)

    def __setattr__(self, name: str, value) -> None:
        """``head`` and ``start`` follow from ``seen``: the ``VariantLayer`` code's assignments to them are moot."""
        if name not in ("head", "start"):
            super().__setattr__(name, value)

    def home(self, positions: Tensor) -> Tensor:
        """The home slot of each position in a windowed tensor: a global's own slot, or its place in the ring
        (w = 0: no ring; the scratch slot, which the next token overwrites)."""
        g, w = self.rule.global_tokens, self.rule.window
        ring = g + (positions - g) % w if w > 0 else torch.full_like(positions, self.scratch)
        return torch.where(positions < g, positions, ring)

    def _allocate(self, new: dict[str, Tensor], states: dict[str, Tensor] | None) -> None:
        self.device = new["keys"].device
        for name, t in new.items():
            size = self.slots if self.windows(name) else self.max_cache_len + 1  # (+ the scratch slot)
            VariantLayer._set(self, name, t.new_zeros(*t.shape[:2], size, t.shape[3]))
        self.time_states.update(states or {})
        self.cumulative_length = self.cumulative_length.to(self.device)
        self.is_initialized = True

    def _tensors(self) -> dict[str, Tensor]:
        if not self.is_initialized:
            return {}
        return {"keys": self.keys, "values": self.values, **{name: self.states[name] for name in self.time_states}}

    def _windowed(self) -> list[Tensor]:
        return [t for name, t in self._tensors().items() if self.windows(name)]

    def _send_home(self, last: Tensor) -> None:
        """The scratch slot's token (position ``last``, a 1-element tensor) to its home slot."""
        for buffer in self._windowed():
            buffer.index_copy_(2, self.home(last), buffer.narrow(2, self.scratch, 1).clone())

    def extend(self, key_states: Tensor, value_states: Tensor,
               states: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        new = {"keys": key_states, "values": value_states, **(states or {})}
        if not self.is_initialized:
            self._allocate(new, states)
        full = self._step(new) if torch.compiler.is_compiling() else self._eager(new)
        return full["keys"], full["values"], {name: full[name] for name in states or {}}

    def _eager(self, new: dict[str, Tensor]) -> dict[str, Tensor]:
        """Any number of new tokens: the held positions in order (windowed tensors: gathered from their
        slots) and the new, as the attention reads them; then what later steps read is written in place,
        the newest into the scratch slot."""
        n, seen = new["keys"].shape[2], self.seen
        if seen + n > self.max_cache_len:
            raise ValueError(f"the static cache holds max_cache_len={self.max_cache_len} positions: cannot add {n} "
                             f"after {seen}; pass a larger max_cache_len or max_new_tokens")
        if seen > 0:
            self._send_home(torch.tensor([seen - 1], device=self.device))
        held = self.home(torch.tensor(self.positions, dtype=torch.long, device=self.device))
        g, w, end = self.rule.global_tokens, self.rule.window, seen + n
        kept = torch.tensor(list(range(seen, min(end - 1, g))) + list(range(max(seen, g, end - 1 - w), end - 1)),
                            dtype=torch.long, device=self.device)  # what later steps read, but the newest
        full = {}
        for name, t in new.items():
            buffer = self._buffer(name)
            if self.windows(name):
                full[name] = torch.cat([buffer.index_select(2, held), t], dim=2)
                buffer.index_copy_(2, self.home(kept), t.index_select(2, kept - seen))
                buffer.narrow(2, self.scratch, 1).copy_(t.narrow(2, n - 1, 1))
            else:
                buffer.narrow(2, seen, n).copy_(t)
                full[name] = buffer.narrow(2, 0, end)
        self._handed = (self.head, self.start)
        self.seen = end
        return full

    def _step(self, new: dict[str, Tensor]) -> dict[str, Tensor]:
        """The compiled step (one token at p = ``cumulative_length``): p - 1 from the scratch slot home, p into
        the scratch slot of the windowed tensors and into slot p and the scratch slot of the others; the whole
        buffers handed to the attention."""
        n = new["keys"].shape[2]
        if n != 1:
            raise ValueError(f"a compiled step over a static cache layer takes one new token (got {n})")
        p = self.cumulative_length.view(1)
        self._send_home((p - 1).clamp(min=0))  # (p = 0: position 0's home, rewritten below if it is global)
        for name, t in new.items():
            buffer = self._buffer(name)
            if not self.windows(name):
                buffer.index_copy_(2, p, t)
            buffer.narrow(2, buffer.shape[2] - 1, 1).copy_(t)
        self.cumulative_length.add_(1)
        return {name: self._buffer(name) for name in new}

    def held_view(self, t: Tensor | None, dim: int = 1) -> Tensor | None:
        """Eager: as ``VariantLayer``. Compiled step, from t laid out over the positions and the scratch slot
        (the step's key mask (B, max_cache_len + 1), or values (B, H, max_cache_len + 1, D)): the entries of the
        positions the windowed slots hold, in slot order (B, g + w + 1[, ...]); for the key mask, a slot counts
        when it holds a position written so far and that position is not padding."""
        if t is None or not torch.compiler.is_compiling():
            return super().held_view(t, dim)
        p = self.cumulative_length - 1  # the new token's position, in the scratch slot
        g, w, s = self.rule.global_tokens, self.rule.window, torch.arange(self.slots, device=t.device)
        ring = (p - 1) - (p - 1 - s) % max(w, 1)  # the latest position before p sent to ring slot s
        held = torch.where(s < g, s, torch.where(s == self.scratch, p, ring))
        written = torch.where(s < g, s < p, (s == self.scratch) | (held >= g))
        column = torch.where(s == self.scratch, t.shape[dim] - 1, held.clamp(min=0))  # p: the scratch column
        if dim != 1:
            return t.index_select(dim, column)
        return t.index_select(1, column) & written

    def _hold(self, head: int, start: int, seen: int) -> None:
        """A crop within the window (``crop_error`` allows no other): the slots stay, the newest kept position
        back into the scratch slot."""
        if 0 < seen < self.seen:
            for buffer in self._windowed():
                buffer.narrow(2, self.scratch, 1).copy_(buffer.index_select(2, self.home(
                    torch.tensor([seen - 1], device=self.device))))
        self.seen = seen

    def reset(self) -> None:
        for t in self._tensors().values():
            t.zero_()
        self.seen = 0
        self._handed = (0, 0)


STATIC_REFUSED = ("lstmn layers cannot use a static cache: the LSTMN decodes by a step-by-step recurrence whose "
                  "tapes it builds from the prefill's inputs on the first decoding step, which a preallocated "
                  "key/value cache cannot hold; use cache_implementation=None (the VariantCache)")


def layer_for(rule: CacheRule, max_cache_len: int | None = None) -> VariantLayer:
    """The cache layer of a rule: dynamic, or static (preallocated) when ``max_cache_len`` is given."""
    if max_cache_len is not None:
        if rule.recurrent:
            raise ValueError(STATIC_REFUSED)
        ring = rule.compileable and rule.window is not None
        return (VariantRingLayer if ring else VariantStaticLayer)(max_cache_len, rule=rule)
    return LSTMNLayer(rule=rule) if rule.recurrent else VariantLayer(rule=rule)


class VariantCache(Cache):
    """The variant models' ``transformers.Cache``: one ``VariantLayer`` / ``LSTMNLayer`` per layer,
    each built from the rule its variant's spec declares (``variants.cache_rules``).

    ``VariantCache(config=model.config)``; ``VariantCache(rules=[CacheRule(...), ...])``;
    ``VariantCache(num_layers)`` (every layer keeps every position: dense-like variants only).
    ``max_cache_len=L``: static (preallocated) layers, ``VariantStaticLayer`` (not for lstmn).
    """

    def __init__(self, num_layers: int | None = None, *, config=None, rules: list[CacheRule] | None = None,
                 max_cache_len: int | None = None):
        if rules is None:
            if config is not None:
                from .hfav_variants import cache_rules  # the specs declare the rules
                rules = cache_rules(config)
            elif num_layers is not None:
                rules = [CacheRule()] * num_layers
            else:
                raise ValueError("VariantCache needs config (or rules, or num_layers)")
        super().__init__(layers=[layer_for(rule, max_cache_len) for rule in rules])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].get_seq_length() if layer_idx < len(self.layers) else 0

    def compiled_slots(self) -> int | None:
        """max_cache_len when every layer is a compileable static layer (``VariantStaticLayer.is_compileable``:
        decoding steps run compiled over whole buffers, that many slots and a scratch slot), else None."""
        if self.layers and all(isinstance(layer, VariantStaticLayer) and layer.is_compileable
                               for layer in self.layers):
            return self.layers[0].max_cache_len
        return None

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """(kv_length, kv_offset) of a layer that keeps every key (dense): what masks are built for."""
        return self.get_seq_length() + query_length, 0

    def update(self, *args, **kwargs):
        raise NotImplementedError("VariantCache layers are extended by the variant attention modules "
                                  "(VariantLayer.extend), not through Cache.update")

    def crop(self, tokens_to_remove: int) -> None:
        """Remove the last ``-tokens_to_remove`` tokens (a negative int, as for ``DynamicCache``; 0 only
        cuts windowed layers back to their window). Exact for every variant, or a ValueError that
        says why, before anything is changed."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): pass a negative number of tokens to remove")
        for i, layer in enumerate(self.layers):
            error = layer.crop_error(-tokens_to_remove)
            if error:
                raise ValueError(f"VariantCache layer {i}: {error}")
        for layer in self.layers:
            layer.crop(tokens_to_remove)

    @property
    def seen_tokens(self) -> int:
        return self.get_seq_length()

    def memory_bytes(self) -> int:
        """Bytes held by all layers' tensors (for tests and benchmarks)."""
        return sum(layer.memory_bytes() for layer in self.layers)
