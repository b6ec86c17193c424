"""Mixed precision: every variant x both families trains under ``torch.autocast`` (bf16 on CPU;
bf16 and fp16 with a ``GradScaler`` on CUDA, skipped without a GPU), with gradients close to the
fp32 ones; the custom autograd Functions (additive tiles, LSTMN recurrence) compute in fp32
under autocast (``hf_attn_variants/hfav_precision.py``); a ``Trainer`` run with ``bf16=True``.

Tolerance: the relative L2 error of all gradients together (every parameter, concatenated)
against the fp32 run is at most ``GRAD_RTOL`` = 2e-2, and the loss agrees within 1e-2
relative. bf16 keeps 8 bits of mantissa (eps 2^-8 = 3.9e-3); the measured errors of these tiny
models are 3e-3 .. 5e-3 for every variant, so the bound is about 4x the worst one seen and still
far below what a wrong gradient gives (O(1)). fp16 (10 bits) uses the same bound.
"""

from __future__ import annotations

import pytest
import torch
from conftest import CASE_IDS, FAMILIES, HEAD_CLASSES, VARIANT_CASES, random_batch, tiny_model
from test_trainer import Batch, rows_for
from transformers import Trainer, TrainingArguments
from transformers.pytorch_utils import Conv1D

from hf_attn_variants import hfav_kernels as K
from hf_attn_variants.hfav_attention import LSTMNCell

GRAD_RTOL = 2e-2
CUDA = torch.cuda.is_available()


def _lm(family: str, variant: str, fields: dict, device: str = "cpu"):
    return tiny_model(family, variant, cls=HEAD_CLASSES[family][0], **fields).train().to(device)


