"""The heads of both families (stock GPT-2 and BERT's set): forward shapes, losses, the loss keyword
arguments transformers' loss functions take (``shift_labels``, ``num_items_in_batch``, ``ignore_index``),
Trainer's ``accepts_loss_kwargs`` contract, and save/load through the Auto classes and
``trust_remote_code``."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    CHOICE_HEADS,
    HEAD_CLASSES,
    NUM_CHOICES,
    head_inputs,
    head_labels,
    head_logits,
    random_batch,
    tiny_model,
)
from hub_helpers import AUTO_CLASS_NAME, load_with_remote_code
from transformers import Trainer, TrainingArguments

import hf_attn_variants as hv

HEADS = [(family, cls) for family, classes in HEAD_CLASSES.items() for cls in classes]
HEAD_IDS = [cls.__name__ for _, cls in HEADS]
VOCAB, HIDDEN, B, T = 97, 32, 3, 9


def expected_shapes(cls) -> list[tuple[int, ...]]:
    """What a head returns first (and second, for two-headed models), for a (B, T) batch."""
    name = cls.__name__
    if name.endswith(("SequenceClassification", "NextSentencePrediction")):
        return [(B, 2)]
    if name.endswith("TokenClassification"):
        return [(B, T, 2)]
    if name.endswith("QuestionAnswering"):
        return [(B, T), (B, T)]
    if name.endswith("MultipleChoice"):
        return [(B, NUM_CHOICES)]
    if name.endswith("ForPreTraining"):
        return [(B, T, VOCAB), (B, 2)]
    if name.endswith("DoubleHeadsModel"):
        return [(B, NUM_CHOICES, T, VOCAB), (B, NUM_CHOICES)]
    return [(B, T, VOCAB)]


@pytest.mark.parametrize(("family", "cls"), HEADS, ids=HEAD_IDS)
@pytest.mark.parametrize("variant", ["dense", "band", "lstmn"])
def test_head_shapes_loss_and_gradients(family, cls, variant):
    model = tiny_model(family, variant, cls=cls).train()
    ids, mask = random_batch(B, T, "left" if family == "gpt2" else "right", seed=1)
    out = model(**head_inputs(cls, ids, mask))
    assert out.loss is None
    shapes = [tuple(t.shape) for t in out.to_tuple()[: len(expected_shapes(cls))]]
    assert shapes == expected_shapes(cls)
    out = model(**head_inputs(cls, ids, mask), **head_labels(cls, ids))
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    grads = [p.grad for p in model.base_model.parameters() if p.requires_grad]
    assert sum(g.abs().sum() for g in grads if g is not None) > 0


@pytest.mark.parametrize(("family", "cls"), [h for h in HEADS if h[1].__name__ in AUTO_CLASS_NAME],
                         ids=[i for i, h in zip(HEAD_IDS, HEADS) if h[1].__name__ in AUTO_CLASS_NAME])
def test_head_saves_and_loads_through_its_auto_class(family, cls, tmp_path):
    """In-process (the registered Auto class) and from the folder's own code (trust_remote_code)."""
    import transformers

    model = tiny_model(family, "band", cls=cls)
    ids, mask = random_batch(B, T, "right", seed=2)
    with torch.no_grad():
        expected = head_logits(model(**head_inputs(cls, ids, mask)))
    model.save_pretrained(tmp_path)
    auto = getattr(transformers, AUTO_CLASS_NAME[cls.__name__])
    for loaded in (auto.from_pretrained(tmp_path).eval(), load_with_remote_code(auto, tmp_path)):
        assert type(loaded).__name__ == cls.__name__
        with torch.no_grad():
            torch.testing.assert_close(head_logits(loaded(**head_inputs(cls, ids, mask))), expected)


def test_double_heads_loads_with_its_own_class(tmp_path):
    """GPT-2's DoubleHeadsModel has no Auto class (as in transformers): it loads with its class."""
    cls = hv.VariantGPT2DoubleHeadsModel
    model = tiny_model("gpt2", "band", cls=cls)
    ids, mask = random_batch(B, T, "left", seed=2)
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    with torch.no_grad():
        a, b = model(**head_inputs(cls, ids, mask)), loaded(**head_inputs(cls, ids, mask))
    torch.testing.assert_close(a.mc_logits, b.mc_logits)
    torch.testing.assert_close(a.logits, b.logits)


