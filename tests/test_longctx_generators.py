"""ListOps (LRA) and MQAR (Zoology) generators against independent checkers."""

from __future__ import annotations

import math

import pytest

from hf_attn_variants_research import listops, zoology_mqar

# ----------------------------------------------------------------------------- ListOps

def _parse(tokens: list[str], i: int = 0) -> tuple[int, int, int, int]:
    """Recursive descent over the token list: returns (value, next index, depth, max arguments seen).
    Written apart from the generator: MED by sorting, SM by a running sum."""
    t = tokens[i]
    if t.isdigit():
        return int(t), i + 1, 1, 0
    assert t in ("[MIN", "[MAX", "[MED", "[SM"), t
    args, j, deepest, widest = [], i + 1, 0, 0
    while tokens[j] != "]":
        v, j, d, w = _parse(tokens, j)
        args.append(v)
        deepest, widest = max(deepest, d), max(widest, w)
    srt = sorted(args)
    mid = len(srt) // 2
    result = {"[MIN": srt[0], "[MAX": srt[-1], "[SM": sum(args) - 10 * (sum(args) // 10),
              "[MED": srt[mid] if len(srt) % 2 else (srt[mid - 1] + srt[mid]) // 2}[t]
    return result, j + 1, deepest + 1, max(widest, len(args))


SMALL = listops.Settings(max_depth=6, max_args=5, min_length=20, max_length=120, num_train=300, num_valid=50,
                         num_test=50)


@pytest.mark.parametrize("settings,n", [(SMALL, 400), (listops.Settings(), 12)], ids=["small", "lra"])
def test_listops_every_example_evaluates_and_respects_limits(settings, n):
    examples = listops.generate(n, seed=3, settings=settings)
    lengths, depths = [], []
    for toks, label in examples:
        value, end, depth, widest = _parse(toks)
        assert end == len(toks), "one expression, nothing after it"
        assert value == label
        assert 2 <= widest <= settings.max_args
        assert depth <= settings.max_depth
        assert settings.min_length < len(toks) < settings.max_length
        lengths.append(len(toks))
        depths.append(depth)
    assert len({tuple(t) for t, _ in examples}) == n, "examples are distinct"
    # the kept lengths spread over the allowed interval, not piled at one end
    mid = (settings.min_length + settings.max_length) / 2
    assert min(lengths) < mid < max(lengths)
    assert min(depths) >= 2


def test_listops_operator_rate_is_the_scripts():
    """Without the length filter, every node above max_depth is an operator with probability 0.25 (iid)."""
    import random

    s = listops.Settings(max_depth=8, max_args=10, min_length=1, max_length=10 ** 9)
    rng = random.Random(5)
    ops = total = 0

    def walk(tree, depth):
        nonlocal ops, total
        if depth < s.max_depth:
            total += 1
            ops += not isinstance(tree, int)
        if not isinstance(tree, int):
            for c in tree[1]:
                walk(c, depth + 1)

    for _ in range(3000):
        walk(listops._tree(rng, 1, s, [10 ** 9]), 1)
    sd = math.sqrt(0.25 * 0.75 / total)
    assert abs(ops / total - 0.25) < 5 * sd


def test_listops_seeded_splits_distinct_and_encoded():
    a, b = listops.splits(1, SMALL), listops.splits(1, SMALL)
    assert a == b
    keys = [{tuple(t) for t, _ in a[k]} for k in ("train", "valid", "test")]
    assert [len(k) for k in keys] == [300, 50, 50]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    ids, mask, labels = listops.encode(a["test"], SMALL.max_length + 1)
    toks = [listops.VOCAB[i] for i in ids[0].tolist() if i != 0]
    assert toks[0] == listops.CLS and _parse(toks[1:])[0] == labels[0].item()
    assert mask.sum(1).tolist() == [len(t) + 1 for t, _ in a["test"]]
    with pytest.raises(ValueError, match="length=10"):
        listops.encode(a["test"], 10)
    with pytest.raises(ValueError, match="max_args=1"):
        listops.Settings(max_args=1)


# ----------------------------------------------------------------------------- MQAR

@pytest.mark.parametrize("length,pairs,vocab", [(64, 4, 8192), (128, 16, 300), (32, 8, 40)])
def test_mqar_brute_force(length, pairs, vocab):
    s = zoology_mqar.Settings(vocab=vocab, length=length, pairs=pairs)
    x, y = zoology_mqar.generate(200, seed=2, s=s)
    assert x.shape == y.shape == (200, length)
    assert int(x.min()) >= 0 and int(x.max()) < vocab
    for row, tgt in zip(x.tolist(), y.tolist()):
        keys, values = row[0:2 * pairs:2], row[1:2 * pairs:2]
        assert all(1 <= k < vocab // 2 for k in keys) and len(set(keys)) == pairs
        assert all(vocab // 2 <= v < vocab for v in values) and len(set(values)) == pairs
        table = dict(zip(keys, values))
        scored = [t for t, v in enumerate(tgt) if v != -100]
        assert len(scored) == pairs
        assert sorted(row[t] for t in scored) == sorted(keys), "each key queried once"
        for t in scored:
            assert t >= 2 * pairs and (t - 2 * pairs) % 2 == 0
            assert tgt[t] == table[row[t]]


def test_mqar_gaps_follow_the_power_law():
    s = zoology_mqar.Settings(vocab=8192, length=64, pairs=1)
    x, y = zoology_mqar.generate(4000, seed=0, s=s)
    gaps = ((y != -100).float().argmax(1) - 2) // 2
    p = zoology_mqar.gap_probabilities(31, 0.01)
    for g in (0, 1, 30):
        observed = (gaps == g).float().mean().item()
        assert abs(observed - p[g]) < 5 * math.sqrt(p[g] * (1 - p[g]) / 4000)


def test_mqar_guess_baseline_exact_on_a_hand_case():
    import torch

    # vocab 20: values are >= 10; query at 4 sees values {11, 13} -> 1/2; query at 5 sees {11, 13, 12}, answer
    # 19 unseen -> 0
    x = torch.tensor([[1, 11, 2, 13, 1, 12]])
    y = torch.tensor([[-100, -100, -100, -100, 11, 19]])
    assert zoology_mqar.guess_baseline(x, y, 20) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="pairs=40"):
        zoology_mqar.Settings(length=64, pairs=40)


def test_root_operator_baseline_by_hand():
    import torch

    ex = [(["[MAX", "3", "9", "]"], 9), (["[MAX", "1", "2", "]"], 2), (["[MAX", "0", "9", "]"], 9),
          (["[MIN", "3", "4", "]"], 3)]
    ids, _, labels = listops.encode(ex, 5)
    # MAX -> 9 (2 of 3), MIN -> 3: on the same four, 3 right
    assert listops.root_operator_baseline(ids, labels, ids, labels) == 0.75
    assert listops.root_operator_baseline(ids, labels, ids[:1], torch.tensor([4])) == 0.0


def test_listops_sharded_splits_are_distinct_and_reproducible():
    a = listops.splits(4, SMALL, workers=2)
    assert a == listops.splits(4, SMALL, workers=2)
    pool = [tuple(t) for k in ("train", "valid", "test") for t, _ in a[k]]
    assert len(pool) == len(set(pool)) == 400
    assert all(_parse(list(t))[0] == y for k in a for t, y in a[k])
