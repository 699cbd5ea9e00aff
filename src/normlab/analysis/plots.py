"""Figures of the study: one function per figure, a tidy DataFrame in, a matplotlib Figure out.

The functions never read the store and never save files (report.py does both), so each can be
called from a notebook on any frame with the documented columns. Matplotlib runs on the Agg
backend (no display needed). Every figure that aggregates over seeds draws the mean and a 95%
t-interval band computed by `normlab.analysis.stats.summarize`.
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are only ever written to PNG
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from normlab.analysis.stats import summarize  # noqa: E402

__all__ = [
    "plot_curves",
    "plot_final_accuracy",
    "plot_batch_size",
    "plot_percentiles",
    "plot_grad_norms",
    "plot_step_time",
    "plot_lr_range",
]


def _require(frame, columns: Sequence[str], figure: str) -> None:
    """One clear error when a frame lacks a column the figure needs."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{figure}: the frame is missing columns {missing} (expected {list(columns)}, "
            f"got {list(frame.columns)}); build it with the report's frame helpers"
        )
    if len(frame) == 0:
        raise ValueError(f"{figure}: the frame is empty (expected at least one row with columns "
                         f"{list(columns)}); there is nothing to plot")


def _names(frame, group: str, order: Sequence[str] | None = None) -> list[str]:
    """The groups to draw: `order` when given, else every value of `group` sorted as text."""
    return list(order) if order else sorted(frame[group].astype(str).unique())


def _rows(frame, group: str, name: str):
    """The rows of one group (matched as text, the way `_names` lists them)."""
    return frame[frame[group].astype(str) == name]


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable color per variant name (tab10, in the order of `names`)."""
    cycle = plt.get_cmap("tab10").colors
    return {name: matplotlib.colors.to_hex(cycle[i % len(cycle)]) for i, name in enumerate(names)}


def _new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0, sharey: bool = False):
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False, sharey=sharey)
    return fig, list(axes[0])


def _mean_band(frame, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per x: mean of y over the rows (seeds) and its 95% t-interval (zero-width band for n=1)."""
    xs, means, lows, highs = [], [], [], []
    for xv, rows in frame.groupby(x, sort=True):
        s = summarize(rows[y].to_numpy())
        if s.n == 0:
            continue
        xs.append(xv)
        means.append(s.mean)
        lows.append(s.ci_low if s.n > 1 else s.mean)
        highs.append(s.ci_high if s.n > 1 else s.mean)
    return np.asarray(xs, float), np.asarray(means), np.asarray(lows), np.asarray(highs)


def _finish(fig: Figure, ax, title: str) -> Figure:
    """The common tail of a one-panel line plot: title, grid, legend, tight layout."""
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _finish_panels(fig: Figure, axes, names: Sequence[str], x: str, ylabel: str, title: str,
                   legend_size: float) -> Figure:
    """The common tail of a one-panel-per-group plot: panel titles, labels, legend, suptitle."""
    for ax, name in zip(axes, names):
        ax.set_title(name)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=legend_size)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(
    frame,
    *,
    x: str = "step",
    y: str = "value",
    group: str = "variant",
    title: str = "",
    ylabel: str = "",
    logy: bool = False,
) -> Figure:
    """Training curves, mean over seeds with a 95% CI band, one line per `group`.

    frame: one row per (group, seed, x) with columns `group`, `x`, `y` (e.g. test accuracy at
    each evaluation step of each run).
    """
    _require(frame, [group, x, y], "plot_curves")
    fig, (ax,) = _new_figure()
    names = _names(frame, group)
    colors = _colors(names)
    for name in names:
        rows = _rows(frame, group, name)
        xs, mean, lo, hi = _mean_band(rows, x, y)
        n = rows.groupby(x).size().max()
        ax.plot(xs, mean, color=colors[name], label=f"{name} (n={n})")
        ax.fill_between(xs, lo, hi, color=colors[name], alpha=0.2, linewidth=0)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    if logy:
        ax.set_yscale("log")
    return _finish(fig, ax, title)


