"""Run transformers' own model tests over the variant classes (opt-in; not part of ``pytest``).

transformers' common test files (``tests/test_modeling_common.py``, ``test_configuration_common.py``, ...)
ship in its source distribution; the GPT-2 and BERT model test files (``tests/models/{gpt2,bert}``,
``tests/generation/test_utils.py``, ``tests/exporters``, ``tests/utils``, ``tests/causal_lm_tester.py``) are
in its repository. This tool assembles a sandbox test tree from what it is given and runs it twice
(single-threaded): once over the stock classes, once over ours, and prints pass/fail/skip counts.

Two modes:

- ``--checkout DIR``: a transformers repository checkout at the installed version's tag
  (``git clone --depth 1 --branch v5.24.0 https://github.com/huggingface/transformers``). Runs
  ``tests/models/gpt2/test_modeling_gpt2.py`` and ``tests/models/bert/test_modeling_bert.py`` unchanged; a
  ``conftest.py`` replaces ``transformers.GPT2Model`` etc. by ours (subclasses carrying the stock class names,
  so that the tests' name-based tables, e.g. which classes take labels, apply) before the test files import them.
- sdist only (default; ``--sdist`` or a ``pip download`` of the installed version): the repository files are
  missing, so the tool writes stubs for the three modules ``test_modeling_common.py`` imports
  (``GenerationTesterMixin``, ``ExportTesterMixin``, ``config_common_kwargs``: generation and export tests do
  not run) and its own GPT-2/BERT model testers (``HV_TESTERS`` below, the stock testers' sizes) over every
  common test of ``ModelTesterMixin``.

``--variant``: dense (default), band (window 512, longer than every test sequence: equal to dense) or
low_rank (rank = head size: equal to dense), where the stock tests' assumptions hold.

    python tools/run_transformers_tests.py --family gpt2 --variant dense          # sdist mode
    python tools/run_transformers_tests.py --checkout ~/src/transformers --family all

Writes ``<out>/<family>-<classes>-<variant>.xml`` (JUnit) and ``summary.json``; prints a table. A tool (not
Hub code): imports the package, transformers and the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import transformers

REPO_ROOT = Path(__file__).resolve().parent.parent
FAMILY_FILES = {"gpt2": "tests/models/gpt2/test_modeling_gpt2.py", "bert": "tests/models/bert/test_modeling_bert.py"}
REPO_DIRS = ("generation", "exporters", "utils", "models/gpt2", "models/bert")
REPO_FILES = ("causal_lm_tester.py", "__init__.py", "models/__init__.py")
VARIANT_FIELDS = {"dense": {}, "band": {"attention_window": 512}, "low_rank": {"attention_rank": "head"}}

STUBS = {
    "generation/test_utils.py": '"""Stub (sdist mode): the repository\'s generation tests are not available."""\n\n\n'
                                "class GenerationTesterMixin:\n    pass\n",
    "exporters/test_export.py": '"""Stub (sdist mode): the repository\'s export tests are not available."""\n\n\n'
                                "class ExportTesterMixin:\n    pass\n",
    "utils/test_configuration_utils.py": '"""Stub (sdist mode): the common kwargs table is in the repository."""\n\n'
                                         "config_common_kwargs = {}\n",
}

