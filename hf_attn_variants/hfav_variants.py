"""One home per variant: the registry every table of hf-attn-variants reads from.

Each variant is one class deriving from ``VariantSpec``; its body is the whole spec (the fields
below). Defining the class checks the spec (a missing or malformed field raises ``TypeError``
at import, never after a training run) and registers it in ``VARIANTS`` (name -> spec class).
Specs are read, never instantiated, and frozen (their attributes cannot be reassigned).

| field | what it is |
|---|---|
| ``name`` | the ``attention_variant`` value |
| ``summary`` | what a head computes, one sentence (model card, README) |
| ``paper`` | a key of ``PAPERS`` (model card) |
| ``settings`` | the config fields the variant reads (model-card rows) |
| ``forward`` | ``(module, Projected, Context) -> (out (B, H, T, D), weights, scores)``, or None |
| ``modules`` | ``{"bert": class, "gpt2": class}`` replacing the sublayer, or None: ``VariantAttention`` |
| ``kernels`` | ``((fast kernel, its naive reference), ...)`` the variant calls |
| ``projections`` | ``config -> {"main": (heads, dim)[, "low_rank": (heads, rank)]}``: the query/key pair(s) |
| ``parameters`` | ``module -> {name: (shape, init)}``: parameters the variant adds, init in ``INITS`` |
| ``init`` | ``(module, std, init) -> None``: initialises them (``init`` is transformers.initialization) |
| ``cache`` | ``config -> caching.CacheRule``: which positions a layer's generation cache holds (window, |
| | global tokens, which tensors follow the window, a recurrence's tapes); the cache layer owns it |
| ``lora_targets`` | ``{"bert": names, "gpt2": names}``: the modules LoRA adapts |
| ``flops`` | ``(config, seq_len, pairs) -> int``: forward FLOPs of the sublayer, output projection aside; |
| | ``pairs(band)`` counts the (query, key) pairs read (``pairs.pair_allowed``) |
| ``draw`` | ``config -> Drawing``: what the viewer draws of a layer (its dot-product ``ScorePair``s: allowed |
| | pairs, rank, window and global tokens; the tapes of a recurrence); ``convert`` derives its pairs |
| ``example_fields`` | the variant fields of the run configs (head size 64; ``configs/generate.py``) |
| ``test_cases`` | field sets of tiny test models (head size 8): rows of the shared test table |

``ScoringSpec`` holds the defaults of the variants that score (query, key) pairs inside the
shared ``VariantAttention``: no extra parameters, every position cached, the q/k/v projections
as LoRA targets. ``STOCK`` names the variant that is numerically the stock model (what ``convert``
starts from, what dense layers dispatch through transformers' attention interface).

Hub code: imports only torch and sibling files; nothing runs at import but class definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .hfav_attention_lstmn import GPT2LSTMNAttention, LSTMNAttention, LSTMNCell
from .hfav_caching import CacheRule
from .hfav_kernels import (
    additive_attention,
    additive_attention_reference,
    band_attention,
    band_attention_reference,
    dense_attention,
    dense_attention_reference,
    low_rank_attention,
    low_rank_attention_reference,
    lstmn_reference,
    lstmn_scan,
    masked_softmax_attention,
)

Tensor = torch.Tensor

FAMILIES = ("bert", "gpt2")
INITS = ("normal", "zeros")  # normal: N(0, initializer_range²); zeros
PAPERS = {
    "vaswani2017": "Vaswani et al., \"Attention Is All You Need\", NeurIPS 2017",
    "guo2019": "Guo, Qiu, Xue, Zhang, \"Low-Rank and Locality Constrained Self-Attention for Sequence Modeling\", "
               "IEEE/ACM TASLP 27(12), 2019",
    "bahdanau2015": "Bahdanau, Cho, Bengio, \"Neural Machine Translation by Jointly Learning to Align and Translate\", "
                    "ICLR 2015",
    "cheng2016": "Cheng, Dong, Lapata, \"Long Short-Term Memory-Networks for Machine Reading\", EMNLP 2016",
}
SPEC_FIELDS = ("name", "summary", "paper", "settings", "forward", "modules", "kernels", "projections", "parameters",
               "init", "cache", "lora_targets", "flops", "draw", "example_fields", "test_cases")
STOCK = "dense"  # the variant that is numerically the stock model (its spec: ``Dense`` below)
VARIANTS: dict[str, type[VariantSpec]] = {}  # filled by defining the spec classes below


# ----------------------------------------------------------------------------- what an adapter receives


@dataclass
class Projected:
    """Per-head projections, each (B, heads, T, dim). The low-rank pair only for low_rank_band."""

    q: Tensor
    k: Tensor
    v: Tensor
    q_low_rank: Tensor | None = None
    k_low_rank: Tensor | None = None


def _same(t: Tensor) -> Tensor:
    return t


@dataclass
class Context:
    """What every kernel call of one forward shares.

    With a generation cache whose layer holds a window (``caching.VariantLayer``), the band's keys
    are the positions the layer handed back: ``band_key_mask`` is their padding mask and
    ``band_view`` takes the same positions from a tensor that holds every position (values that the
    rule does not window, as in low_rank_band). Without one, both are the plain key mask and identity.
    """

    causal: bool
    key_mask: Tensor | None  # (B, T_all) bool, True = real token; None = no padding
    dropout_p: float
    reference: bool  # use the naive kernels (they return weights and scores)
    attention_mask: object = "unprepared"  # dense: the mask the model built for transformers' attention interface
    band_key_mask: Tensor | None = None  # the key mask of the band's held positions (None: key_mask)
    band_view: Callable[[Tensor], Tensor] = _same

    def kwargs(self, band: bool = False) -> dict:
        """Kernel arguments: the padding mask of every position, or of the band's held positions."""
        key_mask = self.band_key_mask if band and self.band_key_mask is not None else self.key_mask
        return {"causal": self.causal, "key_mask": key_mask, "dropout_p": self.dropout_p}


