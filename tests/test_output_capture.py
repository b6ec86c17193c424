"""Hidden states and attention weights come from transformers' output capturing (``_can_record_outputs`` and
``capture_outputs`` hooks), as in stock GPT-2 and BERT: every variant, both families, the config defaults,
selected layers, and heads that pass the flags through."""

from __future__ import annotations

import torch
from conftest import HEAD_CLASSES, head_inputs, random_batch, tiny_model
from transformers.utils.output_capturing import CompileableContextVar


def test_hidden_states_and_attentions_are_captured(family, case):
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    ids, mask = random_batch(2, 9, "right", seed=3)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        plain = model(input_ids=ids, attention_mask=mask)
    layers = model.config.num_hidden_layers
    assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
    assert plain.hidden_states is None and plain.attentions is None
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    torch.testing.assert_close(out.last_hidden_state, plain.last_hidden_state)
    embeddings = model.get_input_embeddings()(ids)
    assert not torch.allclose(out.hidden_states[0], out.hidden_states[1])
    assert out.hidden_states[0].shape == embeddings.shape
    for weights in out.attentions:  # the weights each layer's attention returned (low_rank_band sum: two modules)
        assert weights.shape[-2:] == (9, 9) and torch.isfinite(weights).all() and (weights >= 0).all()
        assert weights.sum() > 0


def test_selected_layers_and_config_defaults(family):
    model = tiny_model(family, "band")
    ids = random_batch(2, 7, None, seed=4)[0]
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
        picked = model(input_ids=ids, output_hidden_states=[0, -1]).hidden_states
        model.config.output_hidden_states = True  # (config.output_attentions needs "eager", as stock)
        from_config = model(input_ids=ids)
        off = model(input_ids=ids, output_hidden_states=False, output_attentions=False)
    assert len(picked) == len(full) and picked[1] is None
    torch.testing.assert_close(picked[0], full[0])
    torch.testing.assert_close(picked[-1], full[-1])
    assert len(from_config.hidden_states) == len(full)
    assert off.hidden_states is None and off.attentions is None


def test_heads_pass_the_flags_and_capture_is_not_chained(family, monkeypatch):
    """Only the base model captures (a chained capture would mix outputs up), and every head returns them."""
    depth, deepest = [0], [0]
    original_set, original_reset = CompileableContextVar.set, CompileableContextVar.reset

    def counting_set(self, value):
        depth[0] += 1
        deepest[0] = max(deepest[0], depth[0])
        return original_set(self, value)

    def counting_reset(self, token):
        depth[0] -= 1
        return original_reset(self, token)

    monkeypatch.setattr(CompileableContextVar, "set", counting_set)
    monkeypatch.setattr(CompileableContextVar, "reset", counting_reset)
    ids, mask = random_batch(2, 6, None, seed=5)
    for cls in HEAD_CLASSES[family]:
        model = tiny_model(family, "dense", cls=cls)
        with torch.no_grad():
            out = model(**head_inputs(cls, ids, mask), output_hidden_states=True, output_attentions=True)
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1, cls.__name__
        assert len(out.attentions) == model.config.num_hidden_layers, cls.__name__
    assert deepest[0] == 1


def test_tuple_outputs_keep_the_stock_order(family):
    model = tiny_model(family, "dense")
    ids = random_batch(1, 5, None, seed=6)[0]
    with torch.no_grad():
        as_dict = model(input_ids=ids, output_hidden_states=True)
        as_tuple = model(input_ids=ids, output_hidden_states=True, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], as_dict.last_hidden_state)
    assert any(isinstance(t, tuple) and len(t) == len(as_dict.hidden_states) for t in as_tuple[1:])