# what the sandbox's conftest does: replace the stock classes by ours (subclasses named like the stock ones)
CONFTEST = '''
import os
import sys

import torch
import transformers

torch.set_num_threads(1)
CLASSES = os.environ.get("HV_SUITE_CLASSES", "stock")
VARIANT_FIELDS = {variant_fields}

if CLASSES == "ours":
    import hf_attn_variants as hv

    fields = {{"attention_variant": os.environ.get("HV_SUITE_VARIANT", "dense"),
              **VARIANT_FIELDS[os.environ.get("HV_SUITE_VARIANT", "dense")]}}

    def config_class(base, name):
        """``base`` whose variant fields default to the run's variant (rank "head": the head size)."""

        def __post_init__(self, **kwargs):
            for key, value in fields.items():
                if key not in kwargs and getattr(self, key) == getattr(base, key, None):
                    setattr(self, key, None if value == "head" else value)
            base.__post_init__(self, **kwargs)
            if fields.get("attention_rank") == "head" and self.hidden_size % self.num_attention_heads == 0:
                self.attention_rank = self.hidden_size // self.num_attention_heads

        annotations = {{k: type(v) for k, v in fields.items() if v != "head"}}
        defaults = {{k: v for k, v in fields.items() if v != "head"}}
        return type(name, (base,), {{"__annotations__": annotations, **defaults, "__post_init__": __post_init__,
                                    "__module__": base.__module__}})

    # the configs keep our names (Auto classes look configs up by name); the models take the stock names
    swaps = {{"GPT2Config": config_class(hv.VariantGPT2Config, "VariantGPT2Config"),
             "BertConfig": config_class(hv.VariantBertConfig, "VariantBertConfig")}}
    # _can_compile_fullgraph is per model in the package (the variants decide); the stock tests read the class: the
    # run's variant decides it for the swapped GPT-2 classes (stock BERT does not set it)
    from hf_attn_variants.hfav_variants import compiles_fullgraph

    gpt2_compiles = compiles_fullgraph(swaps["GPT2Config"]())
    for name in dir(hv):
        if name.startswith(("VariantGPT2", "VariantBert")) and not name.endswith(("Config", "PreTrainedModel")):
            ours = getattr(hv, name)
            stock_name = name.removeprefix("Variant")
            config = swaps["GPT2Config" if "GPT2" in name else "BertConfig"]
            # _supports_attention_backend gates transformers' padding-free packing tests (generation/test_utils.py:
            # "can't infer if new attn mask API is supported"); variant models pack by position_ids
            # (hf_attn_variants/hfav_packing.py), so the adapter turns the gate on. The package itself leaves the
            # flag off: it also tells vLLM/TGI that the model runs on their attention backends, which ours do not.
            swaps[stock_name] = type(stock_name, (ours,), {{"config_class": config, "__module__": ours.__module__,
                                                           "_supports_attention_backend": True,
                                                           "_can_compile_fullgraph": "GPT2" in name and gpt2_compiles}})
    # the Auto classes map the run's configs to the swapped models, as the package maps its own
    for base, models in hv.AUTO_CLASSES.items():
        config = swaps["GPT2Config" if base is hv.VariantGPT2Config else "BertConfig"]
        for auto, model in models.items():
            auto.register(config, swaps[model.__name__.removeprefix("Variant")], exist_ok=True)
    # importing the package can replace transformers' lazy module in sys.modules: patch every copy
    for module in {{id(m): m for m in (transformers, sys.modules["transformers"])}}.values():
        for name, cls in swaps.items():
            setattr(module, name, cls)
'''