Result = tuple[Tensor, Tensor | None, Tensor | None]  # output (B, H, Tq, D), weights, scores


# ----------------------------------------------------------------------------- what the viewer draws


PAIR_FIELDS = {"main": ("q", "k"), "low_rank": ("q_low_rank", "k_low_rank")}  # projection -> Projected fields


@dataclass(frozen=True)
class ScorePair:
    """A dot-product query/key pair of a layer: scores = scale · q_i · k_j for the heads it serves.

    projection: a key of ``PAIR_FIELDS`` (and of the spec's ``projections``); heads: the layer's heads it
    scores, in order (its i-th head scores layer head heads[i]); scale: the module attribute holding its
    scale; rank: the q/k size of a low-rank pair (rank(QKᵀ) ≤ rank), None for a full-size one; band: its allowed
    pairs are the band (|i−j| ≤ attention_window, causal or not, plus attention_global_tokens); label:
    what the viewer calls its heads when a layer splits its heads between pairs.
    """

    projection: str
    heads: range
    scale: str = "scaling"
    rank: int | None = None
    band: bool = False
    label: str = ""


@dataclass(frozen=True)
class Drawing:
    """What the viewer draws of one layer (a spec's ``draw(config)``).

    pairs: the dot-product pairs, in the order the viewer prefers them for a head two pairs serve
    (their singular values are shown); empty when the scores are not dot products (additive, LSTMN).
    kind: "attention", or "lstmn" (intra-attention over a tape whose zero slot is drawn).
    head_names: fixed names of the drawn rows (LSTMN: its tapes), else "head h".
    note: shown after the variant's name (low_rank_band: its band_combine).
    """

    pairs: tuple[ScorePair, ...] = ()
    kind: str = "attention"
    head_names: tuple[str, ...] = ()
    note: str | None = None

    def band_heads(self) -> list[int]:
        """The heads whose allowed pairs are the band (the window and the global tokens outlined)."""
        return sorted({h for p in self.pairs if p.band for h in p.heads})

    def pair_of_head(self) -> dict[int, ScorePair]:
        """head -> the pair drawn for it (the first listed pair that serves it)."""
        out: dict[int, ScorePair] = {}
        for pair in self.pairs:
            for h in pair.heads:
                out.setdefault(h, pair)
        return out


def run_kernel(ctx: Context, kernel: Callable, reference: Callable, q: Tensor, k: Tensor, v: Tensor,
               *args, band: bool = False, fast: dict | None = None, **kwargs) -> Result:
    """The fast kernel, or its reference when the weights are wanted (``ctx.reference``);
    ``band``: the keys are the band's held positions (see ``Context``);
    ``fast``: options of the fast kernel alone (e.g. its compiled path)."""
    if ctx.reference:
        return reference(q, k, v, *args, **kwargs, **ctx.kwargs(band))
    return kernel(q, k, v, *args, **kwargs, **(fast or {}), **ctx.kwargs(band)), None, None


