"""The band's flex_attention path (``hf_attn_variants/hfav_band_flex.py``), tested on the CPU, where
flex_attention compiles for inference: the result equals the naive reference; the block mask
is built once per forward and shared by the layers; repeated forwards (and lengths in the same
bucket) do not recompile (dynamo's frame counters); the fallbacks warn once with their reason.

Most tests compile with dynamo's ``eager`` backend (``band_flex.BACKEND``): the same tracing,
guards and recompiles as inductor, in milliseconds. One test compiles with inductor for real.
CUDA-only checks skip without a GPU."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from conftest import random_batch, tiny_model
from torch._dynamo.utils import counters

from hf_attn_variants import hfav_band_flex as band_flex
from hf_attn_variants import hfav_kernels as K

LOGGER = "hf_attn_variants.hfav_band_flex"


@pytest.fixture(autouse=True)
def fresh_flex_state(monkeypatch):
    """Every test starts with no compiled call, no plans, no warnings, and the eager backend."""
    monkeypatch.setattr(band_flex, "BACKEND", "eager")
    band_flex.reset()
    torch._dynamo.reset()
    yield
    band_flex.reset()
    torch._dynamo.reset()


def _qkv(b, h, t, d, g, dtype=torch.float32):
    return [torch.randn(b, h, t, d, generator=g, dtype=dtype) for _ in range(3)]


def _key_mask(b, t, padding, g):
    if padding is None:
        return None
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    pos = torch.arange(t)[None]
    return pos < lengths[:, None] if padding == "right" else pos >= (t - lengths)[:, None]


def _frames() -> int:
    return counters["frames"]["total"]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize("seed", range(2))
def test_cpu_inference_path_matches_reference(causal, padding, seed):
    g = torch.Generator().manual_seed(seed)
    b, t, window = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(20, 300, (1,), generator=g)), 7
    q, k, v = _qkv(b, 2, t, 16, g)
    key_mask = _key_mask(b, t, padding, g)
    kw = dict(window=window, scale=0.25, causal=causal, key_mask=key_mask)
    with torch.no_grad():
        out = K.band_attention(q, k, v, flex=True, **kw)
    ref = K.band_attention_reference(q, k, v, **kw)[0]
    assert band_flex._STATE["plans_built"] == 1 and len(band_flex._STATE["families"]) == 1  # flex ran
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_cpu_no_grad_call_on_inputs_that_require_grad():
    """CPU flex_attention refuses inputs with requires_grad even under no_grad: they are detached."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (x.requires_grad_() for x in _qkv(1, 2, 40, 16, g))
    with torch.no_grad():
        out = K.band_attention(q, k, v, window=5, scale=0.25, causal=False, flex=True)
    assert len(band_flex._STATE["families"]) == 1
    torch.testing.assert_close(out, K.band_attention_reference(q, k, v, window=5, scale=0.25, causal=False)[0])


def test_cpu_training_and_default_take_the_blocked_kernel():
    g = torch.Generator().manual_seed(0)
    q, k, v = (x.requires_grad_() for x in _qkv(2, 2, 50, 16, g))
    K.band_attention(q, k, v, window=5, scale=0.25, causal=True, flex=True).sum().backward()  # grad: blocked
    with torch.no_grad():
        K.band_attention(q, k, v, window=5, scale=0.25, causal=True)  # flex=None on CPU: blocked
    assert band_flex._STATE["plans_built"] == 0 and q.grad is not None


