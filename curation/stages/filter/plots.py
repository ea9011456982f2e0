"""The CLIP-score histogram `curation filter` writes beside its output (and the data card shows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipformats.files import atomic_path


def plot_score_histogram(scores: np.ndarray, kept: np.ndarray, threshold: float | None, path: Path) -> None:
    """Stacked histogram of the CLIP scores of kept and dropped samples, the score cut as a dashed line."""
    import matplotlib  # here: a second to load, spent only when the stage draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    low, high = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1e-6, 41)
    axes.hist([scores[kept], scores[~kept]], bins=edges, stacked=True, label=["kept", "dropped"],
              color=["tab:green", "tab:grey"])
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"score cut {threshold:.3f}")
    axes.set_xlabel("CLIP score (cosine of image and caption embeddings)")
    axes.set_ylabel("samples")
    axes.set_title(f"CLIP scores: {int(kept.sum()):,} of {len(scores):,} samples kept")
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(figure)
