"""Pictures (PNG) of attention analyses, each written to a temporary file and renamed into place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        _plt().close(fig)
    return path


def attention_heatmaps(weights: np.ndarray, tokens: Sequence[str], path, title: str = "") -> Path:
    """weights (L, H, T, T) for one text -> an L x H grid of heatmaps (rows: query, columns: key)."""
    plt = _plt()
    n_layers, n_heads, t, _ = weights.shape
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(1.3 * n_heads, 1.3 * n_layers), squeeze=False)
    for layer in range(n_layers):
        for h in range(n_heads):
            ax = axes[layer, h]
            ax.imshow(weights[layer, h], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"h{h}", fontsize=7)
            if h == 0:
                ax.set_ylabel(f"L{layer}", fontsize=7)
    fig.suptitle(title or "attention: " + " ".join(tokens)[:120], fontsize=8)
    return _save(fig, path)


def head_maps(rows: list[dict], metrics: Sequence[str], path, title: str = "", fmt: str = "{:.2f}") -> Path:
    """Per-head maps (layer x head) of each metric, annotated."""
    plt = _plt()
    n_layers = 1 + max(r["layer"] for r in rows)
    n_heads = 1 + max(r["head"] for r in rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(0.45 * n_heads * len(metrics) + 1, 0.45 * n_layers + 1.2),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        grid = np.full((n_layers, n_heads), np.nan)
        for r in rows:
            grid[r["layer"], r["head"]] = r.get(metric, np.nan)
        im = ax.imshow(grid, cmap="magma", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=5,
                        color="white" if v < np.nanmean(grid) else "black")
        ax.set_title(metric, fontsize=8)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.set_xticks(range(n_heads))
        ax.set_yticks(range(n_layers))
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.04)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def spectra(spectra_by_layer: dict[int, np.ndarray], path, title: str = "singular values") -> Path:
    """spectra_by_layer: layer -> (H, K) singular values; one panel, a line per head, normalised
    by each head's largest, coloured by layer (log scale)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    cmap = plt.get_cmap("viridis")
    n = max(len(spectra_by_layer) - 1, 1)
    for i, (layer, s) in enumerate(sorted(spectra_by_layer.items())):
        s = np.asarray(s, dtype=float)
        s = s / np.maximum(s[:, :1], 1e-30)
        for h, row in enumerate(s):
            ax.plot(np.arange(1, len(row) + 1), row, color=cmap(i / n), alpha=0.6, lw=0.8,
                    label=f"layer {layer}" if h == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("index k")
    ax.set_ylabel("s_k / s_1")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def scatter(rows: list[dict], x: str, y: str, path, color: str = "layer", title: str = "",
            groups: str | None = None) -> Path:
    """A scatter of all heads (e.g. locality vs rank), coloured by ``color``; ``groups`` splits markers."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    markers = "os^Dv*"
    keys = sorted({r.get(groups) for r in rows}, key=str) if groups else [None]
    for i, g in enumerate(keys):
        sel = [r for r in rows if groups is None or r.get(groups) == g]
        sc = ax.scatter([r[x] for r in sel], [r[y] for r in sel], c=[r[color] for r in sel], cmap="viridis",
                        marker=markers[i % len(markers)], s=22, alpha=0.8, edgecolors="none",
                        label=str(g) if groups else None)
    fig.colorbar(sc, ax=ax, label=color)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if groups:
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def lines(series: dict[str, tuple], path, xlabel: str, ylabel: str,
          title: str = "", logx: bool = False, hline: float | None = None, *,
          hband: tuple[float, float] | None = None, hline_label: str | None = None,
          ylim: tuple[float, float] | None = None, marks: dict[str, float] | None = None) -> Path:
    """Named series as lines with markers: (xs, ys) or (xs, ys, lo, hi) with error bars from lo to hi.
    ``hband`` shades an interval around ``hline``; ``marks`` draws labelled horizontal reference lines
    (e.g. chance), so that an axis that does not start at 0 says where it starts and why."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, values in series.items():
        xs, ys = values[0], values[1]
        if len(values) == 4:
            lo, hi = np.asarray(values[2], dtype=float), np.asarray(values[3], dtype=float)
            y = np.asarray(ys, dtype=float)
            ax.errorbar(xs, y, yerr=np.stack([y - lo, hi - y]), marker="o", ms=3, capsize=2, label=name)
        else:
            ax.plot(xs, ys, marker="o", ms=3, label=name)
    if hline is not None:
        ax.axhline(hline, color="gray", ls="--", lw=0.8, label=hline_label)
    if hband is not None:
        ax.axhspan(hband[0], hband[1], color="gray", alpha=0.15, lw=0)
    for label, y in (marks or {}).items():
        ax.axhline(y, color="black", ls=":", lw=0.8)
        ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    if logx:
        ax.set_xscale("log", base=2)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)