def _reduced_outputs(model) -> list[torch.dtype]:
    """Record the output dtypes of every Linear / Conv1D (to see autocast at work)."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            module.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    return seen


def _grads(model, ids, mask, dtype: torch.dtype | None, device: str = "cpu", scaler=None):
    """Loss and gradients of one step, under autocast(dtype) (None: plain fp32).

    With a ``GradScaler`` (fp16) the gradients are unscaled (``scaler.unscale_``) before they are
    read. A fresh scaler starts at 2^16, where a tiny model's fp16 gradients can overflow: that step
    is skipped by the scaler and the scale halved, which is the scaler at work, not a failure, so
    the step is retried (at most 24 times, down to scale 2^-8) until the gradients are finite. The
    optimizer the scaler needs has lr 0: the weights never change."""
    if scaler is None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        return loss.detach().float(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for _ in range(24):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        finite = bool(torch.isfinite(grads).all())
        scaler.step(optimizer)  # skipped when not finite
        scaler.update()  # halves the scale after a skipped step
        if finite:
            break
    return loss.detach().float(), grads


def _check_close_to_fp32(family, variant, fields, device, dtype, scaler=None):
    model = _lm(family, variant, fields, device)
    ids, mask = (x.to(device) for x in random_batch(2, 12, seed=1))
    loss32, grads32 = _grads(model, ids, mask, None, device)
    seen = _reduced_outputs(model)
    loss_amp, grads_amp = _grads(model, ids, mask, dtype, device, scaler)
    assert dtype in seen  # autocast really ran the projections in reduced precision
    assert grads_amp.shape == grads32.shape and bool(torch.isfinite(grads_amp).all())
    torch.testing.assert_close(loss_amp, loss32, rtol=1e-2, atol=0)
    rel = ((grads_amp - grads32).norm() / grads32.norm()).item()
    assert rel <= GRAD_RTOL, f"relative gradient error {rel:.3g} under {dtype}"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
def test_every_variant_trains_under_cpu_bf16_autocast(family, variant, fields):
    _check_close_to_fp32(family, variant, fields, "cpu", torch.bfloat16)


@pytest.mark.skipif(not CUDA, reason="CUDA autocast needs a GPU")
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_every_variant_trains_under_cuda_autocast(family, variant, fields, dtype):
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    _check_close_to_fp32(family, variant, fields, "cuda", dtype, scaler)


@pytest.mark.skipif(not CUDA, reason="CUDA autocast needs a GPU")
@pytest.mark.parametrize("variant", ["additive", "lstmn"])
def test_fp16_grad_scaler_steps_on_cuda(variant):
    """A few optimizer steps with fp16 autocast and a GradScaler: finite, and the loss goes down."""
    model = _lm("gpt2", variant, {}, "cuda")
    ids, mask = (x.cuda() for x in random_batch(4, 16, seed=2))
    opt, scaler = torch.optim.AdamW(model.parameters(), lr=3e-3), torch.amp.GradScaler("cuda")
    losses = []
    for _ in range(8):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


# ----------------------------------------------------------------------------- the kernels themselves


def test_custom_functions_compute_in_fp32_under_autocast():
    """Under CPU bf16 autocast, the additive tiles and the LSTMN recurrence take bf16 activations
    beside fp32 weights and return what the fp32 kernel returns for the same (bf16-rounded) inputs."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 9, 6, generator=g).bfloat16() for _ in range(3))
    w = torch.randn(2, 6, generator=g)
    key_mask = torch.arange(9)[None] < torch.tensor([[9], [6]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = K.additive_attention(q, k, v, w, causal=False, key_mask=key_mask)
    ref = K.additive_attention(q.float(), k.float(), v.float(), w, causal=False, key_mask=key_mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)

    torch.manual_seed(0)
    cell = LSTMNCell(8, 8)
    with torch.no_grad():
        cell.score.normal_()
    x = torch.randn(2, 7, 8, generator=g, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h, _ = K.lstmn_scan(cell, x, key_mask[:, :7])
    (h * h).sum().backward()
    assert h.dtype == torch.float32 and x.grad is not None and bool(torch.isfinite(x.grad).all())
    ref, _ = K.lstmn_scan(cell, x.detach(), key_mask[:, :7])
    assert (h - ref).abs().max() < 3e-2  # W_x x and the gate inputs were computed in bf16 by autocast


# ----------------------------------------------------------------------------- Trainer, bf16=True


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", ["additive", "lstmn"])
def test_trainer_bf16_run(family, variant, tmp_path):
    """``TrainingArguments(bf16=True, use_cpu=True)``: Trainer trains under CPU bf16 autocast."""
    cls = HEAD_CLASSES[family][0]
    model = tiny_model(family, variant, cls=cls).train()
    seen = _reduced_outputs(model)
    start = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    ids, mask = random_batch(4, 10, "right", seed=5)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=2, bf16=True,
                             use_cpu=True, learning_rate=1e-2, report_to=[], save_strategy="no",
                             logging_strategy="no", seed=0)
    result = Trainer(model=model, args=args, train_dataset=Batch(rows_for(cls, ids, mask))).train()
    end = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert torch.bfloat16 in seen
    assert torch.isfinite(torch.tensor(result.training_loss)) and bool(torch.isfinite(end).all())
    assert (end - start).abs().max() > 1e-4


def test_skipped_grad_scaler_steps_are_retried_not_failed():
    """The fp16 helper on the CPU (GradScaler works there too): a scale of 2^127 overflows the first
    steps, which the scaler skips and halves; the gradients read in the end are finite, unscaled,
    and equal the fp32 ones (autocast off here, so only the scaling is under test)."""
    model = _lm("gpt2", "dense", {})
    ids, mask = random_batch(2, 12, seed=1)
    _, grads32 = _grads(model, ids, mask, None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    loss, grads = _grads(model, ids, mask, None, "cpu", scaler)
    assert scaler.get_scale() < 2.0**127  # at least one step was skipped and the scale halved
    assert bool(torch.isfinite(grads).all())
    torch.testing.assert_close(grads, grads32, rtol=1e-4, atol=1e-6)
