"""The length experiment (hf_attn_variants_research/dates_length.py), the SNLI curve report and the
``results`` command: data, training loop, records, intervals and the regeneration step table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_attn_variants_research import dates, dates_length, results, snli_curve
from hf_attn_variants_research.exp_report import t_interval


@pytest.fixture(scope="module")
def pool():
    return dates.generate(200, [1, 2])


def test_compose_joins_k_dates_and_their_iso_forms(pool):
    out = dates_length.compose(pool, 300, 5, seed=[3])
    assert set(out["k"]) == {1, 2, 3, 4, 5}
    for source, target, k in zip(out["source"], out["target"], out["k"]):
        parts = target.split(" ")
        assert len(parts) == k and all(len(p) == 10 and p[4] == "-" for p in parts)
        assert source.count(dates_length.SETTINGS["separator"]) == k - 1
        for written, iso in zip(source.split(dates_length.SETTINGS["separator"]), parts):
            assert pool["target"][pool["source"].index(written)] == iso  # the i-th written date is the i-th ISO
    assert dates_length.compose(pool, 300, 5, seed=[3]) == out  # deterministic


def test_chars_round_trip(pool):
    chars = dates_length.Chars(pool["source"] + pool["target"])
    ids = chars.encode(pool["source"][:5])
    assert ids.shape[0] == 5 and int(ids[0, len(pool["source"][0])]) == 2  # [EOS] after the text
    for row, text in zip(ids.tolist(), pool["source"][:5]):
        assert chars.decode(row) == text


@pytest.mark.parametrize("cross", ["additive", "mean"])
def test_run_one_trains_and_scores_every_test_example(pool, cross):
    settings = {**dates_length.SETTINGS, "train_steps": 3, "batch_size": 8, "eval_every": 2, "hidden": 16,
                "intermediate": 32, "max_dates": 3}
    small = {key: values[:6] for key, values in pool.items()}  # 6 dates: 40 training examples cover them all
    splits = {name: dates_length.compose(small, n, 3, seed=[i]) for i, (name, n) in
              enumerate((("train", 40), ("validation", 6), ("test", 9)))}
    record = dates_length.run_one(cross, 0, settings, splits)
    test = record["test"]
    assert len(test["exact"]) == len(test["k"]) == 9 and record["model"] == cross
    assert all(0 <= r <= k for r, k in zip(test["dates_right"], test["k"]))
    assert [s for s, _ in record["val_curve"]] == [2, 3]
    assert record["parameters"] > 0 and record["code"]["hash"]


def fake_record(model: str, seed: int, rate: float) -> dict:
    rng = np.random.default_rng(seed)
    k = [1, 2, 3] * 20
    exact = [int(rng.random() < rate / j) for j in k]
    return {"model": model, "seed": seed, "parameters": 100, "seconds": 1.0, "code": {"hash": "x"},
            "settings": dates_length.SETTINGS, "test_exact": float(np.mean(exact)),
            "test": {"k": k, "exact": exact, "dates_right": exact, "source_chars": [10] * 60}}


def test_summary_intervals_are_t_over_seeds_and_differences_paired():
    records = [fake_record(m, s, r) for m, r in (("additive", 0.9), ("mean", 0.6)) for s in range(3)]
    s = dates_length.summary(records)
    per_seed = [dates_length.by_k(r)[2] for r in records if r["model"] == "mean"]
    mean, lo, hi, values = s["models"]["mean"]["k"][2]
    assert values == per_seed and (lo, hi) == pytest.approx(t_interval(per_seed))
    diff = s["diffs"]["mean"][3]
    expected = [dates_length.by_k(a)[3] - dates_length.by_k(b)[3] for a, b in
                zip(records[3:], records[:3])]
    assert diff["per_seed"] == pytest.approx(expected) and diff["k"] == s["comparisons"] == 3
    assert diff["bonf_lo"] <= diff["lo"] <= diff["mean"] <= diff["hi"] <= diff["bonf_hi"]
    text = dates_length.report(records)
    assert "| mean |" in text and "Bonferroni" in text


def test_snli_curve_reads_a_run_folder(tmp_path):
    run = tmp_path / "curve_deep"
    (run / "model").mkdir(parents=True)
    history = [{"eval_accuracy": 0.4 + 0.01 * i, "step": 49 * (i + 1)} for i in range(8)] + [{"loss": 1.0, "step": 50}]
    (run / "log_history.json").write_text(json.dumps(history))
    (run / "model" / "eval_results.json").write_text(json.dumps({"accuracy": 0.5, "macro_f1": 0.45}))
    read = snli_curve.read_run(run)
    assert read["name"] == "deep" and read["seed"] == 42 and read["pairs"][0] == 49 * 64
    assert read["val"][-1] == pytest.approx(0.47)
    text = snli_curve.write([read], tmp_path / "out")
    one = "| deep | 1 | 0.410 / 0.430 / 0.450 / 0.470 | 0.020 (one seed) | 0.500 (one seed) | 0.450 (one seed) |"
    assert one in text
    other = {**read, "seed": 1, "val": [v + 0.02 for v in read["val"]], "test": {"accuracy": 0.6, "macro_f1": 0.5}}
    text = snli_curve.write([read, other], tmp_path / "out")
    assert "| deep | 2 | 0.420 / 0.440 / 0.460 / 0.480 | 0.020 [" in text and "| 0.550 [" in text
    dense = [{**read, "name": "dense", "test": {"accuracy": 0.6, "macro_f1": 0.5}},
             {**other, "name": "dense", "test": {"accuracy": 0.75, "macro_f1": 0.5}}]
    text = snli_curve.write([read, other, *dense], tmp_path / "out")  # paired by seed: 0.1 and 0.15
    assert "dense − deep test accuracy 0.125 [" in text
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="log_history.json"):
        snli_curve.read_run(tmp_path / "nothing")


def test_results_steps_read_committed_files():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for what, reads, _, target, _ in results.STEPS:
        assert (root / reads).exists(), f"{what}: {reads} is not committed"
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))


def test_another_budget_is_kept_apart():
    assert dates_length.results_name("length-records.jsonl.gz", "steps6000").name == \
        "length-records-steps6000.jsonl.gz"
    assert dates_length.results_name("length.png").name == "length.png"
    assert dates_length.record_path("mean", 1, "steps6000").parent.name == "records-steps6000"
    with pytest.raises(SystemExit):  # --steps without --tag: refused by the parser
        dates_length.main(["run", "--steps", "10"])
