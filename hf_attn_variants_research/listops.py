"""ListOps as the Long Range Arena generates it (Tay et al., ICLR 2021; Nangia & Bowman 2018).

Written here from the LRA repository's generator (``lra_benchmarks/data/listops.py``, read at
google-research/long-range-arena): the settings below are that script's flag defaults.

- A tree is built top-down from depth 1. Below ``max_depth`` a node is an operator with
  probability ``OPERATOR_P`` = 0.25 (the script's ``VALUE_P``: a draw ``r > 0.25`` makes a value),
  at ``max_depth`` it is always a value. A value is a digit 0-9; an operator is one of
  MIN, MAX, MED (median, truncated to int), SM (sum modulo 10) with 2..``max_args`` arguments.
- ``length`` counts operators, closing brackets and digits (the script's count: 2 per operator,
  1 per value); a tree is kept when ``min_length < length < max_length`` (strict, as there), and
  examples are distinct (the script collects them in a set) before being split into
  train/valid/test (96k/2k/2k).
- Tokens as LRA's input pipeline sees them: operators ``[MIN [MAX [MED [SM``, the closing
  bracket ``]``, digits; the script's parentheses are dropped by that pipeline, and so never made
  here. The label is the value of the expression (10 classes).

Our generator uses its own seeded ``random.Random`` (the script seeds nothing), so our examples are
not LRA's files; they follow the same distribution.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
DIGITS = tuple(str(d) for d in range(10))
PAD, CLS = "<pad>", "<cls>"
VOCAB = (PAD, CLS, *OPERATORS, END, *DIGITS)  # token id = index
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
OPERATOR_P = 0.25
NUM_CLASSES = 10


@dataclass(frozen=True)
class Settings:
    """The LRA script's flags (defaults = its defaults)."""

    max_depth: int = 10
    max_args: int = 10
    min_length: int = 500
    max_length: int = 2000
    num_train: int = 96_000
    num_valid: int = 2_000
    num_test: int = 2_000

    def __post_init__(self):
        for name in ("max_depth", "min_length", "max_length", "num_train", "num_valid", "num_test"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"listops: {name}={getattr(self, name)!r} is invalid: expected an integer >= 1")
        if not isinstance(self.max_args, int) or self.max_args < 2:
            raise ValueError(f"listops: max_args={self.max_args!r} is invalid: expected an integer >= 2")
        if self.max_length - self.min_length < 2:
            raise ValueError(f"listops: min_length={self.min_length} and max_length={self.max_length} leave no "
                             "length L with min_length < L < max_length")


def _tree(rng: random.Random, depth: int, s: Settings, budget: list[int]):
    """One tree: an int, or (operator, [children]). ``budget`` stops runaway trees early (they would be
    rejected for length anyway; the distribution of kept trees is unchanged)."""
    if depth < s.max_depth and rng.random() <= OPERATOR_P:
        budget[0] -= 2
        n = rng.randint(2, s.max_args)
        children = []
        for _ in range(n):
            if budget[0] < 0:
                return None
            c = _tree(rng, depth + 1, s, budget)
            if c is None:
                return None
            children.append(c)
        return (rng.choice(OPERATORS), children)
    budget[0] -= 1
    return rng.choice(range(10))



def tokens(tree) -> list[str]:
    if isinstance(tree, int):
        return [str(tree)]
    op, children = tree
    out = [op]
    for c in children:
        out += tokens(c)
    return out + [END]


def value(tree) -> int:
    """The expression's value (MED as the script computes it: int(numpy median), i.e. the mean of the
    two middle values truncated for an even count)."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    vals = [value(c) for c in children]
    if op == "[MIN":
        return min(vals)
    if op == "[MAX":
        return max(vals)
    if op == "[MED":
        return int(statistics.median(vals))
    return sum(vals) % 10


def depth(tree) -> int:
    """Depth as the generator counts it: a lone value is depth 1, an operator adds 1 to its deepest child."""
    return 1 if isinstance(tree, int) else 1 + max(depth(c) for c in tree[1])


def generate(n: int, seed: int, settings: Settings = Settings()) -> list[tuple[list[str], int]]:
    """``n`` distinct examples (token list, label), seeded."""
    rng = random.Random(seed)
    seen: set[tuple[str, ...]] = set()
    out = []
    while len(out) < n:
        budget = [settings.max_length]
        tree = _tree(rng, 1, settings, budget)
        if tree is None:
            continue
        toks = tokens(tree)
        if not settings.min_length < len(toks) < settings.max_length:
            continue
        key = tuple(toks)
        if key in seen:
            continue
        seen.add(key)
        out.append((toks, value(tree)))
    return out


def _shard(args) -> list[tuple[list[str], int]]:
    n, seed, settings = args
    return generate(n, seed, settings)


def splits(seed: int, settings: Settings = Settings(), workers: int = 1) -> dict[str, list[tuple[list[str], int]]]:
    """train/valid/test, distinct across splits (one pool, then cut, as the script does).

    ``workers`` > 1 draws the pool in 4·workers shards (shard i seeded ``(seed, i)``) in processes and
    drops duplicates across shards; the result depends on ``workers``."""
    total = settings.num_train + settings.num_valid + settings.num_test
    if workers <= 1:
        pool = generate(total, seed, settings)
    else:
        import multiprocessing

        shards = 4 * workers
        per = -(-total // shards) + 8
        with multiprocessing.get_context("fork").Pool(workers) as p:
            parts = p.map(_shard, [(per, hash((seed, i)) & 0xFFFFFFFF, settings) for i in range(shards)])
        seen, pool = set(), []
        for part in parts:
            for toks, y in part:
                if tuple(toks) not in seen:
                    seen.add(tuple(toks))
                    pool.append((toks, y))
        if len(pool) < total:
            pool += [e for e in generate(total, seed + 7919, settings) if tuple(e[0]) not in seen][:total - len(pool)]
        pool = pool[:total]
    a, b = settings.num_train, settings.num_train + settings.num_valid
    return {"train": pool[:a], "valid": pool[a:b], "test": pool[b:]}


def encode(examples: list[tuple[list[str], int]], length: int):
    """(input_ids (N, length) with CLS first and PAD after, attention_mask, labels) as torch tensors."""
    import torch

    ids = torch.full((len(examples), length), TOKEN_ID[PAD], dtype=torch.long)
    for i, (toks, _) in enumerate(examples):
        row = [TOKEN_ID[CLS]] + [TOKEN_ID[t] for t in toks]
        if len(row) > length:
            raise ValueError(f"listops: an example of {len(row)} tokens (CLS included) exceeds length={length}")
        ids[i, :len(row)] = torch.tensor(row)
    labels = torch.tensor([y for _, y in examples], dtype=torch.long)
    return ids, (ids != TOKEN_ID[PAD]).long(), labels


def root_operator_baseline(train_ids, train_labels, test_ids, test_labels) -> float:
    """Accuracy on test of predicting, from the root operator alone (the token after CLS), the label most
    frequent for that operator on train: a shallow rule that reads one token and no argument."""
    best = {}
    for op in set(train_ids[:, 1].tolist()):
        best[op] = int(train_labels[train_ids[:, 1] == op].bincount(minlength=NUM_CLASSES).argmax())
    pred = [best.get(op, 0) for op in test_ids[:, 1].tolist()]
    return sum(int(p == y) for p, y in zip(pred, test_labels.tolist())) / len(pred)
