"""The labelling figures a build reports: `stats.json` and `label_frequency.png` (the paper's Figure 10, left)."""

from __future__ import annotations

import json
from pathlib import Path


def write_stats(stats: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def plot_label_frequency(frequency: dict[str, int], n_records: int, path: str | Path, top: int = 40) -> None:
    """Horizontal bars: the `top` most frequent standard terms, share of records (log scale), most frequent on top."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    fig, ax = plt.subplots(figsize=(7, 0.22 * max(len(items), 4) + 1.2), dpi=120)
    if items and n_records:
        names = [name for name, _ in items][::-1]
        shares = [100.0 * count / n_records for _, count in items][::-1]
        ax.barh(names, shares, color="#3b6ea5")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("records with the label (%)")
    ax.set_title(f"Label frequency, top {len(items)} of {len(frequency)} terms ({n_records:,} records)", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version/date stamp: rebuilds give identical files
    plt.close(fig)