# sdist mode: model testers of our own (the stock testers' sizes) over ModelTesterMixin's common tests
HV_TESTERS = '''
import unittest

import torch
import transformers
from transformers.testing_utils import require_torch, torch_device

from .test_configuration_common import ConfigTester
from .test_modeling_common import GenerationTesterMixin, ModelTesterMixin, ids_tensor, random_attention_mask


class Tester:
    """Sizes of transformers' GPT-2 / BERT testers (batch 13, length 7, hidden 32, 2 layers)."""

    def __init__(self, parent, family):
        self.parent, self.family = parent, family
        self.batch_size, self.seq_length, self.is_training = 13, 7, True
        self.vocab_size, self.hidden_size, self.num_hidden_layers = 99, 32, 2
        self.num_attention_heads, self.intermediate_size, self.type_vocab_size = 4, 37, 16
        self.num_labels, self.num_choices, self.type_sequence_label_size = 3, 4, 2
        self.max_position_embeddings = 512

    def get_config(self):
        if self.family == "gpt2":
            return transformers.GPT2Config(vocab_size=self.vocab_size, n_embd=self.hidden_size,
                                           n_layer=self.num_hidden_layers, n_head=self.num_attention_heads,
                                           n_inner=self.intermediate_size, n_positions=self.max_position_embeddings,
                                           pad_token_id=98, bos_token_id=98, eos_token_id=98)
        return transformers.BertConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                                       num_hidden_layers=self.num_hidden_layers,
                                       num_attention_heads=self.num_attention_heads,
                                       intermediate_size=self.intermediate_size,
                                       type_vocab_size=self.type_vocab_size,
                                       max_position_embeddings=self.max_position_embeddings)

    def prepare_config_and_inputs_for_common(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        mask = random_attention_mask([self.batch_size, self.seq_length])
        token_type_ids = ids_tensor([self.batch_size, self.seq_length], 2)
        return self.get_config(), {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": token_type_ids}


class CommonTests(ModelTesterMixin, GenerationTesterMixin):  # the stub mixin: generation tests do not run
    family = None
    test_resize_embeddings = True

    def setUp(self):
        self.model_tester = Tester(self, self.family)
        config_class = type(self.model_tester.get_config())
        size = {"n_embd": 37} if self.family == "gpt2" else {"hidden_size": 37}  # as the stock test files
        self.config_tester = ConfigTester(self, config_class=config_class, **size)

    def test_config(self):
        self.config_tester.run_common_tests()

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """As the stock BERT test: the pre-training head also takes next_sentence_label."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class.__name__ == "BertForPreTraining":
            inputs_dict["labels"] = torch.zeros((self.model_tester.batch_size, self.model_tester.seq_length),
                                                dtype=torch.long, device=torch_device)
            inputs_dict["next_sentence_label"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long,
                                                             device=torch_device)
        return inputs_dict


@require_torch
class GPT2CommonTest(CommonTests, unittest.TestCase):
    family = "gpt2"
    all_model_classes = (transformers.GPT2Model, transformers.GPT2LMHeadModel,
                         transformers.GPT2ForSequenceClassification, transformers.GPT2ForTokenClassification,
                         transformers.GPT2ForQuestionAnswering)


@require_torch
class BertCommonTest(CommonTests, unittest.TestCase):
    family = "bert"
    all_model_classes = (transformers.BertModel, transformers.BertForMaskedLM, transformers.BertForPreTraining,
                         transformers.BertForSequenceClassification, transformers.BertForTokenClassification,
                         transformers.BertForQuestionAnswering, transformers.BertForMultipleChoice,
                         transformers.BertForNextSentencePrediction, transformers.BertLMHeadModel)
'''


def fetch_sdist(cache: Path) -> Path:
    """The installed transformers version's source distribution (pip download into ``cache``)."""
    version = transformers.__version__
    target = cache / f"transformers-{version}.tar.gz"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"transformers=={version}", "-d", str(cache)], check=True)
    return target


