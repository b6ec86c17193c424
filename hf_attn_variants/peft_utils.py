"""PEFT helpers: which modules of a variant model LoRA should adapt.

PEFT knows the ``target_modules`` of stock model types only; for a custom ``model_type`` they
must be given. ``lora_target_modules`` returns the attention projections of every variant in the
model (the union over a mixed ``layer_variants`` stack), as each variant's spec names them
(``variants.VariantSpec.lora_targets``):

| family | dense, low_rank, band, additive | low_rank_band                  | lstmn                             |
|--------|---------------------------------|--------------------------------|-----------------------------------|
| bert   | query, key, value               | + query_low_rank, key_low_rank | w_tape, w_input, w_summary, gates |
| gpt2   | c_attn                          | + c_attn_low_rank              | w_tape, w_input, w_summary, gates |

GPT-2's ``c_attn`` is a ``Conv1D`` (weights stored transposed): LoRA needs ``fan_in_fan_out=True``
there; ``lora_fan_in_fan_out`` says whether a model has such targets.

A tool module: it works on a model or config of either family, also one loaded with
``trust_remote_code=True`` (it reads ``model_type`` and the variant fields, never the classes).
"""

from __future__ import annotations

from typing import Any

from .hfav_variants import VARIANTS

FAMILY_OF_MODEL_TYPE = {"variant_bert": "bert", "variant_gpt2": "gpt2"}


CONV1D_TARGETS = frozenset({"c_attn", "c_attn_low_rank"})


def _config_of(model_or_config: Any) -> Any:
    config = getattr(model_or_config, "config", model_or_config)
    if getattr(config, "model_type", None) not in FAMILY_OF_MODEL_TYPE:
        raise ValueError(
            f"expected a variant model or config (model_type one of {sorted(FAMILY_OF_MODEL_TYPE)}), "
            f"got model_type={getattr(config, 'model_type', None)!r}"
        )
    return config


def _layer_variants(config: Any) -> list[str]:
    return list(config.layer_variants) if config.layer_variants else [config.attention_variant]


def lora_target_modules(model_or_config: Any) -> list[str]:
    """The attention projection modules of a variant model, for ``LoraConfig(target_modules=...)``.

    Works on a model or a config of either family; for a mixed ``layer_variants`` stack, the union
    over its layers (in the order of the table above, without repeats).
    """
    config = _config_of(model_or_config)
    family = FAMILY_OF_MODEL_TYPE[config.model_type]
    names: list[str] = []
    for variant in _layer_variants(config):
        if variant not in VARIANTS:
            raise ValueError(f"attention_variant={variant!r} is not one of {tuple(VARIANTS)}")
        names += [name for name in VARIANTS[variant].lora_targets[family] if name not in names]
    return names


def lora_fan_in_fan_out(model_or_config: Any) -> bool:
    """True when some LoRA target is a GPT-2 ``Conv1D`` (``LoraConfig(fan_in_fan_out=True)``).

    In a GPT-2 stack mixing lstmn with other variants the targets are both ``Conv1D`` (c_attn)
    and ``nn.Linear`` (the LSTMN cell); PEFT then sets the flag per module, with a warning.
    """
    return bool(CONV1D_TARGETS.intersection(lora_target_modules(model_or_config)))