def _band_model(family="bert", layers=3):
    # head size 16 (flex needs a power of two >= 16); attention_compile turns on the CPU inference path
    fields = (dict(hidden_size=64, num_hidden_layers=layers, max_position_embeddings=256) if family == "bert"
              else dict(n_embd=64, n_layer=layers, n_positions=256))
    return tiny_model(family, "band", attention_window=5, attention_compile=True, **fields)


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_block_mask_built_once_per_forward_and_shared_by_layers(family, monkeypatch):
    from torch.nn.attention import flex_attention as flex_module

    built = []
    original = flex_module.create_block_mask
    monkeypatch.setattr(flex_module, "create_block_mask", lambda *a, **kw: built.append(1) or original(*a, **kw))
    model = _band_model(family)
    ids, mask = random_batch(3, 40, "right", seed=1)
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert len(built) == 1  # three layers, one block mask
        model(input_ids=ids, attention_mask=mask)
        assert len(built) == 1  # the same padding again: the cached plan
        other = mask.clone()
        other[1, 20:] = 0
        model(input_ids=ids, attention_mask=other)
        assert len(built) == 2  # new padding: one new block mask for the whole forward
        model(input_ids=ids)
        assert len(built) == 3  # no padding: a plan shared by the batch
    reference = model.__class__(model.config).eval()
    reference.load_state_dict(model.state_dict())
    for layer_module in reference.modules():
        if hasattr(layer_module, "compile_kernels"):
            layer_module.compile_kernels = False  # the blocked kernel
    with torch.no_grad():
        torch.testing.assert_close(first, reference(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)


def padded_batch(batch, length, seed):
    ids, mask = random_batch(batch, length, "right", seed=seed)
    mask[-1, -1] = 0  # at least one padding token: the padded mask function every time
    return ids, mask


def test_repeated_forwards_do_not_recompile():
    model = _band_model()
    with torch.no_grad():
        start = _frames()
        model(*padded_batch(2, 40, seed=1))
        compiled = _frames() - start
        assert compiled >= 1
        for seed, length in [(2, 40), (3, 40), (4, 57), (5, 128), (6, 100)]:  # all in the 128 bucket
            model(*padded_batch(2, length, seed=seed))
        assert _frames() - start == compiled
        model(*random_batch(2, 40, None))  # no padding: another mask function, compiled once
        without_padding = _frames() - start
        model(*random_batch(2, 77, None, seed=3))
        assert _frames() - start == without_padding


def test_shape_families_are_capped_and_the_fallback_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(band_flex, "MAX_SHAPE_FAMILIES", 1)
    g = torch.Generator().manual_seed(0)
    kw = dict(window=4, scale=0.25, causal=False, flex=True)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=LOGGER):
        K.band_attention(*_qkv(1, 2, 30, 16, g), **kw)
        for batch in (2, 3):  # new shape families past the cap: blocked kernel, one warning
            q, k, v = _qkv(batch, 2, 30, 16, g)
            out = K.band_attention(q, k, v, **kw)
            torch.testing.assert_close(out, K.band_attention_reference(q, k, v, window=4, scale=0.25,
                                                                       causal=False)[0], atol=1e-5, rtol=1e-5)
    warnings = [r for r in caplog.records if "shape families" in r.getMessage()]
    assert len(warnings) == 1 and len(band_flex._STATE["families"]) == 1


