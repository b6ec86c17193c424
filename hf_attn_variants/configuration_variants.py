"""Configs of the variant model families: a ``BertConfig`` and a ``GPT2Config`` with the
attention-variant fields, validated in one place (``VariantFields.validate_variant_fields``).

The variant names are those of the registry (``variants.VARIANTS``), read when a config is validated.

Hub code: imports only transformers, the standard library's dataclasses and sibling files.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import BertConfig, GPT2Config

from .hfav_cross_attention import CROSS_SCORING as CROSS_ATTENTION_VARIANTS  # name -> scoring rule (cross_attention.py)
from .hfav_variants import BAND_COMBINE as BAND_COMBINES  # name -> function
from .hfav_variants import VARIANTS  # name -> spec; iterating gives the names

LSTMN_DIRECTIONS = ("forward", "bidirectional")

# Every Auto class of a family, so that a saved folder loads with any of them (trust_remote_code)
BERT_AUTO_MAP = {
    "AutoConfig": "configuration_variants.VariantBertConfig",
    "AutoModel": "modeling_bert_variants.VariantBertModel",
    "AutoModelForMaskedLM": "modeling_bert_variants.VariantBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_bert_variants.VariantBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_bert_variants.VariantBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_bert_variants.VariantBertForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_bert_variants.VariantBertForMultipleChoice",
    "AutoModelForNextSentencePrediction": "modeling_bert_variants.VariantBertForNextSentencePrediction",
    "AutoModelForPreTraining": "modeling_bert_variants.VariantBertForPreTraining",
    "AutoModelForCausalLM": "modeling_bert_variants.VariantBertLMHeadModel",
}
GPT2_AUTO_MAP = {
    "AutoConfig": "configuration_variants.VariantGPT2Config",
    "AutoModel": "modeling_gpt2_variants.VariantGPT2Model",
    "AutoModelForCausalLM": "modeling_gpt2_variants.VariantGPT2LMHeadModel",
    "AutoModelForSequenceClassification": "modeling_gpt2_variants.VariantGPT2ForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_gpt2_variants.VariantGPT2ForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_gpt2_variants.VariantGPT2ForQuestionAnswering",
}
# GPT-2's DoubleHeadsModel has no Auto class in transformers (stock GPT2DoubleHeadsModel neither): it loads with
# its own class, ``VariantGPT2DoubleHeadsModel.from_pretrained`` (or the folder's code through
# ``get_class_from_dynamic_module``)


def _bad(field: str, value, expected: str) -> ValueError:
    return ValueError(f"{field}={value!r} is invalid: expected {expected}.")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(kw_only=True)
class VariantFields:
    """The attention-variant fields shared by both families (docs/design.md, "The variants, exactly").

    attention_variant: one of VARIANTS, for every layer.
    layer_variants:    optional list, one variant per layer (overrides attention_variant).
    attention_rank:    r, query/key size of the low-rank module, 1..head size (default head size // 4).
    attention_window:  w >= 0, band half-width (bidirectional) or look-back (causal).
    attention_global_tokens: g >= 0 (default 0, the paper's exact band): in band and low_rank_band
                       the first g positions attend to and are attended by every position
                       (causal models: every later position reads them; they read their past).
    band_combine:      how low_rank_band joins its two modules: sum, gate, heads, sequential.
    additive_dim:      a, hidden size of the additive scorer per head (default head size).
    lstmn_direction:   forward or bidirectional; None (default): derived when a model is built,
                       bidirectional for an encoder, forward for a decoder (GPT-2: forward only).
    cross_attention_variant: dense, additive or mean, the scoring of the cross-attention a GPT-2 decoder
                       builds with add_cross_attention=True (additive uses additive_dim; mean: no attention,
                       a fixed summary of the encoder, the RNNenc baseline).
    attention_compile: bool, use the ``torch.compile``d kernels: additive's fused tiles (CPU and CUDA)
                       and band's flex_attention path on CPU for no-grad forwards (on CUDA the band
                       always runs compiled flex_attention). The first call of each compiles.
    """

    attention_variant: str = "dense"
    layer_variants: list[str] | None = None
    attention_rank: int | None = None
    attention_window: int = 16
    attention_global_tokens: int = 0
    band_combine: str = "sum"
    additive_dim: int | None = None
    lstmn_direction: str | None = None
    cross_attention_variant: str = "dense"
    attention_compile: bool = False

    supports_cross_attention = False  # a class constant, not a field: True for the GPT-2 family

    @property
    def is_causal(self) -> bool:
        raise NotImplementedError

    def variant_for_layer(self, layer_idx: int) -> str:
        return self.layer_variants[layer_idx] if self.layer_variants else self.attention_variant

    def resolved_lstmn_direction(self) -> str:
        """The LSTMN direction a model built now gets: the explicit ``lstmn_direction``, else the
        default of its causality (``forward`` for a decoder, ``bidirectional`` for an encoder).
        Derived when used, so that ``config.is_decoder = True`` after construction (or
        ``from_pretrained(path, is_decoder=True)``) turns an encoder config into a decoder one."""
        if self.lstmn_direction is not None:
            return self.lstmn_direction
        return "forward" if self.is_causal else "bidirectional"

    def validate_variant_fields(self, model: bool = True) -> None:
        """The one place the variant fields are checked; raise ValueError naming the field and the value.

        The config's construction runs the checks of single fields (``model=False``: names, ranges, types),
        as stock configs do; building a model runs them all (``model=True``), including those that relate
        fields to the model's size and causality (head size, layer count, decoder), where stock models check
        theirs (``BertSelfAttention``: hidden size a multiple of the heads). So
        ``VariantBertConfig(hidden_size=32)`` builds, like ``BertConfig(hidden_size=32)``, and fails when a
        model is made from it.

        Fills in the size-dependent defaults (attention_rank, additive_dim) when the size allows, so that a
        saved config states the numbers it was built with; ``lstmn_direction`` stays None (derived when used,
        ``resolved_lstmn_direction``).
        """
        hidden, heads, layers = self.hidden_size, self.num_attention_heads, self.num_hidden_layers
        if self.attention_variant not in VARIANTS:
            raise _bad("attention_variant", self.attention_variant, f"one of {tuple(VARIANTS)}")
        if self.layer_variants is not None:
            if not isinstance(self.layer_variants, (list, tuple)):
                raise _bad("layer_variants", self.layer_variants, "a list of variant names, one per layer")
            for name in self.layer_variants:
                if name not in VARIANTS:
                    raise _bad("layer_variants", self.layer_variants, f"names from {tuple(VARIANTS)}, not {name!r}")
            self.layer_variants = list(self.layer_variants)
        sized = _is_int(heads) and heads >= 1 and _is_int(hidden) and hidden >= 1 and hidden % heads == 0
        head_dim = hidden // heads if sized else None
        if self.attention_rank is None and head_dim:
            self.attention_rank = max(1, head_dim // 4)
        if self.attention_rank is not None and (not _is_int(self.attention_rank) or self.attention_rank < 1):
            raise _bad("attention_rank", self.attention_rank, "a positive integer")
        if not _is_int(self.attention_window) or self.attention_window < 0:
            raise _bad("attention_window", self.attention_window, "an integer >= 0")
        if not _is_int(self.attention_global_tokens) or self.attention_global_tokens < 0:
            raise _bad("attention_global_tokens", self.attention_global_tokens, "an integer >= 0")
        if self.band_combine not in BAND_COMBINES:
            raise _bad("band_combine", self.band_combine, f"one of {tuple(BAND_COMBINES)}")
        if self.additive_dim is None and head_dim:
            self.additive_dim = head_dim
        if self.additive_dim is not None and (not _is_int(self.additive_dim) or self.additive_dim < 1):
            raise _bad("additive_dim", self.additive_dim, "a positive integer")
        if self.lstmn_direction is not None and self.lstmn_direction not in LSTMN_DIRECTIONS:
            raise _bad("lstmn_direction", self.lstmn_direction, f"one of {LSTMN_DIRECTIONS} (or None: the default)")
        if self.cross_attention_variant not in CROSS_ATTENTION_VARIANTS:
            raise _bad("cross_attention_variant", self.cross_attention_variant,
                       f"one of {tuple(CROSS_ATTENTION_VARIANTS)}")
        if getattr(self, "add_cross_attention", False) and not self.supports_cross_attention:
            raise _bad("add_cross_attention", True, f"False for {type(self).__name__}: variant BERT models have no "
                       "cross-attention, by design (the variants are self-attention; the papers' inter-attention "
                       "is the GPT-2 decoders' cross-attention, cross_attention.py)")
        if not isinstance(self.attention_compile, bool):
            raise _bad("attention_compile", self.attention_compile, "true or false")
        if not model:
            return

        # what relates the fields to the model's size and causality: checked when a model is built
        if not _is_int(heads) or heads < 1:
            raise _bad("num_attention_heads", heads, "a positive integer")
        if not _is_int(hidden) or hidden < 1 or hidden % heads:
            raise _bad("hidden_size", hidden, f"a positive multiple of num_attention_heads={heads}")
        if self.layer_variants is not None and len(self.layer_variants) != layers:
            raise _bad("layer_variants", self.layer_variants,
                       f"a list of {layers} variant names (one per layer, num_hidden_layers={layers})")
        if not 1 <= self.attention_rank <= head_dim:
            raise _bad("attention_rank", self.attention_rank, f"an integer in [1, head size={head_dim}]")
        used = set(self.layer_variants or [self.attention_variant])
        if "low_rank_band" in used and self.band_combine == "heads" and heads < 2:
            raise _bad("band_combine", "heads", f"at least 2 attention heads, not num_attention_heads={heads}")
        direction = self.resolved_lstmn_direction()
        if "lstmn" in used and self.is_causal and direction != "forward":
            raise _bad("lstmn_direction", direction, "'forward' for a causal (decoder) model")
        if "lstmn" in used and direction == "bidirectional" and hidden < 2:
            raise _bad("hidden_size", hidden, "at least 2 for a bidirectional LSTMN")


class VariantBertConfig(BertConfig, VariantFields):
    """A ``BertConfig`` whose self-attention is one of the variants (see ``VariantFields``)."""

    model_type = "variant_bert"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.auto_map = {**BERT_AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self.validate_variant_fields(model=False)

    @property
    def is_causal(self) -> bool:
        return bool(self.is_decoder)


class VariantGPT2Config(GPT2Config, VariantFields):
    """A ``GPT2Config`` whose (causal) self-attention is one of the variants (see ``VariantFields``)."""

    model_type = "variant_gpt2"
    supports_cross_attention = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.auto_map = {**GPT2_AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        self.validate_variant_fields(model=False)

    @property
    def is_causal(self) -> bool:
        return True
