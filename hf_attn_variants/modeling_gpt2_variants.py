"""GPT-2-style (causal) models whose self-attention is one of the variants.

Module tree and parameter names follow ``transformers``' GPT-2 (``transformer.h.N.attn.c_attn``
...), so stock GPT-2 checkpoints load. Positions are counted from the attention mask, so a
left-padded sequence gets the same positions as when it runs alone (stock GPT-2 counts them from
the start of the row; ``generate`` passes mask-based positions to both, so generation agrees).

As stock: ``use_cache``, ``return_dict`` and ``output_*`` default to the config; gradient
checkpointing in training returns no cache; ``generate`` builds the model's own cache
(``VariantCache``) and supports greedy, sampling, beam search, assisted and prompt-lookup decoding.

Hub code: imports only torch, transformers and sibling files.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import EncoderDecoderCache, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.generation.configuration_utils import GenerationMode
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from transformers.models.gpt2.modeling_gpt2 import GPT2DoubleHeadsModelOutput, GPT2SequenceSummary
from transformers.pytorch_utils import Conv1D
from transformers.utils.output_capturing import capture_outputs

from .configuration_variants import VariantGPT2Config
from .hfav_attention import GPT2LSTMNAttention, GPT2VariantAttention, attention_class, init_variant_parameters
from .hfav_caching import VariantCache
from .hfav_cross_attention import GPT2CrossAttention, init_cross_attention
from .hfav_masks import (
    OWN_IMPLEMENTATIONS,
    check_attn_implementation,
    check_length,
    config_default,
    custom_attention_mask,
    dense_attention_mask,
    key_padding_mask,
    reject_unknown_kwargs,
    wrap_output,
)
from .hfav_packing import packing_of
from .hfav_variants import compiles_fullgraph

Tensor = torch.Tensor


class VariantGPT2MLP(nn.Module):
    def __init__(self, intermediate_size: int, config):
        super().__init__()
        self.c_fc = Conv1D(intermediate_size, config.hidden_size)
        self.c_proj = Conv1D(config.hidden_size, intermediate_size)
        self.act = ACT2FN[config.activation_function]
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class VariantGPT2Block(GradientCheckpointingLayer):
    """Pre-LayerNorm block: x + attn(ln_1(x)), [+ crossattention(ln_cross_attn(.), encoder)], then
    + mlp(ln_2(.)). The cross-attention exists when ``config.add_cross_attention`` (as in stock GPT-2)."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        hidden = config.hidden_size
        self.ln_1 = nn.LayerNorm(hidden, eps=config.layer_norm_epsilon)
        self.attn = attention_class("gpt2", config.variant_for_layer(layer_idx))(config, layer_idx)
        if config.add_cross_attention:
            self.crossattention = GPT2CrossAttention(config, layer_idx)
            self.ln_cross_attn = nn.LayerNorm(hidden, eps=config.layer_norm_epsilon)
        self.ln_2 = nn.LayerNorm(hidden, eps=config.layer_norm_epsilon)
        self.mlp = VariantGPT2MLP(config.n_inner if config.n_inner is not None else 4 * hidden, config)

    def forward(self, hidden_states, key_mask=None, need_weights=False, cache=None, attention_mask="unprepared",
                encoder_hidden_states=None, encoder_key_mask=None, packing=None):
        """-> (hidden_states, self-attention weights, cross-attention weights (None without cross-attention)).
        packing: the sequences of padding-free packed rows (``hfav_packing.Packing``), for the self-attention."""
        attn_output, weights = self.attn(self.ln_1(hidden_states), key_mask, need_weights, cache,
                                         attention_mask=attention_mask, packing=packing)
        hidden_states = hidden_states + attn_output
        cross_weights = None
        if hasattr(self, "crossattention"):
            cross_output, cross_weights = self.crossattention(self.ln_cross_attn(hidden_states), encoder_hidden_states,
                                                              encoder_key_mask, need_weights, cache)
            hidden_states = hidden_states + cross_output
        return hidden_states + self.mlp(self.ln_2(hidden_states)), weights, cross_weights


