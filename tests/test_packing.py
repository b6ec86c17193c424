"""Padding-free packing (several sequences in one row, ``position_ids`` restarting at each) is refused with
a clear error by every variant: the kernels read a row as one sequence (docs/compat.md); left padding's
positions and cached decoding are not mistaken for it."""

from __future__ import annotations

import pytest
import torch
from conftest import random_batch, tiny_model


def test_packed_rows_are_refused(family, case):
    variant, fields = case
    model = tiny_model(family, variant, **fields)
    ids = random_batch(1, 9, None, seed=2)[0]
    packed = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0, 1]])
    with pytest.raises(ValueError, match="position_ids restart within a row"):
        model(input_ids=ids, position_ids=packed)


def test_padding_positions_are_not_packing(family):
    """Positions that generate() gives left-padded rows (1 on padding, then 0, 1, ...) are accepted."""
    model = tiny_model(family, "band")
    ids, mask = random_batch(2, 6, "left" if family == "gpt2" else "right", seed=3)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    assert torch.isfinite(out).all()