def test_a_failed_compile_falls_back_loudly_once(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise torch._dynamo.exc.InternalTorchDynamoError("no toolchain here")

    monkeypatch.setattr(band_flex, "_compiled_flex", lambda: broken)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            q, k, v = _qkv(2, 2, 30, 16, g)
            out = K.band_attention(q, k, v, window=4, scale=0.25, causal=True, flex=True)
            ref = K.band_attention_reference(q, k, v, window=4, scale=0.25, causal=True)[0]
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "no toolchain here" in messages[0] and "blocked kernel" in messages[0]


def test_other_errors_are_not_swallowed(monkeypatch):
    """Only compile errors fall back; a bug elsewhere raises (no bare ``except Exception``)."""
    def buggy(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(band_flex, "_compiled_flex", lambda: buggy)
    q, k, v = _qkv(1, 2, 30, 16, torch.Generator().manual_seed(0))
    with torch.no_grad(), pytest.raises(ValueError, match="a bug"):
        K.band_attention(q, k, v, window=4, scale=0.25, causal=True, flex=True)


def test_unsupported_head_size_warns_once_with_the_reason(caplog):
    g = torch.Generator().manual_seed(0)
    q, k, v = _qkv(1, 2, 30, 12, g)  # head size 12: not a power of two
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            K.band_attention(q, k, v, window=4, scale=0.25, causal=True, flex=True)
    assert len(caplog.records) == 1 and "head sizes" in caplog.records[0].getMessage()


def test_bucket_length():
    assert [band_flex.bucket_length(t) for t in (1, 100, 128, 129, 1000, 4096, 4097)] == [
        128, 128, 128, 256, 1024, 4096, 8192]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on CPU needs a C++ compiler")
def test_inductor_compiled_cpu_path_matches_reference(monkeypatch):
    """flex_attention compiled by inductor for real (the first call compiles: a minute here)."""
    monkeypatch.setattr(band_flex, "BACKEND", "inductor")
    g = torch.Generator().manual_seed(1)
    q, k, v = _qkv(2, 2, 200, 16, g)
    key_mask = _key_mask(2, 200, "right", g)
    kw = dict(window=9, scale=0.25, causal=False, key_mask=key_mask)
    with torch.no_grad():
        out = K.band_attention(q, k, v, flex=True, **kw)
        frames = _frames()
        again = K.band_attention(q, k, v[:, :, :]  * 2, flex=True, **kw)
    assert _frames() == frames and len(band_flex._STATE["families"]) == 1
    ref = K.band_attention_reference(q, k, v, **kw)[0]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, 2 * ref, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention training path needs CUDA")
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_training_model_builds_one_mask_and_compiles_once(causal, monkeypatch):
    """On CUDA: training forwards+backwards of a band model, several lengths in one bucket:
    one block mask per forward, no recompile after the first, outputs equal the blocked kernel."""
    monkeypatch.setattr(band_flex, "BACKEND", "inductor")
    model = _band_model("gpt2" if causal else "bert", layers=2).cuda().train()
    frames = None
    for seed, length in [(1, 60), (2, 60), (3, 90)]:
        ids, mask = (x.cuda() for x in random_batch(2, length, "right", seed=seed))
        before = band_flex._STATE["plans_built"]
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out.float().pow(2).mean().backward()
        assert band_flex._STATE["plans_built"] == before + 1
        frames = _frames() if frames is None else frames
        assert _frames() == frames


def test_generation_compiles_for_the_prefill_only():
    """A band GPT-2 with attention_compile generates what the blocked kernel generates; decoding steps
    (one query, <= w + 1 keys) never reach flex, and a second prompt length in the same bucket
    does not recompile."""
    from hf_attn_variants import VariantGPT2LMHeadModel

    model = tiny_model("gpt2", "band", cls=VariantGPT2LMHeadModel, attention_window=5, attention_compile=True,
                       n_embd=64, n_positions=256)
    plain = tiny_model("gpt2", "band", cls=VariantGPT2LMHeadModel, attention_window=5, n_embd=64, n_positions=256)
    frames = None
    for length, seed in [(30, 1), (45, 2)]:
        ids, mask = random_batch(2, length, None, seed=seed)
        kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        out = model.generate(**kw)
        assert torch.equal(out, plain.generate(**kw))
        frames = _frames() if frames is None else frames
        assert _frames() == frames and band_flex._STATE["plans_built"] <= 2
    assert len(band_flex._STATE["families"]) == 1


# ----------------------------------------------------------------------------- specialised mask_mods


def _tensors_captured(fn, seen=None) -> list:
    """Every tensor a function's closure reaches (through nested functions too)."""
    seen = set() if seen is None else seen
    found = []
    for cell in fn.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif callable(value) and getattr(value, "__closure__", None) and id(value) not in seen:
            seen.add(id(value))
            found += _tensors_captured(value, seen)
    return found


def _holes_mask(b, t, g):
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True
    mask[0, t // 2] = False  # a hole between real tokens
    mask[0, t // 2 - 1] = mask[0, t // 2 + 1] = True
    return mask


def _padding(kind, b, t, g):
    if kind == "holes":
        return _holes_mask(b, t, g)
    mask = _key_mask(b, t, kind, g)
    if mask is not None:
        mask[0] = False
        mask[0, :1] = True  # row 0 padded (one real token): the padded kind every time
        if kind == "left":
            mask[0] = torch.arange(t) >= t - 1
    return mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_pure_index_mask_mod_captures_no_tensor_and_is_the_rule(causal, seed):
    """No padding, no global tokens: the mask_mod is index arithmetic on ints alone (nothing to gather
    in flex's kernel), and it equals ``pairs.pair_allowed`` on every (query, key) of random shapes."""
    g = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 400, (1,), generator=g))
    window = int(torch.randint(0, t, (1,), generator=g))
    bucket = band_flex.bucket_length(t)
    kind, keys = band_flex.padding_kind(bucket, bucket, causal, None)
    assert kind == "none" and keys == {}
    mod = band_flex.band_mask_mod(window, causal, 0, kind, keys)
    assert _tensors_captured(mod) == [] and all(
        isinstance(c.cell_contents, (int, bool)) for c in mod.__closure__)
    qi, kj = torch.arange(bucket)[:, None], torch.arange(bucket)[None, :]
    assert torch.equal(mod(torch.tensor(0), torch.tensor(0), qi, kj),
                       K.pair_allowed(qi, kj, causal=causal, window=window))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left", "holes"])
@pytest.mark.parametrize("global_tokens", [0, 2])
@pytest.mark.parametrize("seed", range(2))
def test_every_specialised_mask_mod_is_the_rule(causal, padding, global_tokens, seed):
    """Each (padding kind x global tokens) mask_mod equals ``pair_allowed`` (with the padded keys and
    the bucket's tail as non-real keys) on every (batch, query, key) of the bucket; the
    kind is the one the padding calls for, and only the kinds with padding capture tensors."""
    g = torch.Generator().manual_seed(seed)
    b, t = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(3, 300, (1,), generator=g))
    window = int(torch.randint(0, max(1, t - 1), (1,), generator=g))
    key_mask = _padding(padding, b, t, g)
    bucket = band_flex.bucket_length(t)
    kind, keys = band_flex.padding_kind(t, bucket, causal, key_mask, global_tokens)
    expected = {None: "none" if t == bucket else "tail", "right": "lengths", "left": "spans",
                "holes": "gather"}[padding]
    assert kind == expected
    mod = band_flex.band_mask_mod(window, causal, global_tokens, kind, keys)
    assert bool(_tensors_captured(mod)) == (kind != "none")
    real = torch.ones(b, t, dtype=torch.bool) if key_mask is None else key_mask
    real = torch.nn.functional.pad(real, (0, bucket - t), value=False)  # the tail is not a key
    bi = torch.arange(b)[:, None, None]
    qi, kj = torch.arange(bucket)[None, :, None], torch.arange(bucket)[None, None, :]  # the tail's rows too
    got = mod(bi, torch.tensor(0), qi, kj).expand(b, bucket, bucket)
    want = K.pair_allowed(qi, kj, causal=causal, window=window, key_real=real[:, None, :],
                          global_tokens=global_tokens).expand(b, bucket, bucket)
    assert torch.equal(got, want)


def _legacy_mod(valid, window, causal, global_tokens):
    """The previous plan's mask_mod: the whole rule with a per-key validity gather (B, bucket)."""
    def mask_mod(b, h, qi, kj):
        return K.pair_allowed(qi, kj, causal=causal, window=window, key_real=valid[b, kj],
                              global_tokens=global_tokens)
    return mask_mod


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "right", "left"])
@pytest.mark.parametrize("shape", [(1, 1000, 128, 0), (2, 300, 40, 1), (3, 4096, 256, 0)])
def test_block_sparsity_is_the_old_plans(causal, padding, shape):
    """``create_block_mask`` from the specialised mask_mod visits exactly the blocks (partial and full)
    that the old gather-the-whole-rule mask_mod did, over the real queries."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, t, window, global_tokens = shape
    g = torch.Generator().manual_seed(t)
    key_mask = _padding(padding, b, t, g)
    bucket = band_flex.bucket_length(t)
    plan = band_flex.band_plan(t, window, causal, key_mask, torch.device("cpu"), global_tokens)
    valid = torch.ones(b, t, dtype=torch.bool) if key_mask is None else key_mask
    valid = torch.nn.functional.pad(valid, (0, bucket - t), value=False)
    old = create_block_mask(_legacy_mod(valid, window, causal, global_tokens), b, None, bucket, bucket,
                            device="cpu")
    new = plan.block_mask
    full = lambda m: None if m.full_kv_num_blocks is None else m.full_kv_num_blocks.expand(b, -1, -1)
    if padding is None:  # the same blocks, partial and full
        assert torch.equal(new.kv_num_blocks.expand(b, -1, -1), old.kv_num_blocks)
        assert (full(new) is None) == (full(old) is None)
        if full(new) is not None:
            assert torch.equal(full(new), full(old))
    # blocks visited at all (partial or full) per query block: identical in every case
    dense = lambda m: m.to_dense().expand(b, -1, -1, -1).bool()
    assert torch.equal(dense(new), dense(old))
    assert new.sparsity() == pytest.approx(old.sparsity()) or b > 1


def test_default_path_sends_validity_gathers_to_the_blocked_kernel(monkeypatch, caplog):
    """The CUDA default (flex=None) runs flex for no padding, lengths and spans, and the blocked kernel
    for padding with holes (``FLEX_BY_DEFAULT``), with one warning; flex=True forces flex. The
    device check is patched so that the choice itself runs on the CPU."""
    monkeypatch.setattr(band_flex, "why_not_flex", lambda *a, **kw: None)
    g = torch.Generator().manual_seed(0)
    q, k, v = _qkv(2, 2, 64, 16, g)
    kw = dict(window=5, scale=0.25, causal=False)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=LOGGER):
        for padding in (None, "right", "left"):
            assert band_flex.band_flex_attention(q, k, v, key_mask=_padding(padding, 2, 64, g), **kw) is not None
        holes = _holes_mask(2, 64, g)
        for _ in range(2):
            assert band_flex.band_flex_attention(q, k, v, key_mask=holes, **kw) is None
        forced = band_flex.band_flex_attention(q, k, v, key_mask=holes, flex=True, **kw)
    torch.testing.assert_close(forced, K.band_attention_reference(q, k, v, key_mask=holes, **kw)[0],
                               atol=1e-5, rtol=1e-5)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "gather" in messages[0] and "blocked kernel" in messages[0]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [None, "left", "holes"])
@pytest.mark.parametrize("global_tokens", [0, 2])
def test_cpu_flex_path_with_every_mask_kind_matches_reference(causal, padding, global_tokens):
    g = torch.Generator().manual_seed(3)
    b, t = 2, 77  # bucket 128: a tail
    q, k, v = _qkv(b, 2, t, 16, g)
    key_mask = _padding(padding, b, t, g)
    kw = dict(window=6, scale=0.25, causal=causal, key_mask=key_mask, global_tokens=global_tokens)
    with torch.no_grad():
        out = K.band_attention(q, k, v, flex=True, **kw)
    assert len(band_flex._STATE["families"]) == 1  # flex ran
    torch.testing.assert_close(out, K.band_attention_reference(q, k, v, **kw)[0], atol=1e-5, rtol=1e-5)


def test_an_all_real_padding_mask_takes_the_pure_index_mask_mod():
    """A mask of ones (what a tokenizer returns for unpadded batches) is no padding: the pure-index
    mask_mod (T == bucket) or the tail's scalar (T < bucket), never lengths or a gather."""
    ones = torch.ones(2, 256, dtype=torch.long)
    assert band_flex.padding_kind(256, 256, True, ones) == ("none", {})
    kind, keys = band_flex.padding_kind(200, 256, False, ones[:, :200])
    assert kind == "tail" and int(keys["limit"]) == 200
    empty_row = ones.clone()
    empty_row[1] = 0  # an all-padding row: a run of length 0
    assert band_flex.padding_kind(256, 256, True, empty_row)[0] == "lengths"


def test_new_spans_and_lengths_do_not_recompile():
    """The lengths / spans tensors the mask_mods capture are inputs of the compiled call: new values
    (another padding of the same batch size and bucket) reuse the compiled graph."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for padding in ("right", "left"):
            frames = None
            for length in (40, 40, 70):
                q, k, v = _qkv(2, 2, length, 16, g)
                key_mask = _padding(padding, 2, length, g)
                kw = dict(window=5, scale=0.25, causal=padding == "left", key_mask=key_mask)
                out = K.band_attention(q, k, v, flex=True, **kw)
                torch.testing.assert_close(out, K.band_attention_reference(q, k, v, **kw)[0], atol=1e-5, rtol=1e-5)
                frames = _frames() if frames is None else frames
                assert _frames() == frames
    assert {key[6] for key in band_flex._STATE["families"]} == {"lengths", "spans"}
