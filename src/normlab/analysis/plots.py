"""Figures of the study: one function per figure, a tidy DataFrame in, a matplotlib Figure out.

The functions never read the store and never save files (report.py does both), so each can be
called from a notebook on any frame with the documented columns. Figures are built as
`matplotlib.figure.Figure` on an Agg canvas, without pyplot: importing this module or drawing a
figure leaves the user's matplotlib backend and pyplot's figure list alone (show one in a
notebook by returning it, or with `IPython.display.display(fig)`).

What every figure shares:
  - a variant's colour is fixed by its name (`normlab.analysis.palette`), the same in every figure;
  - values aggregated over seeds are the mean and its 95% t-interval (`stats.summarize`);
  - final values are drawn as a dot and its interval (an axis that zooms on dots misleads no
    one), or as bars that start at zero, never as bars on a cut axis;
  - `budget=` states the training budget behind the numbers ("at 2000 steps", "at 20 epochs"):
    in the y label of a final-value figure, in the title of a curve figure;
  - `marks={variant: x}` on the line figures marks a point of each variant's curve (e.g. the
    learning rate selected for it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from normlab.analysis.palette import line_styles, variant_color
from normlab.analysis.stats import summarize

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
        raise ValueError(
            f"{figure}: the frame is empty (expected at least one row with columns "
            f"{list(columns)}); there is nothing to plot"
        )


def _names(frame, group: str, order: Sequence[str] | None = None) -> list[str]:
    """The groups to draw: `order` when given, else every value of `group` sorted as text."""
    return list(order) if order else sorted(frame[group].astype(str).unique())


def _rows(frame, group: str, name: str):
    """The rows of one group (matched as text, the way `_names` lists them)."""
    return frame[frame[group].astype(str) == name]


def _new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0, sharey: bool = False):
    """A Figure on its own Agg canvas (no pyplot, no global state) and its row of axes."""
    fig = Figure(figsize=(width * ncols, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False, sharey=sharey)
    return fig, list(axes[0])


def _with_budget(text: str, budget: str) -> str:
    """ "final test accuracy" + "at 2000 steps" -> "final test accuracy at 2000 steps"."""
    return f"{text} {budget}".strip() if budget else text


def _title(title: str, budget: str) -> str:
    if not budget:
        return title
    return f"{title} ({budget})" if title else budget


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


def _draw_marks(
    ax,
    marks: Mapping[str, float] | None,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    names: Sequence[str],
    logx: bool,
    label: str,
) -> None:
    """A dashed vertical line at each marked x, in the variant's colour, and a ring where it
    meets the variant's curve (interpolated; in log x on a log axis). A variant the figure does
    not draw at all is refused (a mark that silently vanished would hide the point); one whose
    curve is empty (every run diverged) keeps its line."""
    for name, x in (marks or {}).items():
        name = str(name)
        if name not in names:
            raise ValueError(f"marks: {name!r} is not a variant of this figure (variants: {list(names)})")
        color = variant_color(name)
        ax.axvline(x, color=color, linestyle="--", linewidth=1.0, alpha=0.8)
        xs, ys = curves.get(name, (np.empty(0), np.empty(0)))
        if xs.size and xs.min() <= x <= xs.max():
            at = np.log(x) if logx else x
            y = float(np.interp(at, np.log(xs) if logx else xs, ys))
            ax.scatter(
                [x],
                [y],
                s=90,
                facecolor="none",
                edgecolor=color,
                linewidth=2.0,
                zorder=4,
                label=f"{label} ({name}: {x:.3g})",
            )


def _finish(fig: Figure, ax, title: str) -> Figure:
    """The common tail of a one-panel line plot: title, grid, legend, tight layout."""
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _finish_panels(
    fig: Figure, axes, names: Sequence[str], x: str, ylabel: str, title: str, legend_size: float
) -> Figure:
    """The common tail of a one-panel-per-group plot: panel titles in the variant's colour."""
    for ax, name in zip(axes, names):
        ax.set_title(name, color=variant_color(name))
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
    budget: str = "",
    marks: Mapping[str, float] | None = None,
    mark_label: str = "marked",
) -> Figure:
    """Training curves, mean over seeds with a 95% CI band, one line per `group`.

    frame: one row per (group, seed, x) with columns `group`, `x`, `y` (e.g. test accuracy at
    each evaluation step of each run). `marks={variant: x}` marks a point of a variant's curve
    (e.g. its best held-out epoch), labelled `mark_label` in the legend.
    """
    _require(frame, [group, x, y], "plot_curves")
    fig, (ax,) = _new_figure()
    names = _names(frame, group)
    styles = line_styles(names)
    drawn = {}
    for name in names:
        rows = _rows(frame, group, name)
        xs, mean, lo, hi = _mean_band(rows, x, y)
        n = rows.groupby(x).size().max()
        color = variant_color(name)
        ax.plot(xs, mean, color=color, linestyle=styles[name], label=f"{name} (n={n})")
        ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        drawn[name] = (xs, mean)
    _draw_marks(ax, marks, drawn, names, logx=False, label=mark_label)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    if logy:
        ax.set_yscale("log")
    return _finish(fig, ax, _title(title, budget))


