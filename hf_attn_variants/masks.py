"""Input checks shared by both families: padding masks, length limits, output wrapping.

The variant models work with a 2-D key padding mask (B, T) of bools, never a dense
(B, 1, T, T) mask: the band kernel must not see T x T work.

Hub code: imports only torch.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def key_padding_mask(attention_mask: Tensor | None, shape: tuple[int, int] | torch.Size) -> Tensor | None:
    """attention_mask (B, T) with 1 for real tokens and 0 for padding -> bool (B, T), or None
    when there is no padding at all (lets the kernels take their unmasked fast paths)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected (batch, sequence) = {tuple(shape)} "
            "with 1 for real tokens and 0 for padding (4-D masks are not supported by variant models)."
        )
    mask = attention_mask.bool()
    return None if bool(mask.all()) else mask


def check_length(seq_length: int, max_positions: int) -> None:
    """Raise a clear error for inputs longer than the position table."""
    if seq_length > max_positions:
        raise ValueError(
            f"sequence length {seq_length} exceeds max_position_embeddings={max_positions}; "
            "truncate the input (tokenizer(..., truncation=True)) or use a config with more positions."
        )


def wrap_output(output, return_dict: bool | None):
    """ModelOutput by default; a plain tuple when ``return_dict=False``."""
    return output.to_tuple() if return_dict is False else output
