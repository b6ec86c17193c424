"""BERT-style models whose self-attention is one of the variants.

The module tree and parameter names are those of ``transformers``' BERT, so a stock BERT
checkpoint loads into any variant: only the parameters a variant adds (or reshapes) are
reported missing. The self-attention of layer i is ``attention_class("bert", config.variant_for_layer(i))``.

Hub code: imports only torch, transformers and sibling files.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.bert.modeling_bert import BertForPreTrainingOutput
from transformers.utils import logging
from transformers.utils.output_capturing import capture_outputs

from .configuration_variants import VariantBertConfig
from .hfav_attention import BertVariantSelfAttention, LSTMNAttention, attention_class, init_variant_parameters
from .hfav_masks import (
    LOSS_KWARGS,
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

Tensor = torch.Tensor


class VariantBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (as ``BertEmbeddings``)."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.position_ids = nn.Buffer(torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None) -> Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        seq_length = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = self.position_ids[:, :seq_length]
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class VariantBertSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: Tensor, input_tensor: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class VariantBertAttention(nn.Module):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.self = attention_class("bert", config.variant_for_layer(layer_idx))(config, layer_idx)
        self.output = VariantBertSelfOutput(config)

    def forward(self, hidden_states, key_mask=None, need_weights=False, attention_mask="unprepared", packing=None):
        context, weights = self.self(hidden_states, key_mask, need_weights, attention_mask=attention_mask,
                                     packing=packing)
        return self.output(context, hidden_states), weights


class VariantBertIntermediate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class VariantBertOutput(VariantBertSelfOutput):
    def __init__(self, config):
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class VariantBertLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.attention = VariantBertAttention(config, layer_idx)
        self.intermediate = VariantBertIntermediate(config)
        self.output = VariantBertOutput(config)

    def forward(self, hidden_states, key_mask=None, need_weights=False, attention_mask="unprepared", packing=None):
        """packing: the sequences of padding-free packed rows (``hfav_packing.Packing``), for the self-attention."""
        attention_output, weights = self.attention(hidden_states, key_mask, need_weights, attention_mask=attention_mask,
                                                   packing=packing)
        return self.output(self.intermediate(attention_output), attention_output), weights


class VariantBertEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList([VariantBertLayer(config, i) for i in range(config.num_hidden_layers)])


class VariantBertPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class VariantBertPreTrainedModel(PreTrainedModel):
    config_class = VariantBertConfig
    config: VariantBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True  # dense layers; other variants refuse it clearly (masks.check_attn_implementation)
    _no_split_modules = ["VariantBertEmbeddings", "VariantBertLayer"]
    # what transformers' output capturing (utils.output_capturing: capture_outputs hooks) records, as in stock BERT:
    # hidden states at every layer (the embeddings first), the weights every self-attention returns (index 1)
    _can_record_outputs = {
        "hidden_states": VariantBertLayer,
        "attentions": [BertVariantSelfAttention, LSTMNAttention],
    }

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        return True  # dense layers dispatch through ALL_ATTENTION_FUNCTIONS (hfav_attention.py); others check the name

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        init_variant_parameters(module, std, init)
        if isinstance(module, VariantBertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, VariantBertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


class VariantBertModel(VariantBertPreTrainedModel):
    """BERT encoder (bidirectional; causal when ``config.is_decoder``) with variant self-attention."""

    def __init__(self, config: VariantBertConfig, add_pooling_layer: bool = True):
        config.validate_variant_fields()
        super().__init__(config)
        self.embeddings = VariantBertEmbeddings(config)
        self.encoder = VariantBertEncoder(config)
        self.pooler = VariantBertPooler(config) if add_pooling_layer else None
        self.post_init()
        check_attn_implementation(config)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, position_ids: Tensor | None = None,
                inputs_embeds: Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | list[int] | None = None, return_dict: bool | None = None,
                use_cache: bool | None = None, **kwargs):
        """See ``_forward``. Hidden states and attention weights are recorded by transformers' output capturing
        (``capture_outputs`` and ``_can_record_outputs``, as stock BERT): ``output_hidden_states`` may be a bool
        or the indices of the hidden states to keep; None takes the config's value."""
        flags = {"output_attentions": output_attentions, "output_hidden_states": output_hidden_states}
        output = capture_outputs(VariantBertModel._forward)(
            self, input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache, return_dict=True,
            **{name: value for name, value in flags.items() if value is not None}, **kwargs)
        return wrap_output(output, return_dict, self.config)

    def _forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | list[int] | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions:
        """``use_cache`` is accepted for stock compatibility; variant BERT models keep no cache (an
        explicit ``use_cache=True`` on a decoder config is refused)."""
        # generate() hands an encoder of an EncoderDecoderModel every model kwarg, labels included
        # (transformers' _prepare_encoder_decoder_kwargs_for_generation): the base model ignores labels
        reject_unknown_kwargs(self, kwargs, allowed=(*LOSS_KWARGS, "labels"))
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Specify exactly one of input_ids or inputs_embeds.")
        if use_cache and self.config.is_decoder:
            raise ValueError("use_cache=True: variant BERT models keep no cache; generate with the GPT-2 family.")
        check_attn_implementation(self.config)
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        check_length(shape[1], self.config.max_position_embeddings)
        custom = attention_mask is not None and attention_mask.dim() == 4  # dense layers apply it as given
        key_mask = None if custom else key_padding_mask(attention_mask, shape)
        # padding-free packing (position_ids restarting inside a row): each sequence attends as its own row
        # (a custom 4-D mask states the sequences itself)
        packing = None if custom else packing_of(position_ids, key_mask)
        output_attentions = config_default(output_attentions, self.config, "output_attentions")

        hidden = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        if custom:
            dense_mask = custom_attention_mask(self.config, attention_mask, (shape[0], shape[1], shape[1]))
        elif packing is not None:
            dense_mask = dense_attention_mask(self.config, packing.gather(hidden), packing.key_mask)
        else:
            dense_mask = dense_attention_mask(self.config, hidden, key_mask)
        for layer in self.encoder.layer:  # hooks record each layer's input and outputs (_can_record_outputs)
            hidden = layer(hidden, key_mask, output_attentions, attention_mask=dense_mask, packing=packing)[0]
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden, pooler_output=self.pooler(hidden) if self.pooler is not None else None)


