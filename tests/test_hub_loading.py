"""Hub-ready folders load anywhere: every variant case x both families x every model class is saved
with ``save_pretrained``, then ONE fresh interpreter in which ``hf_attn_variants`` cannot be imported
loads every folder with AutoConfig, AutoModel and the matching AutoModelFor* (trust_remote_code=True)
and must reproduce the outputs the parent saved."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from conftest import BASE_CLASS, FAMILIES, HEAD_CLASSES, head_inputs, head_logits, random_batch, tiny_model
from hub_helpers import (
    AUTO_CLASS_NAME,
    HUB_CASE_IDS,
    HUB_CASES,
    hub_code_files,
    reachable_files,
    run_without_package,
)
from safetensors.torch import save_file

import hf_attn_variants as hv

TOLERANCE = 1e-5
FAMILY_AUTO_CLASSES = {
    "bert": {"AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
             "AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice",
             "AutoModelForNextSentencePrediction", "AutoModelForPreTraining", "AutoModelForCausalLM"},
    "gpt2": {"AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForSequenceClassification",
             "AutoModelForTokenClassification", "AutoModelForQuestionAnswering"},
}
# the heads an Auto class loads (GPT-2's DoubleHeadsModel has none, as in transformers: tests/test_heads.py)
AUTO_HEADS = {family: [cls for cls in classes if cls.__name__ in AUTO_CLASS_NAME]
              for family, classes in HEAD_CLASSES.items()}
FAMILY_CASES = [(family, case_id, case) for family in FAMILIES for case_id, case in zip(HUB_CASE_IDS, HUB_CASES)]

LOADER = '''
import json
import torch
import transformers
from safetensors.torch import load_file

manifest = json.loads(open("manifest.json").read())
expected = load_file("expected.safetensors")
report = {}
for entry in manifest:
    folder, prefix = entry["folder"], entry["folder"] + "/"
    ids, mask = expected[prefix + "ids"], expected[prefix + "mask"]
    head_ids, head_mask = expected[prefix + "head_ids"], expected[prefix + "head_mask"]
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
    base = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    head = getattr(transformers, entry["auto_class"]).from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = head(input_ids=head_ids, attention_mask=head_mask).to_tuple()[0]
    report[folder] = {
        "classes": [f"{type(o).__module__}.{type(o).__name__}" for o in (config, base, head)],
        "variants": [config.attention_variant, config.layer_variants],
        "hidden_diff": (hidden - expected[prefix + "hidden"]).abs().max().item(),
        "logits_diff": (logits - expected[prefix + "logits"]).abs().max().item(),
        "logits_shape": list(logits.shape),
    }
open("report.json", "w").write(json.dumps(report))
'''


def folder_name(family: str, case_id: str, cls: type) -> str:
    return f"{family}-{case_id}-{cls.__name__}"


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    """Saves every folder and what its model computes; one folder per (family, case, model class)."""
    root = tmp_path_factory.mktemp("hub")
    manifest, expected = [], {}
    for family, case_id, (variant, fields) in FAMILY_CASES:
        ids, mask = random_batch(3, 10, "right" if family == "bert" else "left", seed=len(manifest))
        for cls in AUTO_HEADS[family]:
            folder = folder_name(family, case_id, cls)
            model = tiny_model(family, variant, cls=cls, seed=len(manifest), **fields)
            model.save_pretrained(root / folder)
            inputs = head_inputs(cls, ids, mask)
            with torch.no_grad():
                logits = head_logits(model(**inputs))
                hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            tensors = {"ids": ids, "mask": mask, "logits": logits, "hidden": hidden,
                       "head_ids": inputs["input_ids"], "head_mask": inputs["attention_mask"]}
            expected |= {f"{folder}/{key}": t.clone().contiguous() for key, t in tensors.items()}
            manifest.append({"folder": folder, "auto_class": AUTO_CLASS_NAME[cls.__name__]})
    save_file(expected, root / "expected.safetensors")
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def fresh_report(hub_root) -> dict:
    return run_without_package(LOADER, hub_root)


def test_the_package_stayed_hidden(fresh_report):
    assert fresh_report.pop("leaked") == []
    assert len(fresh_report) == sum(len(AUTO_HEADS[f]) for f, _, _ in FAMILY_CASES)


@pytest.mark.parametrize(("family", "case_id", "case"), FAMILY_CASES, ids=[f"{f}-{c}" for f, c, _ in FAMILY_CASES])
def test_folder_holds_weights_code_and_full_auto_map(hub_root, family, case_id, case):
    variant, fields = case
    for cls in AUTO_HEADS[family]:
        folder = hub_root / folder_name(family, case_id, cls)
        assert (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == [cls.__name__]
        assert (config["attention_variant"], config.get("layer_variants")) == (variant, fields.get("layer_variants"))
        auto_map = config["auto_map"]
        assert set(auto_map) == FAMILY_AUTO_CLASSES[family]
        # every auto_map entry names a class defined in a code file of the folder
        for reference in auto_map.values():
            module, name = reference.split(".")
            tree = ast.parse((folder / f"{module}.py").read_text())
            assert name in {node.name for node in tree.body if isinstance(node, ast.ClassDef)}, reference
        code = hub_code_files(folder)
        assert code == reachable_files(f"modeling_{family}_variants") | reachable_files("configuration_variants")
        assert {"configuration_variants.py", f"modeling_{family}_variants.py", "hfav_attention.py",
                "hfav_kernels.py"} <= code


def test_auto_map_matches_the_registered_auto_classes():
    """The auto_map a config carries names exactly the classes ``__init__`` registers in-process."""
    for config_class, models in hv.AUTO_CLASSES.items():
        expected = {"AutoConfig": f"configuration_variants.{config_class.__name__}"}
        expected |= {auto.__name__: f"{model.__module__.split('.')[-1]}.{model.__name__}"
                     for auto, model in models.items()}
        family = "bert" if config_class is hv.VariantBertConfig else "gpt2"
        assert tiny_model(family).config.auto_map == expected


@pytest.mark.parametrize(("family", "case_id", "case"), FAMILY_CASES, ids=[f"{f}-{c}" for f, c, _ in FAMILY_CASES])
def test_fresh_interpreter_reproduces_outputs(fresh_report, family, case_id, case):
    variant, fields = case
    for cls in AUTO_HEADS[family]:
        entry = fresh_report[folder_name(family, case_id, cls)]
        config_class, base_class, head_class = entry["classes"]
        for qualified in entry["classes"]:
            assert qualified.startswith("transformers_modules."), f"{qualified} was not loaded from the folder's code"
        assert base_class.endswith("." + BASE_CLASS[family].__name__)
        assert head_class.endswith("." + cls.__name__)
        assert entry["variants"] == [variant, fields.get("layer_variants")]
        assert entry["hidden_diff"] <= TOLERANCE, f"{cls.__name__}: AutoModel hidden states differ"
        assert entry["logits_diff"] <= TOLERANCE, f"{cls.__name__}: {head_class} logits differ"