def plot_final_accuracy(
    frame,
    *,
    group: str = "variant",
    y: str = "value",
    title: str = "",
    ylabel: str = "final test accuracy",
    order: Sequence[str] | None = None,
) -> Figure:
    """Final metric per variant: mean with a 95% CI error bar and every seed as a dot.

    frame: one row per run (seed) with columns `group`, `y`.
    """
    _require(frame, [group, y], "plot_final_accuracy")
    fig, (ax,) = _new_figure(width=max(4.0, 1.0 + 0.9 * frame[group].nunique()))
    names = _names(frame, group, order)
    colors = _colors(names)
    rng = np.random.default_rng(0)  # horizontal jitter of the seed dots only
    for i, name in enumerate(names):
        values = _rows(frame, group, name)[y].to_numpy(dtype=float)
        s = summarize(values)
        if s.n == 0:
            continue
        err = [[s.mean - s.ci_low], [s.ci_high - s.mean]] if s.n > 1 else None
        ax.bar(i, s.mean, color=colors[name], alpha=0.35, width=0.6)
        ax.errorbar(i, s.mean, yerr=err, color="black", capsize=6, fmt="_", markersize=18)
        finite = values[np.isfinite(values)]
        ax.scatter(i + rng.uniform(-0.12, 0.12, finite.size), finite, color=colors[name],
                   edgecolor="black", zorder=3, s=22)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    finite_all = frame[y].to_numpy(dtype=float)
    finite_all = finite_all[np.isfinite(finite_all)]
    if finite_all.size:
        # Zoom on the data (accuracies of 0.6-0.7 would be flat bars from 0), never cutting a
        # negative value (accuracy gaps can be < 0) and never a zero-height range.
        low, high = float(finite_all.min()), float(finite_all.max())
        margin = 0.1 * (high - low) + 0.02 * max(abs(high), abs(low), 1e-3)
        bottom = low - margin if low < 0 else max(0.0, low - margin)
        ax.set_ylim(bottom=bottom, top=high + margin)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_batch_size(
    frame,
    *,
    group: str = "norm",
    x: str = "batch_size",
    y: str = "value",
    title: str = "",
    ylabel: str = "final test accuracy",
) -> Figure:
    """Metric vs batch size per norm on a log2 x axis, mean and 95% CI band over seeds.

    frame: one row per run with columns `group`, `x` (batch size), `y`.
    """
    _require(frame, [group, x, y], "plot_batch_size")
    fig, (ax,) = _new_figure()
    names = _names(frame, group)
    colors = _colors(names)
    for name in names:
        xs, mean, lo, hi = _mean_band(_rows(frame, group, name), x, y)
        ax.plot(xs, mean, marker="o", color=colors[name], label=name)
        ax.fill_between(xs, lo, hi, color=colors[name], alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    sizes = sorted(frame[x].unique())
    ax.set_xticks(sizes, [str(int(s)) for s in sizes])
    ax.set_xlabel("batch size (log2)")
    ax.set_ylabel(ylabel)
    return _finish(fig, ax, title)


def plot_percentiles(
    frame,
    *,
    group: str = "variant",
    x: str = "step",
    title: str = "",
    order: Sequence[str] | None = None,
) -> Figure:
    """Ioffe & Szegedy (2015) Fig. 1b/c: 15th/50th/85th percentiles of one unit's input.

    frame: columns `group`, `x`, `p15`, `p50`, `p85` (one row per probe step; several seeds
    are averaged). One panel per group (in `order`), sharing the y axis, so the drift of the input
    distribution without BN and its stability with BN are compared at a glance.
    """
    _require(frame, [group, x, "p15", "p50", "p85"], "plot_percentiles")
    names = _names(frame, group, order)
    fig, axes = _new_figure(ncols=len(names), width=4.5, sharey=True)
    for ax, name in zip(axes, names):
        rows = _rows(frame, group, name).groupby(x, sort=True)[["p15", "p50", "p85"]].mean()
        steps = rows.index.to_numpy(dtype=float)
        ax.fill_between(steps, rows["p15"], rows["p85"], color="tab:blue", alpha=0.2, linewidth=0,
                        label="15th-85th percentile")
        for col, style in (("p15", ":"), ("p50", "-"), ("p85", ":")):
            ax.plot(steps, rows[col], linestyle=style, color="tab:blue",
                    label="median" if col == "p50" else None)
    return _finish_panels(fig, axes, names, x, "input to one last-hidden-layer unit", title, legend_size=8)


def plot_grad_norms(
    frame,
    *,
    group: str = "variant",
    layer: str = "layer",
    x: str = "step",
    y: str = "value",
    title: str = "",
    order: Sequence[str] | None = None,
) -> Figure:
    """Gradient norm per layer over training, one panel per variant, log y; mean over seeds.

    frame: columns `group`, `layer`, `x`, `y` (one row per run, layer and probe step).
    Panels follow `order` (default sorted) and share the y axis.
    """
    _require(frame, [group, layer, x, y], "plot_grad_norms")
    names = _names(frame, group, order)
    layers = sorted(frame[layer].astype(str).unique())
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(layers), 1)))
    fig, axes = _new_figure(ncols=len(names), width=4.5, sharey=True)
    for ax, name in zip(axes, names):
        rows = _rows(frame, group, name)
        for color, lname in zip(colors, layers):
            lrows = _rows(rows, layer, lname)
            if len(lrows) == 0:
                continue
            xs, mean, _, _ = _mean_band(lrows, x, y)
            ax.plot(xs, mean, color=color, label=lname)
        ax.set_yscale("log")
    return _finish_panels(fig, axes, names, x, "gradient norm", title, legend_size=7)


def plot_step_time(
    frame,
    *,
    group: str = "variant",
    y: str = "value",
    title: str = "",
    ylabel: str = "time per step (ms)",
) -> Figure:
    """Wall time per optimizer step per variant: mean with 95% CI and the seed dots.

    frame: one row per run with columns `group`, `y` (that run's median step time, ms).
    """
    return plot_final_accuracy(frame, group=group, y=y, title=title, ylabel=ylabel)


def plot_lr_range(
    frame,
    *,
    group: str = "variant",
    x: str = "lr",
    y: str = "loss",
    title: str = "",
) -> Figure:
    """Learning-rate range test: training loss vs a learning rate growing exponentially.

    frame: columns `group`, `x` (the learning rate at that step), `y` (the training loss).
    Losses that are not finite (divergence) end the curve; the lowest loss of each curve is
    marked, the usable range ends where the loss climbs past the starting loss.
    """
    _require(frame, [group, x, y], "plot_lr_range")
    fig, (ax,) = _new_figure()
    names = _names(frame, group)
    colors = _colors(names)
    top = -math.inf
    for name in names:
        curve = _rows(frame, group, name).groupby(x, sort=True)[y].mean()
        curve = curve[np.isfinite(curve.to_numpy(dtype=float))]
        if curve.empty:
            continue
        ax.plot(curve.index, curve.to_numpy(), color=colors[name], label=name)
        best = curve.idxmin()
        ax.scatter([best], [curve[best]], color=colors[name], edgecolor="black", zorder=3)
        top = max(top, float(curve.iloc[0]))
    ax.set_xscale("log")
    if math.isfinite(top):
        ax.set_ylim(bottom=0.0, top=top * 2.0)  # past twice the starting loss it is divergence
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("training loss")
    return _finish(fig, ax, title)