# ----------------------------------------------------------------------------- the spec and its check


class _FrozenSpec(type):
    """Metaclass of the specs: their fields cannot be reassigned or deleted after definition."""

    def __setattr__(cls, name, value):
        raise AttributeError(f"variant spec {cls.__name__} is frozen: cannot set {name}")

    def __delattr__(cls, name):
        raise AttributeError(f"variant spec {cls.__name__} is frozen: cannot delete {name}")


def _spec_problems(cls) -> list[str]:
    """What is missing or malformed in a spec class (empty when it is complete)."""
    missing = [f for f in SPEC_FIELDS if not hasattr(cls, f)]
    if missing:
        return [f"missing field(s) {missing}"]
    problems = []
    if not isinstance(cls.name, str) or not cls.name:
        problems.append(f"name={cls.name!r} is not a non-empty string")
    elif cls.name in VARIANTS:
        problems.append(f"name={cls.name!r} is already registered (by {VARIANTS[cls.name].__name__})")
    if cls.paper not in PAPERS:
        problems.append(f"paper={cls.paper!r} is not a key of PAPERS {tuple(PAPERS)}")
    if (cls.forward is None) == (cls.modules is None):
        problems.append("exactly one of forward (a scoring adapter) and modules (a sublayer per family) is needed")
    for field in ("lora_targets", *(("modules",) if cls.modules is not None else ())):
        value = getattr(cls, field)
        if not isinstance(value, dict) or set(value) != set(FAMILIES):
            problems.append(f"{field} must map every family {FAMILIES}, got {value!r}")
    if not cls.kernels or not all(len(pair) == 2 and callable(pair[0]) and callable(pair[1]) for pair in cls.kernels):
        problems.append(f"kernels={cls.kernels!r} must be non-empty (kernel, reference) pairs")
    for field in ("projections", "parameters", "init", "cache", "flops", "draw"):
        if not callable(getattr(cls, field)):
            problems.append(f"{field} is not callable")
    if not isinstance(cls.settings, tuple) or not isinstance(cls.example_fields, dict):
        problems.append("settings must be a tuple of field names and example_fields a dict")
    if not cls.test_cases or not all(isinstance(case, dict) for case in cls.test_cases):
        problems.append("test_cases must be a non-empty tuple of field dicts")
    return problems


class VariantSpec(metaclass=_FrozenSpec):
    """Base of every variant's spec (see the module docstring for the fields).

    ``class X(VariantSpec, abstract=True)`` defines shared defaults without registering;
    any other subclass is checked and registered under its ``name``.
    """

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        problems = _spec_problems(cls)
        if problems:
            raise TypeError(f"variant spec {cls.__name__} is incomplete: " + "; ".join(problems))
        VARIANTS[cls.name] = cls


def spec_of(variant: str) -> type[VariantSpec]:
    """The spec of a registered variant; ValueError naming the field otherwise."""
    if variant not in VARIANTS:
        raise ValueError(f"attention_variant={variant!r} is invalid: expected one of {tuple(VARIANTS)}.")
    return VARIANTS[variant]


# ----------------------------------------------------------------------------- shared helpers


def head_dim(config) -> int:
    return config.hidden_size // config.num_attention_heads


def _full_size(config) -> dict[str, tuple[int, int]]:
    return {"main": (config.num_attention_heads, head_dim(config))}


def _no_parameters(module) -> dict:
    return {}


def _init_declared(module, std: float, init) -> None:
    """Initialise the parameters a spec's ``parameters`` declares, by their init kind."""
    for name, (_, kind) in module.spec.parameters(module).items():
        if kind == "normal":
            init.normal_(getattr(module, name), mean=0.0, std=std)
        else:
            init.zeros_(getattr(module, name))


def _cache_everything(config) -> CacheRule:
    return CacheRule()


def _cache_everything_compiled(config) -> CacheRule:
    """Every position, and the decoding step compiles fullgraph over a static layer (dense, low_rank: SDPA with a
    key mask; additive: its tiles on the tanh path; no data-dependent Python control flow;
    tests/test_compile_generate.py)."""
    return CacheRule(compileable=True)


