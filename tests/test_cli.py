"""The command line respects a user's time: help and version without importing torch, every config
(baselines included) checked before any data loads, a bad input reported as one line naming the
file, the field and the value (the traceback only with --debug), missing paths named as such, and
``convert`` accepting a dense Variant model as ``convert_from_dense`` documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_model

from hf_attn_variants_research import cli

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command line in a fresh interpreter (as the console script runs it)."""
    return subprocess.run([sys.executable, "-m", "hf_attn_variants_research", *args], env=_env(), cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=300)


def tiny_config(tmp_path: Path, **changes) -> Path:
    """A valid run config whose data file does not exist: any error about the variant proves the
    check ran before data loading."""
    cfg = {"task": "classification",
           "model": {"family": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 64},
           "variant": {"attention_variant": "band", "attention_window": 2},
           "baselines": {"dense": {"attention_variant": "dense"}},
           "data": {"train_file": str(tmp_path / "missing.jsonl"), "max_length": 16},
           "training": {"output_dir": str(tmp_path / "out"), "use_cpu": True}}
    for section, value in changes.items():
        cfg[section] = value if not isinstance(value, dict) else {**cfg.get(section, {}), **value}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ----------------------------------------------------------------------------- help and version

def test_help_lists_every_command_without_importing_torch():
    code = ("import sys; from hf_attn_variants_research.cli import main; rc = main(['--help']); "
            "rc += main(['train', '--help']); "
            "heavy = sorted(m for m in ('torch', 'transformers', 'hf_attn_variants') if m in sys.modules); "
            "print('HEAVY', heavy, rc)")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY [] 0" in proc.stdout
    for name, (_, what) in cli.COMMANDS.items():
        assert f"  {name}" in proc.stdout and what in proc.stdout
    assert "hf-attn-variants train CONFIG" in proc.stdout and "baselines:" in proc.stdout  # train's own help


def test_version_and_unknown_command(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hf-attn-variants ") and len(out.split()) >= 2
    with pytest.raises(SystemExit, match="unknown command 'trian'"):
        cli.main(["trian"])
    assert cli.main([]) == 2


# ----------------------------------------------------------------------------- bad configs: one line, before data

BAD_CONFIGS = {
    "misspelled baseline variant": (dict(baselines={"dense": {"attention_variant": "dnese"}}),
                                    ["baselines.dense", "attention_variant='dnese'"]),
    "negative window": (dict(variant={"attention_window": -1}), ["variant", "attention_window=-1"]),
    "rank above the head size": (dict(variant={"attention_variant": "low_rank", "attention_rank": 9}),
                                 ["variant", "attention_rank=9"]),
    "misspelled variant field": (dict(variant={"attention_windw": 3}), ["variant", "attention_windw"]),
    "bad training value": (dict(training={"eval_strategy": "sometimes"}), ["training", "sometimes"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_file_field_and_value(case, tmp_path, capsys):
    changes, expected = BAD_CONFIGS[case]
    path = tiny_config(tmp_path, **changes)
    assert cli.main(["train", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"hf-attn-variants train: error: {path}: ")
    for part in expected:
        assert part in err, err
    assert "missing.jsonl" not in err  # the config was checked before the data


def test_broken_yaml_names_the_file_and_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("task: classification\nmodel: {family: bert\nvariant: [\n")
    assert cli.main(["train", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{path}: not valid YAML at line" in err, err
    grid = tmp_path / "grid.yaml"
    grid.write_text("suites:\n  a: [1,\n")
    assert cli.main(["experiments", "list", str(grid)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{grid}: not valid YAML" in err, err


def test_missing_config_and_shipped_config_names(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert "nope.yaml" in err and "no such file" in err
    from hf_attn_variants_research import train

    assert train.resolve_config("quickstart") == train.shipped_configs() / "quickstart.yaml"
    assert train.resolve_config("configs/mr/band.yaml").is_file()


def test_real_cli_prints_no_traceback_unless_debug(tmp_path):
    path = tiny_config(tmp_path, baselines={"dense": {"attention_variant": "dnese"}})
    plain = run_cli("train", str(path))
    assert plain.returncode == 1
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in plain.stderr and "attention_variant='dnese'" in lines[0]
    debug = run_cli("--debug", "train", str(path))
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "dnese" in debug.stderr


# ----------------------------------------------------------------------------- paths and convert

@pytest.mark.parametrize("command", ["view", "analyze", "convert"])
def test_missing_model_path_is_named(command, tmp_path, capsys):
    missing = str(tmp_path / "no" / "such" / "model")
    extra = {"view": ["--text", "a b", "--out", str(tmp_path / "v.html")],
             "analyze": ["--texts", "mr", "--out", str(tmp_path / "a")],
             "convert": ["--variant", "band", "--out", str(tmp_path / "c")]}[command]
    assert cli.main([command, missing, *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{missing!r}: no such folder" in err, err
    assert "Repo id" not in err


def test_convert_accepts_a_dense_variant_model(tmp_path, capsys):
    folder = tmp_path / "dense"
    tiny_model("bert", "dense").save_pretrained(folder)
    out = tmp_path / "band"
    assert cli.main(["convert", str(folder), "--variant", "band", "--window", "2", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["attention_variant"] == "band" and config["attention_window"] == 2
    low = tmp_path / "low"  # the SVD path too: a dense Variant source gives energies in (0, 1]
    assert cli.main(["convert", str(folder), "--variant", "low_rank", "--rank", "2", "--out", str(low)]) == 0
    energy = json.loads((low / "svd_energy.json").read_text())["energy_kept"]
    assert energy and all(0 < e["energy_kept"] <= 1 for e in energy)
    banded = tmp_path / "again"  # a non-dense Variant model is refused with one line
    assert cli.main(["convert", str(out), "--variant", "low_rank", "--out", str(banded)]) == 1
    assert "only dense models convert" in capsys.readouterr().err
