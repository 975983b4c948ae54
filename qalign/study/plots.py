"""The study's figures (matplotlib, Agg backend): training curves and a bar chart of the methods with their CIs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qalign.health import read_history  # noqa: F401 (re-exported for the report)
from qalign.io import atomic_target

CURVES_FILE = "training_curves.png"
METHODS_FILE = "methods.png"


def series(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one logged key, training-step rows only (the final summary row has no `key`)."""
    steps, values = [], []
    for index, row in enumerate(history, start=1):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            steps.append(float(row.get("step") or index))
            values.append(float(value))
    return steps, values


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    """Save atomically: render into a temp file beside the target, then rename."""
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_training_curves(histories: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    """Loss of every run (and GRPO's reward on a second panel); False when nothing was logged."""
    curves = {run: (series(h, "loss"), series(h, "reward")) for run, h in histories.items()}
    curves = {run: c for run, c in curves.items() if c[0][0] or c[1][0]}
    if not curves:
        return False
    plt = _pyplot()
    with_reward = any(reward[0] for _, reward in curves.values())
    fig, axes = plt.subplots(1, 2 if with_reward else 1, figsize=(11 if with_reward else 6, 4), squeeze=False)
    for index, (run, ((steps, loss), (rsteps, reward))) in enumerate(curves.items()):
        color = f"C{index % 10}"  # one colour per run on both panels
        if steps:
            axes[0][0].plot(steps, loss, marker=".", label=run, color=color)
        if with_reward and rsteps:
            axes[0][1].plot(rsteps, reward, marker=".", label=run, color=color)
    axes[0][0].set(title="training loss", xlabel="step", ylabel="loss")
    axes[0][0].legend(fontsize=8)
    if with_reward:
        axes[0][1].set(title="GRPO reward", xlabel="step", ylabel="mean reward")
        axes[0][1].legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_methods(bars: dict[str, dict[str, tuple[float, float, float]]], path: Path) -> bool:
    """Grouped bars: per method, SubEM / EM / F1 in % with their interval as error bars ({label: {metric: ci}})."""
    if not bars:
        return False
    plt = _pyplot()
    metrics = ("SubEM", "EM", "F1")
    labels = list(bars)
    width = 0.8 / len(metrics)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4))
    for k, metric in enumerate(metrics):
        xs = [i + (k - 1) * width for i in range(len(labels))]
        means = [100 * bars[label][metric][0] for label in labels]
        low = [100 * (bars[label][metric][0] - bars[label][metric][1]) for label in labels]
        high = [100 * (bars[label][metric][2] - bars[label][metric][0]) for label in labels]
        ax.bar(xs, means, width, yerr=[low, high], capsize=3, label=metric)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set(ylabel="% of test questions", ylim=(0, 105), title="methods on the test set (bootstrap CI)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(metrics), frameon=False)
    _save(fig, path)
    plt.close(fig)
    return True

