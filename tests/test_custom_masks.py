"""Custom 4-D attention masks (stock ``test_custom_4d_attention_mask`` semantics): dense layers apply a
user's (B or 1, 1, T, T_past + T) mask exactly as given, in bool, integer or additive float form; the
other variants refuse it with the reason (their kernels take a 2-D padding mask and their own pairs rule)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch, tiny_model


def full_mask(family: str, mask: torch.Tensor) -> torch.Tensor:
    """The 4-D bool mask a stock model builds from a 2-D padding mask (causal for GPT-2), True = attend;
    padded query rows read themselves (finite outputs, never used)."""
    t = mask.shape[-1]
    allowed = mask.bool()[:, None, None, :].expand(-1, 1, t, -1)
    if family == "gpt2":
        allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()
    return allowed | torch.eye(t, dtype=torch.bool)


@pytest.mark.parametrize("form", ["bool", "int", "additive"])
@pytest.mark.parametrize("reference", [False, True], ids=["sdpa", "weights"])
def test_a_4d_mask_equals_the_2d_mask(family, form, reference):
    model = tiny_model(family, "dense")
    ids, mask = random_batch(3, 8, "right", seed=11)
    allowed = full_mask(family, mask)
    custom = {"bool": allowed, "int": allowed.long(),
              "additive": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)}[form]
    positions = torch.arange(8).expand(3, -1)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         output_attentions=reference).last_hidden_state
        got = model(input_ids=ids, attention_mask=custom, position_ids=positions,
                    output_attentions=reference)
    real = mask.bool()
    torch.testing.assert_close(got.last_hidden_state[real], expected[real], atol=1e-5, rtol=1e-4)
    if reference:
        assert len(got.attentions) == model.config.num_hidden_layers


def test_shared_prefix_packing_equals_separate_forwards():
    """Two continuations b1, b2 of one prefix p in one row [p, b1, b2]: b2 reads p and itself, not b1
    (positions restart after p), and its logits equal those of [p, b2] alone."""
    model = tiny_model("gpt2", "dense", cls=None)
    ids = random_batch(1, 10, None, seed=12)[0]
    p, b1, b2 = ids[:, :4], ids[:, 4:7], ids[:, 7:10]
    packed = torch.cat([p, b1, b2], dim=1)
    allowed = torch.zeros(1, 1, 10, 10, dtype=torch.bool)
    causal = torch.ones(10, 10, dtype=torch.bool).tril()
    allowed[0, 0, :7, :7] = causal[:7, :7]  # p and b1: causal
    allowed[0, 0, 7:, :4] = True  # b2 reads p
    allowed[0, 0, 7:, 7:] = causal[:3, :3]  # and itself, causally
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 4, 5, 6]])
    with torch.no_grad():
        out = model(input_ids=packed, attention_mask=allowed, position_ids=positions).last_hidden_state
        alone_1 = model(input_ids=torch.cat([p, b1], 1)).last_hidden_state
        alone_2 = model(input_ids=torch.cat([p, b2], 1)).last_hidden_state
    torch.testing.assert_close(out[:, :7], alone_1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out[:, 7:], alone_2[:, 4:], atol=1e-5, rtol=1e-4)


def test_other_variants_refuse_4d_masks(family, case):
    variant, fields = case
    if variant == "dense":
        pytest.skip("dense takes custom masks")
    model = tiny_model(family, variant, **fields)
    ids = random_batch(1, 5, None, seed=13)[0]
    with pytest.raises(ValueError, match="4-D attention_mask cannot be honoured"):
        model(input_ids=ids, attention_mask=torch.ones(1, 1, 5, 5, dtype=torch.bool))


def test_a_4d_mask_of_the_wrong_shape_is_named(family):
    model = tiny_model(family, "dense")
    with pytest.raises(ValueError, match=r"a 4-D mask must be"):
        model(input_ids=torch.ones(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 1, 5, 4))
