"""The experiment suite: grid expansion, resume, aggregation on known inputs, probe labels against
brute-force checkers, determinism of a job, and a quick end-to-end run on a tiny grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hf_attn_variants_research import exp_report, experiments, probes

ROOT = Path(__file__).resolve().parents[1]


def tiny_grid(tmp_path: Path, **suites) -> dict:
    grid = {"out": str(tmp_path / "out"), "results": str(tmp_path / "results"), "suites": suites}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return experiments.load_grid(path)


PROBE_SUITE = {"kind": "probe", "models": ["dense", "band"], "seeds": [0, 1], "learning_rates": [1e-3, 3e-3],
               "size": {"hidden": 16, "heads": 1}, "probe": {"name": "long_range", "margin": 2},
               "train": {"steps": 3, "batch_size": 8, "eval_size": 16},
               "sweep": {"layers": [1, 2], "distance": [2, 4], "attention_window": [1, 3, 5]},
               "plot": {"kinds": ["phase", "lines"], "x": "distance", "y": "attention_window", "facets": ["layers"],
                        "reach": True}}


# ----------------------------------------------------------------------------- grid expansion

def test_expand_counts_sections_and_order(tmp_path):
    grid = tiny_grid(tmp_path, lr=PROBE_SUITE)
    jobs = experiments.expand(grid)
    # dense ignores the window axis: 2 layers x 2 distances; band: x 3 windows; each x 2 lr x 2 seeds
    assert len(jobs) == (2 * 2 + 2 * 2 * 3) * 2 * 2
    assert len({j["id"] for j in jobs}) == len(jobs)
    dense = [j for j in jobs if j["model"] == "dense"]
    assert all("attention_window" not in j["params"] for j in dense)
    band = next(j for j in jobs if j["model"] == "band" and j["params"]["attention_window"] == 5)
    assert band["variant"]["attention_window"] == 5 and band["size"]["layers"] in (1, 2)
    assert band["probe"]["distance"] in (2, 4) and band["probe"]["name"] == "long_range"
    seeds = [j["seed"] for j in jobs]
    assert seeds == sorted(seeds)  # seed-major
    assert [j["lr"] for j in jobs if j["seed"] == 0] == sorted(j["lr"] for j in jobs if j["seed"] == 0)


def test_quick_merges_and_moves_outputs(tmp_path):
    suite = {**PROBE_SUITE, "quick": {"seeds": [7], "sweep": {"distance": [3]}}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"out": "o", "results": "r", "suites": {"s": suite}}))
    grid = experiments.load_grid(path, quick=True)
    assert grid["suites"]["s"]["seeds"] == [7] and grid["suites"]["s"]["sweep"]["distance"] == [3]
    assert grid["suites"]["s"]["sweep"]["layers"] == [1, 2]  # untouched fields stay
    assert grid["out"] == "o-quick" and grid["results"] == "r/quick"


@pytest.mark.parametrize("change, message", [
    ({"models": ["dense", "cnn"]}, "models="),
    ({"sweep": {"colour": [1]}, "kind": "classification", "dataset": "mr"}, "sweep axis 'colour'"),
    ({"seeds": []}, "seeds="),
    ({"kind": "regression"}, "kind="),
    ({"models": ["bilstm"]}, "models="),  # baselines only in classification suites
])
def test_bad_suites_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        tiny_grid(tmp_path, s={**PROBE_SUITE, **change})


def test_shipped_grids_expand():
    for name in ("full",):
        for quick in (False, True):
            grid = experiments.load_grid(ROOT / "configs" / "experiments" / f"{name}.yaml", quick)
            jobs = experiments.expand(grid)
            assert jobs and {j["suite"] for j in jobs} == set(grid["suites"])


# ----------------------------------------------------------------------------- resume

def fake_runner(calls: list, fail_at: int | None = None):
    def run(job, out, device):
        calls.append(job["id"])
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt  # the process is stopped in the middle of this job
        return {"metric": "accuracy", "val": job["seed"] / 10 + job["lr"], "test": job["seed"] / 10,
                "parameters": 1}
    return run


def test_resume_runs_only_missing_jobs(tmp_path, monkeypatch):
    grid = tiny_grid(tmp_path, lr=PROBE_SUITE)
    jobs = experiments.expand(grid)
    calls: list = []
    monkeypatch.setitem(experiments.RUNNERS, "probe", fake_runner(calls, fail_at=5))
    with pytest.raises(KeyboardInterrupt):
        experiments.run_grid(grid, jobs)
    assert len(experiments.pending(grid, jobs)) == len(jobs) - 4  # only the job in flight is lost
    assert not list((Path(grid["out"]) / "records").rglob("*.tmp"))
    calls.clear()
    monkeypatch.setitem(experiments.RUNNERS, "probe", fake_runner(calls))
    assert experiments.run_grid(grid, jobs) == 0
    assert len(calls) == len(jobs) - 4 and not experiments.pending(grid, jobs)
    calls.clear()
    experiments.record_path(grid["out"], jobs[7]).unlink()
    experiments.run_grid(grid, jobs)
    assert calls == [jobs[7]["id"]]


def test_changed_settings_make_records_stale(tmp_path, monkeypatch):
    grid = tiny_grid(tmp_path, lr=PROBE_SUITE)
    jobs = experiments.expand(grid)[:2]
    calls: list = []
    monkeypatch.setitem(experiments.RUNNERS, "probe", fake_runner(calls))
    experiments.run_grid(grid, jobs)
    changed = tiny_grid(tmp_path, lr={**PROBE_SUITE, "probe": {"name": "long_range", "margin": 5}})
    new_jobs = experiments.expand(changed)[:2]
    assert [j["id"] for j in new_jobs] == [j["id"] for j in jobs]
    assert experiments.pending(changed, new_jobs) == new_jobs
    rows = exp_report.cells(new_jobs, exp_report.load_records(changed["out"], "lr"))
    assert all("mean" not in r for r in rows)  # stale records are not aggregated


def test_failed_job_stays_pending(tmp_path, monkeypatch, capsys):
    grid = tiny_grid(tmp_path, lr=PROBE_SUITE)
    jobs = experiments.expand(grid)[:3]

    def run(job, out, device):
        if job is jobs[1]:
            raise RuntimeError("boom")
        return {"metric": "accuracy", "val": 0.5, "test": 0.5, "parameters": 1}
    monkeypatch.setitem(experiments.RUNNERS, "probe", run)
    assert experiments.run_grid(grid, jobs) == 1
    assert experiments.pending(grid, jobs) == [jobs[1]]
    printed = capsys.readouterr().out  # the failure is reported with its traceback (where it was raised)
    assert "RuntimeError: boom" in printed and "Traceback" in printed and 'raise RuntimeError("boom")' in printed


# ----------------------------------------------------------------------------- aggregation

def test_summary_of_known_values():
    s = exp_report.summarise([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["mean"] == 2.5
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1)) == pytest.approx(1.2909944)
    half = 3.182446305 * 1.2909944 / 2  # t(0.975, 3) · sd / √4
    assert (s["lo"], s["hi"]) == (pytest.approx(2.5 - half), pytest.approx(2.5 + half))
    assert exp_report.bootstrap_interval([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7))
    assert np.isnan(exp_report.summarise([0.5])["std"]) and np.isnan(exp_report.summarise([0.5])["lo"])


def test_bootstrap_interval_matches_a_direct_computation():
    values = np.array([0.61, 0.74, 0.69, 0.72, 0.58])
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, 5, size=(10_000, 5))].mean(1)
    assert exp_report.bootstrap_interval(values) == (pytest.approx(np.percentile(means, 2.5)),
                                                     pytest.approx(np.percentile(means, 97.5)))
    wide = exp_report.bootstrap_interval(values, level=0.99)
    narrow = exp_report.bootstrap_interval(values)
    assert wide[0] <= narrow[0] and wide[1] >= narrow[1]


def _record(model, lr, seed, val, test, metric="accuracy"):
    return {"job": {"model": model, "params": {"distance": 2}, "lr": lr, "seed": seed},
            "metric": metric, "val": val, "test": test, "parameters": 10, "seconds": 1.0}


@pytest.mark.parametrize("metric, best_lr", [("accuracy", 0.1), ("loss", 0.2)])
def test_cells_choose_the_learning_rate_on_validation(metric, best_lr):
    jobs = [{"model": "dense", "params": {"distance": 2}, "lr": lr, "seed": s} for lr in (0.1, 0.2) for s in (0, 1, 2)]
    records = [_record("dense", 0.1, s, 0.9, 0.80 + s / 100, metric) for s in range(3)]
    records += [_record("dense", 0.2, s, 0.5, 0.50 + s / 100, metric) for s in range(3)]
    (row,) = exp_report.cells(jobs, records)
    assert row["lr"] == best_lr and row["n"] == 3 and row["ran"] == 6 and row["planned"] == 6
    base = 0.80 if best_lr == 0.1 else 0.50
    assert row["mean"] == pytest.approx(base + 0.01) and row["std"] == pytest.approx(0.01)
    assert row["val_by_lr"] == {0.1: pytest.approx(0.9), 0.2: pytest.approx(0.5)}


def test_unrun_cells_are_listed_not_invented():
    jobs = [{"model": m, "params": {"distance": 2}, "lr": 0.1, "seed": 0} for m in ("dense", "band")]
    rows = exp_report.cells(jobs, [_record("dense", 0.1, 0, 0.6, 0.7)])
    text = exp_report.table(exp_report.sort_rows(rows, ["dense", "band"], ["distance"]), ["distance"])
    assert "| band | 2 | not run |" in text and "0.7000" in text
    assert "mean" not in next(r for r in rows if r["model"] == "band")


def test_single_seed_interval_over_test_examples():
    jobs = [{"model": "dense", "params": {}, "lr": 0.1, "seed": 0}]
    rec = {**_record("dense", 0.1, 0, 0.5, 0.75), "test_correct": [1, 1, 1, 0] * 50}
    rec["job"]["params"] = {}
    (row,) = exp_report.cells(jobs, [rec])
    assert row["over"] == "1 seed: test examples only" and row["lo"] < 0.75 < row["hi"]


@pytest.mark.parametrize("n_seeds", [2, 5])
def test_t_interval_covers_at_its_level_with_few_seeds(n_seeds):
    """Simulated coverage of the seed interval the report uses: 4,000 trials of normal seed-level means
    (sd 0.05). Binomial sd of the estimate is 0.0034, so the band ±0.015 is over 4 sd wide; the
    percentile bootstrap over the same seeds undercovers (the reason it is not used)."""
    coverage = exp_report.t_coverage(n_seeds, sd=0.05, trials=4000)
    assert abs(coverage - 0.95) < 0.015
    bootstrap = exp_report.t_coverage(5, sd=0.05, trials=1000, interval=lambda v: exp_report.bootstrap_interval(
        v, resamples=400))
    assert bootstrap < 0.9


def test_seed_difference_is_a_paired_t_interval_with_bonferroni():
    diffs = [0.01, 0.03, -0.01, 0.02, 0.00]
    got = exp_report.seed_difference(diffs, k=3)
    sd = np.std(diffs, ddof=1)
    assert got["mean"] == pytest.approx(0.01) and got["seeds"] == 5 and got["k"] == 3
    assert got["hi"] - got["mean"] == pytest.approx(2.776445105 * sd / np.sqrt(5))
    assert got["bonf_lo"] < got["lo"] and got["bonf_hi"] > got["hi"]  # wider for 3 comparisons
    one = exp_report.seed_difference([0.2])
    assert np.isnan(one["lo"]) and one["mean"] == pytest.approx(0.2)


def test_comparison_table_makes_no_claim_from_one_seed():
    def rec(model, seed, test):
        return {"job": {"model": model, "params": {}, "lr": 0.1, "seed": seed}, "metric": "accuracy",
                "val": 0.5, "test": test, "parameters": 1, "seconds": 1.0}
    records = [rec("dense", 0, 0.5), rec("band", 0, 0.9)] + [rec("low_rank", 0, 0.1)]
    records += [rec("dense", s, 0.5 + s / 1000) for s in (1, 2, 3, 4)]
    records += [rec("low_rank", s, 0.1 + s / 1000) for s in (1, 2, 3, 4)]
    rows = exp_report.cells([r["job"] for r in records], records)
    comps = exp_report.comparisons(rows)
    assert {c["k"] for c in comps} == {2}
    text = exp_report.comparison_table(comps, [], "accuracy")
    assert "| band | +0.4000 | — (1 seed) | — | 1 | 1 seed: no claim |" in text
    assert "below dense" in text.split("| low_rank |")[1]


def test_records_file_round_trip_and_code_versions(tmp_path):
    grid = tiny_grid(tmp_path, lr=PROBE_SUITE)
    jobs = experiments.expand(grid)[:3]
    for i, job in enumerate(jobs):
        rec = {"job": job, "metric": "accuracy", "val": 0.5, "test": 0.25, "parameters": 1, "seconds": 1.0,
               "test_correct": [1, 0, 0, 0], "code": {"hash": "old" if i == 2 else "new", "commit": "c"}}
        experiments.write_json(experiments.record_path(grid["out"], job), rec)
    path = exp_report.pack_records(grid, jobs)
    assert path.name == "records.jsonl.gz" and path.stat().st_size < 2000
    _, packed = exp_report.load_packed(path)
    assert len(packed["lr"]) == 3 and packed["lr"][0]["test_correct"] == [1, 0, 0, 0]
    kept, other, code = exp_report.one_code_version(packed["lr"])
    assert code == "new" and len(kept) == 2 and [r["job"]["id"] for r in other] == [jobs[2]["id"]]
    # the report reads the packed file alone: the runner's records may be gone
    for f in (Path(grid["out"]) / "records").rglob("*.json"):
        f.unlink()
    exp_report.write_results(grid, jobs)
    text = (Path(grid["results"]) / "lr.md").read_text()
    assert "code version `new`" in text and "1 records of other code versions are left out" in text


def test_lr_sweep_seeds_then_the_chosen_rate(tmp_path, monkeypatch):
    suite = {**PROBE_SUITE, "models": ["dense"], "seeds": [0, 1, 2], "lr_seeds": [0],
             "learning_rates": [1e-3, 3e-3, 1e-2], "sweep": {"distance": [2]}}
    grid = tiny_grid(tmp_path, s=suite)
    jobs = experiments.expand(grid)
    calls: list = []

    def run(job, out, device):  # validation best at 3e-3: an interior optimum
        calls.append((job["seed"], job["lr"]))
        return {"metric": "accuracy", "val": 0.9 if job["lr"] == 3e-3 else 0.5, "test": 0.5, "parameters": 1}
    monkeypatch.setitem(experiments.RUNNERS, "probe", run)
    assert experiments.run_grid(grid, jobs) == 0
    assert calls == [(0, 1e-3), (0, 3e-3), (0, 1e-2), (1, 3e-3), (2, 3e-3)]
    (row,) = exp_report.cells(jobs, exp_report.load_records(grid["out"], "s"), [0])
    assert row["lr"] == 3e-3 and row["n"] == 3 and not row["lr_edge"]
    assert exp_report.planned_runs(grid["suites"]["s"], jobs) == 5


def test_mqar_guess_baseline_by_brute_force():
    batch = probes.mqar(50, 3, pairs=6, length=32, vocab=30)
    expected = []
    for row, target in zip(batch.inputs.tolist(), batch.targets.tolist()):
        values = {row[2 * i + 1] for i in range(6)}
        expected += [1 / len(values) for t in target if t != probes.IGNORE]
    assert probes.mqar_guess_baseline(batch, 6) == pytest.approx(np.mean(expected))


def test_gpu_probes_plan_and_cpu_smoke(tmp_path):
    from hf_attn_variants_research import gpu_probes

    grid_path = ROOT / "configs" / "experiments" / "gpu.yaml"
    full = experiments.load_grid(grid_path)
    for suite in full["suites"].values():
        suite["models"] = gpu_probes.registry_models()
    rates = {"tflops": 25.0, "tflops_elementwise": 2.0, "launch_ms": 1.0}
    keep, dropped, total = gpu_probes.plan(experiments.expand(full), 480, **rates)
    assert total <= 480 and {j["model"] for j in keep} >= {"dense", "band", "low_rank"}
    assert all(j["model"] == "lstmn" or s > 0 for j, s in dropped)
    lengths = {j["probe"].get("distance", 0) + 9 for j in keep if j["probe"]["name"] == "long_range"}
    assert max(lengths) == 8192 and any(j["probe"]["name"] == "mqar" and j["probe"]["pairs"] >= 64 for j in keep)
    assert gpu_probes.main([str(grid_path), "--tiny", "--device", "cpu", "--out", str(tmp_path)]) == 0
    _, packed = exp_report.load_packed(tmp_path / "records.jsonl.gz")
    assert {r["job"]["model"] for r in packed["mqar_gpu"]} == set(gpu_probes.registry_models())
    assert all("test_baseline" in r for r in packed["mqar_gpu"]) and len(packed["long_range_gpu"]) == 2 * len(
        gpu_probes.registry_models())


def test_paired_difference_on_known_inputs():
    a = np.array([1, 1, 1, 0] * 25, dtype=float)
    b = np.array([1, 0, 1, 0] * 25, dtype=float)
    one = exp_report.paired_difference([(a, b)])
    assert one["mean"] == pytest.approx(0.25) and one["seeds"] == 1
    assert one["lo"] < 0.25 < one["hi"] and one["above"] == pytest.approx(1.0)
    # identical models: every resample is exactly 0
    same = exp_report.paired_difference([(a, a), (b, b)])
    assert same["mean"] == same["lo"] == same["hi"] == 0.0 and same["above"] == 0.0
    # two seeds that disagree in sign: the interval spans 0
    mixed = exp_report.paired_difference([(a, b), (b, a)])
    assert mixed["mean"] == pytest.approx(0.0) and mixed["lo"] < 0 < mixed["hi"]


def test_paired_difference_interval_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    pairs = [(rng.random(40), rng.random(40)) for _ in range(3)]
    got = exp_report.paired_difference(pairs, resamples=500, seed=7)
    diffs = np.stack([x - y for x, y in pairs])
    gen = np.random.default_rng(7)
    seeds = gen.integers(0, 3, size=(500, 3))
    means = [diffs[seeds[i]].mean(0)[gen.integers(0, 40, size=40)].mean() for i in range(500)]
    assert got["lo"] == pytest.approx(np.percentile(means, 2.5))
    assert got["hi"] == pytest.approx(np.percentile(means, 97.5))


def test_comparisons_pair_by_seed_and_sweep_point():
    def rec(model, seed, correct, size):
        return {"job": {"model": model, "params": {"train_size": size}, "lr": 0.1, "seed": seed},
                "metric": "accuracy", "val": 0.5, "test": float(np.mean(correct)), "parameters": 1,
                "seconds": 1.0, "test_correct": correct}
    ones, half = [1] * 8, [1, 0] * 4
    records = [rec("dense", s, half, 10) for s in (0, 1)] + [rec("band", s, ones, 10) for s in (0, 1)]
    records += [rec("dense", 0, ones, 20), rec("band", 0, half, 20)]  # the other size: band below dense
    jobs = [r["job"] for r in records]
    comps = {c["row"]["params"]["train_size"]: c for c in exp_report.comparisons(exp_report.cells(jobs, records))}
    assert comps[10]["mean"] == pytest.approx(0.5) and comps[10]["seeds"] == 2
    assert comps[20]["mean"] == pytest.approx(-0.5) and comps[20]["seeds"] == 1


def test_position_buckets_cover_the_context():
    assert exp_report.position_buckets(256) == [(0, 8), (8, 32), (32, 64), (64, 128), (128, 256)]
    assert exp_report.position_buckets(16) == [(0, 8), (8, 16)]
    record = {"test_loss_by_block_position": [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]}
    assert exp_report.example_scores(record, (2, 4)).tolist() == [3.5, 7.5]


# ----------------------------------------------------------------------------- probes vs brute force

SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ngram, window", [(1, 4), (2, 8), (3, 8), (4, 6)])
def test_local_labels(seed, ngram, window):
    b = probes.local(64, seed, ngram=ngram, window=window, length=20, vocab=6)
    assert b.targets[:, -1].tolist() == probes.check_local(b, ngram, window)
    assert (b.targets[:, :-1] == probes.IGNORE).all()
    assert 0.2 < b.targets[:, -1].float().mean() < 0.9


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("distance", [1, 2, 7, 33])
def test_long_range_labels(seed, distance):
    b = probes.long_range(64, seed, distance=distance, margin=3, vocab=5)
    assert b.inputs.shape == (64, distance + 4)
    assert b.targets[:, -1].tolist() == probes.check_long_range(b, distance)
    assert 0.25 < b.targets[:, -1].float().mean() < 0.75


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pairs, length, vocab", [(1, 8, 9), (4, 64, 256), (16, 64, 64)])
def test_mqar_labels(seed, pairs, length, vocab):
    b = probes.mqar(16, seed, pairs=pairs, length=length, vocab=vocab)
    assert b.targets.tolist() == probes.check_mqar(b, pairs, vocab)
    assert ((b.targets != probes.IGNORE).sum(1) == pairs).all()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dim, dim_max", [(1, 1), (3, 8), (8, 8)])
def test_regression_labels_packed(seed, dim, dim_max):
    b = probes.regression(8, seed, dim=dim, dim_max=dim_max, examples=16, scored=4)
    assert b.inputs.shape == (8, 16, dim_max + 1) and probes.check_regression(b, dim)
    assert (~b.targets.isnan()).sum(1).tolist() == [4] * 8
    assert (b.inputs[:, :, dim:dim_max] == 0).all() and (b.inputs[:, 12:, -1] == 0).all()  # no y leaked


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dim, dim_max", [(1, 1), (3, 8)])
def test_regression_labels_interleaved(seed, dim, dim_max):
    b = probes.regression(8, seed, dim=dim, dim_max=dim_max, examples=12, scored=4, layout="interleaved")
    assert b.inputs.shape == (8, 24, dim_max + 1) and probes.check_regression(b, dim, "interleaved")
    assert (~b.targets.isnan()).sum(1).tolist() == [4] * 8
    assert (b.inputs[:, 0::2, dim:] == 0).all()  # x-tokens: zero padding, no y leaked


@pytest.mark.parametrize("layout", ["packed", "interleaved"])
def test_regression_checker_catches_a_wrong_target(layout):
    b = probes.regression(4, 0, dim=3, examples=8, scored=2, layout=layout)
    b.targets[0, -2] += 1.0
    assert not probes.check_regression(b, 3, layout)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [16, 40, 128])
def test_induction_labels(seed, length):
    b = probes.induction(16, seed, length=length, vocab=7)
    assert probes.check_induction(b)
    assert ((b.targets != probes.IGNORE).sum(1) >= 3).all()
    b.targets[0, (b.targets[0] != probes.IGNORE).nonzero()[0]] += 1
    assert not probes.check_induction(b)


def test_probe_parameters_are_checked():
    with pytest.raises(ValueError, match="ngram"):
        probes.local(2, 0, ngram=9, window=8)
    with pytest.raises(ValueError, match="pairs"):
        probes.mqar(2, 0, pairs=40, length=64)
    with pytest.raises(ValueError, match="probe='nope'"):
        probes.make("nope", 2, 0)


# ----------------------------------------------------------------------------- runs

def test_a_job_is_deterministic_given_its_seed(tmp_path):
    suite = {**PROBE_SUITE, "models": ["band"], "seeds": [3], "learning_rates": [3e-3],
             "sweep": {"layers": [2], "distance": [4], "attention_window": [2]}}
    grid = tiny_grid(tmp_path, s=suite)
    (job,) = experiments.expand(grid)
    first = experiments.run_job(job, grid["out"])
    second = experiments.run_job(job, grid["out"])
    for key in ("val", "test", "final_train_loss", "parameters"):
        assert first[key] == second[key]


def test_quick_end_to_end_on_a_tiny_grid(tmp_path):
    suites = {
        "lr": {**PROBE_SUITE, "seeds": [0], "learning_rates": [3e-3],
               "quick": {"sweep": {"layers": [1], "distance": [2, 4], "attention_window": [1, 3]}}},
        "reg": {"kind": "probe", "models": ["dense", "low_rank"], "seeds": [0, 1], "learning_rates": [1e-3],
                "size": {"hidden": 8, "heads": 1, "layers": 1}, "probe": {"name": "regression", "dim_max": 4,
                                                                            "examples": 6, "scored": 2},
                "train": {"steps": 2, "batch_size": 4, "eval_size": 8}, "sweep": {"dim": [2, 4],
                                                                                 "attention_rank": [1, 8]},
                "quick": {"sweep": {"attention_rank": [1, 4]}},
                "plot": {"kinds": ["phase"], "x": "dim", "y": "attention_rank", "vmin": 0, "vmax": 1}},
        "mr": {"kind": "classification", "dataset": "mr", "models": ["dense", "bag_of_embeddings", "bilstm"],
               "seeds": [0, 1], "learning_rates": [1e-3], "size": {"hidden": 16, "layers": 1, "heads": 2,
                                                                   "intermediate": 16},
               "train": {"steps": 2, "batch_size": 8, "max_length": 24, "vocab_size": 500, "eval_size": 40},
               "plot": {"type": "bars", "anchors": {"Kim 2014 CNN-rand": 0.761}}},
        "lm": {"kind": "lm", "dataset": "shakespeare", "models": ["dense", "band"], "seeds": [0],
               "learning_rates": [3e-3], "size": {"hidden": 16, "layers": 1, "heads": 2},
               "train": {"steps": 2, "batch_size": 2, "max_length": 16, "eval_size": 2},
               "sweep": {"attention_window": [4]}, "plot": {"kinds": ["positions", "bars"], "bucket": 4}},
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "out"), "results": str(tmp_path / "res"),
                                    "suites": suites}))
    assert experiments.main(["run", str(path), "--quick"]) == 0
    res = tmp_path / "res" / "quick"
    for name in ("lr-phase.png", "lr-lines.png", "reg-phase.png", "mr-bars.png", "lm-positions.png", "summary.json"):
        assert (res / name).stat().st_size > 0, name
    summary = json.loads((res / "summary.json").read_text())
    assert {r["model"] for r in summary["mr"]} == {"dense", "bag_of_embeddings", "bilstm"}
    assert all(r["n"] == 2 and 0 <= r["mean"] <= 1 for r in summary["mr"])
    assert all(r["ran"] == r["planned"] for rows in summary.values() for r in rows)
    mr = (res / "mr.md").read_text()
    assert "| dense |" in mr and "not run" not in mr
    records = list((tmp_path / "out-quick" / "records").rglob("*.json"))
    assert len(records) == 6 + 12 + 6 + 2
    lm = json.loads(next((tmp_path / "out-quick" / "records" / "lm").glob("band*.json")).read_text())
    assert len(lm["test_loss_by_position"]) == 16 and lm["metric"] == "loss"
    # the cost measurement over the same grid: every cell of the suite, dense's ratio 1, FLOPs for attention only
    from hf_attn_variants_research import exp_costs

    assert exp_costs.main([str(path), "--quick", "--only", "mr", "--rounds", "2", "--steps", "1"]) == 0
    costs = json.loads((res / "costs.json").read_text())["mr"]
    cells = {k: v for k, v in costs.items() if k != "_note"}
    assert set(cells) == {"dense", "bag_of_embeddings", "bilstm"} and cells["dense"]["step_ratio"] == 1.0
    assert cells["dense"]["attention_gflops"] > 0 and cells["bilstm"]["attention_gflops"] == 0
    probe = json.loads(next((tmp_path / "out-quick" / "records" / "lr").glob("band*.json")).read_text())
    assert len(probe["test_correct"]) == 16 and np.mean(probe["test_correct"]) == pytest.approx(probe["test"])
    per_block = np.array(lm["test_loss_by_block_position"])
    assert per_block.shape == (2, 16) and np.allclose(per_block.mean(0), lm["test_loss_by_position"], atol=1e-3)
    lm_md = (res / "lm.md").read_text()
    assert "## Loss by position in the context" in lm_md and "## Paired with dense" in lm_md
    assert "## Paired with dense" in mr and "Compute:" in mr
    index = (res / "README.md").read_text()
    assert "| [mr](mr.md) | classification | 3 | 6 of 6 |" in index and "torch" in index
    assert experiments.main(["run", str(path), "--quick"]) == 0  # resumed: nothing left to do
    _verify_reruns_and_the_page_cites_them(path, res, tmp_path / "out-quick" / "records" / "mr")


def _verify_reruns_and_the_page_cites_them(path, res, mr_records):
    """``experiments verify`` reruns recorded jobs on the current code: identical here (one machine, one
    thread), cited on the page once the code version changed; a record that does not reproduce is named."""
    from hf_attn_variants_research import exp_verify

    assert experiments.main(["verify", str(path), "--quick", "--only", "mr"]) == 0  # one job per model
    lines = [json.loads(x) for x in (res / "verifications.jsonl").read_text().splitlines()]
    assert sorted(v["model"] for v in lines) == ["bag_of_embeddings", "bilstm", "dense"]
    assert all(v["identical"] and v["differing"] == [] and v["test_examples_changed"] == 0 for v in lines)
    here = experiments.code_version()
    with pytest.MonkeyPatch.context() as mp:  # the library changed since the records were made
        mp.setattr(experiments, "code_version", lambda: {**here, "hash": "later0000000000"})
        assert experiments.main(["verify", str(path), "--quick", "--ids", "mr/dense__lr=0.001__seed=1"]) == 0
        assert experiments.main(["aggregate", str(path), "--quick"]) == 0
        page = (res / "mr.md").read_text()
        assert "made on code version `later0000000000`, which differs; 1 of its jobs (dense) were rerun" in page
        assert "1 of 1 reruns reproduced every recorded number and per-example result exactly" in page
        # a record that the code no longer reproduces (here: its test metric edited) is reported, and fails
        record_file = mr_records / "bilstm__lr=0.001__seed=0.json"
        record = json.loads(record_file.read_text())
        record_file.write_text(json.dumps({**record, "test": record["test"] + 0.25}))
        assert experiments.main(["aggregate", str(path), "--quick"]) == 0  # packs the edited record
        assert experiments.main(["verify", str(path), "--quick", "--ids", "mr/bilstm__lr=0.001__seed=0"]) == 1
        page = (res / "mr.md").read_text()
        assert "2 of its jobs (bilstm, dense) were rerun" in page and "1 of 2 reruns reproduced" in page
        assert "1 differ (bilstm__lr=0.001__seed=0; largest difference 0.25)" in page
        # the same job rerun again counts once among the jobs, twice among the reruns
        assert experiments.main(["verify", str(path), "--quick", "--ids", "mr/dense__lr=0.001__seed=1"]) == 0
        page = (res / "mr.md").read_text()
        assert "2 of its jobs (bilstm, dense) were rerun on code version `later0000000000`, 3 reruns in all" in page
        assert "2 of 3 reruns reproduced" in page
    last = [v for v in exp_verify.load_verifications({"results": str(res)}) if not v["identical"]][-1]
    assert last["differing"] == ["test"] and last["max_abs_diff"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"no current record for \['mr/dense__lr=9'\]"):
        experiments.main(["verify", str(path), "--quick", "--ids", "mr/dense__lr=9"])


def test_verify_compare_names_fields_and_counts_changed_examples():
    from hf_attn_variants_research.exp_verify import compare

    recorded = {"val": 0.5, "test": 0.25, "val_curve": [[1, 0.1], [2, 0.2]], "test_correct": "0110"}
    assert compare(recorded, dict(recorded)) == {"identical": True, "differing": [], "max_abs_diff": 0.0,
                                                 "test_examples_changed": 0}
    out = compare(recorded, {**recorded, "val_curve": [[1, 0.1], [2, 0.35]], "test_correct": "1111"})
    assert out["differing"] == ["val_curve", "test_correct"] and out["test_examples_changed"] == 2
    assert out["max_abs_diff"] == pytest.approx(0.15) and not out["identical"]
    assert compare(recorded, {**recorded, "test_baseline": 0.1})["max_abs_diff"] == float("inf")  # a new field
