"""``attention_compile``: a config field (validated with the others, saved with the model) that
turns on the compiled kernels (additive's fused tiles, the band's CPU flex path for no-grad
forwards), and the ``train.py`` option that sets it."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import FAMILIES, HEAD_CLASSES, random_batch, tiny_config, tiny_model

from hf_attn_variants import hfav_attention as attention
from hf_attn_variants import hfav_variants as variants

train = pytest.importorskip("hf_attn_variants_research.train", reason="needs the train extra")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bad_attention_compile_names_the_field(family, value):
    with pytest.raises(ValueError, match="attention_compile") as err:
        tiny_config(family, attention_compile=value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_compile_is_saved_with_the_model(family, tmp_path):
    model = tiny_model(family, "additive", cls=HEAD_CLASSES[family][0], attention_compile=True)
    assert tiny_config(family).attention_compile is False  # off by default
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    assert loaded.config.attention_compile is True
    assert all(m.compile_kernels for m in loaded.modules() if isinstance(m, attention.VariantAttention))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("variant", "kernel", "flag"), [("additive", "additive_attention", "compiled"),
                                                          ("band", "band_attention", "flex")])
def test_the_field_reaches_the_kernels(family, variant, kernel, flag, monkeypatch):
    """The model passes compiled=True to the additive kernel and flex=True to the band kernel."""
    seen = []
    original = getattr(variants, kernel)  # the spec adapters call the kernels by their names in hfav_variants.py

    def spy(*args, **kwargs):  # records the flag, then runs the eager kernel (no compile in this test)
        seen.append(kwargs[flag])
        return original(*args, **{**kwargs, flag: None if flag == "flex" else False})

    monkeypatch.setattr(variants, kernel, spy)
    ids, mask = random_batch(2, 9, seed=0)
    for on, expected in ((False, {False, None}), (True, {True})):
        seen.clear()
        with torch.no_grad():
            tiny_model(family, variant, attention_compile=on)(input_ids=ids, attention_mask=mask)
        assert seen and set(seen) <= expected


def _write(tmp_path, cfg) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_train_py_option_sets_the_variant_field(tmp_path):
    path = _write(tmp_path, {"task": "classification", "data": {"dataset": "mr"}, "variant": {
        "attention_variant": "additive"}})
    assert train.load_config(path, ["--attention_compile"])["variant"]["attention_compile"] is True
    assert train.load_config(path, ["variant.attention_compile=true"])["variant"]["attention_compile"] is True
    assert train.load_config(path, ["attention_window=5"])["variant"]["attention_window"] == 5
    assert "attention_compile" not in train.load_config(path, [])["variant"]
    with pytest.raises(ValueError, match="not_a_field"):
        train.load_config(path, ["not_a_field=1"])