class VariantGPT2PreTrainedModel(PreTrainedModel):
    config_class = VariantGPT2Config
    config: VariantGPT2Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True  # dense layers; other variants refuse it clearly (masks.check_attn_implementation)
    _no_split_modules = ["VariantGPT2Block"]
    _keys_to_ignore_on_load_unexpected = [r"attn\.bias", r"attn\.masked_bias"]
    # what transformers' output capturing (utils.output_capturing: capture_outputs hooks) records, as in stock GPT-2:
    # hidden states at every block (its input first), the weights every self-/cross-attention returns (index 1)
    _can_record_outputs = {
        "hidden_states": VariantGPT2Block,
        "attentions": [GPT2VariantAttention, GPT2LSTMNAttention],
        "cross_attentions": GPT2CrossAttention,
    }

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # each variant caches its own state (VariantCache): see _prepare_cache_for_generation

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, generation_mode,
                                      batch_size: int, max_cache_length: int) -> None:
        """``generate``'s cache: a ``VariantCache`` (transformers would build a DynamicCache). A
        user's cache must be a VariantCache; ``cache_implementation`` may be None or "dynamic" (our
        cache) or "static" (its preallocated layers; refused by lstmn layers, with the reason); an
        assistant's cache records its past so that drafts can be cropped."""
        implementation = generation_config.cache_implementation
        user_cache = model_kwargs.get("cache")
        if user_cache is not None:
            if implementation is not None:
                raise ValueError("Passing both `cache_implementation` and `cache` is unsupported; use one of them.")
            if not isinstance(user_cache, VariantCache):
                raise ValueError(f"cache of type {type(user_cache).__name__}: variant models need a VariantCache")
            user_cache._is_user_defined = True
            return
        if implementation not in (None, "dynamic", "static"):
            raise ValueError(f"cache_implementation={implementation!r} is not supported by variant models: each "
                             "variant keeps its own state in a VariantCache; use cache_implementation=None or "
                             "'dynamic' (both mean the VariantCache), or 'static' (its preallocated layers).")
        if generation_config.use_cache is False:
            return
        static_length = None
        if implementation == "static":
            static_length = max(max_cache_length, generation_config.max_cache_len or 0)
        model_kwargs["cache"] = VariantCache(config=self.config, max_cache_len=static_length)
        if generation_config.is_assistant or generation_mode == GenerationMode.ASSISTED_GENERATION:
            model_kwargs["cache"].activate_past_recording()

    def create_masks_for_generate(self, config=None, inputs_embeds=None, attention_mask=None, cache=None, **kwargs):
        """What ``generate`` hands the forward as ``attention_mask`` when its cache is compileable (transformers
        builds a 4-D mask there): the 2-D padding mask, padded with zeros to the static cache's max_cache_len, so
        that compiled decoding steps see one shape (``static_step_inputs``); the mask as given otherwise."""
        slots = cache.compiled_slots() if isinstance(cache, VariantCache) else None
        if slots is None or attention_mask is None or attention_mask.dim() != 2 or attention_mask.shape[-1] > slots:
            return attention_mask
        return nn.functional.pad(attention_mask, (0, slots - attention_mask.shape[-1]))

    def init_continuous_batching(self, *args, **kwargs):
        """Continuous batching (``generate_batch``, ``generate(cache_implementation="paged")``) is refused:
        it runs attention over a PagedAttentionCache, which no variant layer can read."""
        raise ValueError("continuous batching (generate_batch, cache_implementation='paged') is not supported by "
                         "variant models: it needs paged attention over a PagedAttentionCache; use generate().")

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return True  # dense layers dispatch through ALL_ATTENTION_FUNCTIONS (hfav_attention.py); others check the name

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, Conv1D):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)
        init_variant_parameters(module, std, init)
        init_cross_attention(module, std, init)
        # GPT-2's scaled init of the residual projections: std / sqrt(2 · layers)
        if isinstance(getattr(module, "c_proj", None), Conv1D):
            init.normal_(module.c_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layer))


