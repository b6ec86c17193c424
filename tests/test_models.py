"""Table-driven model tests: every variant case x both families share these bodies."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    HEAD_CLASSES,
    head_inputs,
    head_labels,
    random_batch,
    tiny_config,
    tiny_model,
)
from transformers import AutoModel

import hf_attn_variants as hv
from hf_attn_variants.hfav_attention import LSTMNAttention, VariantAttention


def attention_modules(model):
    return [m for m in model.modules() if isinstance(m, (VariantAttention, LSTMNAttention))]


def real_rows(out, mask):
    return out[mask.bool()]


def test_forward_backward_every_head(family, case):
    variant, fields = case
    ids, mask = random_batch(3, 12, "left" if family == "gpt2" else "right")
    for cls in HEAD_CLASSES[family]:
        model = tiny_model(family, variant, cls=cls, **fields).train()
        out = model(**head_inputs(cls, ids, mask), **head_labels(cls, ids))
        assert torch.isfinite(out.loss) and out.loss > 0
        out.loss.backward()
        assert all(module.variant == variant for module in attention_modules(model))


def test_a_fresh_model_holds_no_uninitialised_parameter(family, case):
    """Every parameter of a newly built model is finite, and every attention parameter is drawn by the
    spec's init (none left at its constructor's placeholder: zeros, or uninitialised memory before)."""
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    for module in attention_modules(model):
        spec = getattr(module, "spec", None)
        zeros = {n for n, (_, kind) in spec.parameters(module).items() if kind == "zeros"} if spec else set()
        for name, p in module.named_parameters():
            if not name.endswith("bias") and name not in zeros:  # biases and zeros-declared ones start at 0
                assert bool(p.ne(0).any()), f"{name} was never initialised"


def test_every_attention_parameter_learns(family, case):
    """Every parameter of every attention module (those the variant adds included) gets a gradient."""
    variant, fields = case
    ids, mask = random_batch(3, 12, "left" if family == "gpt2" else "right")
    model = tiny_model(family, variant, **fields).train()
    model(input_ids=ids, attention_mask=mask).last_hidden_state.pow(2).sum().backward()
    for module in attention_modules(model):
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"


def test_save_load_round_trip(family, case, tmp_path):
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    ids, mask = random_batch(2, 10)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    config = json.loads((tmp_path / "config.json").read_text())
    expected = hv.configuration_variants.BERT_AUTO_MAP if family == "bert" else hv.configuration_variants.GPT2_AUTO_MAP
    assert config["attention_variant"] == variant and config["auto_map"] == expected  # every Auto class of the family
    assert (tmp_path / "hfav_attention.py").exists() and (tmp_path / "hfav_kernels.py").exists()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   model(input_ids=ids, attention_mask=mask).last_hidden_state)


def test_padding_invariance(family, case):
    """A padded batch gives each sequence the outputs it gets when run alone (BERT-style
    models count positions from 0, so they are padded on the right; GPT-2-style on both sides)."""
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    for padding in ["right", "left"] if family == "gpt2" else ["right"]:
        ids, mask = random_batch(4, 11, padding, seed=3)
        with torch.no_grad():
            batched = model(input_ids=ids, attention_mask=mask).last_hidden_state
            for row in range(ids.shape[0]):
                real = mask[row].bool()
                alone = model(input_ids=ids[row, real][None]).last_hidden_state[0]
                torch.testing.assert_close(batched[row, real], alone, atol=2e-5, rtol=1e-4)


def test_heavily_padded_rows_stay_finite(family, case):
    variant, fields = case
    model = tiny_model(family, variant, **fields).train()
    ids, mask = random_batch(3, 16, None)
    mask[1:, 1:] = 0  # two rows with a single real token
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_output_attentions(family, case):
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    ids, mask = random_batch(2, 10, "right")
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert len(out.attentions) == 2
    weights = out.attentions[0]
    heads = 4 if variant != "lstmn" else (2 if family == "bert" else 1)
    assert weights.shape == (2, heads, 10, 10)
    pad_keys = ~mask.bool()[:, None, :, None].expand(-1, heads, -1, 10).transpose(-1, -2)
    real_query = mask.bool()[:, None, :, None].expand(-1, heads, -1, 10)
    assert (weights[pad_keys & real_query] == 0).all(), "real tokens attend to padding"
    row_sums = weights.sum(-1)
    if variant == "lstmn":
        assert (row_sums <= 1 + 1e-6).all()
        assert (weights[:, 0].triu() == 0).all(), "the forward LSTMN reads only the past"
        if family == "bert":
            assert (weights[:, 1].tril() == 0).all(), "the backward LSTMN reads only the future"
    elif fields.get("band_combine") == "sum":
        torch.testing.assert_close(row_sums, torch.full_like(row_sums, 2.0))
    else:
        torch.testing.assert_close(row_sums, torch.ones_like(row_sums))
    if variant == "band":
        i, j = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
        outside = (i - j < 0) | (i - j > 3) if family == "gpt2" else (i - j).abs() > 3
        assert (weights[..., outside] == 0).all()
    if family == "gpt2" and variant != "lstmn":
        assert (weights.triu(1) == 0).all()


def test_gradient_checkpointing_gives_the_same_gradients(family, case):
    variant, fields = case
    ids, mask = random_batch(2, 9)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(family, variant, **fields).train()
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
            assert all(layer.gradient_checkpointing for layer in model.modules() if hasattr(layer, "ln_1")
                       or hasattr(layer, "intermediate"))
        model(input_ids=ids, attention_mask=mask).last_hidden_state.pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_mixed_layer_variants(family):
    model = tiny_model(family, layer_variants=["band", "lstmn"])
    kinds = [type(m).__name__ for m in attention_modules(model)]
    assert [m.variant for m in attention_modules(model)] == ["band", "lstmn"]
    assert "LSTMN" in kinds[1]
    ids, mask = random_batch(2, 8)
    assert torch.isfinite(model(input_ids=ids, attention_mask=mask).last_hidden_state).all()


# (field, value): the config builds when the rule relates fields to the model's size (as stock configs do),
# and building a model raises a ValueError naming the field and the value
BAD_FIELDS = [
    ("attention_variant", "sparse"),
    ("layer_variants", ["band"]),
    ("layer_variants", ["band", "nope"]),
    ("attention_rank", 0),
    ("attention_rank", 9),
    ("attention_window", -1),
    ("attention_window", 2.5),
    ("band_combine", "product"),
    ("additive_dim", 0),
    ("lstmn_direction", "backward"),
]


@pytest.mark.parametrize(("field", "value"), BAD_FIELDS)
def test_bad_config_values_name_the_field(family, field, value):
    with pytest.raises(ValueError, match=field) as err:
        tiny_model(family, **{field: value})
    assert repr(value) in str(err.value)


SINGLE_FIELD_RULES = [("attention_variant", "sparse"), ("attention_window", -1), ("band_combine", "product"),
                      ("lstmn_direction", "backward"), ("additive_dim", 0)]


@pytest.mark.parametrize(("field", "value"), SINGLE_FIELD_RULES)
def test_single_field_rules_fail_at_construction(family, field, value):
    """A value wrong by itself fails when the config is built (as stock's @strict field checks)."""
    with pytest.raises(ValueError, match=field):
        tiny_config(family, **{field: value})


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_config_builds_like_stock_and_fails_at_model_build(family):
    """VariantBertConfig(hidden_size=32) builds like BertConfig(hidden_size=32) (12 heads do not divide 32);
    the model raises, naming the field and the value, and nothing is filled from the impossible head size."""
    config = hv.VariantBertConfig(hidden_size=32) if family == "bert" else hv.VariantGPT2Config(n_embd=32)
    assert config.attention_rank is None and config.additive_dim is None
    with pytest.raises(ValueError, match="hidden_size=32"):
        (hv.VariantBertModel if family == "bert" else hv.VariantGPT2Model)(config)
    config.num_attention_heads = 4
    config.num_hidden_layers = 1
    model = (hv.VariantBertModel if family == "bert" else hv.VariantGPT2Model)(config)
    assert model.config.attention_rank == 2 and model.config.additive_dim == 8  # head size 8


def test_gpt2_is_forward_only():
    with pytest.raises(ValueError, match="lstmn_direction"):
        tiny_model("gpt2", "lstmn", lstmn_direction="bidirectional")


@pytest.mark.parametrize("variant", ["dense", "lstmn", "band"])
def test_encoder_config_becomes_a_decoder(variant, tmp_path):
    """lstmn_direction is derived when a model is built: an encoder config set to is_decoder=True (or loaded
    with from_pretrained(path, is_decoder=True)) gives a causal model; an explicit bidirectional LSTMN does not.
    An LSTMN encoder's weights (two half-size cells) cannot load into the decoder (one full cell): transformers'
    size-mismatch error says so."""
    encoder = tiny_model("bert", variant)
    assert encoder.config.lstmn_direction is None
    encoder.save_pretrained(tmp_path)
    config = tiny_config("bert", variant)
    config.is_decoder = True
    models = [hv.VariantBertModel(config).eval()]
    if variant == "lstmn":
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            hv.VariantBertModel.from_pretrained(tmp_path, is_decoder=True)
    else:
        models.append(hv.VariantBertModel.from_pretrained(tmp_path, is_decoder=True).eval())
    for model in models:
        assert model.config.is_causal and model.config.resolved_lstmn_direction() == "forward"
        ids = random_batch(2, 10, None, seed=3)[0]
        changed = ids.clone()
        changed[:, 6] = (ids[:, 6] % 96) + 1
        with torch.no_grad():
            before, after = model(input_ids=ids).last_hidden_state, model(input_ids=changed).last_hidden_state
        torch.testing.assert_close(before[:, :6], after[:, :6])  # causal: the past ignores the future
        assert not torch.allclose(before[:, 6:], after[:, 6:])
    config = tiny_config("bert", "lstmn", lstmn_direction="bidirectional")
    config.is_decoder = True
    with pytest.raises(ValueError, match="lstmn_direction='bidirectional'"):
        hv.VariantBertModel(config)


def test_bert_cross_attention_is_refused_by_design():
    config = tiny_config("bert")
    config.is_decoder, config.add_cross_attention = True, True
    with pytest.raises(ValueError, match="add_cross_attention=True.*by design"):
        hv.VariantBertModel(config)


def test_fields_changed_after_construction_are_checked(family):
    config = tiny_config(family)
    config.attention_window = -3
    with pytest.raises(ValueError, match="attention_window"):
        hv.VariantBertModel(config) if family == "bert" else hv.VariantGPT2Model(config)


def test_too_long_and_bad_mask_inputs(family):
    model = tiny_model(family)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(input_ids=torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids=torch.ones(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 5, 5))


def test_lm_heads_are_tied_to_the_embeddings(tmp_path):
    for cls, head, embed in [(hv.VariantBertForMaskedLM, "cls.predictions.decoder", "bert.embeddings.word_embeddings"),
                             (hv.VariantGPT2LMHeadModel, "lm_head", "transformer.wte")]:
        model = tiny_model("bert" if "Bert" in cls.__name__ else "gpt2", "band", cls=cls)
        model.save_pretrained(tmp_path / cls.__name__)
        for m in (model, cls.from_pretrained(tmp_path / cls.__name__)):
            assert m.get_submodule(head).weight is m.get_submodule(embed).weight


@pytest.mark.parametrize(("family", "decoder"), [("bert", False), ("bert", True), ("gpt2", True)],
                         ids=["bert", "bert-decoder", "gpt2"])
def test_causal_models_never_read_the_future(family, case, decoder):
    """GPT-2-style models (and BERT with is_decoder=True): changing token t leaves every output
    before t unchanged. Bidirectional BERT: it changes outputs before t (a sanity check)."""
    variant, fields = case
    extra = {"is_decoder": True} if family == "bert" and decoder else {}
    model = tiny_model(family, variant, **fields, **extra)
    ids, _ = random_batch(2, 12, None, seed=5)
    changed = ids.clone()
    changed[:, 7] = (ids[:, 7] % 96) + 1
    with torch.no_grad():
        before, after = model(input_ids=ids).last_hidden_state, model(input_ids=changed).last_hidden_state
    early = (before[:, :7] - after[:, :7]).abs().max()
    assert early == 0 if decoder else early > 1e-6
    assert (before[:, 7:] - after[:, 7:]).abs().max() > 1e-6


@pytest.mark.parametrize("window", [0, 1, 3])
def test_band_receptive_field(family, window):
    """With L layers of band w, token j reaches exactly the outputs within L·w of it."""
    model = tiny_model(family, "band", attention_window=window)
    ids, _ = random_batch(1, 30, None, seed=6)
    changed = ids.clone()
    changed[0, 15] = (ids[0, 15] % 96) + 1
    with torch.no_grad():
        diff = (model(input_ids=ids).last_hidden_state - model(input_ids=changed).last_hidden_state).abs()
    reached = (diff[0].amax(-1) > 0).nonzero().flatten().tolist()
    reach = 2 * window  # two layers
    expected = range(15, 15 + reach + 1) if family == "gpt2" else range(15 - reach, 15 + reach + 1)
    assert reached == list(expected)


@pytest.mark.parametrize("variant", ["band", "low_rank_band", "additive"])
def test_one_head_models_train(variant):
    """With a single head the merged heads were non-contiguous after the band kernel, and GPT-2's
    Conv1D output projection (``.view``) refused them; every variant must train with one head."""
    torch.manual_seed(0)
    config = hv.VariantGPT2Config(vocab_size=97, n_embd=16, n_layer=2, n_head=1, n_positions=32,
                                  attention_variant=variant, attention_window=3, attention_rank=4)
    model = hv.VariantGPT2LMHeadModel(config)
    ids, mask = random_batch(2, 13, "left")
    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
