"""Each figure function on a small synthetic frame: what it draws is the data it was given."""

import io
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from normlab.analysis import palette, plots
from normlab.analysis.stats import summarize


def _curves_frame():
    rows = []
    for variant, offset in (("none", 0.0), ("batch", 0.1)):
        for seed in range(3):
            for step in (10, 20, 30):
                rows.append(
                    {"variant": variant, "seed": seed, "step": step, "value": 0.5 + offset + 0.01 * seed + step / 1000}
                )
    return pd.DataFrame(rows)


def _png_ok(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_draws_mean_per_group_with_band():
    frame = _curves_frame()
    fig = plots.plot_curves(frame, title="test accuracy", ylabel="accuracy")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"batch (n=3)", "none (n=3)"}
    expected = frame[frame.variant == "batch"].groupby("step")["value"].mean().to_numpy()
    np.testing.assert_allclose(lines["batch (n=3)"].get_ydata(), expected)
    assert len(ax.collections) == 2  # one CI band per group
    _png_ok(fig)


def test_plot_curves_rejects_missing_column():
    with pytest.raises(ValueError, match="missing columns \\['step'\\]"):
        plots.plot_curves(pd.DataFrame({"variant": ["a"], "value": [1.0]}))
    with pytest.raises(ValueError, match="empty"):
        plots.plot_curves(pd.DataFrame({"variant": [], "step": [], "value": []}))


def test_plot_final_accuracy_dots_and_t_intervals_no_bars():
    frame = pd.DataFrame({"variant": ["none"] * 3 + ["batch"] * 3, "value": [0.80, 0.82, 0.81, 0.90, 0.93, 0.91]})
    fig = plots.plot_final_accuracy(frame, order=["none", "batch"])
    ax = fig.axes[0]
    assert len(ax.patches) == 0  # no bars: the axis may fit the data without cutting one
    means = [line.get_ydata()[0] for line in ax.get_lines() if line.get_marker() == "o"]
    np.testing.assert_allclose(means, [0.81, frame.value[3:].mean()])
    # Seed dots: one scatter per variant, three points each.
    offsets = [c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] == 3]
    assert len(offsets) == 2
    # The error bar spans the 95% t-interval of the batch group.
    s = summarize(frame.value[3:])
    segs = [c for c in ax.collections if hasattr(c, "get_segments") and c.get_segments()]
    spans = [tuple(np.asarray(seg)[:, 1]) for c in segs for seg in c.get_segments()]
    assert any(np.allclose(sorted(sp), [s.ci_low, s.ci_high]) for sp in spans)
    _png_ok(fig)


def test_bars_start_at_zero_on_an_axis_that_includes_zero():
    # Step times of 10.0 vs 10.5 ms: a cut axis would draw a 5% difference as a 10x one.
    frame = pd.DataFrame({"variant": ["none"] * 3 + ["batch"] * 3, "value": [10.0, 10.1, 9.9, 10.5, 10.6, 10.4]})
    for fig in (plots.plot_step_time(frame), plots.plot_final_accuracy(frame, kind="bar")):
        ax = fig.axes[0]
        assert len(ax.patches) == 2
        assert all(p.get_y() == 0.0 for p in ax.patches)
        assert ax.get_ylim()[0] <= 0.0 < ax.get_ylim()[1]
        np.testing.assert_allclose(sorted(p.get_height() for p in ax.patches), [10.0, 10.5])
        _png_ok(fig)
    negative = plots.plot_final_accuracy(pd.DataFrame({"variant": ["a", "a"], "value": [-2.0, -1.0]}), kind="bar")
    assert negative.axes[0].get_ylim()[1] >= 0.0  # a negative bar hangs from zero too
    with pytest.raises(ValueError, match="kind must be 'dot' or 'bar'"):
        plots.plot_final_accuracy(frame, kind="violin")


def _color(artist):
    """An artist's colour as "#rrggbb" (lines: get_color; collections: first face colour)."""
    if hasattr(artist, "get_color") and not hasattr(artist, "get_facecolor"):
        return to_hex(artist.get_color())
    return to_hex(artist.get_facecolor()[0])


def test_a_variant_has_the_same_colour_in_every_figure():
    curves = _curves_frame()
    # The two figures draw different sets of variants, in different orders.
    fig_a = plots.plot_curves(curves)
    fig_b = plots.plot_final_accuracy(
        pd.DataFrame({"variant": ["group", "batch", "batch", "group"], "value": [0.7, 0.8, 0.81, 0.72]})
    )
    lines_a = {l.get_label().split(" (")[0]: to_hex(l.get_color()) for l in fig_a.axes[0].get_lines()}
    dots_b = {
        fig_b.axes[0].get_xticklabels()[round(l.get_xdata()[0])].get_text(): to_hex(l.get_color())
        for l in fig_b.axes[0].get_lines()
        if l.get_marker() == "o"
    }
    assert lines_a["batch"] == dots_b["batch"] == palette.NORM_COLORS["batch"]
    assert lines_a["none"] == palette.NORM_COLORS["none"] and dots_b["group"] == palette.NORM_COLORS["group"]
    frame = pd.DataFrame({"norm": ["batch", "none"] * 2, "batch_size": [8, 8, 64, 64], "value": [0.8, 0.7, 0.9, 0.7]})
    lines_c = {l.get_label(): to_hex(l.get_color()) for l in plots.plot_batch_size(frame).axes[0].get_lines()}
    assert lines_c["batch"] == lines_a["batch"]


