"""Band attention (Guo et al. 2019, the band module) for any stock ``transformers`` model.

``register_band_attention()`` registers the band kernel under a name (default ``"band_attention"``)
with both of transformers' dispatch tables:

- ``AttentionInterface``: the attention function every stock attention module calls with
  ``(module, query, key, value, attention_mask, scaling=..., dropout=..., **kw)``, (B, H, T, D) in,
  (B, T, H, D) out. Ours repeats grouped key/value heads (GQA), then runs
  ``kernels.band_attention``, which never builds the T x T scores.
- ``AttentionMaskInterface``: the function ``create_causal_mask`` / ``create_bidirectional_mask``
  call to build the mask handed to the attention function. Ours returns a 2-D ``(B, n)`` bool key
  padding mask (True = real token), or None when there is no padding, never a T x T mask.
  Without this registration transformers treats the name as a backend without masks and passes
  ``attention_mask=None``: padding would be silently ignored.

Then ``AutoModelForCausalLM.from_pretrained(path, attn_implementation="band_attention")`` (or
``model.set_attn_implementation("band_attention")``) runs band attention in every self-attention
layer of a Llama, Qwen2, Mistral, BERT, ... model.

Window convention (ours, as in ``VariantBertConfig.attention_window``): query i reads key j when
0 <= i - j <= w (causal) or |i - j| <= w (bidirectional); w = 0 is each token alone. The window
comes from, first to last:

1. ``register_band_attention(window=w)`` (one window for every model using that name);
2. ``config.attention_window = w`` (set it on the config before ``from_pretrained(path, config=config,
   ...)``, or on ``model.config`` afterwards: stock configs keep an attribute they do not define): our w;
3. ``config.sliding_window = W`` in transformers' convention: a causal sliding window of W keeps
   W tokens, itself included, so w = W - 1; a bidirectional one keeps |i - j| <= W, so w = W.

What it does not do: the stock ``DynamicCache`` still keeps every key (only a sliding-window cache
layer, which stock models create when ``config.sliding_window`` is set, keeps the last W - 1);
a static cache works (its empty slots are cut off) but
reads the cache position as a Python int, a graph break under ``torch.compile``;
``output_attentions`` returns None weights; prepared 4-D masks, packed sequences (several
documents in one row through ``position_ids``) and extra mask overlays (``or_mask_function``,
``and_mask_function``) are not supported; cross-attention runs dense over the encoder keys.

A tool module (not Hub code): it imports the package's kernels and transformers' interfaces.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, masking_utils
from transformers.masking_utils import AttentionMaskInterface

from .hfav_kernels import band_attention

Tensor = torch.Tensor

DEFAULT_NAME = "band_attention"
# names transformers gives its own backends: registering over them would replace them for every model
RESERVED_NAMES = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3", "flash_attention_4",
                  "paged|eager")


def _check_window(field: str, value: object) -> int:
    """A window must be an int >= 0 (bools and floats are refused): raise a ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}={value!r} is invalid: band attention needs an integer window w >= 0 "
                         f"(query i reads key j when 0 <= i - j <= w causally, |i - j| <= w bidirectionally)")
    return value


def resolve_window(config, window: int | None, causal: bool) -> int:
    """Our w for a model: the registered ``window``, else ``config.attention_window`` (our convention),
    else ``config.sliding_window`` converted from transformers' convention (causal: w = W - 1)."""
    if window is not None:
        return _check_window("window", window)
    if getattr(config, "attention_window", None) is not None:
        return _check_window("config.attention_window", config.attention_window)
    sliding = getattr(config, "sliding_window", None)
    if sliding is not None:
        if isinstance(sliding, bool) or not isinstance(sliding, int) or sliding < (1 if causal else 0):
            raise ValueError(f"config.sliding_window={sliding!r} is invalid: expected an integer >= "
                             f"{1 if causal else 0} (transformers' convention: a causal window of W keeps W tokens)")
        return sliding - 1 if causal else sliding
    raise ValueError(f"band attention has no window for this {type(config).__name__}: pass "
                     f"register_band_attention(window=w), or set config.attention_window = w "
                     f"(e.g. model.config.attention_window = w) or config.sliding_window")


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """Grouped-query attention: (B, H_kv, T, D) -> (B, H_kv·groups, T, D), each kv head repeated
    for the ``groups`` query heads that share it."""
    if groups == 1:
        return x
    b, h_kv, t, d = x.shape
    return x[:, :, None].expand(b, h_kv, groups, t, d).reshape(b, h_kv * groups, t, d)