def test_choice_heads_score_each_choice_alone():
    """A multiple-choice head scores choice c from choice c's tokens only."""
    for family, cls in (("bert", hv.VariantBertForMultipleChoice), ("gpt2", hv.VariantGPT2DoubleHeadsModel)):
        model = tiny_model(family, "dense", cls=cls)
        ids, mask = random_batch(B, T, None, seed=4)
        inputs = head_inputs(cls, ids, mask)
        changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
        changed["input_ids"][:, 1, 3] = (changed["input_ids"][:, 1, 3] % 96) + 1
        with torch.no_grad():
            a = model(**inputs)
            b = model(**changed)
        scores = (lambda o: o.mc_logits) if family == "gpt2" else (lambda o: o.logits)
        torch.testing.assert_close(scores(a)[:, 0], scores(b)[:, 0])
        assert not torch.allclose(scores(a)[:, 1], scores(b)[:, 1])


def test_bert_lm_head_generates_like_its_greedy_loop():
    model = tiny_model("bert", "band", cls=hv.VariantBertLMHeadModel)
    assert model.config.is_decoder
    ids = random_batch(2, 4, None, seed=6)[0]
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
        x = ids
        for _ in range(5):
            x = torch.cat([x, model(input_ids=x).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generated, x)


# ----------------------------------------------------------------------------- loss keyword arguments

LM_HEADS = [("gpt2", hv.VariantGPT2LMHeadModel), ("bert", hv.VariantBertLMHeadModel)]


@pytest.mark.parametrize(("family", "cls"), LM_HEADS, ids=[c.__name__ for _, c in LM_HEADS])
def test_causal_lm_loss_honours_shift_labels_and_num_items(family, cls):
    """As stock (transformers' ForCausalLMLoss): given shift_labels, the loss follows them and not labels;
    with num_items_in_batch it is the summed loss over that count; ignore_index drops those targets."""
    model = tiny_model(family, "dense", cls=cls)
    ids = random_batch(2, 8, None, seed=7)[0]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        targets = torch.roll(ids, 3, dims=1)
        manual = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss = model(input_ids=ids, labels=ids, shift_labels=targets).loss
        torch.testing.assert_close(loss, manual)
        assert torch.equal(model(input_ids=ids, labels=ids % 5, shift_labels=targets).loss, loss)
        summed = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        torch.testing.assert_close(model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(40)).loss,
                                   summed / 40)
        ignored = model(input_ids=ids, labels=ids, ignore_index=int(ids[0, 1])).loss
        assert not torch.allclose(ignored, model(input_ids=ids, labels=ids).loss)


@pytest.mark.parametrize(("family", "cls"), HEADS, ids=HEAD_IDS)
def test_trainer_scales_exactly_the_mean_losses(family, cls, tmp_path):
    """Trainer divides a head's loss by the accumulation steps unless the head takes ``num_items_in_batch``
    (accepts_loss_kwargs): exactly the heads whose loss goes through transformers' loss functions with it."""
    model = tiny_model(family, "dense", cls=cls)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    takes_counts = cls in (hv.VariantGPT2LMHeadModel, hv.VariantBertLMHeadModel, hv.VariantBertForMaskedLM)
    assert Trainer(model=model, args=args).model_accepts_loss_kwargs is takes_counts
    if not takes_counts:  # a mean loss: the count changes nothing
        ids, mask = random_batch(B, T, None, seed=8)
        inputs, labels = head_inputs(cls, ids, mask), head_labels(cls, ids)
        with torch.no_grad():
            assert torch.equal(model(**inputs, **labels).loss,
                               model(**inputs, **labels, num_items_in_batch=torch.tensor(1000)).loss)


def test_choice_head_table_is_complete():
    assert set(CHOICE_HEADS) <= {cls for _, cls in HEADS}
