"""The shipped run configs: current with configs/generate.py, valid, and their variant fields accepted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "configs"))

import generate  # noqa: E402

train = pytest.importorskip("hf_attn_variants_research.train", reason="needs the train extra")

# run configs of train.py; configs/experiments holds the experiment grids (tests/test_experiments.py checks them)
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
                 if not {"accelerate", "experiments", "longctx"} & set(p.parts))  # longctx: tests/test_longctx.py


def test_every_variant_has_a_config_per_task():
    for task in ("mr", "snli", "shakespeare"):
        for variant in generate.VARIANTS:
            path = ROOT / "configs" / task / f"{variant}.yaml"
            assert path.read_text() == generate.render(task, variant), f"{path} is stale: run configs/generate.py"


class _Tokenizer:
    """What build_model reads of a tokenizer."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __len__(self) -> int:
        return 100


@pytest.mark.parametrize("path", CONFIGS)
def test_config_is_valid(path):
    """Sections and TrainingArguments fields check out, and the model config accepts the variant fields."""
    cfg = train.load_config(str(ROOT / path), [])
    runs = train.plan_runs(cfg)
    if cfg["task"] in train.TASK_FAMILY:  # seq2seq, pair_fusion: their own model classes, built whole (tiny)
        for name, variant, _ in runs:
            model = train.build_model(cfg, variant, _Tokenizer(), ["a", "b", "c"] if cfg["task"] == "pair_fusion"
                                      else None)
            config = model.decoder.config if cfg["task"] == "seq2seq" else model.config
            assert getattr(config, train.RUN_NAME_FIELD[cfg["task"]][0]) == name
        return
    cls = train.model_class(cfg)
    for _, variant, _ in runs:
        fields = {k: v for k, v in cfg["model"].items() if k not in ("family", "pretrained")}
        config = cls.config_class(**fields, **variant, vocab_size=100)
        assert config.attention_variant == variant.get("attention_variant", "dense")


def test_quickstart_compares_with_dense():
    cfg = train.load_config(str(ROOT / "configs" / "quickstart.yaml"), [])
    names = [name for name, _, _ in train.plan_runs(cfg)]
    assert names == ["low_rank_band", "dense"] and cfg["data"]["dataset"] == "mr"
