"""Caches keyed on their inputs, for the MiniLM study (``study.py``).

Every cached value is stored with the key it was computed for: a content hash of the data it read
(sentences AND labels, in order), of the model (config + safetensors bytes, hashed once per
process), of the settings (conversion fields, sizes) and of the code that computes it (the source
of the functions and modules named by the caller), plus the torch/transformers versions. A file
whose key differs is never reused: ``Cache.get`` says so loudly (which parts differ) and
recomputes, or, when computing is off (``--cached-only``), refuses with ``StaleCacheError``.

Not Hub code (a tool).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

KEY_VERSION = 1  # bump when the layout of a key or of a cache file changes


class StaleCacheError(RuntimeError):
    """A cached file exists but was computed for other inputs, and recomputing is off."""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def digest(obj: Any) -> str:
    """sha256 of a JSON-able object (canonical: sorted keys), of bytes or of a numpy array."""
    h = hashlib.sha256()
    if isinstance(obj, bytes):
        h.update(obj)
    elif isinstance(obj, np.ndarray):
        h.update(str(obj.dtype).encode() + str(obj.shape).encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(json.dumps(obj, sort_keys=True, default=_jsonable).encode())
    return h.hexdigest()


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    if isinstance(v, (tuple, set)):
        return list(v)
    raise TypeError(f"cannot key a {type(v).__name__}")


def data_hash(texts: Iterable[str], labels: Iterable | None = None) -> str:
    """Content hash of sentences (in order) and, when given, their labels (in order)."""
    texts = list(texts)
    payload = {"texts": texts}
    if labels is not None:
        payload["labels"] = [int(x) if isinstance(x, (int, np.integer)) else x for x in np.asarray(labels).tolist()]
        if len(payload["labels"]) != len(texts):
            raise ValueError(f"labels: {len(payload['labels'])} labels for {len(texts)} texts")
    return digest(payload)


_FILE_HASHES: dict[tuple[str, int, float], str] = {}


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime: computed once)."""
    p = Path(path).resolve()
    st = p.stat()
    memo = (str(p), st.st_size, st.st_mtime)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def model_hash(path: str | os.PathLike) -> str:
    """Content hash of a checkpoint folder: its config.json (parsed, canonical) and the bytes of every
    weights file (*.safetensors, else *.bin). Path, size and mtime play no part."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"model={str(path)!r}: not a checkpoint folder (the study keys caches on local weights)")
    config = folder / "config.json"
    if not config.is_file():
        raise ValueError(f"model={str(path)!r}: no config.json")
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not weights:
        raise ValueError(f"model={str(path)!r}: no *.safetensors or *.bin weights")
    return digest({"config": json.loads(config.read_text()), "weights": {w.name: file_hash(w) for w in weights}})


def code_hash(*parts: Callable | ModuleType | str | os.PathLike) -> str:
    """Hash of the source of the given functions/classes/modules (or files): the version of the code
    that computes a cached value, plus the torch and transformers versions."""
    import torch
    import transformers

    sources = []
    for p in parts:
        if isinstance(p, (str, os.PathLike)):
            sources.append(Path(p).read_text())
        else:
            sources.append(inspect.getsource(p))
    return digest({"sources": sources, "torch": torch.__version__, "transformers": transformers.__version__})


def _diff(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class Cache:
    """One file per step/setting under ``folder``: ``name.json`` (a JSON value) or ``name.npz`` (arrays),
    each stored with its key ``{part: hash}``. ``get``/``get_arrays`` return the cached value when the
    stored key equals the given one, else compute, store (temp file, then rename) and return."""

    def __init__(self, folder: str | os.PathLike, compute: bool = True):
        self.folder = Path(folder)
        self.compute = compute  # False: a miss returns None, a stale entry raises StaleCacheError
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stale: list[str] = []  # names found stale in this process (for tests and the log)

    def _check(self, name: str, stored: dict | None, key: dict) -> bool:
        """True when the stored key matches; a mismatch is reported (and refused when not computing)."""
        if stored is None:
            return False
        key = {**key, "key_version": KEY_VERSION}
        if stored == key:
            return True
        parts = _diff(stored, key)
        self.stale.append(name)
        msg = f"STALE CACHE {self.folder / name}: computed for other inputs (differs in: {', '.join(parts)})"
        if not self.compute:
            raise StaleCacheError(msg + "; not reused. Recompute it (drop --cached-only) or delete the file")
        _log(msg + "; recomputing")
        return False

    def get(self, name: str, key: dict[str, str], fn: Callable[[], Any]) -> Any:
        path = self.folder / f"{name}.json"
        if path.exists():
            entry = json.loads(path.read_text())
            stored = entry.get("key") if isinstance(entry, dict) and "value" in entry else {"unkeyed": "legacy"}
            if self._check(name, stored, key):
                return entry["value"]
        if not self.compute:
            _log(f"{name}: not cached, skipped (--cached-only)")
            return None
        t = time.time()
        value = fn()
        self._write_json(path, {"key": {**key, "key_version": KEY_VERSION}, "value": value})
        _log(f"{name}: {time.time() - t:.0f} s")
        return value

    def peek(self, name: str, key: dict[str, str]) -> Any:
        """The cached JSON value when its key matches, else None (a stale entry is reported, or refused
        when not computing); never computes or writes."""
        path = self.folder / f"{name}.json"
        if path.exists():
            entry = json.loads(path.read_text())
            stored = entry.get("key") if isinstance(entry, dict) and "value" in entry else {"unkeyed": "legacy"}
            if self._check(name, stored, key):
                return entry["value"]
        return None

    def get_arrays(self, name: str, key: dict[str, str], fn: Callable[[], dict[str, np.ndarray]]
                   ) -> dict[str, np.ndarray] | None:
        path = self.folder / f"{name}.npz"
        if path.exists():
            with np.load(path) as z:
                arrays = dict(z)
            stored = json.loads(str(arrays.pop("__key__"))) if "__key__" in arrays else {"unkeyed": "legacy"}
            if self._check(name, stored, key):
                return arrays
        if not self.compute:
            _log(f"{name}: not cached, skipped (--cached-only)")
            return None
        t = time.time()
        arrays = fn()
        if "__key__" in arrays:
            raise ValueError(f"{name}: '__key__' is reserved")
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, __key__=np.array(json.dumps({**key, "key_version": KEY_VERSION}, sort_keys=True)), **arrays)
        os.replace(tmp, path)
        _log(f"{name}: {time.time() - t:.0f} s")
        return arrays

    def _write_json(self, path: Path, obj: Any) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
        os.replace(tmp, path)
