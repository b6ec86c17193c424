"""Band attention through PyTorch's ``flex_attention``: a sliding-window ``BlockMask`` built once
per forward and shared by every layer, a bounded number of compiled shapes, and no silent
fallback.

Guo et al. 2019's band module keeps the scores where |i - j| <= w (bidirectional) or
0 <= i - j <= w (causal); flex_attention visits only the (128 x 128) blocks that touch the band.
Facts this file is built around (docs/design.md, "PyTorch on a GPU"):

- ``create_block_mask`` costs milliseconds: a ``BandPlan`` (the block mask and the small tensors
  its mask_mod reads) is cached, keyed on (batch or None, T, window, direction, device) and on
  the padding mask's storage and contents, so the first layer of a forward builds it and the
  other layers (and later forwards with the same padding) reuse it.
- The mask_mod runs inside every partial block of flex's kernel, so it is specialised
  (``band_mask_mod``): pure index arithmetic without padding (captures no tensor), padding as
  per-sequence lengths or spans (one scalar load per block), global tokens as one extra clause;
  a per-key validity gather only for padding with holes, which the CUDA default sends to the
  blocked kernel (``FLEX_BY_DEFAULT``).
- Attention dropout > 0 runs the blocked kernel (flex has no dropout), after a one-time warning.
- ``torch.compile(flex_attention, dynamic=False)`` compiles once per shape; past dynamo's
  recompile limit it silently runs flex's unfused path (T x T scores). Here T is padded up to
  a bucket (a power of two >= 128: the padded blocks are empty, so flex skips them), the
  number of compiled shape families is capped at ``MAX_SHAPE_FAMILIES`` (below the limit),
  and the compiled call runs with ``fail_on_recompile_limit_hit`` so that an unforeseen
  recompile raises instead of going unfused. Past the cap, or when compiling fails, the band
  runs on the blocked kernel (exact too) after a one-time warning that names the reason.
- Decoding steps (Tq < Tk, at most w + 1 keys) never come here: the dense kernel does them.
- On CPU, ``flex_attention`` compiles for inference only: the CPU path is taken for no-grad
  calls when asked for (``flex=True``, i.e. ``config.attention_compile``).

(B, H, T, D) in, (B, H, T, Dv) out. Hub code: imports only torch, transformers and siblings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

MIN_BUCKET = 128  # flex_attention's block size: shorter inputs are padded to one block
MAX_SHAPE_FAMILIES = 6  # compiled (shape, dtype, grad) families per process; dynamo's recompile limit is 8
PLAN_CACHE_SIZE = 8
BACKEND = "inductor"  # torch.compile backend of the flex call (tests use "eager" to count compiles quickly)

# process state: the compiled callable, the shape families it compiled, the plans, the warnings given
_STATE: dict = {"fn": None, "families": {}, "plans": [], "warned": {}, "broken": {}, "plans_built": 0}


@dataclass
class BandPlan:
    """One forward's band block mask. ``key_mask`` is the (B, T) padding mask it was built for,
    held so that its memory is not reused by another tensor while the plan is cached."""

    key: tuple
    key_mask: Tensor | None
    mask_version: int
    block_mask: object  # torch.nn.attention.flex_attention.BlockMask
    kind: str = "gather"  # its padding kind (``padding_kind``): which mask_mod it was built from


def bucket_length(t: int) -> int:
    """T padded up to a power of two >= ``MIN_BUCKET``: few distinct compiled shapes."""
    return max(MIN_BUCKET, 1 << max(0, t - 1).bit_length())


def warn_once(reason: str, key: str | None = None) -> None:
    """Log ``reason`` once per process per ``key`` (default: the text itself), through transformers'
    logger (Hub code has no ``warnings``)."""
    key = reason if key is None else key
    if key not in _STATE["warned"]:
        _STATE["warned"][key] = True
        from transformers.utils import logging

        logging.get_logger(__name__).warning(reason)


def reset() -> None:
    """Forget the compiled call, its shape families, the cached plans and the warnings given."""
    _STATE.update(fn=None, families={}, plans=[], warned={}, broken={}, plans_built=0)


# ----------------------------------------------------------------------------- mask_mods
#
# flex_attention evaluates the mask_mod inside every partial block of its Triton kernel, so its cost
# is paid per (query, key) of the band. Measured on an H200 (2026-12-04, commit c0344d2, T=8192,
# w=128, causal, bf16, same block sparsity): a pure-index sliding window ran 0.086 ms, a mask_mod that
# gathered a per-key validity vector and evaluated the whole ``pair_allowed`` rule 1.06 ms (T=32768:
# 0.175 vs 4.34 ms). So the mask_mod is specialised, by a small table (``MASK_MODS``, ``PADDING_MODS``):
# a base that is index arithmetic only (the window, plus global tokens as one extra clause), and a
# padding clause chosen by how the padding looks. Every combination equals ``pairs.pair_allowed``
# (tests/test_band_flex.py checks each on every (query, key) of random shapes).


def _window_mod(window: int, causal: bool, global_tokens: int):
    """Pure index arithmetic, captures ints only: |i - j| <= w (causal: 0 <= i - j <= w)."""
    if causal:
        def mask_mod(b, h, qi, kj):
            d = qi - kj
            return (d >= 0) & (d <= window)
    else:
        def mask_mod(b, h, qi, kj):
            d = qi - kj
            return (d <= window) & (d >= -window)
    return mask_mod


def _global_mod(window: int, causal: bool, global_tokens: int):
    """The window or one of i, j among the first g positions (causal: and j <= i). Ints only."""
    g = global_tokens
    if causal:
        def mask_mod(b, h, qi, kj):
            d = qi - kj
            return (d >= 0) & ((d <= window) | (qi < g) | (kj < g))
    else:
        def mask_mod(b, h, qi, kj):
            d = qi - kj
            return ((d <= window) & (d >= -window)) | (qi < g) | (kj < g)
    return mask_mod


def _no_padding(base, keys: dict[str, Tensor]):
    """Every key is real (and padded bucket positions are never reachable): the base alone."""
    return base


def _tail_mod(base, keys: dict[str, Tensor]):
    """No padding, but the bucket's tail (positions >= T) must not be read: one captured scalar
    ``limit`` (0-dim), shared by the batch. A query always reads itself (``pair_allowed``)."""
    limit = keys["limit"]

    def mask_mod(b, h, qi, kj):
        return base(b, h, qi, kj) & ((kj < limit) | (qi == kj))
    return mask_mod


def _lengths_mod(base, keys: dict[str, Tensor]):
    """Right padding: key j of sequence b is real when j < lengths[b] ((B,) tensor, one load per block)."""
    lengths = keys["lengths"]

    def mask_mod(b, h, qi, kj):
        return base(b, h, qi, kj) & ((kj < lengths[b]) | (qi == kj))
    return mask_mod


def _spans_mod(base, keys: dict[str, Tensor]):
    """One contiguous run of real tokens per sequence (left padding): starts[b] <= j < ends[b]."""
    starts, ends = keys["starts"], keys["ends"]

    def mask_mod(b, h, qi, kj):
        return base(b, h, qi, kj) & (((kj >= starts[b]) & (kj < ends[b])) | (qi == kj))
    return mask_mod


def _gather_mod(base, keys: dict[str, Tensor]):
    """Any padding (holes): a per-key validity gather valid[b, j] ((B, bucket) bool). The general
    fallback, and the slow one on CUDA (see ``FLEX_BY_DEFAULT``)."""
    valid = keys["valid"]

    def mask_mod(b, h, qi, kj):
        return base(b, h, qi, kj) & (valid[b, kj] | (qi == kj))
    return mask_mod


MASK_MODS = {False: _window_mod, True: _global_mod}  # keyed on "has global tokens"
PADDING_MODS = {"none": _no_padding, "tail": _tail_mod, "lengths": _lengths_mod, "spans": _spans_mod,
                "gather": _gather_mod}
# Whether the default CUDA path (``flex=None``) runs flex for a padding kind, or the blocked kernel.
# "gather": measured 12-25x slower than the pure-index mask and 2-6x slower than the blocked kernel
# (H200, 2026-12-04, see above), so the default runs blocked there (``flex=True`` still forces flex).
# "none": the measured anchor. "tail", "lengths", "spans": one scalar load per block on top of the
# index arithmetic, not measured yet (benchmarks/gpu_session.sh, band stage, measures them).
FLEX_BY_DEFAULT = {"none": True, "tail": True, "lengths": True, "spans": True, "gather": False}


def padding_kind(t: int, bucket: int, causal: bool, key_mask: Tensor | None, global_tokens: int = 0
                 ) -> tuple[str, dict[str, Tensor]]:
    """How the keys' padding looks, and the tensors its mask_mod captures (``PADDING_MODS``).

    key_mask (B, T) bool or None. "none": no padding and T == bucket (no tail); "tail": no padding,
    T < bucket (the tail's keys are not read, so its blocks are skipped as before: in a causal model
    the tail's queries would otherwise read each other); "lengths": right padding; "spans": one contiguous
    run per sequence (left padding); "gather": anything else. One host sync when key_mask is given.
    """
    if key_mask is not None:
        mask = key_mask.bool()
        lengths = mask.sum(1)  # (B,)
        starts = mask.int().argmax(1)  # first real token (0 for an all-padding row)
        ends = starts + lengths
        pos = torch.arange(t, device=mask.device)[None]
        run = (pos >= starts[:, None]) & (pos < ends[:, None])  # (B, T): one contiguous run per row
        full, right, contiguous = torch.stack([(lengths == t).all(), (starts == 0).all(),
                                               (run == mask).all()]).tolist()  # the one host sync
        if not full:
            if contiguous and right:
                return "lengths", {"lengths": lengths.to(torch.int32)}
            if contiguous:
                return "spans", {"starts": starts.to(torch.int32), "ends": ends.to(torch.int32)}
            return "gather", {"valid": F.pad(mask, (0, bucket - t), value=False)}
    if t == bucket:
        return "none", {}
    return "tail", {"limit": torch.tensor(t, dtype=torch.int32)}


def band_mask_mod(window: int, causal: bool, global_tokens: int, kind: str, keys: dict[str, Tensor]):
    """The specialised mask_mod for these settings (``MASK_MODS`` x ``PADDING_MODS``)."""
    base = MASK_MODS[global_tokens > 0](window, causal, global_tokens)
    return PADDING_MODS[kind](base, keys)


def _same_mask(plan: BandPlan, key_mask: Tensor | None) -> bool:
    if key_mask is None or plan.key_mask is None:
        return key_mask is None and plan.key_mask is None
    if (plan.key_mask.data_ptr() == key_mask.data_ptr() and plan.key_mask.stride() == key_mask.stride()
            and plan.mask_version == key_mask._version):
        return True  # the same (held, unmodified) storage: the first layer's mask, seen by the next layers
    return bool(torch.equal(plan.key_mask, key_mask))


def band_plan(t: int, window: int, causal: bool, key_mask: Tensor | None, device: torch.device,
              global_tokens: int = 0) -> BandPlan:
    """The cached ``BandPlan`` for these inputs, built (``create_block_mask``) on a miss."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch = None if key_mask is None else key_mask.shape[0]
    key = (batch, t, window, causal, global_tokens, str(device))
    plans = _STATE["plans"]
    for n, plan in enumerate(plans):
        if plan.key == key and (key_mask is None or plan.key_mask.shape == key_mask.shape) \
                and _same_mask(plan, key_mask):
            plans.append(plans.pop(n))  # most recently used last
            return plan
    bucket = bucket_length(t)
    kind, keys = padding_kind(t, bucket, causal, key_mask, global_tokens)
    keys = {name: x.to(device) for name, x in keys.items()}
    mod = band_mask_mod(window, causal, global_tokens, kind, keys)
    shared = kind in ("none", "tail")  # one block mask for the whole batch (the mask_mod ignores b)
    block_mask = create_block_mask(mod, None if shared else batch, None, bucket, bucket, device=device)
    plan = BandPlan(key, None if key_mask is None else key_mask, 0 if key_mask is None else key_mask._version,
                    block_mask, kind)
    plans.append(plan)
    del plans[:-PLAN_CACHE_SIZE]
    _STATE["plans_built"] += 1
    return plan


def _flex_call(q: Tensor, k: Tensor, v: Tensor, block_mask, scale: float) -> Tensor:
    """The function that is compiled (its own code object: its recompile count is ours alone)."""
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=block_mask, scale=scale)