def test_palette_fixed_norms_labels_and_unknown_names():
    assert len(set(palette.NORM_COLORS.values())) == len(palette.NORM_COLORS)
    from normlab.layers.registry import norm_names

    assert set(norm_names()) <= set(palette.NORM_COLORS)  # every registered norm has its colour
    assert palette.variant_color("batch, class_grouped") == palette.NORM_COLORS["batch"]
    assert palette.variant_color("lr=0.1, norm=group") == palette.NORM_COLORS["group"]
    assert palette.variant_color("batch bs 4") == palette.NORM_COLORS["batch"]
    assert palette.variant_norm("batchy") is None and palette.variant_norm("") is None
    assert palette.variant_color("batch_renorm") != palette.variant_color("batch")
    # Unknown names: deterministic (the same in a fresh process, where str hashes differ).
    unknown = palette.variant_color("lr=0.01")
    code = "from normlab.analysis.palette import variant_color; print(variant_color('lr=0.01'))"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == unknown and unknown not in palette.NORM_COLORS.values()
    # Variants of one norm in one figure: same colour, told apart by the line style.
    styles = palette.line_styles(["batch, random", "batch, class_grouped", "none, random"])
    assert styles == {"batch, class_grouped": "-", "batch, random": "--", "none, random": "-"}