class VariantGPT2Model(VariantGPT2PreTrainedModel):
    """GPT-2 decoder stack with variant self-attention."""

    def __init__(self, config: VariantGPT2Config):
        config.validate_variant_fields()
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([VariantGPT2Block(config, i) for i in range(config.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()
        check_attn_implementation(config)

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, cache: VariantCache | None = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | list[int] | None = None,
                return_dict: bool | None = None, past_key_values: VariantCache | None = None,
                encoder_hidden_states: Tensor | None = None, encoder_attention_mask: Tensor | None = None, **kwargs):
        """See ``_forward``. Hidden states and attention weights are recorded by transformers' output capturing
        (``capture_outputs`` and ``_can_record_outputs``, as stock GPT-2): ``output_hidden_states`` may be a bool
        or the indices of the hidden states to keep; None takes the config's value."""
        flags = recording_flags(output_attentions, output_hidden_states)
        output = capture_outputs(VariantGPT2Model._forward)(
            self, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, cache=cache, use_cache=use_cache,
            past_key_values=past_key_values, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, return_dict=True, **flags, **kwargs)
        if not self.config.add_cross_attention:  # no cross-attention: None, not an empty tuple
            output = type(output)(**{k: v for k, v in output.items() if k != "cross_attentions"})
        return wrap_output(output, return_dict, self.config)

    def _forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        cache: VariantCache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        past_key_values: VariantCache | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        """With ``use_cache`` (default ``config.use_cache``), returns a ``VariantCache`` to continue
        from (given as ``cache``; then ``attention_mask`` covers the past and the new tokens,
        (B, T_past + T)). Under gradient checkpointing in training no cache is kept or returned.
        With ``config.add_cross_attention``: ``encoder_hidden_states`` (B, S, hidden) and
        ``encoder_attention_mask`` (B, S), 1 for real encoder tokens; the cache keeps their projections."""
        reject_unknown_kwargs(self, kwargs)
        if encoder_hidden_states is not None and not self.config.add_cross_attention:
            raise TypeError("encoder_hidden_states was given, but this model has no cross-attention "
                            "(config.add_cross_attention=False): build the decoder with add_cross_attention=True")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds.")
        check_attn_implementation(self.config)
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        cache = cache if cache is not None else past_key_values
        if isinstance(cache, EncoderDecoderCache) and cache.get_seq_length() == 0:
            cache = None  # generate()'s empty default for encoder-decoder models: replaced by a VariantCache
            use_cache = True
        if cache is not None and not isinstance(cache, VariantCache):
            raise ValueError(f"cache of type {type(cache).__name__}: variant models need a VariantCache "
                             "(pass use_cache=True and reuse the returned cache)")
        given_cache, asked_cache = cache, use_cache  # (packed rows refuse a cache given or asked for)
        use_cache = config_default(use_cache, self.config, "use_cache")
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache, cache = False, None  # as stock: the checkpointed blocks cannot fill a cache
            given_cache, asked_cache = None, None
        if use_cache and cache is None:
            cache = VariantCache(config=self.config)
        batch, length = inputs_embeds.shape[:2]
        output_attentions = config_default(output_attentions, self.config, "output_attentions")
        slots = cache.compiled_slots() if cache is not None else None  # a static cache that decodes compiled
        packing, dense_mask = None, "unprepared"
        if slots is not None and torch.compiler.is_compiling():  # one graph for every decoding step
            key_mask, position_ids = static_step_inputs(self.config, cache, attention_mask, position_ids,
                                                        (batch, length), slots)
        else:
            past = cache.get_seq_length() if cache is not None else 0
            check_length(past + length, self.config.max_position_embeddings)
            if slots is not None and attention_mask is not None and attention_mask.dim() == 2 \
                    and attention_mask.shape[-1] == slots:  # generate's mask over the slots (create_masks_for_generate)
                attention_mask = attention_mask[:, :past + length]
            custom = attention_mask is not None and attention_mask.dim() == 4  # dense layers apply it as given
            if custom:  # (a custom 4-D mask states the sequences itself)
                key_mask = None
                dense_mask = custom_attention_mask(self.config, attention_mask, (batch, length, past + length))
            else:
                key_mask = key_padding_mask(attention_mask, (batch, past + length))
                # padding-free packing (position_ids restarting inside a row): each sequence attends as its own row
                packing = packing_of(position_ids, key_mask, cache=given_cache, use_cache=asked_cache)
                if packing is not None:
                    use_cache, cache = False, None
                    dense_mask = dense_attention_mask(self.config, packing.gather(inputs_embeds), packing.key_mask)
                else:
                    dense_mask = dense_attention_mask(self.config, inputs_embeds, key_mask, cache)
            if position_ids is None:
                position_ids = positions_from_mask(key_mask, (batch, past + length), inputs_embeds.device)[:, -length:]

        hidden = inputs_embeds + self.wpe(position_ids)
        if token_type_ids is not None:
            hidden = hidden + self.wte(token_type_ids)
        hidden = self.drop(hidden)
        encoder_key_mask = None
        if encoder_hidden_states is not None:
            encoder_key_mask = key_padding_mask(encoder_attention_mask, encoder_hidden_states.shape[:2])
        for i, block in enumerate(self.h):  # hooks record each block's input and outputs (_can_record_outputs)
            layer_cache = cache.layers[i] if cache is not None else None
            hidden = block(hidden, key_mask, output_attentions, cache=layer_cache, attention_mask=dense_mask,
                           encoder_hidden_states=encoder_hidden_states, encoder_key_mask=encoder_key_mask,
                           packing=packing)[0]
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=self.ln_f(hidden),
                                                         cache=cache if use_cache else None)


def static_step_inputs(config, cache: VariantCache, attention_mask: Tensor | None, position_ids: Tensor | None,
                       shape: tuple[int, int], slots: int) -> tuple[Tensor, Tensor]:
    """A decoding step compiled over a compileable static cache (``VariantCache.compiled_slots``): the layers hand
    the attention whole buffers, the ``slots`` positions and a scratch slot holding the new token, where the
    kernels place the query (``VariantStaticLayer.step_key_mask``). The key mask is generate's attention mask
    padded to ``slots`` (``create_masks_for_generate``) over the slots written before, and the scratch slot: tensor
    compares, no Python int, so every step runs the same graph. One new token per step.
    -> key_mask (B, slots + 1) bool, position_ids (B, 1)."""
    batch, length = shape
    if length != 1:
        raise ValueError(f"a compiled forward over a static VariantCache takes one new token per step (got {length}): "
                         "run the prompt uncompiled (generate() does)")
    if config._attn_implementation not in OWN_IMPLEMENTATIONS:
        raise ValueError(f"a compiled decoding step runs the variant kernels ('sdpa' or 'eager'), not "
                         f"attn_implementation={config._attn_implementation!r}")
    layer = cache.layers[0]
    step = layer.step_key_mask()[None]  # (1, slots + 1)
    if attention_mask is None:
        padding = torch.ones(batch, slots, dtype=torch.bool, device=step.device)
    elif attention_mask.dim() == 2 and attention_mask.shape[-1] == slots:
        padding = attention_mask.bool()
    else:
        raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)}: a compiled decoding step over a "
                         f"static cache takes the 2-D mask padded to max_cache_len={slots} (generate() passes it, "
                         "create_masks_for_generate), so that its shape does not change from step to step")
    key_mask = torch.cat([padding, padding.new_ones(batch, 1)], dim=-1) & step
    if position_ids is None:  # the new token's place among the real tokens of its row
        index = layer.cumulative_length.expand(batch, 1)
        position_ids = (padding.long().cumsum(-1) - 1).clamp(min=0).gather(1, index)
    return key_mask, position_ids