def _compiled_flex():
    if _STATE["fn"] is None:
        _STATE["fn"] = torch.compile(_flex_call, dynamic=False, backend=BACKEND)
    return _STATE["fn"]


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What a failed compile raises: dynamo's and inductor's errors (a missing toolchain included)."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    return (TorchDynamoException, InductorError)


def why_not_flex(q: Tensor, k: Tensor, v: Tensor, window: int, dropout_p: float, flex: bool | None) -> str | None:
    """None when the flex path applies to this call, else why not ("" when it is simply not the
    path for this call: not asked for, a decoding step, a window that covers the sequence)."""
    t = q.shape[-2]
    if flex is False or k.shape[-2] != t or window >= t - 1:
        return ""
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    if q.device.type == "cpu":
        if not flex or grad:
            return ""  # CPU default and CPU training: the blocked kernel (flex compiles for inference only)
    elif q.device.type != "cuda":
        return ""
    d = q.shape[-1]
    if dropout_p > 0:
        return "band attention with attention dropout > 0 runs the blocked kernel (flex_attention has no dropout)"
    if not (k.shape[-1] == v.shape[-1] == d and d >= 16 and d & (d - 1) == 0):
        return (f"band attention with head sizes q/k {d}, v {v.shape[-1]} runs the blocked kernel (flex_attention "
                "here needs equal power-of-two head sizes >= 16)")
    if q.device.type in _STATE["broken"]:
        return ""  # warned already when it broke
    return None


