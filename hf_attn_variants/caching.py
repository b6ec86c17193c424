"""The generation cache of the variant GPT-2 family: each layer keeps what its variant needs.

| variant | per layer |
|---|---|
| dense | keys and values of every past token |
| low_rank | keys at rank r (r / head size of a dense key cache) and values |
| band | keys and values of the last w tokens only: memory and time per token stop growing |
| additive | the projected keys W_k x_j (never recomputed) and values |
| low_rank_band | band keys of the last w tokens, low-rank keys and values of every token |
| lstmn | the tapes h, c and their keys W_h h, which slots are readable, the last summary h̃ |

A layer's state is a plain dict of tensors, (B, H, T, ·) for attention and (B, S, d) for
tapes; the attention modules read and extend it. Implements the parts of transformers'
``Cache`` protocol that ``generate`` uses (sequence length, beam reordering).

Hub code: imports only torch.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


class VariantCache:
    """Per-layer state for cached decoding, plus the number of tokens seen so far."""

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int):
        self.layers: list[dict[str, Tensor]] = [{} for _ in range(num_layers)]
        self.seen_tokens = 0

    @property
    def is_linear(self) -> list[bool]:
        return [False] * len(self.layers)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.layers)

    def _apply(self, fn) -> None:
        for state in self.layers:
            for name, tensor in state.items():
                state[name] = fn(tensor)

    def reorder_cache(self, beam_idx: Tensor) -> None:
        """Beam search: keep, for each new beam, the state of the beam it came from."""
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices: Tensor) -> None:
        self._apply(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def memory_bytes(self) -> int:
        """Bytes held by all layers' tensors (for tests and benchmarks)."""
        return sum(t.numel() * t.element_size() for state in self.layers for t in state.values())


def extend(state: dict[str, Tensor], name: str, new: Tensor, keep: int | None, dim: int = 2) -> Tensor:
    """Append ``new`` to ``state[name]`` along ``dim``; return everything (old + new) and store
    only the last ``keep`` entries (all when ``keep`` is None)."""
    old = state.get(name)
    full = new if old is None else torch.cat([old, new], dim=dim)
    if keep is None:
        state[name] = full
    else:
        state[name] = full.narrow(dim, max(0, full.shape[dim] - keep), min(keep, full.shape[dim]))
    return full