def cache_rules(config) -> list[CacheRule]:
    """The cache rule of every layer of a model, as its variants' specs declare them."""
    return [spec_of(config.variant_for_layer(i)).cache(config) for i in range(config.num_hidden_layers)]


def compiles_fullgraph(config) -> bool:
    """Whether a model's decoding step compiles with ``torch.compile(fullgraph=True)`` over a static cache: every
    layer's spec declares a compileable cache rule (transformers' ``_can_compile_fullgraph``)."""
    return all(rule.compileable for rule in cache_rules(config))


def projection_flops(config, seq_len: int, shapes: dict[str, tuple[int, int]]) -> int:
    """2·T·d·(outputs) for the query/key pair(s) and the values, biases aside."""
    qk_out = sum(2 * heads * dim for heads, dim in shapes.values())
    return 2 * seq_len * config.hidden_size * (qk_out + config.hidden_size)


SCORING_LORA = {"bert": ("query", "key", "value"), "gpt2": ("c_attn",)}


class ScoringSpec(VariantSpec, abstract=True):
    """Defaults of the variants that score pairs inside ``VariantAttention``."""

    modules = None
    parameters = _no_parameters
    init = _init_declared
    cache = _cache_everything
    lora_targets = SCORING_LORA
    settings = ()


# ----------------------------------------------------------------------------- dense


def _dense(m, p: Projected, ctx: Context) -> Result:
    from .hfav_masks import CustomMask  # here, not at the top: hfav_masks reads STOCK from this file

    if isinstance(ctx.attention_mask, CustomMask):  # a user's 4-D mask (True = attend): applied exactly as given
        allowed = ctx.attention_mask.allowed
        if ctx.reference:
            scores = (p.q @ p.k.transpose(-1, -2)) * m.scaling
            out, weights = masked_softmax_attention(scores, p.v, allowed, ctx.dropout_p)
            return out, weights, scores
        out = torch.nn.functional.scaled_dot_product_attention(p.q, p.k, p.v, attn_mask=allowed,
                                                               dropout_p=ctx.dropout_p, scale=m.scaling)
        return out, None, None
    if ctx.reference or isinstance(ctx.attention_mask, str):  # no mask built by the model: our SDPA kernel
        return run_kernel(ctx, dense_attention, dense_attention_reference, p.q, p.k, p.v, scale=m.scaling)
    return _dense_interface(m, p, ctx)


def _dense_interface(m, p: Projected, ctx: Context) -> Result:
    """Dense attention dispatched like a stock model's: ``config._attn_implementation`` names the
    function in transformers' ``ALL_ATTENTION_FUNCTIONS`` (flex_attention, a registered one; "sdpa"
    and "eager" stay on our kernels), called with the mask the model built for it
    (``masks.dense_attention_mask``).
    Its output (B, Tq, H, D) is returned as (B, H, Tq, D)."""
    fn = ALL_ATTENTION_FUNCTIONS.get_interface(m.config._attn_implementation, None)
    out, _ = fn(m, p.q, p.k, p.v, ctx.attention_mask, dropout=ctx.dropout_p, scaling=m.scaling, is_causal=ctx.causal)
    return out.transpose(1, 2), None, None


def draw_dot_product(config, scale: str = "scaling", rank: int | None = None, band: bool = False) -> Drawing:
    """Every head scores with the main pair (dense, band, low_rank and any variant like them)."""
    return Drawing(pairs=(ScorePair("main", range(config.num_attention_heads), scale, rank, band),))


def _dense_flops(config, seq_len: int, pairs: Callable[[bool], int]) -> int:
    return projection_flops(config, seq_len, _full_size(config)) + 4 * pairs(False) * config.hidden_size


class Dense(ScoringSpec):
    name = "dense"
    summary = "stock scaled dot-product attention (numerically the stock model)"
    paper = "vaswani2017"
    forward = _dense
    cache = _cache_everything_compiled
    kernels = ((dense_attention, dense_attention_reference),)
    projections = _full_size
    flops = _dense_flops
    draw = draw_dot_product
    example_fields = {}
    test_cases = ({},)


# ----------------------------------------------------------------------------- low rank


