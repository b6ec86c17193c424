"""Shared by the Hub, pipeline and PEFT tests: the cases, Hub-ready folders, offline tokenizers,
and a fresh Python interpreter in which ``hf_attn_variants`` cannot be imported."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import CASE_IDS, VARIANT_CASES
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, GPT2TokenizerFast, PreTrainedTokenizerFast
from transformers.dynamic_module_utils import get_class_from_dynamic_module

import hf_attn_variants as hv

# the conftest cases plus a mixed stack (band below, lstmn above): the union of both
MIXED_CASE = ("dense", {"layer_variants": ["band", "lstmn"]})
HUB_CASES = [*VARIANT_CASES, MIXED_CASE]
HUB_CASE_IDS = [*CASE_IDS, "mixed-band-lstmn"]

# every model class of a family and the Auto class that loads it, from the package's own table
AUTO_CLASS_NAME = {model.__name__: auto.__name__ for models in hv.AUTO_CLASSES.values()
                   for auto, model in models.items()}

CORPUS = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "the bird sang a song at dawn",
    "my cat likes the warm sun",
    "the small dog sat in the sun",
]


def bert_tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer trained on CORPUS (< 97 tokens, [PAD] = 0), with BERT's specials."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=97, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tok)


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on CORPUS (300 tokens, <|endoftext|> = 0), with GPT-2's specials."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return GPT2TokenizerFast(tokenizer_object=tok)


TOKENIZERS = {"bert": bert_tokenizer, "gpt2": gpt2_tokenizer}


def load_with_remote_code(auto_class, folder: Path):
    """``auto_class.from_pretrained(folder, trust_remote_code=True)`` running the folder's own code, also
    in this process where the package is imported. (transformers prefers a registered local class over
    remote code; a config of the folder's own class is registered nowhere, so the Auto class must take
    the trust_remote_code path.)"""
    reference = json.loads((Path(folder) / "config.json").read_text())["auto_map"]["AutoConfig"]
    config = get_class_from_dynamic_module(reference, str(folder)).from_pretrained(folder)
    model = auto_class.from_pretrained(folder, config=config, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), "not the folder's Hub code"
    return model


def hub_code_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.py")}


PACKAGE_DIR = Path(hv.__file__).parent


def relative_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def reachable_files(start: str) -> set[str]:
    """The package files a module reaches through relative imports, itself included: what
    save_pretrained copies for a class defined in it."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += relative_imports(PACKAGE_DIR / f"{name}.py")
    return {f"{name}.py" for name in seen}


# Runs first in the fresh interpreter: drop the editable install's finder and every sys.path entry
# holding the package, check it is gone, then refuse any later attempt to import it.
HIDE_PACKAGE = textwrap.dedent('''
    import importlib.abc, importlib.util, os, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "hf_attn_variants" not in repr(f)]
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "hf_attn_variants"))]
    sys.path_importer_cache.clear()
    assert importlib.util.find_spec("hf_attn_variants") is None, "hf_attn_variants is still importable"

    class _Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "hf_attn_variants":
                raise ModuleNotFoundError(f"{name} is hidden in this interpreter", name=name)
            return None

    sys.meta_path.insert(0, _Refuse())
''')


def run_without_package(body: str, cwd: Path, timeout: int = 600) -> dict:
    """Run ``body`` (Python source that writes ``report.json`` into its cwd) in a fresh, isolated
    interpreter (``-I``: no PYTHONPATH, no user site, no script dir) where ``hf_attn_variants`` is hidden.
    Returns the report, with ``leaked``: whether any hf_attn_variants module got imported anyway."""
    script = cwd / "fresh_interpreter.py"
    epilogue = textwrap.dedent('''
        import json as _json
        _report = _json.loads(open("report.json").read())
        _report["leaked"] = sorted(m for m in sys.modules if m.split(".")[0] == "hf_attn_variants")
        open("report.json", "w").write(_json.dumps(_report))
    ''')
    script.write_text(HIDE_PACKAGE + textwrap.dedent(body) + epilogue)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_MODULES_CACHE=str(cwd / "hf_modules"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-I", str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"fresh interpreter failed:\n{proc.stderr[-4000:]}"
    return json.loads((cwd / "report.json").read_text())