def recording_flags(output_attentions, output_hidden_states) -> dict:
    """The output_* flags given (capture_outputs reads a missing one from the config, a None one as off)."""
    flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
    return {name: value for name, value in flags.items() if value is not None}


def positions_from_mask(key_mask: Tensor | None, shape, device) -> Tensor:
    """Position of each token among the real tokens of its row (0 for padding): (B, T)."""
    if key_mask is None:
        return torch.arange(shape[1], device=device).unsqueeze(0)
    return (key_mask.long().cumsum(-1) - 1).clamp(min=0)


def _base_inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                 output_attentions, output_hidden_states, cache=None, use_cache=None, encoder_hidden_states=None,
                 encoder_attention_mask=None) -> dict:
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                position_ids=position_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states, cache=cache, use_cache=use_cache, return_dict=True,
                encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask)


class VariantGPT2LMHeadModel(VariantGPT2PreTrainedModel, GenerationMixin):
    """Causal LM head tied to the token embeddings. The loss follows Trainer's ``num_items_in_batch``.

    ``_can_compile_fullgraph`` is per model (the class cannot know its variants): True when every layer's
    variant decodes compiled over a static cache (``variants.compiles_fullgraph``: every variant but lstmn); then
    ``generate(cache_implementation="static")`` compiles the decoding forward, as for stock GPT-2."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.loss_type = "ForCausalLM"  # the class name matches no entry of transformers' LOSS_MAPPING
        self.transformer = VariantGPT2Model(config)
        self._can_compile_fullgraph = compiles_fullgraph(config)  # (after the model validated the config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, cache=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, logits_to_keep: int = 0, past_key_values=None,
                encoder_hidden_states=None, encoder_attention_mask=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.transformer(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, output_attentions, output_hidden_states,
                                                  cache if cache is not None else past_key_values, use_cache,
                                                  encoder_hidden_states, encoder_attention_mask))
        hidden = outputs.last_hidden_state
        logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        output = CausalLMOutputWithCrossAttentions(loss=loss, logits=logits, cache=outputs.cache,
                                                   hidden_states=outputs.hidden_states, attentions=outputs.attentions,
                                                   cross_attentions=outputs.cross_attentions)
        return wrap_output(output, return_dict, self.config)


class VariantGPT2ForSequenceClassification(VariantGPT2PreTrainedModel):
    """Classifies from the last real token (the last 1 of the attention mask, else the last
    non-pad token, else the last token). Mean loss, scaled by Trainer under accumulation."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = VariantGPT2Model(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, cache=None, past_key_values=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.transformer(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, output_attentions, output_hidden_states,
                                                  cache if cache is not None else past_key_values, use_cache))
        logits = self.score(outputs.last_hidden_state)  # (B, T, labels)
        last = last_token_index(attention_mask, input_ids, self.config.pad_token_id, logits.shape[1])
        pooled_logits = logits[torch.arange(logits.shape[0], device=logits.device), last]
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, pooled_logits, self.config)
        output = SequenceClassifierOutputWithPast(loss=loss, logits=pooled_logits, cache=outputs.cache,
                                                  hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


def last_token_index(attention_mask: Tensor | None, input_ids: Tensor | None, pad_token_id: int | None,
                     seq_length: int) -> Tensor | int:
    """Index (B,) of each row's last real token, for left or right padding."""
    if attention_mask is not None:
        real = attention_mask.bool()
    elif input_ids is not None and pad_token_id is not None:
        real = input_ids != pad_token_id
    else:
        return seq_length - 1
    positions = torch.arange(seq_length, device=real.device)
    return (positions * real).argmax(-1)


class VariantGPT2ForTokenClassification(VariantGPT2PreTrainedModel):
    """Per-token dropout -> linear (``classifier``), as ``GPT2ForTokenClassification``. Mean loss over the
    labelled tokens (-100 ignored), so Trainer scales it under gradient accumulation."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = VariantGPT2Model(config)
        dropout = getattr(config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config, "hidden_dropout", None)
        self.dropout = nn.Dropout(0.1 if dropout is None else dropout)  # stock GPT-2's default
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, cache=None, past_key_values=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.transformer(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, output_attentions, output_hidden_states,
                                                  cache if cache is not None else past_key_values, use_cache))
        logits = self.classifier(self.dropout(outputs.last_hidden_state))  # (B, T, labels)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.to(logits.device).view(-1))
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                       attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantGPT2ForQuestionAnswering(VariantGPT2PreTrainedModel):
    """Extractive QA: a linear ``qa_outputs`` gives start and end logits (B, T) per token, as
    ``GPT2ForQuestionAnswering``; the loss is transformers' ``ForQuestionAnsweringLoss`` (the mean of
    the start and end cross-entropies, positions outside the input ignored)."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = VariantGPT2Model(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.transformer(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                                  inputs_embeds, output_attentions, output_hidden_states,
                                                  use_cache=False))
        start_logits, end_logits = question_answering_logits(self.qa_outputs(outputs.last_hidden_state))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                              hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


