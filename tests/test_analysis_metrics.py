"""Each attention metric on hand-built attention with a known answer."""

from __future__ import annotations

import math

import pytest
import torch

from hf_attn_variants.analysis.metrics import per_head_metrics

T = 8


def _diag(t=T):
    return torch.eye(t)[None, None]  # (1, 1, T, T)


def _uniform(t=T):
    return torch.full((1, 1, t, t), 1.0 / t)


def _band(w, t=T):
    i = torch.arange(t)
    m = ((i[:, None] - i[None]).abs() <= w).float()
    return (m / m.sum(-1, keepdim=True))[None, None]


def _sink(t=T):
    a = torch.zeros(t, t)
    a[:, 0] = 1.0
    return a[None, None]


def _prev(t=T):
    a = torch.zeros(t, t)
    a[0, 0] = 1.0
    for i in range(1, t):
        a[i, i - 1] = 1.0
    return a[None, None]


def test_pure_diagonal():
    m = per_head_metrics(_diag())
    assert m["entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert m["uniform_entropy"].item() == pytest.approx(math.log(T))
    assert m["mean_distance"].item() == pytest.approx(0.0)
    assert m["self_token"].item() == pytest.approx(1.0)
    assert m["mass_within_1"].item() == pytest.approx(1.0)
    assert m["sink_mass"].item() == pytest.approx(1.0 / T)  # only query 0 attends to token 0
    assert m["prev_token"].item() == pytest.approx(0.0) and m["next_token"].item() == pytest.approx(0.0)


def test_uniform():
    m = per_head_metrics(_uniform())
    assert m["entropy"].item() == pytest.approx(math.log(T), rel=1e-5)
    # mean |i - j| over all pairs of {0..T-1}: (T^2 - 1) / (3 T)
    assert m["mean_distance"].item() == pytest.approx((T * T - 1) / (3 * T), rel=1e-5)
    assert m["sink_mass"].item() == pytest.approx(1.0 / T)
    # pairs with |i-j| <= 1: T + 2(T-1), over T^2
    assert m["mass_within_1"].item() == pytest.approx((3 * T - 2) / T**2, rel=1e-5)
    assert m["mass_within_32"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("w", [1, 2, 3])
def test_band(w):
    m = per_head_metrics(_band(w), windows=(w, w - 1, 32))
    assert m[f"mass_within_{w}"].item() == pytest.approx(1.0)
    assert m[f"mass_within_{w - 1}"].item() < 1.0
    assert m["mass_within_32"].item() == pytest.approx(1.0)
    sizes = [min(T - 1, i + w) - max(0, i - w) + 1 for i in range(T)]
    assert m["entropy"].item() == pytest.approx(sum(math.log(s) for s in sizes) / T, rel=1e-5)
    if w == 1:
        assert m["mass_within_1"].item() == pytest.approx(1.0)
        assert m["prev_token"].item() == pytest.approx(sum(1 / s for s in sizes[1:]) / T, rel=1e-5)


def test_sink_column_and_special_positions():
    m = per_head_metrics(_sink())
    assert m["sink_mass"].item() == pytest.approx(1.0)
    assert m["mean_distance"].item() == pytest.approx(sum(range(T)) / T)
    special = torch.zeros(1, T, dtype=torch.bool)
    special[0, -1] = True  # mark only the last token as special: no mass there
    assert per_head_metrics(_sink(), special_positions=special)["sink_mass"].item() == pytest.approx(0.0)


def test_previous_token_head():
    m = per_head_metrics(_prev())
    assert m["prev_token"].item() == pytest.approx((T - 1) / T)
    assert m["mean_distance"].item() == pytest.approx((T - 1) / T)


def test_padding_and_heads_and_causal():
    t_real = 5
    a = torch.zeros(2, 2, T, T)
    a[:, 0] = _diag()[0, 0]
    a[0, 1, :, :t_real] = 1.0 / t_real  # row 0: uniform over its 5 real keys
    a[1, 1] = _uniform()[0, 0]
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[0, t_real:] = False
    m = per_head_metrics(a, mask)
    assert m["entropy"].shape == (2,)
    assert m["entropy"][0].item() == pytest.approx(0.0, abs=1e-6)
    expected = (t_real * math.log(t_real) + T * math.log(T)) / (t_real + T)  # mean over 13 real queries
    assert m["entropy"][1].item() == pytest.approx(expected, rel=1e-5)
    assert m["uniform_entropy"][1].item() == pytest.approx(expected, rel=1e-5)
    causal = per_head_metrics(_diag(), causal=True)
    assert causal["uniform_entropy"].item() == pytest.approx(sum(math.log(i + 1) for i in range(T)) / T)


def test_bad_shape():
    with pytest.raises(ValueError, match="weights"):
        per_head_metrics(torch.ones(2, 3, 4))
