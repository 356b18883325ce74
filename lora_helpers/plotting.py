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