class VariantBertPredictionHeadTransform(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class VariantBertLMPredictionHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.transform = VariantBertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.decoder(self.transform(hidden_states))


class VariantBertOnlyMLMHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = VariantBertLMPredictionHead(config)

    def forward(self, sequence_output: Tensor) -> Tensor:
        return self.predictions(sequence_output)


def _base_inputs(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                 output_attentions, output_hidden_states) -> dict:
    return dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                position_ids=position_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                output_hidden_states=output_hidden_states, return_dict=True)


class VariantBertForMaskedLM(VariantBertPreTrainedModel):
    """Masked-LM head tied to the word embeddings. The loss follows Trainer's ``num_items_in_batch``."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config):
        super().__init__(config)
        self.bert = VariantBertModel(config, add_pooling_layer=False)
        self.cls = VariantBertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.bert(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                           inputs_embeds, output_attentions, output_hidden_states))
        logits = self.cls(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantBertForSequenceClassification(VariantBertPreTrainedModel):
    """Pooled [CLS] -> dropout -> linear. Mean loss, so Trainer must scale it under accumulation."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = VariantBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.bert(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                           inputs_embeds, output_attentions, output_hidden_states))
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config)
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                          attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantBertForTokenClassification(VariantBertPreTrainedModel):
    """Per-token dropout -> linear. Mean loss over labelled tokens."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = VariantBertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.bert(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                           inputs_embeds, output_attentions, output_hidden_states))
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1), ignore_index=-100)
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                       attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantBertOnlyNSPHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled_output: Tensor) -> Tensor:
        return self.seq_relationship(pooled_output)


class VariantBertPreTrainingHeads(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = VariantBertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence_output: Tensor, pooled_output: Tensor) -> tuple[Tensor, Tensor]:
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


class _MLMOutputEmbeddings:
    """get/set_output_embeddings of the heads whose ``cls.predictions.decoder`` is tied to the word embeddings."""

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias


class VariantBertForPreTraining(_MLMOutputEmbeddings, VariantBertPreTrainedModel):
    """BERT's pre-training heads, as ``BertForPreTraining``: masked-LM logits (B, T, vocab) and the
    next-sentence logits (B, 2) from the pooled [CLS]. The loss (both label sets given) is the sum of the
    two mean cross-entropies, as stock; Trainer scales it under gradient accumulation."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }
    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.bert = VariantBertModel(config)
        self.cls = VariantBertPreTrainingHeads(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, next_sentence_label=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.bert(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                           inputs_embeds, output_attentions, output_hidden_states))
        prediction_scores, seq_relationship = self.cls(outputs.last_hidden_state, outputs.pooler_output)
        loss = None
        if labels is not None and next_sentence_label is not None:
            masked = nn.functional.cross_entropy(prediction_scores.view(-1, self.config.vocab_size), labels.view(-1))
            nsp = nn.functional.cross_entropy(seq_relationship.view(-1, 2), next_sentence_label.view(-1))
            loss = masked + nsp
        output = BertForPreTrainingOutput(loss=loss, prediction_logits=prediction_scores,
                                          seq_relationship_logits=seq_relationship,
                                          hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantBertForNextSentencePrediction(VariantBertPreTrainedModel):
    """Next-sentence prediction from the pooled [CLS] (``cls.seq_relationship``), as
    ``BertForNextSentencePrediction``: logits (B, 2); mean loss."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.bert = VariantBertModel(config)
        self.cls = VariantBertOnlyNSPHead(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.bert(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                           inputs_embeds, output_attentions, output_hidden_states))
        logits = self.cls(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, 2), labels.view(-1))
        output = NextSentencePredictorOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                             attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantBertForMultipleChoice(VariantBertPreTrainedModel):
    """Multiple choice, as ``BertForMultipleChoice``: input_ids (B, C, T); each choice's pooled [CLS] ->
    dropout -> linear to one score; logits (B, C); mean loss over the B questions."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.bert = VariantBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        inputs = input_ids if input_ids is not None else inputs_embeds
        if inputs is None:
            raise ValueError("Specify exactly one of input_ids or inputs_embeds.")
        num_choices = inputs.shape[1]
        flat = [None if t is None else t.reshape(-1, *t.shape[2:])
                for t in (input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)]
        outputs = self.bert(**_base_inputs(*flat, output_attentions, output_hidden_states))
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)  # (B, C)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels.to(logits.device))
        output = MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                           attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantBertForQuestionAnswering(VariantBertPreTrainedModel):
    """Extractive QA, as ``BertForQuestionAnswering``: ``qa_outputs`` gives start and end logits (B, T);
    the loss is transformers' ``ForQuestionAnsweringLoss`` (mean of the two cross-entropies)."""

    accepts_loss_kwargs = False

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = VariantBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        outputs = self.bert(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                           inputs_embeds, output_attentions, output_hidden_states))
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions)
        output = QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                              hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)


