"""Rerun recorded grid jobs on the current code and compare them with their records.

A committed grid page is made from records of one code version (a hash of every file a result depends
on: ``experiments.code_version``). Any later change to the library changes that hash, and the page can
then only say that the checkout differs. ``verify`` answers the question a reader has: does the current
code still give the recorded numbers? It reruns some of the records' jobs, exactly as recorded (same job
settings, seed and prepared data, one thread), and compares every recorded result: validation and test
metric, parameter count, final training loss, the validation and training-loss curves and the per-example
test results. Each outcome is one line of ``<results>/verifications.jsonl`` (committed), which the grid
pages cite. Bit-identity is expected on one machine and torch version; each line records both.

Usage:
    hf-attn-variants experiments verify configs/experiments/full.yaml --only mr            # one job per model
    hf-attn-variants experiments verify configs/experiments/full.yaml --per-model 2 --max-seconds 60
    hf-attn-variants experiments verify configs/experiments/full.yaml --ids mr/dense__lr=0.001__seed=1
"""

from __future__ import annotations

import datetime
import json
import random
import tempfile
from collections import defaultdict
from pathlib import Path

# what a rerun must reproduce, field by field (the packed record's names)
COMPARED = ("val", "test", "parameters", "steps", "final_train_loss", "val_curve", "train_loss_curve", "test_correct",
            "test_baseline", "test_loss_by_position")


def verifications_file(grid: dict) -> Path:
    return Path(grid["results"]) / "verifications.jsonl"