def plot_final_accuracy(
    frame,
    *,
    group: str = "variant",
    y: str = "value",
    title: str = "",
    ylabel: str = "final test accuracy",
    order: Sequence[str] | None = None,
    budget: str = "",
    kind: str = "dot",
) -> Figure:
    """Final metric per variant: the mean with its 95% CI and every seed as a small dot.

    frame: one row per run (seed) with columns `group`, `y`. `kind="dot"` (default) draws the
    mean as a large dot with its interval, and the axis fits the data; `kind="bar"` draws bars
    that start at zero on an axis that includes zero (for quantities whose ratio matters, such
    as time), with the interval and seeds on top. `budget` is appended to the y label.
    """
    if kind not in ("dot", "bar"):
        raise ValueError(f"plot_final_accuracy: kind must be 'dot' or 'bar', got {kind!r}")
    _require(frame, [group, y], "plot_final_accuracy")
    fig, (ax,) = _new_figure(width=max(4.0, 1.0 + 0.9 * frame[group].nunique()))
    names = _names(frame, group, order)
    rng = np.random.default_rng(0)  # horizontal jitter of the seed dots only
    for i, name in enumerate(names):
        values = _rows(frame, group, name)[y].to_numpy(dtype=float)
        s = summarize(values)
        if s.n == 0:
            continue
        color = variant_color(name)
        err = [[s.mean - s.ci_low], [s.ci_high - s.mean]] if s.n > 1 else None
        finite = values[np.isfinite(values)]
        if kind == "bar":
            ax.bar(i, s.mean, color=color, alpha=0.35, width=0.6)
            ax.errorbar(i, s.mean, yerr=err, color="black", capsize=6, fmt="none")
            seeds_at = i + rng.uniform(-0.12, 0.12, finite.size)
        else:
            ax.errorbar(
                i,
                s.mean,
                yerr=err,
                color=color,
                capsize=6,
                fmt="o",
                markersize=9,
                markeredgecolor="black",
                elinewidth=2,
                zorder=3,
            )
            seeds_at = i + 0.22 + rng.uniform(-0.06, 0.06, finite.size)  # beside the interval
        ax.scatter(seeds_at, finite, color=color, alpha=0.6, edgecolor="none", zorder=2, s=16)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel(_with_budget(ylabel, budget))
    finite_all = frame[y].to_numpy(dtype=float)
    if kind == "dot" and (finite_all[np.isfinite(finite_all)] < 0).any():
        ax.axhline(0.0, color="black", linewidth=0.8)  # a signed quantity: show where its sign flips
    if kind == "bar":
        # Bars are read by their length: the axis must include zero on the bars' side.
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, 0.0), max(high, 0.0))
        ax.axhline(0.0, color="black", linewidth=0.8)
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
    budget: str = "",
    marks: Mapping[str, float] | None = None,
    mark_label: str = "marked",
) -> Figure:
    """Metric vs batch size per norm on a log2 x axis, mean and 95% CI band over seeds.

    frame: one row per run with columns `group`, `x` (batch size), `y`. Say in `budget`
    whether the batch sizes had equal steps or equal epochs ("at 2000 steps each").
    """
    _require(frame, [group, x, y], "plot_batch_size")
    fig, (ax,) = _new_figure()
    names = _names(frame, group)
    styles = line_styles(names)
    drawn = {}
    for name in names:
        xs, mean, lo, hi = _mean_band(_rows(frame, group, name), x, y)
        color = variant_color(name)
        ax.plot(xs, mean, marker="o", color=color, linestyle=styles[name], label=name)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
        drawn[name] = (xs, mean)
    _draw_marks(ax, marks, drawn, names, logx=True, label=mark_label)
    ax.set_xscale("log", base=2)
    sizes = sorted(frame[x].unique())
    ax.set_xticks(sizes, [str(int(s)) for s in sizes])
    ax.set_xlabel("batch size (log2)")
    ax.set_ylabel(_with_budget(ylabel, budget))
    return _finish(fig, ax, title)


