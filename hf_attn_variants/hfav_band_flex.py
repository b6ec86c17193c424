"""Band attention through PyTorch's ``flex_attention``: a sliding-window ``BlockMask`` built once
per forward and shared by every layer, a bounded number of compiled shapes, and no silent
fallback.

Guo et al. 2019's band module keeps the scores where |i - j| <= w (bidirectional) or
0 <= i - j <= w (causal); flex_attention visits only the (128 x 128) blocks that touch the band.
Facts this file is built around (docs/design.md, "PyTorch on a GPU"):

- ``create_block_mask`` costs milliseconds: a ``BandPlan`` (the block mask and the padded
  key-validity vector it reads) is cached, keyed on (batch or None, T, window, direction,
  device) and on the padding mask's storage and contents, so the first layer of a forward
  builds it and the other layers (and later forwards with the same padding) reuse it.
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

from .hfav_pairs import pair_allowed

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


def _batched_mod(valid: Tensor, window: int, causal: bool, global_tokens: int):
    """mask_mod over a (B, bucket) validity: ``pairs.pair_allowed`` with key j real (or j == i)."""
    def mask_mod(b, h, qi, kj):
        return pair_allowed(qi, kj, causal=causal, window=window, key_real=valid[b, kj], global_tokens=global_tokens)
    return mask_mod


def _shared_mod(valid: Tensor, window: int, causal: bool, global_tokens: int):
    """mask_mod over a (bucket,) validity shared by the batch (no padding: the first T are real)."""
    def mask_mod(b, h, qi, kj):
        return pair_allowed(qi, kj, causal=causal, window=window, key_real=valid[kj], global_tokens=global_tokens)
    return mask_mod


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
    if key_mask is None:
        valid = torch.arange(bucket, device=device) < t  # (bucket,): padded positions are not keys
        mod = _shared_mod(valid, window, causal, global_tokens)
    else:
        valid = F.pad(key_mask.bool(), (0, bucket - t), value=False)  # (B, bucket)
        mod = _batched_mod(valid, window, causal, global_tokens)
    block_mask = create_block_mask(mod, batch, None, bucket, bucket, device=device)
    plan = BandPlan(key, None if key_mask is None else key_mask, 0 if key_mask is None else key_mask._version,
                    block_mask)
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
    bucket = bucket_length(t)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    family = (B, H, bucket, d, q.dtype, str(q.device), key_mask is None, grad, window, causal, global_tokens,
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
