"""Each figure function on a small synthetic frame: what it draws is the data it was given."""

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from normlab.analysis import plots
from normlab.analysis.stats import summarize


def _curves_frame():
    rows = []
    for variant, offset in (("none", 0.0), ("batch", 0.1)):
        for seed in range(3):
            for step in (10, 20, 30):
                rows.append({"variant": variant, "seed": seed, "step": step,
                             "value": 0.5 + offset + 0.01 * seed + step / 1000})
    return pd.DataFrame(rows)


def _png_ok(fig: Figure) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close(fig)


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


def test_plot_final_accuracy_error_bars_are_the_t_interval():
    frame = pd.DataFrame({"variant": ["none"] * 3 + ["batch"] * 3,
                          "value": [0.80, 0.82, 0.81, 0.90, 0.93, 0.91]})
    fig = plots.plot_final_accuracy(frame, order=["none", "batch"])
    ax = fig.axes[0]
    bars = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(bars, [0.81, frame.value[3:].mean()])
    # Seed dots: one scatter per variant, three points each.
    offsets = [c.get_offsets() for c in ax.collections if c.get_offsets().shape[0] == 3]
    assert len(offsets) == 2
    # The error bar spans the 95% t-interval of the batch group.
    s = summarize(frame.value[3:])
    segs = [c for c in ax.collections if hasattr(c, "get_segments") and c.get_segments()]
    spans = [tuple(np.asarray(seg)[:, 1]) for c in segs for seg in c.get_segments()]
    assert any(np.allclose(sorted(sp), [s.ci_low, s.ci_high]) for sp in spans)
    _png_ok(fig)


def test_plot_batch_size_uses_log2_axis():
    frame = pd.DataFrame({"norm": ["batch", "batch", "none", "none"] * 2,
                          "batch_size": [2, 64, 2, 64] * 2,
                          "value": [0.3, 0.9, 0.7, 0.8, 0.35, 0.92, 0.72, 0.79]})
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
    frame = pd.concat([
        pd.DataFrame({"variant": name, "step": steps, "p15": -1 - drift * steps,
                      "p50": 0 * steps + drift, "p85": 1 + drift * steps})
        for name, drift in (("no norm", 0.05), ("batch norm", 0.0))
    ])
    fig = plots.plot_percentiles(frame, title="Fig 1")
    assert [ax.get_title() for ax in fig.axes] == ["batch norm", "no norm"]
    median = [l for l in fig.axes[1].get_lines() if l.get_label() == "median"][0]
    np.testing.assert_allclose(median.get_ydata(), 0.05)
    _png_ok(fig)


def test_plot_grad_norms_lines_per_layer():
    rows = [{"variant": v, "layer": f"layer{l}", "step": s, "seed": seed, "value": (l + 1) * 0.1 + seed * 0.01}
            for v in ("none", "batch") for l in range(3) for s in (0, 10) for seed in range(2)]
    fig = plots.plot_grad_norms(pd.DataFrame(rows))
    assert len(fig.axes) == 2
    assert [l.get_label() for l in fig.axes[0].get_lines()] == ["layer0", "layer1", "layer2"]
    assert fig.axes[0].get_yscale() == "log"
    _png_ok(fig)


def test_plot_step_time_bars():
    frame = pd.DataFrame({"variant": ["none", "none", "batch", "batch"], "value": [1.0, 1.2, 1.5, 1.7]})
    fig = plots.plot_step_time(frame)
    assert fig.axes[0].get_ylabel() == "time per step (ms)"
    np.testing.assert_allclose(sorted(p.get_height() for p in fig.axes[0].patches), [1.1, 1.6])
    _png_ok(fig)


def test_plot_lr_range_drops_divergence_and_marks_minimum():
    lrs = np.logspace(-4, 0, 9)
    loss_none = np.r_[2.3, 2.2, 1.8, 1.5, 2.0, 5.0, np.nan, np.nan, np.nan]
    loss_bn = np.r_[2.3, 2.1, 1.6, 1.2, 1.0, 1.3, 2.5, np.inf, np.nan]
    frame = pd.concat([pd.DataFrame({"variant": "none", "lr": lrs, "loss": loss_none}),
                       pd.DataFrame({"variant": "batch", "lr": lrs, "loss": loss_bn})])
    fig = plots.plot_lr_range(frame)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {l.get_label(): l for l in ax.get_lines()}
    assert len(lines["none"].get_xdata()) == 6 and len(lines["batch"].get_xdata()) == 7
    minima = [c.get_offsets()[0] for c in ax.collections]
    assert any(np.allclose(m, [lrs[4], 1.0]) for m in minima)
    _png_ok(fig)


def test_plot_final_accuracy_keeps_negative_values_in_view():
    frame = pd.DataFrame({"variant": ["none"] * 2 + ["batch"] * 2, "value": [0.0, 0.0, -0.05, 0.02]})
    fig = plots.plot_final_accuracy(frame)
    low, high = fig.axes[0].get_ylim()
    assert low < -0.05 and high > 0.02
    _png_ok(fig)
