"""LoRA through PEFT on every variant case x both families, on models loaded with
``trust_remote_code=True`` from Hub-ready folders: training changes only the adapters (each of them),
the adapter reloads and reproduces outputs, and merging gives back the Variant class unchanged."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import FAMILIES, tiny_config, tiny_model
from hub_helpers import HUB_CASE_IDS, HUB_CASES, load_with_remote_code
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig
from transformers.pytorch_utils import Conv1D

import hf_attn_variants as hv

LM = {"bert": (hv.VariantBertForMaskedLM, AutoModelForMaskedLM), "gpt2": (hv.VariantGPT2LMHeadModel,
                                                                        AutoModelForCausalLM)}
LAYER_INDEX = re.compile(r"\.(?:layer|h)\.(\d+)\.")
TOLERANCE = 1e-5


@pytest.fixture(params=HUB_CASES, ids=HUB_CASE_IDS)
def hub_case(request):
    return request.param


def lm_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 97, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def load_from_folder(folder, family: str):
    return load_with_remote_code(LM[family][1], folder)


def projections_by_layer(model: nn.Module) -> dict[int, set[str]]:
    """From the module tree itself: the Linear/Conv1D layers inside each attention sublayer, the
    output projection c_proj excepted (LoRA adapts the projections that feed the attention)."""
    out: dict[int, set[str]] = {}
    for name, module in model.named_modules():
        if type(module).__name__.endswith(("SelfAttention", "VariantAttention", "LSTMNAttention")):
            layer = int(LAYER_INDEX.search(f".{name}.").group(1))
            out[layer] = {sub.rsplit(".", 1)[-1] for sub, m in module.named_modules()
                          if isinstance(m, (nn.Linear, Conv1D)) and not sub.endswith("c_proj")}
    return out


def outputs(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_targets_cover_every_attention_projection(family, hub_case):
    variant, fields = hub_case
    model = tiny_model(family, variant, **fields)
    expected = projections_by_layer(model)
    assert len(expected) == 2 and all(expected.values())
    targets = hv.lora_target_modules(model)
    assert set(targets) == set().union(*expected.values())
    assert len(targets) == len(set(targets))
    assert hv.lora_target_modules(model.config) == targets
    conv = {name for name, m in model.named_modules() if isinstance(m, Conv1D)}
    assert hv.lora_fan_in_fan_out(model) == any(n.rsplit(".", 1)[-1] in targets for n in conv)


def test_targets_table():
    assert hv.lora_target_modules(tiny_config("bert", "low_rank_band")) == [
        "query", "key", "value", "query_low_rank", "key_low_rank"]
    assert hv.lora_target_modules(tiny_config("gpt2", "additive")) == ["c_attn"]
    assert hv.lora_target_modules(tiny_config("gpt2", layer_variants=["lstmn", "low_rank_band"])) == [
        "w_tape", "w_input", "w_summary", "gates", "c_attn", "c_attn_low_rank"]
    assert hv.lora_fan_in_fan_out(tiny_config("gpt2", "lstmn")) is False
    assert hv.lora_fan_in_fan_out(tiny_config("bert", "dense")) is False
    with pytest.raises(ValueError, match="model_type"):
        hv.lora_target_modules(BertConfig())


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_train_save_reload_merge(family, hub_case, tmp_path):
    variant, fields = hub_case
    cls = LM[family][0]
    tiny_model(family, variant, cls=cls, seed=1, **fields).save_pretrained(tmp_path / "base")
    base = load_from_folder(tmp_path / "base", family)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    ids, mask = lm_batch()
    base_logits = outputs(base, ids, mask)
    projections = projections_by_layer(base)

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=hv.lora_target_modules(base),
                        fan_in_fan_out=hv.lora_fan_in_fan_out(base))
    model = get_peft_model(base, config)
    wrapped: dict[int, set[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            wrapped.setdefault(int(LAYER_INDEX.search(f".{name}.").group(1)), set()).add(name.rsplit(".", 1)[-1])
    assert wrapped == projections, "LoRA did not wrap exactly each layer's projections"
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)

    # a few steps: every adapter learns, the base weights stay bit-identical
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    for name, p in model.named_parameters():
        if name in trainable and ".lora_B." in name:  # (out_features, r): every output row must learn
            dead = ((p != trainable[name]).sum(1) == 0).nonzero().flatten().tolist()
            assert not dead, f"adapter {name}: outputs {dead} did not learn (is the module bypassed?)"
    unwrapped = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                 for k, v in model.state_dict().items() if "lora_" not in k}
    assert unwrapped.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(unwrapped[key], value), f"base weight {key} changed"
    adapted = outputs(model, ids, mask)
    assert not torch.allclose(adapted, base_logits, atol=1e-4), "the adapters change nothing"

    # the adapter alone saves, and reloads onto a fresh base from the Hub-ready folder
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(load_from_folder(tmp_path / "base", family), tmp_path / "adapter").eval()
    torch.testing.assert_close(outputs(reloaded, ids, mask), adapted, atol=TOLERANCE, rtol=0)

    if family == "gpt2":  # the cached decoding paths see the adapters too
        assert_cached_generation_matches(reloaded, ids[:1, :5])

    # merged: the Variant class again, no LoRA layer left, same outputs
    merged = reloaded.merge_and_unload()
    assert type(merged).__name__ == cls.__name__ and type(merged).__module__.startswith("transformers_modules.")
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    torch.testing.assert_close(outputs(merged, ids, mask), adapted, atol=TOLERANCE, rtol=0)



def assert_cached_generation_matches(model, prompt: torch.Tensor, steps: int = 6) -> None:
    """Greedy generate's per-step logits with the cache equal those computed without it."""
    scores = []
    for use_cache in (True, False):
        with torch.no_grad():
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=steps,
                                 min_new_tokens=steps, do_sample=False, use_cache=use_cache,
                                 output_scores=True, return_dict_in_generate=True, pad_token_id=0)
        scores.append(torch.stack(out.scores))
    assert scores[0].shape[0] == steps
    torch.testing.assert_close(scores[0], scores[1], atol=1e-4, rtol=0)