def _is_cross_attention(module) -> bool:
    return bool(getattr(module, "is_cross_attention", False)) or "CrossAttention" in type(module).__name__


def _key_mask(attention_mask: Tensor | None, key: Tensor) -> Tensor | None:
    """Check what the attention function received: None or the (B, n <= Tk) bool key mask ours makes."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or attention_mask.dtype != torch.bool or attention_mask.shape[-1] > key.shape[-2]:
        raise ValueError(f"band attention got attention_mask of shape {tuple(attention_mask.shape)} and dtype "
                         f"{attention_mask.dtype}; it takes a 2-D (batch, keys) bool padding mask, as its registered "
                         f"mask function builds from a 2-D attention_mask: prepared 4-D masks are not supported")
    return attention_mask


def _make_attention(window: int | None) -> Callable:
    def band_attention_forward(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                               scaling: float | None = None, dropout: float = 0.0, is_causal: bool | None = None,
                               **kwargs) -> tuple[Tensor, None]:
        """A stock model's attention call, band-limited. query (B, H, Tq, D), key/value (B, H_kv, Tk, D)
        -> ((B, Tq, H, D), None). Queries are the last Tq of the key positions present (cached decoding)."""
        for unsupported in ("softcap", "s_aux", "position_bias"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(f"band attention does not support {unsupported}={kwargs[unsupported]!r}")
        if query.shape[1] % key.shape[1]:
            raise ValueError(f"{query.shape[1]} query heads cannot share {key.shape[1]} key/value heads")
        groups = query.shape[1] // key.shape[1]
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)  # (B, H, Tk, D)
        key_mask = _key_mask(attention_mask, key)
        if key_mask is not None and key_mask.shape[-1] < key.shape[-2]:  # a static cache: empty slots at the end
            key, value = key[:, :, : key_mask.shape[-1]], value[:, :, : key_mask.shape[-1]]
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        if _is_cross_attention(module):  # not self-attention: no band, every (real) encoder key
            mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, Tk)
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scale)
            return out.transpose(1, 2).contiguous(), None
        causal = is_causal if is_causal is not None else (getattr(module, "is_causal", True)
                                                          and getattr(module.config, "is_causal", True))
        w = resolve_window(module.config, window, causal)
        out = band_attention(query, key, value, window=w, scale=scale, causal=causal, key_mask=key_mask,
                             dropout_p=dropout)  # (B, H, Tq, D)
        return out.transpose(1, 2).contiguous(), None  # (B, Tq, H, D)

    return band_attention_forward


def _mask_bases(fn, found: set[str], seen: set[int]) -> None:
    """The base patterns of transformers' ``masking_utils`` a mask function is built on: itself, or
    reached through the closures of its combinators (``and_masks``, ``or_masks``, sliding windows, ...)."""
    if id(fn) in seen:
        return
    seen.add(id(fn))
    if fn is masking_utils.causal_mask_function:
        found.add("causal")
    elif fn is masking_utils.bidirectional_mask_function:
        found.add("bidirectional")
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        for item in content if isinstance(content, (tuple, list)) else (content,):
            if callable(item) and not isinstance(item, torch.Tensor):
                _mask_bases(item, found, seen)


def _reads_ahead(mask_function: Callable | None) -> bool:
    """Whether the model's mask pattern lets a query read later keys: a bidirectional mask (an encoder's
    self-attention, cross-attention), whose every key slot holds a token, unlike a causal one.
    Decided by the base pattern the mask function is built on (transformers' ``causal_mask_function``
    or ``bidirectional_mask_function``); a pattern built on neither or on both is refused."""
    if mask_function is None:
        return False
    found: set[str] = set()
    _mask_bases(mask_function, found, set())
    if len(found) != 1:
        name = getattr(mask_function, "__qualname__", repr(mask_function))
        raise ValueError(f"band attention cannot tell whether the mask pattern {name} is causal or bidirectional: it "
                         f"is built on {' and '.join(sorted(found)) or 'neither'} of transformers' "
                         "causal_mask_function and bidirectional_mask_function")
    return found == {"bidirectional"}


def _make_mask(window: int | None) -> Callable:
    def band_padding_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                          mask_function: Callable | None = None, attention_mask: Tensor | None = None,
                          config=None, device: torch.device | str = "cpu", **kwargs) -> Tensor | None:
        """What the stock model hands to the attention function: the (B, n) bool key padding mask of the
        n key slots that hold tokens (n = kv_length except in a static cache), or None without padding.

        The band itself (causal or not, the window) is applied by the attention function; this mask
        only says which keys are real. Never builds a (Tq, Tk) mask.
        """
        q_offset = int(q_offset)  # a StaticLayer gives a tensor
        # key slots holding tokens: causally the queries are the last q_length of them (a static cache has empty
        # slots after them); a bidirectional mask (encoder, cross-attention) covers every key
        present = kv_length if _reads_ahead(mask_function) else q_offset + q_length - kv_offset
        if not 0 < present <= kv_length:
            raise ValueError(f"band attention cannot place {q_length} queries at offset {q_offset} among "
                             f"{kv_length} keys starting at {kv_offset}")
        if kv_offset > 0 and config is not None:  # a sliding cache layer dropped the keys before kv_offset
            reach = q_offset - resolve_window(config, window, causal=True)
            if reach < kv_offset:
                raise ValueError(f"the cache keeps keys from position {kv_offset} on, but the band window reaches "
                                 f"back to position {reach}: use a window w <= config.sliding_window - 1")
        if attention_mask is None:
            return None if present == kv_length else torch.ones(batch_size, present, dtype=torch.bool, device=device)
        mask = attention_mask.to(device=device, dtype=torch.bool)
        if mask.shape[-1] < kv_offset + present:  # a shorter mask (no cache bookkeeping): the rest is real
            mask = F.pad(mask, (0, kv_offset + present - mask.shape[-1]), value=True)
        mask = mask[:, kv_offset: kv_offset + present]  # (B, present)
        return None if present == kv_length and bool(mask.all()) else mask

    return band_padding_mask


def register_band_attention(name: str = DEFAULT_NAME, *, window: int | None = None) -> str:
    """Make ``attn_implementation=name`` run band attention in any stock transformers model.

    Registers an attention function with ``AttentionInterface`` and its key-padding mask function
    with ``AttentionMaskInterface`` (both are needed, or padding is silently dropped). ``window``
    (our w: look-back when causal, half-width when bidirectional) fixes the window for every model
    that uses ``name``; without it each model's ``config.attention_window`` (ours) or
    ``config.sliding_window`` (transformers', causal w = W - 1) gives it. Register several names for
    several windows. Returns ``name``.

    >>> register_band_attention(window=8)
    'band_attention'
    >>> model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="band_attention")  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name or name in RESERVED_NAMES:
        raise ValueError(f"name={name!r} is invalid: give a new attn_implementation name (not one of {RESERVED_NAMES})")
    if window is not None:
        _check_window("window", window)
    AttentionInterface.register(name, _make_attention(window))
    AttentionMaskInterface.register(name, _make_mask(window))
    return name
