"""Input checks and defaults shared by both families: padding masks, length limits, the config
defaults a stock model honours (``use_cache``, ``return_dict``, ``output_*``), unknown keyword
arguments, the attention implementations a variant can honour, and the mask that dense layers
hand to transformers' attention interface.

The variant kernels work with a 2-D key padding mask (B, T) of bools, never a dense
(B, 1, T, T) mask: the band kernel must not see T x T work.

Hub code: imports only torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

from .hfav_variants import STOCK

Tensor = torch.Tensor

# attn_implementation values every variant honours with its own kernels: "sdpa" (the default) and
# "eager" (output_attentions switches to the naive reference kernels; for dense, "eager" is the
# reference kernel). Dense layers also honour the other names of transformers'
# ALL_ATTENTION_FUNCTIONS (flex_attention, registered ones), called as a stock model calls them.
OWN_IMPLEMENTATIONS = (None, "sdpa", "eager")
# keyword arguments a forward accepts beyond its named parameters: those of transformers' loss functions
# (loss_utils: ForCausalLMLoss, ForMaskedLMLoss, fixed_cross_entropy), which Trainer and sequence/context
# parallel training pass: num_items_in_batch (the loss is a sum over that count), shift_labels (already aligned
# targets), ignore_index. Heads hand them to ``self.loss_function`` as stock heads do; others ignore them.
LOSS_KWARGS = ("num_items_in_batch", "shift_labels", "ignore_index")


def key_padding_mask(attention_mask: Tensor | None, shape: tuple[int, int] | torch.Size) -> Tensor | None:
    """attention_mask (B, T) with 1 for real tokens and 0 for padding -> bool (B, T), or None
    when there is no padding at all (lets the kernels take their unmasked fast paths). Under
    ``torch.compile`` an all-ones mask is returned as it is (deciding would break the graph)."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected (batch, sequence) = {tuple(shape)} "
            "with 1 for real tokens and 0 for padding (4-D masks are not supported by variant models)."
        )
    mask = attention_mask.bool()
    if torch.compiler.is_compiling():
        return mask
    return None if bool(mask.all()) else mask


@dataclass
class CustomMask:
    """A user's 4-D mask as dense layers receive it: ``allowed`` (B or 1, 1, T, Tk) bool, True = attend."""

    allowed: Tensor


def custom_attention_mask(config, attention_mask: Tensor, shape: tuple[int, int, int]) -> CustomMask:
    """A custom 4-D mask (B or 1, 1, T, T_past + T), as stock models take it (``test_custom_4d_attention_mask``:
    packed sequences sharing a prefix): bool (True = attend), integer (1 = attend) or floating (additive: 0 =
    attend, the dtype's minimum = masked). Returned as a ``CustomMask`` (bool, True = attend) that dense layers
    apply exactly as given (with SDPA, or the reference when weights are wanted). Other variants refuse it:
    their kernels read a 2-D padding mask and apply their own pairs rule (a band kernel must never see a
    T x T mask), so an arbitrary mask cannot be honoured."""
    others = sorted(used_variants(config) - {STOCK})
    if others:
        raise ValueError(f"a 4-D attention_mask cannot be honoured by attention_variant(s) {others}: they take a 2-D "
                         "(batch, sequence) padding mask and apply their own pairs rule; only dense layers take "
                         "custom 4-D masks.")
    batch, length, keys = shape
    if attention_mask.shape[1] != 1 or tuple(attention_mask.shape[2:]) != (length, keys) \
            or attention_mask.shape[0] not in (1, batch):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}; a 4-D mask must be "
                         f"(batch or 1, 1, queries, keys) = ({batch}, 1, {length}, {keys})")
    if attention_mask.dtype == torch.bool:
        return CustomMask(attention_mask)
    if attention_mask.is_floating_point():
        return CustomMask(attention_mask > torch.finfo(attention_mask.dtype).min / 2)
    return CustomMask(attention_mask != 0)


def check_length(seq_length: int, max_positions: int) -> None:
    """Raise a clear error for inputs longer than the position table."""
    if seq_length > max_positions:
        raise ValueError(
            f"sequence length {seq_length} exceeds max_position_embeddings={max_positions}; "
            "truncate the input (tokenizer(..., truncation=True)) or use a config with more positions."
        )


def reject_unknown_kwargs(model, kwargs: dict, allowed: tuple[str, ...] = LOSS_KWARGS) -> None:
    """A stock model would swallow unknown keyword arguments; a variant model names them."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{type(model).__name__}.forward() got unexpected keyword argument(s) {unknown} "
                        "(encoder_hidden_states only for GPT-2 decoders with add_cross_attention; "
                        "no packed-sequence kwargs).")


def config_default(value, config, name: str):
    """An argument left as None takes the config's value, as in stock models."""
    return getattr(config, name) if value is None else value


def wrap_output(output, return_dict: bool | None, config):
    """ModelOutput, or a plain tuple (None fields dropped, as stock) when ``return_dict`` (or
    ``config.return_dict`` when it is None) is False."""
    return output if config_default(return_dict, config, "return_dict") else output.to_tuple()


def used_variants(config) -> set[str]:
    return set(config.layer_variants or [config.attention_variant])


def check_attn_implementation(config) -> None:
    """Raise a clear ValueError for an ``attn_implementation`` that a layer's variant cannot honour."""
    name = config._attn_implementation
    if name in OWN_IMPLEMENTATIONS:
        return
    if name.startswith("paged|"):
        raise ValueError(f"attn_implementation={name!r} is not supported by variant models: paged attention needs "
                         "continuous batching's PagedAttentionCache; use 'sdpa', 'eager' or (dense) flex_attention.")
    others = sorted(used_variants(config) - {STOCK})
    if others:
        raise ValueError(
            f"attn_implementation={name!r} cannot be honoured by attention_variant(s) {others}: they run their own "
            "kernels, under 'sdpa' (the default) or 'eager'; "
            "only dense layers dispatch through transformers' ALL_ATTENTION_FUNCTIONS.")


def dense_attention_mask(config, inputs_embeds: Tensor, key_mask: Tensor | None, cache=None):
    """The mask dense layers hand to transformers' attention interface, built once per forward with
    ``masking_utils`` as stock models do (a 4-D bool mask for sdpa, a BlockMask for flex_attention,
    None where the function needs none), or the string "unprepared" when no layer dispatches there:
    no dense layer, "eager" (the reference kernel) or "sdpa" (the dense kernel, SDPA with the key
    padding mask: equal to stock on real tokens, padded query rows as in every variant's kernels)."""
    if STOCK not in used_variants(config) or config._attn_implementation in OWN_IMPLEMENTATIONS:
        return "unprepared"
    make = create_causal_mask if config.is_causal else create_bidirectional_mask
    return make(config=config, inputs_embeds=inputs_embeds, attention_mask=key_mask, cache=cache)