class VariantBertLMHeadModel(_MLMOutputEmbeddings, VariantBertPreTrainedModel, GenerationMixin):
    """A BERT decoder (``config.is_decoder=True``: causal self-attention) with the LM head tied to the word
    embeddings, as ``BertLMHeadModel``: the one BERT class that generates. The loss is transformers'
    ``ForCausalLMLoss`` with every loss kwarg (``num_items_in_batch``, ``shift_labels``, ``ignore_index``).

    Variant BERT models keep no cache: ``generate`` runs the whole prefix at every step (exact, and
    O(T²) per sequence); for cached decoding use the GPT-2 family."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config):
        super().__init__(config)
        if not config.is_decoder:  # as stock: a warning (the common tests build every head from one config)
            logging.get_logger(__name__).warning(
                f"{type(self).__name__} with is_decoder=False attends in both directions: a causal LM needs "
                "is_decoder=True")
        self.loss_type = "ForCausalLM"  # the class name matches no entry of transformers' LOSS_MAPPING
        self.bert = VariantBertModel(config, add_pooling_layer=False)
        self.cls = VariantBertOnlyMLMHead(config)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def _prepare_cache_for_generation(self, generation_config, model_kwargs: dict, *args, **kwargs) -> None:
        """No cache: every step re-runs the prefix (``use_cache`` is ignored by the base model)."""
        model_kwargs.pop("cache", None)
        model_kwargs.pop("past_key_values", None)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None, logits_to_keep: int = 0, cache=None,
                past_key_values=None, **kwargs):
        reject_unknown_kwargs(self, kwargs)
        if cache is not None or past_key_values is not None:
            raise ValueError("cache is not supported by variant BERT models: generate runs without one "
                             "(cached decoding: the GPT-2 family)")
        outputs = self.bert(**_base_inputs(input_ids, attention_mask, token_type_ids, position_ids,
                                           inputs_embeds, output_attentions, output_hidden_states))
        hidden = outputs.last_hidden_state
        logits = self.cls(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        output = CausalLMOutputWithCrossAttentions(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                                   attentions=outputs.attentions)
        return wrap_output(output, return_dict, self.config)
