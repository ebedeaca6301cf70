"""Figures of forecasts against t, rendered headless to PNG files."""

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from files import replace_atomically

# Figures are made without pyplot, whose global state is not safe in the
# threads that train series side by side. Libraries that do use pyplot
# (TensorBoard's figure logging) get the headless backend.
matplotlib.use("Agg")


def _save(fig, path: Path) -> None:
    # PNG named explicitly: the temporary file's suffix is not .png.
    replace_atomically(
        path, lambda tmp: fig.savefig(tmp, format="png", dpi=110)
    )


def example_figure(
    context_t: np.ndarray,
    context: np.ndarray,
    target_t: np.ndarray,
    target: np.ndarray,
    forecast: np.ndarray,
    title: str,
):
    """One window: its context, the true continuation and the forecast."""
    fig = Figure(figsize=(8, 3.5))
    ax = fig.subplots()
    ax.plot(context_t, context, color="0.4", label="context")
    ax.plot(target_t, target, color="black", label="truth")
    ax.plot(target_t, forecast, "--", color="tab:red", label="forecast")
    ax.set(xlabel="t", ylabel="y", title=title)
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def plot_example(path: Path, *args, **kwargs) -> None:
    """Saves `example_figure(*args, **kwargs)` as a PNG."""
    _save(example_figure(*args, **kwargs), path)


def plot_stitched(
    path: Path,
    t: np.ndarray,
    y: np.ndarray,
    window_t: np.ndarray,
    forecasts: np.ndarray,
    title: str,
) -> None:
    """Forecasts of many windows, each at its own t, over the truth.

    Args:
      t, y: the whole test range.
      window_t, forecasts: [windows, out_len], the target times of each
        window and its forecast.
    """
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    ax.plot(t, y, color="black", lw=1, label="truth")
    for k, (times, values) in enumerate(zip(window_t, forecasts, strict=True)):
        label = "forecasts" if k == 0 else None
        ax.plot(times, values, color="tab:red", lw=1.2, label=label)
    ax.set(xlabel="t", ylabel="y", title=title)
    ax.legend(loc="best")
    fig.tight_layout()
    _save(fig, path)


def plot_rollout(
    path: Path,
    history_t: np.ndarray,
    history: np.ndarray,
    t: np.ndarray,
    truth: np.ndarray,
    forecast: np.ndarray,
    title: str,
) -> None:
    """One forecast of the whole test range from the data before it."""
    fig = Figure(figsize=(10, 3.5))
    ax = fig.subplots()
    ax.plot(history_t, history, color="0.4", label="train + validation")
    ax.plot(t, truth, color="black", label="truth")
    ax.plot(t, forecast, "--", color="tab:red", label="rollout")
    ax.axvline(t[0], color="0.7", lw=0.8)
    ax.set(xlabel="t", ylabel="y", title=title)
    ax.legend(loc="best")
    fig.tight_layout()
    _save(fig, path)
