"""Loss-curve plots for the lessons (matplotlib; works with the non-interactive Agg backend)."""

from __future__ import annotations


def plot_loss_curves(histories: dict, title: str = "", ax=None, log_scale: bool = True):
    """Plot train (solid) and validation (dashed, markers) loss for one or more runs.

    ``histories`` maps a run label to ``training.loss_history(trainer)``, i.e.
    ``{"train": [(step, loss)], "eval": [(step, loss)]}``. Returns the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for i, (label, hist) in enumerate(histories.items()):
        color = f"C{i}"
        if hist.get("train"):
            steps, losses = zip(*hist["train"])
            ax.plot(steps, losses, color=color, label=f"{label}: huấn luyện")
        if hist.get("eval"):
            steps, losses = zip(*hist["eval"])
            ax.plot(steps, losses, color=color, linestyle="--", marker="o", label=f"{label}: kiểm định")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("bước (step)")
    ax.set_ylabel("hàm mất mát (loss)")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def plot_histograms(series: dict, title: str = "", xlabel: str = "", ax=None, bins: int = 20, zero_line: bool = True):
    """Overlaid histograms of one or more 1-D series (e.g. DPO reward margins before / after training).

    ``series`` maps a label to a sequence of numbers (list, NumPy array or torch tensor); all share
    the same bins. A dashed vertical line marks 0 when ``zero_line``. Returns the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    arrays = {label: np.asarray(values, dtype=float).ravel() for label, values in series.items()}
    everything = np.concatenate(list(arrays.values()))
    low, high = float(everything.min()), float(everything.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    for i, (label, values) in enumerate(arrays.items()):
        ax.hist(values, bins=edges, alpha=0.55, color=f"C{i}", label=label)
    if zero_line:
        ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("số cặp")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax


def plot_metric_curves(curves: dict, labels: dict | None = None, title: str = ""):
    """One small panel per logged metric: ``curves`` maps a metric name to ``[(step, value), ...]``.

    ``labels`` optionally gives each metric a y-axis label. Returns the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    labels = labels or {}
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for i, (ax, (name, points)) in enumerate(zip(axes[0], curves.items())):
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, color=f"C{i}", marker="o", markersize=3)
        ax.set_xlabel("bước (step)")
        ax.set_ylabel(labels.get(name, name))
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
