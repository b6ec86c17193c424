"""MQAR, multi-query associative recall, as Zoology generates it (Arora et al. 2023, "Zoology:
Measuring and improving recall in efficient language models"; read at HazyResearch/zoology,
``zoology/data/multiquery_ar.py``). Written here from that description:

- vocab V: keys are drawn from [1, V/2), values from [V/2, V), ``pairs`` distinct keys and distinct
  values per sequence; token 0 marks the empty slots before they are filled with noise.
- the sequence opens with the key-value context ``k1 v1 k2 v2 ...`` (2·pairs tokens); each key is then
  queried once, at an even offset ``2·g`` after the context, where the gaps g (distinct, in
  [0, (T - 2·pairs)/2)) follow Zoology's power law p(g) ∝ a·(g+1)^(a-1) with a = ``power_a`` = 0.01
  (small gaps much more likely).
- the model predicts the next token everywhere but is scored only at the query positions: the
  target at a query key is its value (Zoology shifts inputs and labels by one to the same effect).
- ``random_non_queries`` (Zoology's default True): every other slot is a uniform token in [0, V)
  (it may collide with a key or value; Zoology does the same).

``guess_baseline``: the in-context guessing baseline on a given set: at each query, guess uniformly
among the distinct value-range tokens already seen in the sequence; its expected accuracy is exact
(1/|candidates| when the answer is among them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass(frozen=True)
class Settings:
    vocab: int = 8192
    length: int = 64
    pairs: int = 4
    power_a: float = 0.01
    random_non_queries: bool = True

    def __post_init__(self):
        if not isinstance(self.length, int) or self.length < 4 or self.length % 2:
            raise ValueError(f"mqar: length={self.length!r} is invalid: expected an even integer >= 4")
        if not isinstance(self.pairs, int) or self.pairs < 1 or 4 * self.pairs > self.length:
            raise ValueError(f"mqar: pairs={self.pairs!r} is invalid: expected 1 <= pairs <= length/4 "
                             f"(length={self.length})")
        if not isinstance(self.vocab, int) or self.vocab <= self.length or self.vocab // 2 - 1 < self.pairs:
            raise ValueError(f"mqar: vocab={self.vocab!r} is invalid: expected an integer > length={self.length} "
                             "with at least `pairs` keys below vocab/2")
        if not 0 < self.power_a <= 1:
            raise ValueError(f"mqar: power_a={self.power_a!r} is invalid: expected 0 < power_a <= 1")


def gap_probabilities(space: int, power_a: float) -> np.ndarray:
    p = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return p / p.sum()


def generate(n: int, seed: int, s: Settings = Settings()) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (n, T) long, targets (n, T) long with IGNORE off the query positions)."""
    rng = np.random.default_rng(seed)
    context = 2 * s.pairs
    space = (s.length - context) // 2
    p = gap_probabilities(space, s.power_a)
    half = s.vocab // 2
    x = np.zeros((n, s.length), dtype=np.int64)
    y = np.full((n, s.length), IGNORE, dtype=np.int64)
    for b in range(n):
        keys = rng.choice(np.arange(1, half), size=s.pairs, replace=False)
        values = rng.choice(np.arange(half, s.vocab), size=s.pairs, replace=False)
        x[b, 0:context:2], x[b, 1:context:2] = keys, values
        gaps = rng.choice(space, size=s.pairs, replace=False, p=p)
        x[b, context + 2 * gaps] = keys
        y[b, context + 2 * gaps] = values
    if s.random_non_queries:
        noise = rng.integers(0, s.vocab, size=x.shape)
        x = np.where(x == 0, noise, x)
    return torch.as_tensor(x), torch.as_tensor(y)


def guess_baseline(inputs: torch.Tensor, targets: torch.Tensor, vocab: int) -> float:
    """Expected accuracy of guessing, at each query, uniformly among the distinct tokens of the value
    range [vocab/2, vocab) seen before it in the sequence."""
    half = vocab // 2
    total, hits = 0, 0.0
    for row, tgt in zip(inputs.tolist(), targets.tolist()):
        seen: set[int] = set()
        for tok, want in zip(row, tgt):
            if want != IGNORE:
                total += 1
                if want in seen:
                    hits += 1.0 / len(seen)
            if tok >= half:
                seen.add(tok)
    return hits / max(total, 1)