def band_flex_attention(q: Tensor, k: Tensor, v: Tensor, *, window: int, scale: float, causal: bool,
                        key_mask: Tensor | None = None, dropout_p: float = 0.0, flex: bool | None = None,
                        global_tokens: int = 0) -> Tensor | None:
    """Band attention through compiled ``flex_attention``, or None when the caller must run the
    blocked kernel (after a one-time warning when that is a fallback rather than the plan).

    ``flex``: None = on CUDA; True = also on CPU for no-grad calls; False = never.
    q, k, v (B, H, T, D), key_mask (B, T) bool or None -> (B, H, T, D) or None.
    """
    reason = why_not_flex(q, k, v, window, dropout_p, flex)
    if reason is not None:
        if reason:
            warn_once(reason)
        return None
    B, H, t, d = q.shape
    plan = band_plan(t, window, causal, key_mask, q.device, global_tokens)
    if flex is None and not FLEX_BY_DEFAULT[plan.kind]:
        warn_once(f"band attention: padding of kind '{plan.kind}' (not one run of real tokens per sequence) runs "
                  "the blocked kernel: flex_attention's per-key validity gather measured slower than it "
                  "(band_flex.FLEX_BY_DEFAULT; flex=True forces flex)", key=f"kind {plan.kind}")
        return None
    bucket = bucket_length(t)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    family = (B, H, bucket, d, q.dtype, str(q.device), plan.kind, grad, window, causal, global_tokens,
              float(scale))
    families = _STATE["families"]
    if family not in families and len(families) >= MAX_SHAPE_FAMILIES:
        warn_once(f"band attention: flex_attention already compiled {len(families)} shape families in this "
                  f"process (the cap, below dynamo's recompile limit): new shapes (here B={B}, T={t} -> {bucket}) "
                  "run the blocked kernel instead of recompiling (or running flex's unfused T x T path)",
                  key="shape families")
        return None
    pad = (0, 0, 0, bucket - t)
    # (B, H, bucket, D), contiguous: one memory layout per shape, so one compiled graph
    qp, kp, vp = (F.pad(x, pad) if bucket > t else x.contiguous() for x in (q, k, v))
    if not grad:  # flex_attention refuses inputs that require grad on CPU, even under no_grad
        qp, kp, vp = qp.detach(), kp.detach(), vp.detach()
    try:
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            out = _compiled_flex()(qp, kp, vp, plan.block_mask, scale)
    except _compile_errors() as error:
        _STATE["broken"][q.device.type] = True
        warn_once(f"band attention: compiling flex_attention on {q.device.type} failed, so the band runs the "
                  f"blocked kernel from now on: {type(error).__name__}: {str(error).splitlines()[0][:300]}",
                  key=f"compile failed on {q.device.type}")
        return None
    families[family] = True
    return out[:, :, :t]