class Shifted(nn.Module):
    """Wraps a Linear or Conv1D the way an adapter does (it is neither itself) and adds x @ deltaᵀ."""

    def __init__(self, base: nn.Module, in_features: int, out_features: int):
        super().__init__()
        self.base_layer = base
        self.delta = nn.Linear(in_features, out_features, bias=False)
        nn.init.normal_(self.delta.weight, std=0.3)

    @property
    def weight(self) -> torch.Tensor:  # what code reading ``.weight`` directly would see
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.delta(x)


def first_attention(model: nn.Module) -> nn.Module:
    return model.encoder.layer[0].attention.self if hasattr(model, "encoder") else model.h[0].attn


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("variant", "fields"), [("lstmn", {}), ("low_rank_band", {"band_combine": "sequential"})],
                         ids=["lstmn", "low_rank_band-sequential"])
def test_wrapped_projections_are_called_not_bypassed(family, variant, fields):
    """The fast paths that read a projection's weight directly (lstmn_scan's fused gates, GPT-2's
    sequential query) call a wrapped module instead: an attention sublayer with wrapped projections
    equals one whose weights already hold the wrappers' change."""
    model, merged = tiny_model(family, variant, **fields), tiny_model(family, variant, **fields)
    names = projections_by_layer(model)[0]
    sublayer, twin = first_attention(model), first_attention(merged)
    for name, module in list(sublayer.named_modules()):
        if name.rsplit(".", 1)[-1] in names:
            parent = sublayer.get_submodule(name.rsplit(".", 1)[0]) if "." in name else sublayer
            conv = isinstance(module, Conv1D)
            shape = module.weight.shape if conv else module.weight.shape[::-1]  # (in, out)
            wrapper = Shifted(module, *shape)
            setattr(parent, name.rsplit(".", 1)[-1], wrapper)
            with torch.no_grad():
                twin.get_submodule(name).weight += wrapper.delta.weight.T if conv else wrapper.delta.weight
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got, want = sublayer(x)[0], twin(x)[0]
        plain = first_attention(tiny_model(family, variant, **fields))(x)[0]
    assert not torch.allclose(want, plain, atol=1e-2), "the wrappers change nothing"
    torch.testing.assert_close(got, want, atol=TOLERANCE, rtol=0)
