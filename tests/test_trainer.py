"""The heads' losses under Trainer's gradient accumulation: one step over a batch of 4 equals
two accumulated micro-batches of 2 (SGD, so the update is proportional to the gradient)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch, tiny_model
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

import hf_attn_variants as hv


class Batch(Dataset):
    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def rows_for(cls, ids, mask):
    rows = []
    for i in range(ids.shape[0]):
        row = {"input_ids": ids[i], "attention_mask": mask[i]}
        if "SequenceClassification" in cls.__name__:
            row["labels"] = torch.tensor(i % 2)
        else:  # LM heads: labels are the tokens, -100 on padding (uneven counts per micro-batch)
            row["labels"] = ids[i].masked_fill(mask[i] == 0, -100)
        rows.append(row)
    return rows


def params_after_one_step(cls, family, variant, rows, tmp_path, batch, accumulation):
    model = tiny_model(family, variant, cls=cls).train()
    args = TrainingArguments(output_dir=str(tmp_path / f"{batch}x{accumulation}"), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.1, optim="sgd",
                             max_grad_norm=0.0, lr_scheduler_type="constant", report_to=[], save_strategy="no",
                             logging_strategy="no", use_cpu=True, seed=0)
    Trainer(model=model, args=args, train_dataset=Batch(rows)).train()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize(("family", "cls"), [
    ("bert", hv.VariantBertForMaskedLM), ("bert", hv.VariantBertForSequenceClassification),
    ("gpt2", hv.VariantGPT2LMHeadModel), ("gpt2", hv.VariantGPT2ForSequenceClassification),
])
def test_gradient_accumulation_matches_a_full_batch(family, cls, tmp_path):
    ids, mask = random_batch(4, 10, "right", seed=9)
    rows = rows_for(cls, ids, mask)
    start = torch.cat([p.detach().flatten() for p in tiny_model(family, "band", cls=cls).parameters()])
    full = params_after_one_step(cls, family, "band", rows, tmp_path, 4, 1)
    accumulated = params_after_one_step(cls, family, "band", rows, tmp_path, 2, 2)
    assert (full - start).abs().max() > 1e-4  # the step did something (no gradient clipping: max_grad_norm=0)
    torch.testing.assert_close(accumulated, full, atol=1e-5, rtol=1e-4)