def test_importing_the_analysis_leaves_the_matplotlib_backend_alone():
    # A notebook user's backend must survive `import normlab.analysis...` and drawing a figure.
    code = """
import sys, matplotlib
before = matplotlib.get_backend()
import normlab.analysis, normlab.analysis.plots, normlab.analysis.render, normlab.analysis.report
import pandas as pd
fig = normlab.analysis.plots.plot_final_accuracy(pd.DataFrame({"variant": ["a", "a"], "value": [1.0, 2.0]}))
print(before, matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    env = {**os.environ, "MPLBACKEND": "template"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["template", "template", "False"]


def test_budget_goes_into_labels_and_titles():
    frame = pd.DataFrame({"variant": ["none", "batch"], "value": [0.8, 0.9]})
    fig = plots.plot_final_accuracy(frame, budget="at 2000 steps")
    assert fig.axes[0].get_ylabel() == "final test accuracy at 2000 steps"
    fig = plots.plot_curves(_curves_frame(), title="Test accuracy", budget="at 20 epochs")
    assert fig.axes[0].get_title() == "Test accuracy (at 20 epochs)"
    sizes = pd.DataFrame({"norm": ["batch"] * 2, "batch_size": [8, 64], "value": [0.8, 0.9]})
    fig = plots.plot_batch_size(sizes, budget="at equal steps (2000 each)")
    assert fig.axes[0].get_ylabel().endswith("at equal steps (2000 each)")


def test_plot_batch_size_uses_log2_axis():
    frame = pd.DataFrame(
        {
            "norm": ["batch", "batch", "none", "none"] * 2,
            "batch_size": [2, 64, 2, 64] * 2,
            "value": [0.3, 0.9, 0.7, 0.8, 0.35, 0.92, 0.72, 0.79],
        }
    )
    fig = plots.plot_batch_size(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.xaxis.get_transform().base == 2
    batch = [l for l in ax.get_lines() if l.get_label() == "batch"][0]
    np.testing.assert_allclose(batch.get_xdata(), [2, 64])
    np.testing.assert_allclose(batch.get_ydata(), [0.325, 0.91])
    _png_ok(fig)


def test_plot_percentiles_one_panel_per_variant():
    steps = np.arange(0, 100, 10)
    frame = pd.concat(
        [
            pd.DataFrame(
                {
                    "variant": name,
                    "step": steps,
                    "p15": -1 - drift * steps,
                    "p50": 0 * steps + drift,
                    "p85": 1 + drift * steps,
                }
            )
            for name, drift in (("no norm", 0.05), ("batch norm", 0.0))
        ]
    )
    fig = plots.plot_percentiles(frame, title="Fig 1")
    assert [ax.get_title() for ax in fig.axes] == ["batch norm", "no norm"]
    median = [l for l in fig.axes[1].get_lines() if l.get_label() == "median"][0]
    np.testing.assert_allclose(median.get_ydata(), 0.05)
    _png_ok(fig)


def test_plot_grad_norms_lines_per_layer():
    rows = [
        {"variant": v, "layer": f"layer{l}", "step": s, "seed": seed, "value": (l + 1) * 0.1 + seed * 0.01}
        for v in ("none", "batch")
        for l in range(3)
        for s in (0, 10)
        for seed in range(2)
    ]
    fig = plots.plot_grad_norms(pd.DataFrame(rows))
    assert len(fig.axes) == 2
    assert [l.get_label() for l in fig.axes[0].get_lines()] == ["layer0", "layer1", "layer2"]
    assert fig.axes[0].get_yscale() == "log"
    _png_ok(fig)


def test_plot_lr_range_drops_divergence_and_marks_minimum():
    lrs = np.logspace(-4, 0, 9)
    loss_none = np.r_[2.3, 2.2, 1.8, 1.5, 2.0, 5.0, np.nan, np.nan, np.nan]
    loss_bn = np.r_[2.3, 2.1, 1.6, 1.2, 1.0, 1.3, 2.5, np.inf, np.nan]
    frame = pd.concat(
        [
            pd.DataFrame({"variant": "none", "lr": lrs, "loss": loss_none}),
            pd.DataFrame({"variant": "batch", "lr": lrs, "loss": loss_bn}),
        ]
    )
    fig = plots.plot_lr_range(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {l.get_label(): l for l in ax.get_lines()}
    assert len(lines["none"].get_xdata()) == 6 and len(lines["batch"].get_xdata()) == 7
    minima = [c.get_offsets()[0] for c in ax.collections]
    assert any(np.allclose(m, [lrs[4], 1.0]) for m in minima)
    _png_ok(fig)


def test_plot_lr_range_marks_the_selected_lr_of_each_variant():
    lrs = np.logspace(-4, 0, 9)
    frame = pd.concat(
        [
            pd.DataFrame({"variant": "none", "lr": lrs, "loss": np.linspace(2.3, 1.0, 9)}),
            pd.DataFrame({"variant": "batch", "lr": lrs, "loss": np.linspace(2.3, 0.5, 9)}),
        ]
    )
    selected = {"batch": 10**-1.25, "none": 1e-3}
    fig = plots.plot_lr_range(frame, marks=selected)
    ax = fig.axes[0]
    vertical = {to_hex(l.get_color()): l.get_xdata()[0] for l in ax.get_lines() if l.get_linestyle() == "--"}
    assert vertical == {palette.NORM_COLORS["batch"]: selected["batch"], palette.NORM_COLORS["none"]: 1e-3}
    rings = {l.get_text() for l in ax.get_legend().get_texts() if l.get_text().startswith("selected lr")}
    assert rings == {"selected lr (batch: 0.0562)", "selected lr (none: 0.001)"}
    # The ring sits on the curve: halfway in log lr between grid points 1e-1.5 and 1e-1.
    ring = [c for c in ax.collections if np.allclose(c.get_offsets()[0][0], selected["batch"])][0]
    assert ring.get_offsets()[0][1] == pytest.approx(np.interp(-1.25, np.log10(lrs), np.linspace(2.3, 0.5, 9)))
    with pytest.raises(ValueError, match="'group' is not a variant of this figure"):
        plots.plot_lr_range(frame, marks={"group": 1e-2})
    _png_ok(fig)
    # A variant whose every loss diverged has no curve: its selected lr keeps its line, no ring.
    diverged = pd.concat([frame, pd.DataFrame({"variant": "group", "lr": lrs, "loss": np.nan})])
    ax = plots.plot_lr_range(diverged, marks={"group": 1e-2}).axes[0]
    assert [l.get_xdata()[0] for l in ax.get_lines() if l.get_linestyle() == "--"] == [1e-2]
    assert not any(t.get_text().startswith("selected lr") for t in ax.get_legend().get_texts())


def test_plot_curves_marks_a_point():
    fig = plots.plot_curves(_curves_frame(), marks={"batch": 20}, mark_label="best held-out step")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "best held-out step (batch: 20)" in labels
    _png_ok(fig)


def test_plot_final_accuracy_keeps_negative_values_in_view():
    frame = pd.DataFrame({"variant": ["none"] * 2 + ["batch"] * 2, "value": [0.0, 0.0, -0.05, 0.02]})
    fig = plots.plot_final_accuracy(frame)
    low, high = fig.axes[0].get_ylim()
    assert low < -0.05 and high > 0.02

    # A signed quantity gets its zero line; an all-positive one does not.
    def zero_lines(f):
        return [l for l in f.axes[0].get_lines() if list(l.get_ydata()) == [0.0, 0.0]]

    assert len(zero_lines(fig)) == 1
    assert zero_lines(plots.plot_final_accuracy(frame.assign(value=[0.1, 0.2, 0.3, 0.4]))) == []
    _png_ok(fig)
