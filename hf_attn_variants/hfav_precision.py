"""Mixed precision for the custom autograd Functions (additive tiles, LSTMN recurrence).

Under ``torch.autocast`` (``TrainingArguments(bf16=True)`` / ``fp16=True``) the Linear layers
hand a custom ``torch.autograd.Function`` bf16/fp16 activations beside fp32 parameters; its
hand-written ops (``addmm(out=...)``, ``bmm``, in-place updates) then fail with
"expected scalar type Float but found BFloat16" or "self and mat2 must have the same dtype".

Choice: these Functions compute in **fp32** under autocast, the way
``torch.amp.custom_fwd(cast_inputs=torch.float32)`` does, but for every device type at once
(``custom_fwd`` takes one ``device_type``; the models train on CPU and CUDA alike):

- their work is exp/tanh/reciprocal and softmax rows (additive) or a T-step recurrence whose
  cell state accumulates over steps (LSTMN): the op classes autocast itself runs in fp32
  (``exp``, ``softmax``, ``sum``...). The exp path of both kernels (tanh(z) = 1 - 2/(1 + e^{2z}))
  cancels catastrophically at 8 bits of mantissa, so it is an fp32-only path anyway;
- they are not matmul-bound (elementwise-bound tiles; launch-bound B x d x d steps), so
  bf16 arithmetic would buy little speed there;
- the gradients the Function returns are fp32; autograd casts each back to its input's dtype
  (bf16/fp16 activations), and fp16's overflow is the ``GradScaler``'s business as usual.

The Function's output is fp32; the next autocast op (the output projection) casts it down.

Hub code: imports only torch.
"""

from __future__ import annotations

import torch


def autocast_on(x: torch.Tensor) -> bool:
    """Whether autocast is enabled for the device type of x (on this thread)."""
    return torch.is_autocast_enabled(x.device.type)


def _to_fp32(x, device_type: str):
    """x as fp32 when it is a reduced-precision floating tensor on ``device_type``; else x itself."""
    if isinstance(x, torch.Tensor) and x.dtype in (torch.bfloat16, torch.float16) and x.device.type == device_type:
        return x.float()
    return x


def in_fp32(fn, ctx, *args):
    """``fn(ctx, *args)`` with autocast off for the device type of the first tensor argument and its
    bf16/fp16 tensors cast to fp32: ``custom_fwd(cast_inputs=torch.float32)`` / ``custom_bwd`` for any
    device type. A Function's ``forward``/``backward`` starts with
    ``if autocast_on(x): return in_fp32(Cls.forward, ctx, ...)`` (decorators would run at import time,
    which the Hub code does not do). A CPU backward runs on the caller's thread, so inside an autocast
    region it would otherwise see autocast's casts too."""
    device_type = next(a.device.type for a in args if isinstance(a, torch.Tensor))
    with torch.autocast(device_type=device_type, enabled=False):
        return fn(ctx, *(_to_fp32(a, device_type) for a in args))
