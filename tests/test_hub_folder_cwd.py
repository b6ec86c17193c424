"""A saved folder loads from inside itself: with the folder as the working directory (so its flat
files are importable as top-level modules, as in ``cd model && python``) and ``hf_attn_variants``
hidden, ``AutoModel.from_pretrained(".", trust_remote_code=True)`` must work and reproduce the
parent's outputs, for both families. Before the ``hfav_`` prefix the folder held ``kernels.py``,
which shadowed the ``kernels`` package that transformers probes at import, and loading failed.
Also: no flat file of the folder shares its name with any importable module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import FAMILIES, random_batch, tiny_model
from hub_helpers import HIDE_PACKAGE, MIXED_CASE
from safetensors.torch import save_file

LOAD_FROM_INSIDE = textwrap.dedent('''
    import importlib.util, json, os, sys
    assert sys.path[0] == "", sys.path[:3]  # python -c: the working directory (the saved folder) is searched first
    stems = sorted(f[:-3] for f in os.listdir(".") if f.endswith(".py"))
    assert stems and all(importlib.util.find_spec(s).origin == os.path.abspath(s + ".py") for s in stems)
    sys.path.pop(0)
    sys.path_importer_cache.clear()
    shadowed = [s for s in stems if importlib.util.find_spec(s) is not None]  # names other modules already own
    sys.path.insert(0, "")
    import torch, transformers
    from safetensors.torch import load_file
    t = load_file("expected.safetensors")
    model = transformers.AutoModel.from_pretrained(".", trust_remote_code=True).eval()
    with torch.no_grad():
        hidden = model(input_ids=t["ids"], attention_mask=t["mask"]).last_hidden_state
    leaked = sorted(m for m in sys.modules if m.split(".")[0] == "hf_attn_variants")
    print(json.dumps({"diff": (hidden - t["hidden"]).abs().max().item(), "shadowed": shadowed, "leaked": leaked,
                      "files": stems, "cls": type(model).__name__}))
''')


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_folder_loads_from_inside_itself(family, tmp_path):
    variant, fields = MIXED_CASE  # band below, lstmn above: every flat file is copied
    ids, mask = random_batch(2, 9, "right" if family == "bert" else "left", seed=3)
    model = tiny_model(family, variant, seed=1, **fields)  # one torch thread: conftest's session fixture
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    save_file({"ids": ids, "mask": mask, "hidden": hidden.contiguous()}, tmp_path / "expected.safetensors")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_MODULES_CACHE=str(tmp_path.parent / f"hf_modules_{family}"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", HIDE_PACKAGE + LOAD_FROM_INSIDE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["leaked"] == [] and report["cls"].startswith("Variant")
    assert "hfav_kernels" in report["files"] and "kernels" not in report["files"]
    assert all(s.startswith(("hfav_", "configuration_", "modeling_")) for s in report["files"]), report["files"]
    assert report["shadowed"] == []
    assert report["diff"] < 1e-5