def load_verifications(grid: dict) -> list[dict]:
    path = verifications_file(grid)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _numbers(value) -> list[float]:
    """Every number in a (nested) recorded value, in order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return []


def _correct(value) -> list[int] | None:
    """Per-example test results as a list of 0/1, from either form (the runner's list, a packed string)."""
    return [int(c) for c in value] if isinstance(value, (str, list)) else None


def compare(recorded: dict, rerun: dict) -> dict:
    """Field by field: which fields differ, the largest absolute difference of their numbers (the
    per-example results aside), and how many test examples changed from right to wrong or back. Both
    records as JSON gives them back (``test_correct`` a 0/1 list or string)."""
    differing, max_diff = [], 0.0
    for field in COMPARED:
        if field not in recorded and field not in rerun:
            continue
        a, b = recorded.get(field), rerun.get(field)
        if field == "test_correct":
            a, b = _correct(a), _correct(b)
        if a == b:
            continue
        differing.append(field)
        if field == "test_correct":
            continue  # counted as changed examples below
        xa, xb = _numbers(a), _numbers(b)
        if len(xa) == len(xb) and xa:
            max_diff = max(max_diff, max(abs(x - y) for x, y in zip(xa, xb)))
        else:
            max_diff = float("inf")  # a field appeared, vanished or changed length
    flips = None
    a, b = _correct(recorded.get("test_correct")), _correct(rerun.get("test_correct"))
    if a is not None and b is not None and len(a) == len(b):
        flips = sum(x != y for x, y in zip(a, b))
    return {"identical": not differing, "differing": differing, "max_abs_diff": max_diff,
            "test_examples_changed": flips}


def select(grid: dict, records: dict[str, list[dict]], jobs: list[dict], ids: list[str], per_model: int,
           max_seconds: float | None, seed: int) -> list[dict]:
    """The records to rerun: ``ids`` (``suite/job id``) when given; otherwise, in each suite, ``per_model``
    records of each model, drawn at random (``seed``) among the records a page reads (its code version,
    job settings still the grid's) that took at most ``max_seconds``."""
    from .exp_report import current_records, one_code_version

    chosen = []
    for suite in grid["suites"]:
        kept = one_code_version(current_records([j for j in jobs if j["suite"] == suite], records.get(suite, [])))[0]
        if ids:
            wanted = {i.split("/", 1)[1] for i in ids if i.split("/", 1)[0] == suite}
            chosen += [r for r in kept if r["job"]["id"] in wanted]
            continue
        by_model = defaultdict(list)
        for r in sorted(kept, key=lambda r: r["job"]["id"]):
            if max_seconds is None or r.get("seconds", 0) <= max_seconds:
                by_model[r["job"]["model"]].append(r)
        rng = random.Random(f"{seed}/{suite}")
        for model in sorted(by_model):
            chosen += rng.sample(by_model[model], min(per_model, len(by_model[model])))
    found = {f"{r['suite']}/{r['job']['id']}" for r in chosen}
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValueError(f"--ids: no current record for {missing} (ids are suite/job id, as "
                         "'hf-attn-variants experiments list' prints them)")
    return chosen


def rerun(grid: dict, record: dict, device: str = "cpu") -> dict:
    """Run the record's job again (into a temporary folder: the runner's own records are not touched)
    and return the new record as JSON gives it back."""
    from . import experiments

    experiments.prepare_data(grid, [record["job"]])
    with tempfile.TemporaryDirectory() as out:
        new = experiments.run_job(record["job"], out, device, grid["data"])
    return json.loads(json.dumps(new, default=float))  # as stored: JSON floats


def verify(grid: dict, jobs: list[dict], ids: list[str] | None = None, per_model: int = 1,
           max_seconds: float | None = None, seed: int = 0, device: str = "cpu") -> list[dict]:
    """Rerun the selected records' jobs, compare, append each outcome to ``verifications.jsonl``
    (temp file, then rename, after every job: an interrupted run keeps what it finished)."""
    from .exp_report import load_packed, records_file

    _, records = load_packed(records_file(grid))
    outcomes = []
    for record in select(grid, records, jobs, ids or [], per_model, max_seconds, seed):
        new = rerun(grid, record, device)
        outcome = {"suite": record["suite"], "id": record["job"]["id"], "model": record["job"]["model"],
                   **compare(record, new),
                   "recorded": {"code": record.get("code"), "torch": record.get("torch"),
                                "device": record.get("device")},
                   "rerun": {"code": new["code"], "torch": new["torch"], "device": new["device"]},
                   "seconds": new["seconds"], "date": datetime.date.today().isoformat()}
        append(verifications_file(grid), outcome)
        outcomes.append(outcome)
        print(f"{outcome['suite']}/{outcome['id']}: " + ("identical" if outcome["identical"] else
              f"differs in {', '.join(outcome['differing'])} (max |diff| {outcome['max_abs_diff']:.3g})")
              + f", {outcome['seconds']:.0f} s", flush=True)
    return outcomes


def append(path: Path, line: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(old + json.dumps(line, default=float, separators=(",", ":")) + "\n")
    tmp.replace(path)


def summary(verifications: list[dict], suite: str, recorded_hash: str, current_hash: str) -> str | None:
    """One sentence for a grid page: what the reruns of this suite's records (of ``recorded_hash``) on
    ``current_hash`` showed; None when none ran."""
    runs = [v for v in verifications if v["suite"] == suite and (v["recorded"]["code"] or {}).get("hash") ==
            recorded_hash and v["rerun"]["code"]["hash"] == current_hash]
    if not runs:
        return None
    same = [v for v in runs if v["identical"]]
    models = sorted({v["model"] for v in runs})
    where = sorted({f"torch {v['rerun']['torch']} on {v['rerun']['device']}" for v in runs})
    jobs = len({v["id"] for v in runs})
    text = (f"{jobs} of its jobs ({', '.join(models)}) were rerun on code version `{current_hash}`"
            + (f", {len(runs)} reruns in all" if len(runs) > jobs else "")
            + f" ({'; '.join(where)}; `hf-attn-variants experiments verify`, `verifications.jsonl`): "
            f"{len(same)} of {len(runs)} reruns reproduced every recorded number and per-example result exactly")
    changed = [v for v in runs if not v["identical"]]
    if changed:
        worst = max(v["max_abs_diff"] for v in changed)
        text += (f"; {len(changed)} differ ({', '.join(sorted({v['id'] for v in changed}))}; largest difference "
                 f"{worst:.3g})")
    return text + "."
