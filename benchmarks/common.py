"""Shared helpers of the benchmarks: machine description, interleaved timing, peak memory,
markdown tables and plots. Not part of the package (benchmarks -> the package's public API).

Timing: candidates of one shape run round-robin (A B C, B C A, C A B, ...), each ``repeats`` times after a
warm-up, and the median of each is reported, so a noisy, shared machine slows them alike.
Peak memory: growth of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) during one call, with glibc told to return every block >= 64 KiB to
the system on free (``MALLOC_MMAP_THRESHOLD_``; the scripts re-execute themselves to set it),
so that the number is what the call itself held at its worst.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
import torch  # noqa: E402


def reexec_with_mmap_threshold() -> None:
    """Restart this script with MALLOC_MMAP_THRESHOLD_ set (peak memory then reflects frees)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and sys.platform.startswith("linux"):
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def machine() -> str:
    """One line: CPU model and cores (from lscpu), threads torch uses, torch version."""
    model, cores = platform.processor() or "unknown CPU", os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cores = fields.get("CPU(s)", cores).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return (f"{model}, {cores} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}")


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_device_args(parser) -> None:
    """``--device cpu|cuda`` and ``--dtype fp32|bf16|fp16`` (the GPU runs: ``--device cuda --dtype bf16``)."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                        help="tensor dtype of the kernels; autocast dtype of the models (default fp32)")


def check_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")


def device_line(device: str) -> str:
    """The machine line of a results file: the GPU and the versions when on CUDA, else ``machine()``."""
    if device != "cuda":
        return machine()
    props = torch.cuda.get_device_properties(0)
    return (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}, Python {platform.python_version()}; "
            f"host: {machine()}")


def results_name(device: str, stem: str, quick: bool, only: list[str] | None = None) -> str:
    """``kernels.md`` / ``kernels-quick.md`` on CPU; ``gpu-kernels[-quick][-band].md`` on CUDA."""
    parts = (["gpu"] if device == "cuda" else []) + [stem] + (["quick"] if quick else [])
    parts += list(only or []) if device == "cuda" else []
    return "-".join(parts) + ".md"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1
                ) -> dict[str, float]:
    """Median seconds per call of each candidate, measured round-robin."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:  # rotate: no candidate always first
            fn = candidates[name]
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> float:
    """Bytes by which one call of ``fn`` raised the peak resident set (CPU) or the peak of
    allocated CUDA memory (``device="cuda"``); NaN where unmeasurable."""
    if device == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        sync()
        return float(torch.cuda.max_memory_allocated() - base)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current VmRSS
        base = _status("VmRSS:")
        fn()
        return float(_status("VmHWM:") - base)
    except OSError:
        return float("nan")


def matmul_rate(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Measured matrix-multiply rate of this machine (FLOP/s), torch's threads (or the GPU)."""
    if device == "cuda":
        n = max(n, 8192)  # a GPU needs a large product to reach its rate
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    t = interleaved({"mm": lambda: a @ b}, repeats=repeats)["mm"]
    return 2 * n**3 / t


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    fmt = lambda x: f"{x:.3g}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def plot(path: Path, title: str, xs: list[int], series: dict[str, list[float]], ylabel: str,
         limit: list[float] | None = None, logy: bool = True) -> None:
    """One PNG: a line per series against T, the FLOP limit dashed when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", label=name, linestyle="--" if name.startswith("dense") else "-")
    if limit is not None:
        ax.plot(xs, limit, color="black", linestyle=":", label="FLOP limit (matmul rate)")
    ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("T (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
