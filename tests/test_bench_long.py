"""benchmarks/bench_long.py in its CPU smoke mode (a tiny model, T=256, each run a fresh process): the
driver, the anchor patch, the kernel column and the results file; and its run plan (dropout 0 first,
dropout 0.1 for dense and band only, the anchor never with dropout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_long  # noqa: E402
import pytest  # noqa: E402


def test_plan_orders_dropout_zero_first_and_keeps_dropout_runs_for_dense_and_band():
    args = type("A", (), dict(families=["gpt2", "bert"], variants=bench_long.VARIANTS, lengths=[16384, 65536],
                              dropouts=[0.0, 0.1]))
    runs = bench_long.plan(args)
    zero = [r for r in runs if r[3] == 0.0]
    assert runs[: len(zero)] == zero and len(zero) == 2 * 2 * 4  # families x lengths x variants
    assert zero[:4] == [("gpt2", v, 16384, 0.0) for v in bench_long.VARIANTS]  # 16k first
    assert {r[1] for r in runs if r[3] > 0} == {"dense", "band"}
    args.dropouts = [0.1]
    assert all(r[3] == 0.1 for r in bench_long.plan(args))


@pytest.mark.slow
def test_cpu_smoke_run_writes_the_table(tmp_path):
    out = tmp_path / "long.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_long.py"), "--device", "cpu", "--smoke",
           "--families", "gpt2", "--variants", "band", "band+anchor", "--dropouts", "0", "0.1", "--repeats", "1",
           "--warmup", "0", "--out", str(out), "--budget", "500", "--run-limit", "240"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" | ") for line in out.read_text().splitlines() if line.startswith("| gpt2")]
    got = {(row[2], row[3]): row for row in rows}  # (dropout, variant)
    assert set(got) == {("0", "band"), ("0", "band+anchor"), ("0.1", "band")}  # no anchor with dropout
    for row in rows:
        assert float(row[5]) > 0  # a step time, not a failure
    assert got[("0", "band")][4] == "blocked"  # CPU training: the blocked kernel
    assert got[("0", "band+anchor")][4].startswith("flex (anchor mask")
