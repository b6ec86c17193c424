"""The generation cache of the variant GPT-2 family: each layer keeps what its variant needs.

| variant | per layer |
|---|---|
| dense | keys and values of every past token |
| low_rank | keys at rank r (r / head size of a dense key cache) and values |
| band | keys and values of the last w tokens only: memory and time per token stop growing |
| additive | the projected keys W_k x_j (never recomputed) and values |
| low_rank_band | band keys of the last w tokens, low-rank keys and values of every token |
| lstmn | the tapes h, c and their keys W_h h, which slots are readable, the last summary h̃ |

``VariantCache`` is a ``transformers.Cache`` whose layers are ``VariantCacheLayer``s: a dict of
tensors, (B, H, T, ·) for attention and (B, S, ·) for tapes, that the attention modules read and
extend (``extend``), plus the per-layer protocol ``generate`` uses: beam reordering, batch
selection, and ``crop`` for assisted and prompt-lookup decoding.

Cropping is exact for every variant. A state that keeps everything (keys of dense, low_rank,
additive; LSTMN tapes) drops its last n entries. ``activate_past_recording`` (which ``generate``
calls for assisted and prompt-lookup decoding) makes a band state (the last w keys) keep
everything until the next ``crop``, which cuts it back to w, and makes an LSTMN layer keep the
summary h̃ of every step from then on. Without it, a crop that needs what was not kept (band keys
past the window, an earlier LSTMN summary) raises a ValueError before changing anything.

Hub code: imports only torch and transformers.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

Tensor = torch.Tensor

# States that are the last entry of a tape, refreshed after a crop: name -> tape (dim 1)
DERIVED = {"summary": "summaries"}  # LSTMN: h̃ of the last step


class VariantCacheLayer(dict):
    """One layer's state, name -> tensor, and how each tensor is laid out along time.

    ``layout[name] = (dim, keep)``: the time dimension, and how many last entries are kept
    (None: all). Filled by ``extend``. ``record_past``: keep everything until the next ``crop``.
    """

    is_croppable = True
    is_compileable = False
    is_sliding = False
    supports_early_init = False

    def __init__(self):
        super().__init__()
        self.layout: dict[str, tuple[int, int | None]] = {}
        self.record_past = False

    @property
    def is_initialized(self) -> bool:
        return bool(self)

    def activate_past_recording(self) -> None:
        self.record_past = True

    def _apply(self, fn) -> None:
        for name, tensor in self.items():
            self[name] = fn(tensor)

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: keep, for each new beam, the state of the beam it came from."""
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        self._apply(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self) -> None:
        self.clear()
        self.layout.clear()

    def to(self, device, non_blocking: bool = False) -> VariantCacheLayer:
        """Move the tensors in place and return this same layer: accelerate's hooks (device_map,
        offload) send a module's inputs through ``.to``, and the attention module must extend the
        very state the cache holds, not a copy."""
        self._apply(lambda t: t.to(device, non_blocking=non_blocking))
        return self

    def offload(self) -> None:  # the Cache protocol's offloading hooks: variant states stay where they are
        pass

    def prefetch(self) -> None:
        pass

    def crop_error(self, n: int, seen: int) -> str | None:
        """Why the last ``n`` of ``seen`` tokens cannot be removed exactly, or None if they can."""
        if n and "summary" in self and ("summaries" not in self or self["summaries"].shape[1] <= n):
            return (f"cannot crop {n} token(s): the LSTMN summary h̃ of an earlier step is kept only while the "
                    "cache records its past; call cache.activate_past_recording() before the forward passes to be "
                    "undone (generate() does this for assisted and prompt-lookup decoding)")
        for name, (dim, keep) in self.layout.items():
            held = self[name].shape[dim]
            if keep is not None and held - n < min(keep, seen - n):
                return (f"cannot crop {n} token(s): '{name}' keeps only the last {keep} positions (attention_window) "
                        f"and holds {held}; call cache.activate_past_recording() before the forward passes to be "
                        "undone (generate() does this for assisted and prompt-lookup decoding)")
        return None

    def crop(self, n: int) -> None:
        """Remove the last ``n`` tokens, then cut keep-limited states back to their window."""
        for name, (dim, keep) in self.layout.items():
            tensor = self[name]
            held = tensor.shape[dim] - n
            start = 0 if keep is None else max(0, held - keep)
            self[name] = tensor.narrow(dim, start, held - start)
        for name, source in DERIVED.items():
            if source in self:
                self[name] = self[source][:, -1]


class VariantCache(Cache):
    """Per-layer variant state for cached decoding, plus the number of tokens seen so far.

    ``VariantCache(num_layers)`` or ``VariantCache(config=model.config)``. ``cache.layers[i]`` is
    layer i's ``VariantCacheLayer`` (a dict of tensors).
    """

    def __init__(self, num_layers: int | None = None, *, config=None):
        if num_layers is None:
            if config is None:
                raise ValueError("VariantCache needs num_layers or config")
            num_layers = config.num_hidden_layers
        super().__init__(layers=[VariantCacheLayer() for _ in range(num_layers)])
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """(kv_length, kv_offset) of a layer that keeps every key (dense): what masks are built for."""
        return self.seen_tokens + query_length, 0

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def update(self, *args, **kwargs):
        raise NotImplementedError("VariantCache layers are extended by the variant attention modules "
                                  "(hf_attn_variants.hfav_caching.extend), not through Cache.update")

    def crop(self, tokens_to_remove: int) -> None:
        """Remove the last ``-tokens_to_remove`` tokens (a negative int, as for ``DynamicCache``; 0 only
        cuts band states back to their window). Exact for every variant, or a ValueError that says
        why, before anything is changed."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop({tokens_to_remove}): pass a negative number of tokens to remove")
        n = -tokens_to_remove
        if n > self.seen_tokens:
            raise ValueError(f"cannot crop {n} token(s): the cache has seen only {self.seen_tokens}")
        for i, layer in enumerate(self.layers):
            error = layer.crop_error(n, self.seen_tokens)
            if error:
                raise ValueError(f"VariantCache layer {i}: {error}")
        for layer in self.layers:
            layer.crop(n)
        self.seen_tokens -= n

    def reset(self) -> None:
        super().reset()
        self.seen_tokens = 0

    def memory_bytes(self) -> int:
        """Bytes held by all layers' tensors (for tests and benchmarks)."""
        return sum(t.numel() * t.element_size() for state in self.layers for t in state.values())


def extend(state: dict[str, Tensor], name: str, new: Tensor, keep: int | None, dim: int = 2) -> Tensor:
    """Append ``new`` to ``state[name]`` along ``dim``; return everything (old + new) and store
    only the last ``keep`` entries (all when ``keep`` is None, or while the layer records its past)."""
    if isinstance(state, VariantCacheLayer):
        state.layout[name] = (dim, keep)
        if state.record_past:
            keep = None
    old = state.get(name)
    full = new if old is None else torch.cat([old, new], dim=dim)
    if keep is None:
        state[name] = full
    else:
        state[name] = full.narrow(dim, max(0, full.shape[dim] - keep), min(keep, full.shape[dim]))
    return full
