"""The long-context runner: end to end at CI size, resume across budgeted invocations, configs, intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hf_attn_variants_research import longctx

TINY = {
    "scale": "ci",
    "tasks": {
        "listops": {
            "data": {"max_depth": 4, "max_args": 4, "min_length": 6, "max_length": 24, "num_train": 64,
                     "num_valid": 16, "num_test": 16, "seed": 0},
            "model": {"hidden": 16, "heads": 2, "layers": 1, "intermediate": 32, "dropout": 0.0},
            "train": {"steps": 3, "batch": 8, "lr": 0.05, "schedule": "lra_rsqrt", "warmup": 2,
                      "weight_decay": 0.1, "eval_batch": 16},
            "variants": [{"name": "dense", "attention_variant": "dense"},
                         {"name": "band+1 global", "attention_variant": "band", "attention_window": 2,
                          "attention_global_tokens": 1},
                         {"name": "low_rank+band", "attention_variant": "low_rank_band", "attention_rank": 2,
                          "attention_window": 2}],
            "settings": [{"name": "tiny"}], "seeds": [0]},
        "mqar": {
            "data": {"vocab": 64, "num_train": 64, "num_test": 16, "seed": 0},
            "model": {"hidden": 16, "heads": 2, "layers": 1, "intermediate": 32},
            "train": {"steps": 3, "batch": 8, "lr": 0.003, "schedule": "cosine", "weight_decay": 0.1,
                      "eval_every": 2, "stop_at": 2.0},
            "variants": [{"name": "dense", "attention_variant": "dense"},
                         {"name": "low_rank", "attention_variant": "low_rank"}],
            "settings": [{"name": "T=16", "data": {"length": 16, "pairs": 2}}], "seeds": [0, 1]},
    },
}


def _cfg(tmp_path: Path, **over) -> dict:
    cfg = json.loads(json.dumps(TINY))
    cfg["cache"] = str(tmp_path / "cache")
    cfg.update(over)
    return cfg


def test_end_to_end_ci_size(tmp_path):
    cfg = _cfg(tmp_path)
    records = tmp_path / "r.jsonl"
    written = longctx.run(cfg, records, 1e9, longctx.torch.device("cpu"), log=lambda *_: None)
    assert len(written) == len(longctx.cells(cfg)) == 3 + 4
    for r in longctx.read_records(records):
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["steps_run"] == 3
        assert r["commit"] and r["step_time_s"] > 0 and r["parameters"] > 0
        assert ("guess_baseline" in r) == (r["task"] == "mqar")
        assert r["variant_fields"]["attention_variant"] in longctx.REGISTRY
    md = longctx.table(cfg, longctx.read_records(records))
    assert "| band+1 global |" in md and "| low_rank |" in md
    assert "guessing baseline" in md and "root-operator rule" in md
    assert md.count("| dense |") == 2


def test_resume_two_invocations_finish_the_grid_without_rerunning(tmp_path):
    cfg = _cfg(tmp_path)
    cfg["tasks"]["listops"]["settings"][0]["estimate_s"] = 1e6  # nothing after the first cell fits the budget
    records = tmp_path / "r.jsonl"
    dev = longctx.torch.device("cpu")
    first = longctx.run(cfg, records, 1e-3, dev, log=lambda *_: None)
    assert [r["key"] for r in first] == [longctx.cell_key(longctx.cells(cfg)[0])]
    second = longctx.run(cfg, records, 1e9, dev, log=lambda *_: None)
    keys = [r["key"] for r in longctx.read_records(records)]
    assert len(keys) == len(set(keys)) == len(longctx.cells(cfg))
    assert first[0]["key"] not in {r["key"] for r in second}
    assert longctx.run(cfg, records, 1e9, dev, log=lambda *_: None) == []


def test_cli_list_and_bad_config(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_cfg(tmp_path)))
    assert longctx.main(["list", str(path), "--records", str(tmp_path / "none.jsonl")]) == 0
    assert capsys.readouterr().out.count("pending ") == 7
    bad = _cfg(tmp_path)
    bad["tasks"]["mqar"]["variants"][0]["attention_variant"] = "sparse"
    path.write_text(yaml.safe_dump(bad))
    assert longctx.main(["list", str(path)]) == 2
    assert "attention_variant='sparse'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu.yaml"])
def test_shipped_configs_order_the_informative_cells_first(name):
    cfg = longctx.load_config(Path(__file__).resolve().parents[1] / "configs" / "longctx" / name)
    first = [(c["task"], c["variant"], c["seed"]) for c in longctx.cells(cfg)[:8]]
    assert first == [("listops", v, 0) for v in ("dense", "band", "band+1 global", "low_rank", "low_rank+band")] \
        + [("mqar", v, 0) for v in ("dense", "band", "low_rank")]


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu.yaml"])
def test_shipped_configs_every_cell_has_a_valid_model_config(name):
    cfg = longctx.load_config(Path(__file__).resolve().parents[1] / "configs" / "longctx" / name)
    for cell in longctx.cells(cfg):
        data, size, train, variant = longctx.cell_parts(cfg, cell)
        config = longctx.model_config(cell["task"], variant, size, data)
        assert config.attention_variant == variant["attention_variant"]
        longctx.lr_factor(train)


def test_t_interval_by_hand():
    mean, lo, hi = longctx.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.303 / 3 ** 0.5)
    assert longctx.t_interval([0.5])[1] != longctx.t_interval([0.5])[1]  # nan with one seed


def test_schedules():
    lra = longctx.lr_factor({"steps": 10, "warmup": 4, "schedule": "lra_rsqrt"})
    assert lra(1) == pytest.approx(0.5 / 2) and lra(15) == pytest.approx(1 / 4)
    cos = longctx.lr_factor({"steps": 10, "schedule": "cosine"})
    assert cos(0) == 1.0 and cos(10) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="train.schedule='linear'"):
        longctx.lr_factor({"steps": 10, "schedule": "linear"})


def _fake_records(cfg: dict, tasks: tuple[str, ...]) -> list[dict]:
    """Synthetic finished cells (no training): varied accuracies over the configured variants and seeds."""
    out = []
    for task in tasks:
        spec = cfg["tasks"][task]
        for s in spec["settings"]:
            for i, v in enumerate(spec["variants"]):
                for seed in spec["seeds"] + [seed + 10 for seed in spec["seeds"]]:
                    r = {"task": task, "setting": s["name"], "variant": v["name"], "seed": seed,
                         "test_accuracy": 0.1 + 0.05 * i + 0.03 * seed % 0.2, "scale": "ci",
                         "data": {**spec["data"], **s.get("data", {})}}
                    r.update({"guess_baseline": 0.12} if task == "mqar" else {"majority_baseline": 0.2})
                    out.append(r)
    return out


def test_figure_writes_one_png_per_task(tmp_path):
    cfg = _cfg(tmp_path)
    paths = longctx.figure(cfg, _fake_records(cfg, ("listops", "mqar")), tmp_path / "figs", suffix="ci")
    assert [p.name for p in paths] == ["listops-ci.png", "mqar-ci.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    assert sorted(f.name for f in (tmp_path / "figs").iterdir()) == ["listops-ci.png", "mqar-ci.png"]  # no temp


def test_figure_names_the_task_without_records(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError, match="'mqar'"):
        longctx.figure(cfg, _fake_records(cfg, ("listops",)), tmp_path / "figs")
    assert not (tmp_path / "figs" / "listops-cpu.png").exists()


def test_lra_reference_matches_the_docs():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "longcontext.md").read_text()
    for model, pct in longctx.LRA_TABLE1_LISTOPS.items():
        assert f"| {model} | {pct:.2f} |" in doc
