"""Synthetic probes of what an attention variant can compute: seeded generators with parameters.

Every probe returns a ``Batch``: ``inputs`` (B, T) token ids (or (B, T, F) floats for regression),
``targets`` (B, T) with ``IGNORE`` where a position is not scored (float targets: NaN), and the
number of output classes (0 = regression). A model reads every position causally and is scored at
the target positions only. ``check_<probe>`` recomputes the targets of a batch with plain Python
loops (the brute-force checkers used by the tests).

- ``local``: binary; is the fixed n-gram ``0, 1, ..., n-1`` inside the last ``window`` tokens? A
  distractor copy is planted before the window half of the time. Parameter: ``ngram``.
- ``long_range``: binary, scored at the last position j = T-1: is x[j-d] == x[j]? The query token
  x[j] occurs nowhere else, so the label needs exactly the pair at distance d. Parameter:
  ``distance`` (T = distance + ``margin``); a causal band of width w stacked L times reaches L·w.
- ``mqar``: multi-query associative recall (scaled-down MQAR, Arora et al. 2023): ``pairs``
  key-value pairs, then queries (keys, each pair once, in random order) among noise tokens; the
  target at a query is its value. Keys, values and noise come from disjoint thirds of the vocab.
- ``regression``: in-context linear regression: x_i ~ N(0, I_dim), y_i = wᵀx_i, w ~ N(0, I_dim / dim)
  per sequence (F = dim_max + 1 features, zero-padded). ``packed`` (default): ``examples - scored``
  context tokens [x_i, y_i], then ``scored`` query tokens [x_q, 0] whose targets are their y (one
  attention layer can read the answer off the context). ``interleaved`` (Garg et al. 2022): tokens
  [x_i, 0], [0, y_i], ...; targets at the last ``scored`` x-tokens. Metric: R² = 1 - MSE / E[y²].
- ``induction``: a random segment of random length repeated later at a random offset; targets are
  the next tokens inside the second copy (needs an induction head: two layers, Olsson et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) long, or (B, T, F) float
    targets: torch.Tensor  # (B, T) long with IGNORE, or float with NaN
    num_classes: int  # 0 = regression


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- local n-gram

def local(batch: int, seed, *, ngram: int = 3, window: int = 8, length: int = 32, vocab: int = 16) -> Batch:
    if not 1 <= ngram <= window < length:
        raise ValueError(f"local probe: need 1 <= ngram={ngram} <= window={window} < length={length}")
    rng = _rng(seed)
    x = rng.integers(0, vocab, size=(batch, length))
    pattern = np.arange(ngram)
    for b in range(batch):
        if rng.random() < 0.5:  # distractor before the window
            start = rng.integers(0, length - window - ngram + 1) if length - window >= ngram else None
            if start is not None:
                x[b, start:start + ngram] = pattern
        if rng.random() < 0.5:  # the real thing, fully inside the window
            start = rng.integers(length - window, length - ngram + 1)
            x[b, start:start + ngram] = pattern
    targets = np.full((batch, length), IGNORE)
    windows = np.lib.stride_tricks.sliding_window_view(x[:, length - window:], ngram, axis=1)  # (B, n_win, ngram)
    targets[:, -1] = (windows == pattern).all(-1).any(-1)
    return Batch(torch.as_tensor(x), torch.as_tensor(targets), 2)


def check_local(b: Batch, ngram: int, window: int) -> list[int]:
    out = []
    for row in b.inputs.tolist():
        tail = row[len(row) - window:]
        out.append(int(any(tail[i:i + ngram] == list(range(ngram)) for i in range(window - ngram + 1))))
    return out


# ----------------------------------------------------------------------------- long range

def long_range(batch: int, seed, *, distance: int = 8, margin: int = 8, vocab: int = 16) -> Batch:
    if distance < 1 or margin < 0 or vocab < 3:
        raise ValueError(f"long_range probe: need distance >= 1, margin >= 0, vocab >= 3, got "
                         f"{distance}, {margin}, {vocab}")
    rng = _rng(seed)
    length = distance + 1 + margin
    query = rng.integers(0, vocab, size=batch)
    # every other token avoids the query token: draw from vocab - 1 values and skip the query
    x = rng.integers(0, vocab - 1, size=(batch, length))
    x = x + (x >= query[:, None])
    x[:, -1] = query
    positive = rng.random(batch) < 0.5
    x[positive, -1 - distance] = query[positive]
    targets = np.full((batch, length), IGNORE)
    targets[:, -1] = positive
    return Batch(torch.as_tensor(x), torch.as_tensor(targets), 2)


def check_long_range(b: Batch, distance: int) -> list[int]:
    out = []
    for row in b.inputs.tolist():
        j = len(row) - 1
        assert row.count(row[j]) <= 2, "the query token occurs at most at j and j-d"
        out.append(int(row[j - distance] == row[j]))
    return out


# ----------------------------------------------------------------------------- MQAR

def mqar(batch: int, seed, *, pairs: int = 8, length: int = 64, vocab: int = 256) -> Batch:
    third = vocab // 3
    if pairs < 1 or 4 * pairs > length or pairs > third:
        raise ValueError(f"mqar probe: need 1 <= pairs={pairs}, 4·pairs <= length={length}, pairs <= vocab/3={third}")
    rng = _rng(seed)
    x = rng.integers(2 * third, vocab, size=(batch, length))  # noise
    targets = np.full((batch, length), IGNORE)
    for b in range(batch):
        keys = rng.choice(third, size=pairs, replace=False)
        values = third + rng.integers(0, third, size=pairs)
        x[b, 0:2 * pairs:2], x[b, 1:2 * pairs:2] = keys, values
        slots = np.sort(rng.choice(length - 2 * pairs, size=pairs, replace=False)) + 2 * pairs
        order = rng.permutation(pairs)
        x[b, slots] = keys[order]
        targets[b, slots] = values[order]
    return Batch(torch.as_tensor(x), torch.as_tensor(targets), vocab)


def check_mqar(b: Batch, pairs: int, vocab: int) -> list[list[int]]:
    out = []
    for row in b.inputs.tolist():
        table = {row[2 * i]: row[2 * i + 1] for i in range(pairs)}
        out.append([table[t] if i >= 2 * pairs and t in table else IGNORE for i, t in enumerate(row)])
    return out


# ----------------------------------------------------------------------------- in-context regression

def regression(batch: int, seed, *, dim: int = 8, examples: int = 32, dim_max: int | None = None,
               scored: int = 8, layout: str = "packed") -> Batch:
    dim_max = dim_max or dim
    if not 1 <= dim <= dim_max or not 1 <= scored <= examples:
        raise ValueError(f"regression probe: need 1 <= dim={dim} <= dim_max={dim_max}, 1 <= scored={scored} "
                         f"<= examples={examples}")
    if layout not in ("packed", "interleaved"):
        raise ValueError(f"regression probe: layout={layout!r} is invalid: expected packed or interleaved")
    rng = _rng(seed)
    w = rng.standard_normal((batch, dim)) / np.sqrt(dim)
    if layout == "packed":  # examples - scored context tokens [x_i, y_i], then scored queries [x_q, 0]
        xs = rng.standard_normal((batch, examples, dim))
        ys = np.einsum("bnd,bd->bn", xs, w)
        tokens = np.zeros((batch, examples, dim_max + 1), dtype=np.float32)
        tokens[:, :, :dim] = xs
        context = examples - scored
        tokens[:, :context, dim_max] = ys[:, :context]
        targets = np.full((batch, examples), np.nan, dtype=np.float32)
        targets[:, context:] = ys[:, context:]
        return Batch(torch.as_tensor(tokens), torch.as_tensor(targets), 0)
    xs = rng.standard_normal((batch, examples, dim))
    ys = np.einsum("bnd,bd->bn", xs, w)
    tokens = np.zeros((batch, 2 * examples, dim_max + 1), dtype=np.float32)
    tokens[:, 0::2, :dim] = xs
    tokens[:, 1::2, dim_max] = ys
    targets = np.full((batch, 2 * examples), np.nan, dtype=np.float32)
    targets[:, 2 * (examples - scored)::2] = ys[:, examples - scored:]
    return Batch(torch.as_tensor(tokens), torch.as_tensor(targets), 0)


def check_regression(b: Batch, dim: int, layout: str = "packed") -> bool:
    """Every target (and every y the model sees) is w·x for one w per sequence, found by least squares
    from the visible (x, y) pairs; no target's y is visible in the input."""
    inputs, targets = b.inputs.double().numpy(), b.targets.double().numpy()
    for row, target in zip(inputs, targets):
        if layout == "packed":
            scored = ~np.isnan(target)
            xs, ys = row[:, :dim], np.where(scored, target, row[:, -1])
            if np.any(row[scored, -1] != 0):
                return False
            if not np.all(scored[np.argmax(scored):]):  # queries come last
                return False
        else:
            xs, ys = row[0::2, :dim], row[1::2, -1]
            scored = ~np.isnan(target[0::2])
            if not np.allclose(target[0::2][scored], ys[scored], atol=1e-5):
                return False
        known = ~scored
        w, *_ = np.linalg.lstsq(xs[known], ys[known], rcond=None)
        if not np.allclose(xs @ w, ys, atol=1e-4):
            return False
    return True


