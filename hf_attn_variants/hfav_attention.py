"""Self-attention modules of the variants, shared by the BERT and GPT-2 families.

A ``VariantAttention`` projects the layer input to per-head queries, keys and values and
hands them to its variant's ``forward`` adapter; everything variant-specific (projection
shapes, added parameters and their init, the cache rule) is read from the variant's spec in
``variants.VARIANTS``. The two families differ only in how the projections are stored (BERT:
``query``/``key``/``value`` Linears; GPT-2: one fused ``c_attn`` Conv1D), so that stock
checkpoints load.

A variant whose spec names its own ``modules`` (``lstmn``: ``hfav_attention_lstmn.py``) replaces the
sublayer; ``attention_class(family, variant)`` picks the class of a layer.

Every module can record what it computed for analysis: set ``module.capture = True`` and the
next forward stores ``module.captured = {"weights": (B, H, Tq, Tk), "scores": ... or None}``.

Hub code: imports only torch, transformers and sibling files.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .hfav_attention_lstmn import GPT2LSTMNAttention, LSTMNAttention, LSTMNCell, lstmn_continue
from .hfav_caching import VariantLayer
from .hfav_packing import Packing
from .hfav_variants import BAND_COMBINE, STOCK, VARIANTS, Context, Projected, Result, spec_of

Tensor = torch.Tensor

__all__ = ["BAND_COMBINE", "GPT2LSTMNAttention", "LSTMNAttention", "LSTMNCell", "Context", "Projected", "Result",
           "VARIANTS", "lstmn_continue"]


class VariantAttention(nn.Module):
    """One layer's self-attention under any scoring variant (all but lstmn).

    Subclasses store the projections (``_build_projections``) and apply them (``_project``,
    ``project_query``). ``forward`` returns the merged heads (B, T, H·D) and the weights.
    """

    def __init__(self, config, layer_idx: int, attention_dropout: float, scaling: float):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.variant = config.variant_for_layer(layer_idx)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.causal = config.is_causal
        self.window = config.attention_window
        self.global_tokens = config.attention_global_tokens
        self.band_combine = config.band_combine
        self.attention_dropout = attention_dropout
        self.scaling = scaling
        self.compile_kernels = bool(getattr(config, "attention_compile", False))  # compiled additive / CPU flex
        self.spec = spec_of(self.variant)
        shapes = self.spec.projections(config)
        self.qk_heads, self.qk_dim = shapes["main"]
        self.low_rank_heads, self.rank = shapes.get("low_rank", (0, config.attention_rank))
        # the low-rank module scores at the size of the pair it uses: its own pair, else the main one
        self.low_rank_scaling = (self.rank if "low_rank" in shapes else self.qk_dim) ** -0.5
        self._build_projections(config.hidden_size)
        for name, (shape, _) in self.spec.parameters(self).items():  # set by the spec's init
            setattr(self, name, nn.Parameter(torch.zeros(shape)))
        self.capture = False
        self.captured: dict | None = None

    # the family-specific storage of the projections
    def _build_projections(self, hidden: int) -> None:
        raise NotImplementedError

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        """x (B, T, hidden) -> q, k, v[, q_low_rank, k_low_rank], each (B, T, heads·dim)."""
        raise NotImplementedError

    def project_query(self, y: Tensor) -> Tensor:
        """The main query projection alone, applied to y (B, T, hidden)."""
        raise NotImplementedError

    @property
    def sizes(self) -> list[int]:
        main, value = self.qk_heads * self.qk_dim, self.num_heads * self.head_dim
        return [main, main, value]

    @property
    def low_rank_size(self) -> int:
        return self.low_rank_heads * self.rank

    def split_heads(self, x: Tensor, heads: int) -> Tensor:
        return x.view(*x.shape[:-1], heads, -1).transpose(1, 2)  # (B, T, h·d) -> (B, h, T, d)

    def forward(self, hidden_states: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: VariantLayer | None = None, attention_mask: object = "unprepared",
                packing: Packing | None = None) -> tuple[Tensor, Tensor | None]:
        """hidden_states (B, T, hidden), key_mask (B, T_past + T) bool, layer_cache: this layer's
        layer in a ``VariantCache`` (extended in place; it holds what its rule keeps and says which
        positions it handed back), attention_mask: what dense layers hand to transformers' attention
        interface, packing: the sequences of padding-free packed rows (``hfav_packing.Packing``: each is
        attended as its own row; no cache) -> ((B, T, H·D), weights or None)."""
        if packing is not None:
            return packing.run(self, self._attend, hidden_states, need_weights, None, attention_mask)
        return self._attend(hidden_states, key_mask, need_weights, layer_cache, attention_mask)

    def _attend(self, hidden_states: Tensor, key_mask: Tensor | None, need_weights: bool,
                layer_cache: VariantLayer | None, attention_mask: object) -> tuple[Tensor, Tensor | None]:
        proj = self._project(hidden_states)
        heads = [self.qk_heads, self.qk_heads, self.num_heads, self.low_rank_heads, self.low_rank_heads]
        p = Projected(*(self.split_heads(t, h) for t, h in zip(proj, heads)))
        eager = self.variant == STOCK and self.config._attn_implementation == "eager"
        ctx = Context(causal=self.causal, key_mask=key_mask,
                      dropout_p=self.attention_dropout if self.training else 0.0,
                      reference=need_weights or self.capture or eager, attention_mask=attention_mask)
        if layer_cache is not None:  # past + new along time: (B, h, T_held + T, d)
            beside = {} if p.k_low_rank is None else {"keys_low_rank": p.k_low_rank}
            p.k, p.v, beside = layer_cache.extend(p.k, p.v, beside)
            p.k_low_rank = beside.get("keys_low_rank")
            ctx.band_key_mask = layer_cache.held_view(key_mask, dim=1)
            if layer_cache.windows("keys") and not layer_cache.windows("values"):  # low_rank_band
                ctx.band_view = lambda t: layer_cache.held_view(t, dim=2)
        out, weights, scores = self.spec.forward(self, p, ctx)
        if self.capture:
            self.captured = {"weights": weights.detach(), "scores": None if scores is None else scores.detach()}
        return out.transpose(1, 2).flatten(2).contiguous(), weights  # (B, H, T, D) -> (B, T, H·D)


class BertVariantSelfAttention(VariantAttention):
    """BERT storage: ``query``, ``key``, ``value`` (+ ``query_low_rank``, ``key_low_rank``) Linears."""

    def __init__(self, config, layer_idx: int):
        head_dim = config.hidden_size // config.num_attention_heads
        super().__init__(config, layer_idx, config.attention_probs_dropout_prob, head_dim**-0.5)

    def _build_projections(self, hidden: int) -> None:
        qk, _, value = self.sizes
        self.query, self.key, self.value = nn.Linear(hidden, qk), nn.Linear(hidden, qk), nn.Linear(hidden, value)
        if self.low_rank_heads:
            self.query_low_rank = nn.Linear(hidden, self.low_rank_size)
            self.key_low_rank = nn.Linear(hidden, self.low_rank_size)

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        out = (self.query(x), self.key(x), self.value(x))
        return out + (self.query_low_rank(x), self.key_low_rank(x)) if self.low_rank_heads else out

    def project_query(self, y: Tensor) -> Tensor:
        return self.query(y)


class GPT2VariantAttention(VariantAttention):
    """GPT-2 storage: one fused ``c_attn`` Conv1D [q | k | v] (+ ``c_attn_low_rank`` [q | k]),
    then the output projection ``c_proj`` and residual dropout, as in ``GPT2Attention``."""

    def __init__(self, config, layer_idx: int):
        scaling = (config.hidden_size // config.num_attention_heads) ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            scaling /= float(layer_idx + 1)
        super().__init__(config, layer_idx, config.attn_pdrop, scaling)
        self.c_proj = Conv1D(config.hidden_size, config.hidden_size)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def _build_projections(self, hidden: int) -> None:
        self.c_attn = Conv1D(sum(self.sizes), hidden)
        if self.low_rank_heads:
            self.c_attn_low_rank = Conv1D(2 * self.low_rank_size, hidden)

    def _project(self, x: Tensor) -> tuple[Tensor, ...]:
        out = tuple(self.c_attn(x).split(self.sizes, dim=-1))
        return out + tuple(self.c_attn_low_rank(x).chunk(2, dim=-1)) if self.low_rank_heads else out

    def project_query(self, y: Tensor) -> Tensor:
        qk = self.sizes[0]
        if not isinstance(self.c_attn, Conv1D) or self.c_attn.weight.device != y.device:
            # wrapped (a PEFT LoRA layer: adapter included) or offloaded (accelerate hooks load the weights when
            # the module is called, device_map with CPU/disk offload): call it
            return self.c_attn(y)[..., :qk]
        return torch.addmm(self.c_attn.bias[:qk], y.flatten(0, -2), self.c_attn.weight[:, :qk]).view(
            *y.shape[:-1], qk)

    def forward(self, hidden_states: Tensor, key_mask: Tensor | None = None, need_weights: bool = False,
                layer_cache: dict[str, Tensor] | None = None, **kwargs) -> tuple[Tensor, Tensor | None]:
        out, weights = super().forward(hidden_states, key_mask, need_weights, layer_cache, **kwargs)
        return self.resid_dropout(self.c_proj(out)), weights


# ----------------------------------------------------------------------------- which class a layer gets


SCORING_MODULES: dict[str, type[nn.Module]] = {"bert": BertVariantSelfAttention, "gpt2": GPT2VariantAttention}


def attention_class(family: str, variant: str) -> type[nn.Module]:
    """The self-attention class of a layer: the spec's own sublayer, or the scoring module of the family."""
    return (spec_of(variant).modules or SCORING_MODULES)[family]


def init_variant_parameters(module: nn.Module, std: float, init) -> None:
    """Initialise the parameters the variants add, by the spec of the module's variant
    (``init`` is transformers.initialization)."""
    variant = getattr(module, "variant", None)  # cross-attention has none: cross_attention.py initialises its own
    if isinstance(variant, str) and variant in VARIANTS and isinstance(module, nn.Module):
        VARIANTS[variant].init(module, std, init)