def low_rank_module(m, q: Tensor, k: Tensor, v: Tensor, ctx: Context) -> Result:
    """Guo et al.'s low-rank module on q, k (B, H, T, r), v (B, H, T, D)."""
    return run_kernel(ctx, low_rank_attention, low_rank_attention_reference, q, k, v, scale=m.low_rank_scaling)


def _low_rank(m, p: Projected, ctx: Context) -> Result:
    return low_rank_module(m, p.q, p.k, p.v, ctx)


def _low_rank_shapes(config) -> dict[str, tuple[int, int]]:
    return {"main": (config.num_attention_heads, config.attention_rank)}


def _low_rank_flops(config, seq_len: int, pairs: Callable[[bool], int]) -> int:
    heads, full = config.num_attention_heads, pairs(False)
    return (projection_flops(config, seq_len, _low_rank_shapes(config))
            + 2 * full * heads * config.attention_rank + 2 * full * config.hidden_size)


def _low_rank_draw(config) -> Drawing:
    return draw_dot_product(config, "low_rank_scaling", rank=config.attention_rank)


class LowRank(ScoringSpec):
    name = "low_rank"
    summary = "q, k ∈ R^r (r = attention_rank ≤ head size), scores q·k/√r: rank(QKᵀ) ≤ r"
    paper = "guo2019"
    settings = ("attention_rank",)
    forward = _low_rank
    cache = _cache_everything_compiled
    kernels = ((low_rank_attention, low_rank_attention_reference),)
    projections = _low_rank_shapes
    flops = _low_rank_flops
    draw = _low_rank_draw
    example_fields = {"attention_rank": 16}
    test_cases = ({"attention_rank": 4},)


# ----------------------------------------------------------------------------- band


def band_module(m, q: Tensor, k: Tensor, v: Tensor, ctx: Context) -> Result:
    """Guo et al.'s band module on q, k, v (B, H, T, D), with m.global_tokens global positions."""
    return run_kernel(ctx, band_attention, band_attention_reference, q, k, ctx.band_view(v), window=m.window,
                      scale=m.scaling, global_tokens=m.global_tokens, band=True,
                      fast={"flex": True if m.compile_kernels else None})


def _band(m, p: Projected, ctx: Context) -> Result:
    return band_module(m, p.q, p.k, p.v, ctx)


def _band_cache(config) -> CacheRule:
    """The band reads the last w positions and the first g (global): its cache holds only those.
    Held positions decode as if contiguous: the band rule gives the same pairs, since the distance
    to the query is kept within the tail and the first g are global. Compiled decoding over a static
    cache keeps them in a ring (``caching.VariantRingLayer``)."""
    return CacheRule(window=config.attention_window, global_tokens=config.attention_global_tokens, compileable=True)


def _band_flops(config, seq_len: int, pairs: Callable[[bool], int]) -> int:
    return projection_flops(config, seq_len, _full_size(config)) + 4 * pairs(True) * config.hidden_size


def _band_draw(config) -> Drawing:
    return draw_dot_product(config, band=True)


class Band(ScoringSpec):
    name = "band"
    summary = "scores kept only where |i−j| ≤ w (bidirectional) or 0 ≤ i−j ≤ w (causal), w = attention_window"
    paper = "guo2019"
    settings = ("attention_window", "attention_global_tokens")
    forward = _band
    kernels = ((band_attention, band_attention_reference),)
    projections = _full_size
    cache = _band_cache
    flops = _band_flops
    draw = _band_draw
    example_fields = {"attention_window": 8}
    test_cases = ({"attention_window": 2},)  # attention_global_tokens: tests/test_global_tokens.py


# ----------------------------------------------------------------------------- low rank + band


def _add(a: Tensor | None, b: Tensor | None, wa: Tensor | float = 1.0, wb: Tensor | float = 1.0):
    return None if a is None or b is None else wa * a + wb * b


def _combine_sum(m, p: Projected, ctx: Context) -> Result:
    """A = L + B: the output is the low-rank output plus the band output."""
    lr, bd = low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v, ctx), band_module(m, p.q, p.k, p.v, ctx)
    return lr[0] + bd[0], _add(lr[1], bd[1]), None


def _combine_gate(m, p: Projected, ctx: Context) -> Result:
    """g_h L + (1 - g_h) B with a learned per-head gate g_h = σ(band_gate_h)."""
    g = torch.sigmoid(m.band_gate).view(1, -1, 1, 1)  # (1, H, 1, 1)
    lr, bd = low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v, ctx), band_module(m, p.q, p.k, p.v, ctx)
    return g * lr[0] + (1 - g) * bd[0], _add(lr[1], bd[1], g, 1 - g), None