def question_answering_logits(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, 2) -> start logits (B, T), end logits (B, T)."""
    start, end = logits.split(1, dim=-1)
    return start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()


class VariantGPT2DoubleHeadsModel(VariantGPT2PreTrainedModel, GenerationMixin):
    """GPT-2 with a language-modelling head (tied to the token embeddings) and a multiple-choice head
    (``GPT2SequenceSummary`` over the hidden state at ``mc_token_ids``), as ``GPT2DoubleHeadsModel``.

    input_ids (B, C, T) for C choices (or (B, T)); mc_token_ids (B, C): the classification token of each
    choice (default: the last). Losses as stock: mean cross-entropies of the shifted LM targets (``labels``)
    and of the choice (``mc_labels``), so Trainer scales them under gradient accumulation."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        config.num_labels = 1  # as stock: the summary projects each choice to one score
        self.transformer = VariantGPT2Model(config)
        self._can_compile_fullgraph = compiles_fullgraph(config)  # as the LM head
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.multiple_choice_head = GPT2SequenceSummary(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, mc_token_ids=None, labels=None, mc_labels=None, cache=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None, past_key_values=None,
                **kwargs):
        reject_unknown_kwargs(self, kwargs)
        inputs = input_ids if input_ids is not None else inputs_embeds
        if inputs is None:
            raise ValueError("Specify exactly one of input_ids or inputs_embeds.")
        choices = inputs.shape[:-1] if input_ids is not None else inputs.shape[:-2]  # (B, C) or (B,)
        flat = [None if t is None else t.reshape(-1, *t.shape[len(choices):])
                for t in (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)]
        outputs = self.transformer(**_base_inputs(*flat, output_attentions, output_hidden_states,
                                                  cache if cache is not None else past_key_values, use_cache))
        hidden = outputs.last_hidden_state.view(*choices, *outputs.last_hidden_state.shape[1:])  # (B, C, T, h)
        lm_logits = self.lm_head(hidden)
        mc_logits = self.multiple_choice_head(hidden, mc_token_ids).squeeze(-1)  # (B, C)
        mc_loss = lm_loss = None
        if mc_labels is not None:
            mc_loss = nn.functional.cross_entropy(mc_logits.view(-1, mc_logits.size(-1)),
                                                  mc_labels.to(mc_logits.device).view(-1))
        if labels is not None:
            shift_logits = lm_logits[..., :-1, :].contiguous()
            shift_labels = labels.to(lm_logits.device)[..., 1:].contiguous()
            lm_loss = nn.functional.cross_entropy(shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1))
        output = GPT2DoubleHeadsModelOutput(loss=lm_loss, mc_loss=mc_loss, logits=lm_logits, mc_logits=mc_logits,
                                            cache=outputs.cache, hidden_states=outputs.hidden_states,
                                            attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)