# ----------------------------------------------------------------------------- induction

def induction(batch: int, seed, *, length: int = 64, vocab: int = 32) -> Batch:
    if length < 16:
        raise ValueError(f"induction probe: need length >= 16, got {length}")
    rng = _rng(seed)
    x = rng.integers(0, vocab, size=(batch, length))
    targets = np.full((batch, length), IGNORE)
    for b in range(batch):
        seg = int(rng.integers(4, length // 4 + 1))
        first = int(rng.integers(0, length - 2 * seg + 1))
        second = int(rng.integers(first + seg, length - seg + 1))
        x[b, second:second + seg] = x[b, first:first + seg]
        targets[b, second:second + seg - 1] = x[b, second + 1:second + seg]
    return Batch(torch.as_tensor(x), torch.as_tensor(targets), vocab)


def check_induction(b: Batch) -> bool:
    """Every scored target is the next token, and the token before it already occurred followed by it."""
    for row, target in zip(b.inputs.tolist(), b.targets.tolist()):
        for t, y in enumerate(target):
            if y == IGNORE:
                continue
            if y != row[t + 1]:
                return False
            if not any(row[s] == row[t] and row[s + 1] == y for s in range(t)):
                return False
    return True


PROBES = {"local": local, "long_range": long_range, "mqar": mqar, "regression": regression, "induction": induction}


def make(name: str, batch: int, seed, **params) -> Batch:
    if name not in PROBES:
        raise ValueError(f"probe={name!r} is unknown: expected one of {sorted(PROBES)}")
    return PROBES[name](batch, seed, **params)


DEFAULT_VOCAB = {"local": 16, "long_range": 16, "mqar": 256, "induction": 32}


def vocab_size(name: str, params: dict) -> int:
    """Token vocabulary of a probe for these parameters (0 for the float-input regression probe)."""
    return int(params.get("vocab", DEFAULT_VOCAB.get(name, 0)))


def max_length(name: str, params: dict) -> int:
    """Sequence length a probe produces for these parameters (for position embeddings)."""
    if name == "long_range":
        return params.get("distance", 8) + 1 + params.get("margin", 8)
    if name == "regression":
        return params.get("examples", 32) * (2 if params.get("layout", "packed") == "interleaved" else 1)
    return params.get("length", {"local": 32, "mqar": 64, "induction": 64}[name])


def mqar_guess_baseline(batch: Batch, pairs: int) -> float:
    """The in-context guessing baseline of an MQAR batch: the expected accuracy of guessing, at each
    query, uniformly among the distinct values present in that sequence's key-value pairs (the right
    value is always among them). A model above it recalls which value goes with the key."""
    x = batch.inputs.numpy()
    scored = (batch.targets.numpy() != IGNORE).sum(1)
    distinct = np.array([len(set(row[1:2 * pairs:2].tolist())) for row in x])
    return float((scored / distinct).sum() / scored.sum())