def build_sandbox(root: Path, sdist: Path, checkout: Path | None) -> bool:
    """root/tests from the sdist (common files), the checkout's model files or stubs; True if full mode."""
    tests = root / "tests"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.split("/", 2)[1:2] == ["tests"] and m.isfile()]
        for member in members:
            relative = member.name.split("/", 2)[2]
            (tests / relative).parent.mkdir(parents=True, exist_ok=True)
            (tests / relative).write_bytes(archive.extractfile(member).read())
    full = checkout is not None
    if full:
        for name in REPO_DIRS:
            shutil.copytree(checkout / "tests" / name, tests / name, dirs_exist_ok=True)
        for name in REPO_FILES:
            if (checkout / "tests" / name).exists():
                shutil.copy2(checkout / "tests" / name, tests / name)
    else:
        for relative, text in STUBS.items():
            (tests / relative).parent.mkdir(parents=True, exist_ok=True)
            (tests / relative).write_text(text)
        (tests / "test_hv_models.py").write_text(HV_TESTERS)
    for folder in [tests, *[p for p in tests.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    (root / "conftest.py").write_text(CONFTEST.format(variant_fields=repr(VARIANT_FIELDS)))
    return full


def run(root: Path, full: bool, family: str, classes: str, variant: str, out: Path, timeout: int,
        select: str | None = None) -> dict:
    """One pytest run in the sandbox; counts from its JUnit report."""
    common = f"tests/test_hv_models.py::{'GPT2' if family == 'gpt2' else 'Bert'}CommonTest"
    target = FAMILY_FILES[family] if full else common
    report = out / f"{family}-{classes}-{variant}.xml"
    env = {**os.environ, "HV_SUITE_CLASSES": classes, "HV_SUITE_VARIANT": variant, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(root), os.environ.get("PYTHONPATH", "")]),
           "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pytest", target, "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           f"--junitxml={report}", "-o", "addopts=", "--rootdir", str(root), *(["-k", select] if select else [])]
    try:
        with open(out / f"{family}-{classes}-{variant}.log", "w") as log:
            subprocess.run(cmd, cwd=root, env=env, timeout=timeout, stdout=log, stderr=subprocess.STDOUT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    return counts(report)


def counts(report: Path) -> dict:
    """pass/fail/skip counts and each failure's or skip's first message line."""
    if not report.exists():
        return {"error": "no report (collection failed)"}
    result = {"passed": 0, "failed": 0, "skipped": 0, "failures": {}, "skips": {}}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            result["failed"] += 1
            result["failures"][name] = (failure.get("message") or "").splitlines()[0][:300] if failure.get(
                "message") else ""
        elif skipped is not None:
            result["skipped"] += 1
            result["skips"][name] = (skipped.get("message") or "")[:300]
        else:
            result["passed"] += 1
    return result


def markdown_table(summary: dict) -> str:
    """The results as a markdown table (docs/compat.md), then every failure and every skip that differs
    between our classes and the stock ones, with its message."""
    rows = ["| mode | family | classes | variant | passed | failed | skipped |", "|---|---|---|---|---|---|---|"]
    for key in sorted(summary):
        mode, family, classes, variant = key.split("/")
        r = summary[key]
        if "error" in r:
            rows.append(f"| {mode} | {family} | {classes} | {variant} | {r['error']} | | |")
            continue
        rows.append(f"| {mode} | {family} | {classes} | {variant} | {r['passed']} | {r['failed']} | {r['skipped']} |")
    notes = []
    for key in sorted(summary):
        mode, family, classes, variant = key.split("/")
        stock = summary.get(f"{mode}/{family}/stock/-", {})
        r = summary[key]
        for name, message in sorted(r.get("failures", {}).items()):
            notes.append(f"- {key}: FAILED `{name}`: {message}")
        if classes == "ours" and "skips" in stock:
            for name in sorted(set(r.get("skips", {})) - set(stock["skips"])):
                notes.append(f"- {key}: skipped (stock runs it) `{name}`: {r['skips'][name]}")
            for name in sorted(set(stock["skips"]) - set(r.get("skips", {}))):
                notes.append(f"- {key}: runs (stock skips it: {stock['skips'][name]}) `{name}`")
    return "\n".join(rows + [""] + (notes or ["- no failures; the same skips as stock"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=("gpt2", "bert", "all"), default="all")
    parser.add_argument("--variant", choices=tuple(VARIANT_FIELDS), default="dense")
    parser.add_argument("--classes", choices=("stock", "ours", "both"), default="both")
    parser.add_argument("--sdist", type=Path, help="transformers-<version>.tar.gz (default: pip download it)")
    parser.add_argument("--checkout", type=Path, help="a transformers repository checkout at the installed version")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "transformers_suite")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per pytest run")
    parser.add_argument("-k", dest="select", help="pytest -k expression (a subset of the tests)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of <out>/summary.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.table:
        print(markdown_table(json.loads((args.out / "summary.json").read_text())))
        return 0
    sdist = args.sdist or fetch_sdist(args.out / "sdist")
    families = ("gpt2", "bert") if args.family == "all" else (args.family,)
    runs = ("stock", "ours") if args.classes == "both" else (args.classes,)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    with tempfile.TemporaryDirectory(prefix="hv-tf-suite-") as tmp:
        full = build_sandbox(Path(tmp), sdist, args.checkout)
        for family in families:
            for classes in runs:
                key = f"{'full' if full else 'sdist'}/{family}/{classes}/{args.variant if classes == 'ours' else '-'}"
                result = run(Path(tmp), full, family, classes, args.variant, args.out, args.timeout, args.select)
                summary[key] = result
                partial = summary_path.with_suffix(".tmp")
                partial.write_text(json.dumps(summary, indent=1, sort_keys=True))
                partial.replace(summary_path)
                line = result.get("error") or (f"{result['passed']} passed, {result['failed']} failed, "
                                               f"{result['skipped']} skipped")
                print(f"{key}: {line}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