def _combine_heads(m, p: Projected, ctx: Context) -> Result:
    """The first H // 2 heads are low-rank (global), the others band (local)."""
    n = m.low_rank_heads
    lr = low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v[:, :n], ctx)
    bd = band_module(m, p.q, p.k, p.v[:, n:], ctx)
    weights = None if lr[1] is None else torch.cat([lr[1], bd[1]], dim=1)
    return torch.cat([lr[0], bd[0]], dim=1), weights, None


def _combine_sequential(m, p: Projected, ctx: Context) -> Result:
    """Band attention whose queries are W_q applied to the low-rank output y and whose keys and
    values come from the layer input: out = Band(W_q y, W_k x, W_v x), y = LowRank(x)."""
    y = low_rank_module(m, p.q_low_rank, p.k_low_rank, p.v, ctx)[0]  # (B, H, T, D)
    y = y.transpose(1, 2).flatten(2)  # (B, T, H·D)
    q = m.split_heads(m.project_query(y), m.qk_heads)  # (B, H, T, D)
    return band_module(m, q, p.k, p.v, ctx)


BAND_COMBINE: dict[str, Callable[..., Result]] = {
    "sum": _combine_sum,
    "gate": _combine_gate,
    "heads": _combine_heads,
    "sequential": _combine_sequential,
}


def _low_rank_band(m, p: Projected, ctx: Context) -> Result:
    return BAND_COMBINE[m.band_combine](m, p, ctx)


def _low_rank_band_shapes(config) -> dict[str, tuple[int, int]]:
    heads = config.num_attention_heads
    low = heads // 2 if config.band_combine == "heads" else heads
    main = heads - low if config.band_combine == "heads" else heads
    return {"main": (main, head_dim(config)), "low_rank": (low, config.attention_rank)}


def _low_rank_band_parameters(module) -> dict:
    return {"band_gate": ((module.num_heads,), "zeros")} if module.band_combine == "gate" else {}  # σ(0) = ½


def _low_rank_band_cache(config) -> CacheRule:
    """Band keys in the window; values (read by the low-rank module too) and low-rank keys at every position."""
    return CacheRule(window=config.attention_window, global_tokens=config.attention_global_tokens,
                     windowed=("keys",), compileable=True)


def _lstmn_cache(config) -> CacheRule:
    return CacheRule(recurrent=True)  # the tapes: attention_lstmn.lstmn_continue


def _low_rank_band_flops(config, seq_len: int, pairs: Callable[[bool], int]) -> int:
    shapes = _low_rank_band_shapes(config)
    (main_heads, d), (low_heads, rank) = shapes["main"], shapes["low_rank"]
    flops = projection_flops(config, seq_len, shapes)
    flops += 2 * pairs(False) * low_heads * (rank + d) + 4 * pairs(True) * main_heads * d
    if config.band_combine == "sequential":
        flops += 2 * seq_len * config.hidden_size ** 2  # the band queries projected from the low-rank output
    return flops


def _low_rank_band_draw(config) -> Drawing:
    """The low-rank pair first (its singular values are drawn where both modules read every head),
    then the band pair; under ``heads`` each serves its own heads."""
    shapes, heads = _low_rank_band_shapes(config), config.num_attention_heads
    (main, _), (low, rank) = shapes["main"], shapes["low_rank"]
    return Drawing(pairs=(ScorePair("low_rank", range(low), "low_rank_scaling", rank, label="low-rank"),
                          ScorePair("main", range(heads - main, heads), band=True, label="band")),
                   note=config.band_combine)


class LowRankBand(ScoringSpec):
    name = "low_rank_band"
    summary = ("a low-rank (global) and a band (local) module, joined by band_combine: "
               "sum, gate, heads or sequential")
    paper = "guo2019"
    settings = ("attention_rank", "attention_window", "band_combine", "attention_global_tokens")
    forward = _low_rank_band
    kernels = ((low_rank_attention, low_rank_attention_reference), (band_attention, band_attention_reference))
    projections = _low_rank_band_shapes
    parameters = _low_rank_band_parameters
    cache = _low_rank_band_cache
    lora_targets = {"bert": ("query", "key", "value", "query_low_rank", "key_low_rank"),
                    "gpt2": ("c_attn", "c_attn_low_rank")}
    flops = _low_rank_band_flops
    draw = _low_rank_band_draw
    example_fields = {"attention_rank": 16, "attention_window": 8, "band_combine": "sum"}
    test_cases = ({"band_combine": "sum"}, {"band_combine": "gate"}, {"band_combine": "heads"},
                  {"band_combine": "sequential"})


