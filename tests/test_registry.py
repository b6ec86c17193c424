"""The registry is the one home of a variant: a new variant defined only as a spec works everywhere
(model, generation cache, costs, LoRA targets, model card, run configs); an incomplete spec fails
when it is defined; the allowed-pairs rule agrees with every form derived from it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAMILIES, VARIANT_CASES, random_batch, tiny_config, tiny_model

import hf_attn_variants as hv
from hf_attn_variants import hfav_pairs as pairs
from hf_attn_variants import hfav_variants as variants
from hf_attn_variants import hub
from hf_attn_variants.analysis import commands, viewer
from hf_attn_variants.costs import attended_pairs, cost_table, model_costs
from hf_attn_variants.hfav_kernels import dense_attention, dense_attention_reference, softmax_backward
from hf_attn_variants.hfav_variants import VARIANTS, ScoringSpec, VariantSpec
from hf_attn_variants_research import exp_models, experiments

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "configs"))
import generate  # noqa: E402


def _copy_forward(m, p, ctx):
    """dense attention again, under another name: the seventh variant of these tests."""
    return variants.run_kernel(ctx, dense_attention, dense_attention_reference, p.q, p.k, p.v, scale=m.scaling)


def _copy_parameters(module):
    return {"copy_bias": ((module.num_heads,), "normal")}  # an added parameter, unused by the kernel


@pytest.fixture
def dense_copy():
    """A seventh variant, registered by defining its spec and nothing else (removed afterwards)."""

    class DenseCopy(ScoringSpec):
        name = "dense_copy"
        summary = "dense attention under another name (a test of the registry)"
        paper = "vaswani2017"
        settings = ("attention_window",)
        forward = _copy_forward
        kernels = ((dense_attention, dense_attention_reference),)
        projections = variants._full_size
        parameters = _copy_parameters
        flops = variants._dense_flops
        draw = variants.draw_dot_product  # every head scores with its main pair, at the module's scaling
        example_fields = {"attention_window": 5}
        test_cases = ({},)

    try:
        yield DenseCopy
    finally:
        VARIANTS.pop("dense_copy", None)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_seventh_variant_needs_only_its_spec(dense_copy, family, tmp_path):
    assert VARIANTS["dense_copy"] is dense_copy
    ids, mask = random_batch(2, 9, "right" if family == "bert" else "left")
    dense = tiny_model(family, "dense")
    copy = tiny_model(family, "dense_copy")
    missing = copy.load_state_dict(dense.state_dict(), strict=False)
    assert {k.rsplit(".", 1)[-1] for k in missing.missing_keys} == {"copy_bias"} and not missing.unexpected_keys
    real = mask.bool()  # padded positions differ: dense reads through transformers' masks, as stock models do
    with torch.no_grad():
        torch.testing.assert_close(copy(input_ids=ids, attention_mask=mask).last_hidden_state[real],
                                   dense(input_ids=ids, attention_mask=mask).last_hidden_state[real])
    # its parameter is created and initialised by the spec (normal: non-zero)
    biases = [m.copy_bias for m in copy.modules() if getattr(m, "variant", None) == "dense_copy"]
    assert len(biases) == 2 and all(b.shape == (4,) and bool(b.ne(0).all()) for b in biases)
    # costs: its own FLOPs and its exact parameter count (one more per head than dense)
    dense_costs, copy_costs = model_costs(dense.config, 16), model_costs(copy.config, 16)
    assert copy_costs == {"params": dense_costs["params"] + 2 * 4, "flops": dense_costs["flops"]}
    assert "| dense_copy | " in cost_table(family, 32, **({"hidden_size": 32, "num_attention_heads": 4}
                                                        if family == "bert" else {"n_embd": 32, "n_head": 4}))
    # LoRA targets and the model card
    assert hv.lora_target_modules(copy) == list(variants.SCORING_LORA[family])
    card = str(hub.build_model_card(copy, {"task": "masked_lm" if family == "bert" else "causal_lm"}))
    assert "`dense_copy`" in card and "attention_window=3" in card and "Vaswani" in card
    if "summaries" in hub.template_path().read_text():  # the venv's editable install may point at another tree
        assert "dense attention under another name" in card
    # run configs
    assert generate.config("mr", "dense_copy")["variant"] == {"attention_variant": "dense_copy",
                                                              "attention_window": 5}
    if family == "gpt2":  # cached decoding equals the full forward
        lm = tiny_model("gpt2", "dense_copy", cls=hv.VariantGPT2LMHeadModel)
        ids = torch.randint(1, 97, (1, 7))
        with torch.no_grad():
            full = lm(input_ids=ids).logits
            first = lm(input_ids=ids[:, :4], use_cache=True)
            rest = lm(input_ids=ids[:, 4:], past_key_values=first.past_key_values, use_cache=True).logits
        torch.testing.assert_close(torch.cat([first.logits, rest], 1), full, atol=1e-5, rtol=1e-4)
    _seventh_variant_in_the_tools(family, dense, copy, ids if family == "bert" else ids[:, :5], tmp_path)


def _seventh_variant_in_the_tools(family, dense, copy, ids, tmp_path):
    """The consumers outside the model: grid, probes, viewer, convert, CLI."""
    # the experiment grid: a model name, and a sweep of a field its spec reads expands for it alone
    suite = {"kind": "probe", "models": ["dense", "dense_copy"], "seeds": [0], "learning_rates": [1e-3],
             "size": {"hidden": 16, "heads": 2}, "probe": {"name": "long_range"}, "sweep": {"attention_window": [1, 3]}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"out": "o", "results": "r", "suites": {"s": suite}}))
    jobs = experiments.expand(experiments.load_grid(tmp_path / "grid.yaml"))
    assert sorted((j["model"], j["variant"].get("attention_window")) for j in jobs) == [
        ("dense", None), ("dense_copy", 1), ("dense_copy", 3)]
    # the probes: its parameters initialised as its spec says (non-zero), in both architectures
    sublayer = exp_models.attention_sublayer({"attention_variant": "dense_copy"}, 16, 2, 1, 0)
    full = exp_models.ProbeModel("dense_copy", {}, "full", 16, 2, 1, 8, 2, vocab=5)
    for module in (sublayer, *full.modules()):
        if getattr(module, "variant", None) == "dense_copy":
            assert module.copy_bias.shape == (2,) and bool(module.copy_bias.ne(0).all())
    # the viewer: what its spec draws (every head its own dot-product pair, no band), singular values as dense's
    info = viewer.layer_info(copy.config, 1, 4)
    assert info["variant"] == "dense_copy" and info["band_heads"] == [] and info["window"] is None
    assert info["head_names"] == [f"head {h}" for h in range(4)] and info["ranks"] == [None] * 4
    layers = [[m for m in model.modules() if isinstance(m, hv.hfav_attention.VariantAttention)][1]
              for model in (copy, dense)]
    x = torch.randn(1, 6, 32)
    with torch.no_grad():
        got, want = (viewer._score_pairs(m, x) for m in layers)
    assert len(got) == 4
    for (q, k, scale), (q2, k2, scale2) in zip(got, want):
        torch.testing.assert_close(q, q2)
        torch.testing.assert_close(k, k2)
        assert scale == scale2
    # convert: a dense model converts to it, every dense weight carried, its own parameter fresh
    converted = hv.convert_from_dense(dense, attention_variant="dense_copy")
    assert converted.config.attention_variant == "dense_copy"
    assert {k.rsplit(".", 1)[-1] for k in converted.conversion_report["initialized"]} == {"copy_bias"}
    with torch.no_grad():
        torch.testing.assert_close(converted(input_ids=ids).last_hidden_state, dense(input_ids=ids).last_hidden_state)
    # the command line: a choice of ``convert --variant``
    args = commands.convert_parser().parse_args(["src", "--variant", "dense_copy", "--out", str(tmp_path / "o")])
    assert args.variant == "dense_copy"


def test_registered_variants_are_in_every_table():
    assert [v for v, _ in VARIANT_CASES] == [name for name, spec in VARIANTS.items() for _ in spec.test_cases]
    assert set(generate.VARIANTS) == set(VARIANTS) == set(hv.VARIANTS)
    for name, spec in VARIANTS.items():
        for family in FAMILIES:
            config = tiny_config(family, name, **spec.test_cases[0])
            assert hv.lora_target_modules(config) == list(spec.lora_targets[family])
            assert model_costs(config, 8)["flops"] > 0


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("variant", "fields"), VARIANT_CASES, ids=[v + "".join(f"-{x}" for x in kw.values())
                                                                   for v, kw in VARIANT_CASES])
def test_every_registered_variant_fast_path_equals_its_references(family, variant, fields):
    """For every spec's test cases: the model on its fast kernels equals the model on their naive
    references (``capture``), forward and gradients, with random padding (bidirectional BERT,
    causal GPT-2). A new variant gets this test from its spec alone."""
    ids, mask = random_batch(3, 11, "right" if family == "bert" else "left", seed=5)
    results = []
    for reference in (False, True):
        model = tiny_model(family, variant, **fields).double()
        for module in model.modules():
            if getattr(module, "variant", None) and hasattr(module, "capture"):
                module.capture = reference
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()[..., None]
        (hidden * real).pow(2).sum().backward()
        results.append((hidden * real, [p.grad for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert len(results[0][1]) == len(results[1][1])
    for fast, ref in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(fast, ref)


def _spec_body(**skip) -> dict:
    body = dict(name="incomplete", summary="s", paper="vaswani2017", forward=_copy_forward,
                kernels=((dense_attention, dense_attention_reference),), projections=variants._full_size,
                flops=variants._dense_flops, draw=variants.draw_dot_product, example_fields={}, test_cases=({},))
    for key in skip:
        body.pop(key)
    return body


@pytest.mark.parametrize("field", ["flops", "summary", "kernels", "test_cases", "projections", "paper", "draw"])
def test_a_spec_missing_a_field_fails_when_defined(field):
    with pytest.raises(TypeError, match=field):
        type("Incomplete", (ScoringSpec,), _spec_body(**{field: None}))
    assert "incomplete" not in VARIANTS


@pytest.mark.parametrize(("field", "value", "message"), [
    ("paper", "nobody2020", "PAPERS"),
    ("name", "dense", "already registered"),
    ("lora_targets", {"bert": ("query",)}, "every family"),
    ("kernels", ((dense_attention,),), "pairs"),
    ("forward", None, "exactly one of forward"),
])
def test_a_malformed_spec_fails_when_defined(field, value, message):
    with pytest.raises(TypeError, match=message):
        type("Malformed", (ScoringSpec,), {**_spec_body(), field: value})
    assert VARIANTS["dense"] is variants.Dense and "incomplete" not in VARIANTS


def test_specs_are_frozen():
    with pytest.raises(AttributeError, match="frozen"):
        variants.Band.cache = variants._cache_everything
    with pytest.raises(AttributeError, match="frozen"):
        del variants.Band.summary
    assert issubclass(variants.Band, VariantSpec) and VARIANTS["band"].cache is variants._band_cache


# ----------------------------------------------------------------------------- the allowed-pairs rule


def brute_force_allowed(tq, tk, causal, window, key_mask):
    """The rule in words, one pair at a time."""
    out = torch.zeros(key_mask.shape[0], tq, tk, dtype=torch.bool)
    for b in range(key_mask.shape[0]):
        for i in range(tq):
            q = i + tk - tq
            for k in range(tk):
                near = window is None or abs(q - k) <= window
                ok = near and (not causal or k <= q)
                out[b, i, k] = ok and (bool(key_mask[b, k]) or q == k)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_the_rule_and_its_derived_forms_agree(seed):
    g = torch.Generator().manual_seed(seed)
    tk = int(torch.randint(1, 14, (1,), generator=g))
    tq = int(torch.randint(1, tk + 1, (1,), generator=g))
    causal = bool(seed % 2)
    window = None if seed % 3 == 0 else int(torch.randint(0, 5, (1,), generator=g))
    key_mask = torch.rand(2, tk, generator=g) > 0.3
    dense = pairs.allowed_mask(tq, tk, causal=causal, window=window, key_mask=key_mask)[:, 0]
    assert torch.equal(dense, brute_force_allowed(tq, tk, causal, window, key_mask))
    structure = pairs.allowed_mask(tq, tk, causal=causal, window=window)[0, 0]
    for q0 in range(tq):
        for q1 in range(q0 + 1, tq + 1):  # every run of queries: its key range holds all it may read
            lo, hi = pairs.key_range(q0 + tk - tq, q1 + tk - tq, tk, causal=causal, window=window)
            rows = structure[q0:q1]
            assert not rows[:, :lo].any() and not rows[:, hi:].any()
            tile = pairs.tile_mask(q0 + tk - tq, q1 + tk - tq, lo, hi, causal=causal, window=window,
                                   key_mask=key_mask)[:, 0]
            assert torch.equal(tile, dense[:, q0:q1, lo:hi])
    assert attended_pairs(tk, causal, window) == int(brute_force_allowed(tk, tk, causal, window,
                                                                         torch.ones(1, tk, dtype=torch.bool)).sum())


def test_softmax_backward_matches_autograd():
    """The LSTMN backward's replacement for torch's private ``_softmax_backward_data``."""
    a = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    a_masked = a.masked_fill(torch.tensor([[False] * 6 + [True]] * 3), float("-inf"))
    s = torch.softmax(a_masked, -1)
    grad = torch.randn(3, 7, dtype=torch.float64)
    (expected,) = torch.autograd.grad(s, a, grad)
    torch.testing.assert_close(softmax_backward(grad, s.detach()), expected)