def plot_percentiles(
    frame,
    *,
    group: str = "variant",
    x: str = "step",
    title: str = "",
    order: Sequence[str] | None = None,
    ylabel: str = "input to one last-hidden-layer unit",
    budget: str = "",
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
        color = variant_color(name)
        rows = _rows(frame, group, name).groupby(x, sort=True)[["p15", "p50", "p85"]].mean()
        steps = rows.index.to_numpy(dtype=float)
        ax.fill_between(
            steps, rows["p15"], rows["p85"], color=color, alpha=0.2, linewidth=0, label="15th-85th percentile"
        )
        for col, style in (("p15", ":"), ("p50", "-"), ("p85", ":")):
            ax.plot(steps, rows[col], linestyle=style, color=color, label="median" if col == "p50" else None)
    return _finish_panels(fig, axes, names, x, ylabel, _title(title, budget), legend_size=8)


def plot_grad_norms(
    frame,
    *,
    group: str = "variant",
    layer: str = "layer",
    x: str = "step",
    y: str = "value",
    title: str = "",
    order: Sequence[str] | None = None,
    budget: str = "",
) -> Figure:
    """Gradient norm per layer over training, one panel per variant, log y; mean over seeds.

    frame: columns `group`, `layer`, `x`, `y` (one row per run, layer and probe step).
    Panels follow `order` (default sorted), share the y axis and carry the variant's colour in
    their title; within a panel the layers go from dark (first) to light (last).
    """
    _require(frame, [group, layer, x, y], "plot_grad_norms")
    names = _names(frame, group, order)
    layers = sorted(frame[layer].astype(str).unique())
    colors = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, max(len(layers), 1)))
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
    return _finish_panels(fig, axes, names, x, "gradient norm", _title(title, budget), legend_size=7)


def plot_step_time(
    frame,
    *,
    group: str = "variant",
    y: str = "value",
    title: str = "",
    ylabel: str = "time per step (ms)",
    order: Sequence[str] | None = None,
    budget: str = "",
) -> Figure:
    """Wall time per optimizer step per variant: bars from zero, the 95% CI and the seeds.

    frame: one row per run with columns `group`, `y` (that run's median step time, ms). Bars
    from zero, because the overhead is read as a ratio of the bars' lengths.
    """
    return plot_final_accuracy(
        frame, group=group, y=y, title=title, ylabel=ylabel, order=order, budget=budget, kind="bar"
    )


def plot_lr_range(
    frame,
    *,
    group: str = "variant",
    x: str = "lr",
    y: str = "loss",
    title: str = "",
    budget: str = "",
    marks: Mapping[str, float] | None = None,
    mark_label: str = "selected lr",
) -> Figure:
    """Learning-rate range test: training loss vs a learning rate growing exponentially.

    frame: columns `group`, `x` (the learning rate at that step), `y` (the training loss).
    Losses that are not finite (divergence) end the curve; the lowest loss of each curve is
    a filled dot, the usable range ends where the loss climbs past the starting loss.
    `marks={variant: lr}` draws the learning rate a verdict uses for each variant (a dashed
    line and a ring on the curve, labelled `mark_label`).
    """
    _require(frame, [group, x, y], "plot_lr_range")
    fig, (ax,) = _new_figure()
    names = _names(frame, group)
    styles = line_styles(names)
    top = -math.inf
    drawn = {}
    for name in names:
        curve = _rows(frame, group, name).groupby(x, sort=True)[y].mean()
        curve = curve[np.isfinite(curve.to_numpy(dtype=float))]
        if curve.empty:
            continue
        color = variant_color(name)
        ax.plot(curve.index, curve.to_numpy(), color=color, linestyle=styles[name], label=name)
        best = curve.idxmin()
        ax.scatter([best], [curve[best]], color=color, edgecolor="black", zorder=3)
        top = max(top, float(curve.iloc[0]))
        drawn[name] = (curve.index.to_numpy(dtype=float), curve.to_numpy(dtype=float))
    _draw_marks(ax, marks, drawn, names, logx=True, label=mark_label)
    ax.set_xscale("log")
    if math.isfinite(top):
        ax.set_ylim(bottom=0.0, top=top * 2.0)  # past twice the starting loss it is divergence
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("training loss")
    return _finish(fig, ax, _title(title, budget))
