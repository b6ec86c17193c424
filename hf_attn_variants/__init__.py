"""hf-attn-variants: the self-attention of BERT- and GPT-2-style models replaced by the variants
of Guo et al. 2019 (low-rank, band), Bahdanau et al. 2015 (additive) and Cheng et al. 2016
(LSTMN intra-attention), as registered ``transformers`` model families; and the papers'
inter-attention: additive cross-attention in GPT-2 decoders (for ``EncoderDecoderModel``) and
the LSTMN fusion pair classifier.

Importing the package registers the configs and models with the Auto* classes, and marks them
so that ``save_pretrained`` writes an ``auto_map`` and copies the (flat) Hub code.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForNextSentencePrediction,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .configuration_lstmn_fusion import FUSIONS, LSTMNFusionConfig
from .configuration_variants import (
    BAND_COMBINES,
    CROSS_ATTENTION_VARIANTS,
    VARIANTS,
    VariantBertConfig,
    VariantGPT2Config,
)
from .convert import convert_from_dense, low_rank_factors
from .hub import build_model_card, publish, save_hub_folder
from .modeling_bert_variants import (
    VariantBertForMaskedLM,
    VariantBertForMultipleChoice,
    VariantBertForNextSentencePrediction,
    VariantBertForPreTraining,
    VariantBertForQuestionAnswering,
    VariantBertForSequenceClassification,
    VariantBertForTokenClassification,
    VariantBertLMHeadModel,
    VariantBertModel,
    VariantBertPreTrainedModel,
)
from .modeling_gpt2_variants import (
    VariantGPT2DoubleHeadsModel,
    VariantGPT2ForQuestionAnswering,
    VariantGPT2ForSequenceClassification,
    VariantGPT2ForTokenClassification,
    VariantGPT2LMHeadModel,
    VariantGPT2Model,
    VariantGPT2PreTrainedModel,
)
from .modeling_lstmn_fusion import (
    LSTMNFusionForSequenceClassification,
    LSTMNFusionModel,
    LSTMNFusionPreTrainedModel,
)
from .peft_utils import lora_fan_in_fan_out, lora_target_modules
from .stock_attention import register_band_attention

__version__ = "0.1.0"

AUTO_CLASSES = {
    VariantBertConfig: {
        AutoModel: VariantBertModel,
        AutoModelForMaskedLM: VariantBertForMaskedLM,
        AutoModelForSequenceClassification: VariantBertForSequenceClassification,
        AutoModelForTokenClassification: VariantBertForTokenClassification,
        AutoModelForQuestionAnswering: VariantBertForQuestionAnswering,
        AutoModelForMultipleChoice: VariantBertForMultipleChoice,
        AutoModelForNextSentencePrediction: VariantBertForNextSentencePrediction,
        AutoModelForPreTraining: VariantBertForPreTraining,
        AutoModelForCausalLM: VariantBertLMHeadModel,
    },
    VariantGPT2Config: {
        AutoModel: VariantGPT2Model,
        AutoModelForCausalLM: VariantGPT2LMHeadModel,
        AutoModelForSequenceClassification: VariantGPT2ForSequenceClassification,
        AutoModelForTokenClassification: VariantGPT2ForTokenClassification,
        AutoModelForQuestionAnswering: VariantGPT2ForQuestionAnswering,
    },
}
# model classes with no Auto class (as in transformers): saved folders load them with their own class
UNMAPPED_CLASSES = {VariantGPT2Config: (VariantGPT2DoubleHeadsModel,)}

# the papers' inter-attention systems beside the two families
FUSION_AUTO_CLASSES = {
    LSTMNFusionConfig: {
        AutoModel: LSTMNFusionModel,
        AutoModelForSequenceClassification: LSTMNFusionForSequenceClassification,
    },
}


def _register() -> None:
    for config_class, models in {**AUTO_CLASSES, **FUSION_AUTO_CLASSES}.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
        for auto_class, model_class in models.items():
            auto_class.register(config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_class.__name__)


_register()

__all__ = [
    "BAND_COMBINES",
    "CROSS_ATTENTION_VARIANTS",
    "FUSIONS",
    "FUSION_AUTO_CLASSES",
    "LSTMNFusionConfig",
    "LSTMNFusionForSequenceClassification",
    "LSTMNFusionModel",
    "LSTMNFusionPreTrainedModel",
    "VARIANTS",
    "VariantBertConfig",
    "UNMAPPED_CLASSES",
    "VariantBertForMaskedLM",
    "VariantBertForMultipleChoice",
    "VariantBertForNextSentencePrediction",
    "VariantBertForPreTraining",
    "VariantBertForQuestionAnswering",
    "VariantBertForSequenceClassification",
    "VariantBertForTokenClassification",
    "VariantBertLMHeadModel",
    "VariantBertModel",
    "VariantBertPreTrainedModel",
    "VariantGPT2Config",
    "VariantGPT2DoubleHeadsModel",
    "VariantGPT2ForQuestionAnswering",
    "VariantGPT2ForSequenceClassification",
    "VariantGPT2ForTokenClassification",
    "VariantGPT2LMHeadModel",
    "VariantGPT2Model",
    "VariantGPT2PreTrainedModel",
    "build_model_card",
    "convert_from_dense",
    "lora_fan_in_fan_out",
    "lora_target_modules",
    "low_rank_factors",
    "publish",
    "register_band_attention",
    "save_hub_folder",
]