# ----------------------------------------------------------------------------- additive


def _additive(m, p: Projected, ctx: Context) -> Result:
    return run_kernel(ctx, additive_attention, additive_attention_reference, p.q, p.k, p.v, m.score_vector,
                      fast={"compiled": m.compile_kernels})


def _additive_shapes(config) -> dict[str, tuple[int, int]]:
    return {"main": (config.num_attention_heads, config.additive_dim)}


def _additive_parameters(module) -> dict:
    return {"score_vector": ((module.num_heads, module.qk_dim), "normal")}  # v_h, (H, a)


def _additive_flops(config, seq_len: int, pairs: Callable[[bool], int]) -> int:
    heads, full = config.num_attention_heads, pairs(False)
    # add, tanh, multiply-add per (pair, dim); then the product with v
    return (projection_flops(config, seq_len, _additive_shapes(config))
            + 4 * full * heads * config.additive_dim + 2 * full * config.hidden_size)


def _no_dot_products(config) -> Drawing:
    return Drawing()  # the scores are not dot products: no pair to decompose


class Additive(ScoringSpec):
    name = "additive"
    summary = "e_ij = v_hᵀ tanh(W_q x_i + W_k x_j + b), hidden size additive_dim"
    paper = "bahdanau2015"
    settings = ("additive_dim",)
    forward = _additive
    cache = _cache_everything_compiled  # under torch.compile its tiles take the tanh path (no data-dependent bound)
    kernels = ((additive_attention, additive_attention_reference),)
    projections = _additive_shapes
    parameters = _additive_parameters
    flops = _additive_flops
    draw = _no_dot_products
    example_fields = {"additive_dim": 64}
    test_cases = ({"additive_dim": 6},)


# ----------------------------------------------------------------------------- lstmn


def _lstmn_init(module, std: float, init) -> None:
    """The score vector v of each LSTMN cell (transformers initialises the modules that hold
    parameters themselves: the cells, whose ``variant`` is lstmn too)."""
    if isinstance(module, LSTMNCell):
        init.normal_(module.score, mean=0.0, std=std)


def _lstmn_flops(config, seq_len: int, pairs: Callable[[bool], int]) -> int:
    d_in = config.hidden_size
    sizes = [d_in // 2, d_in - d_in // 2] if config.resolved_lstmn_direction() == "bidirectional" else [d_in]
    flops = 0
    for d in sizes:
        per_token = 2 * d * d * 2 + 2 * d_in * d + 2 * 4 * d * (d + d_in) + 10 * d  # W_h, W_h̃, W_x, gates, cell
        tape_reads = sum(t + 1 for t in range(seq_len))  # slots read, the zero slot included
        flops += seq_len * per_token + tape_reads * (4 * d + 4 * d)  # scores; h̃ and c̃ sums
    return flops


def _lstmn_draw(config) -> Drawing:
    return Drawing(kind="lstmn", head_names=("forward tape", "backward tape"))


class LSTMN(VariantSpec):
    name = "lstmn"
    summary = ("the attention sublayer becomes an LSTMN whose memory tape is read by intra-attention "
               "(both directions in BERT)")
    paper = "cheng2016"
    settings = ("lstmn_direction",)
    forward = None
    modules = {"bert": LSTMNAttention, "gpt2": GPT2LSTMNAttention}
    kernels = ((lstmn_scan, lstmn_reference),)
    projections = _full_size  # unused: the LSTMN cell has its own projections
    parameters = _no_parameters
    init = _lstmn_init
    cache = _lstmn_cache
    lora_targets = {"bert": ("w_tape", "w_input", "w_summary", "gates"),
                    "gpt2": ("w_tape", "w_input", "w_summary", "gates")}
    flops = _lstmn_flops
    draw = _lstmn_draw
    example_fields = {}
    test_cases = ({},)
