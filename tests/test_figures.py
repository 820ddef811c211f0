"""The figure helpers the in-view notebook cells use (headless: Agg)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from wsss_lib import figures as figs  # noqa: E402


def test_plot_histories_one_curve_per_model():
    h = {"a": {"step": list(range(30)), "loss": list(np.linspace(2, 1, 30))}, "b": {"step": [], "loss": []}}
    fig = figs.plot_histories(h, smooth=5)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("a: 1.0") and labels[1] == "b (no history stored)"
    plt.close(fig)


def test_plot_maps_titles_carry_shapes_and_accept_images_and_tensors():
    fig = figs.plot_maps({"img": np.zeros((8, 10, 3), np.uint8), "map": torch.rand(4, 5), "mask": torch.rand(8, 8) > 0.5})
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["img\n(8x10)", "map\n(4x5)", "mask\n(8x8)"]
    plt.close(fig)


def test_class_legend_names_classes_and_skips_the_ignore_value():
    info = SimpleNamespace(classes=["bg", "car", "road"], palette=np.arange(256 * 3, dtype=np.uint8).reshape(256, 3),
                           ignore_index=255)
    fig = plt.figure()
    figs.class_legend(fig, info, [2, 255, 0])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["road", "bg", "no class / ignored"]
    plt.close(fig)


def test_plot_bars_one_bar_per_value_legend_per_series_and_missing_values():
    series = {"val": {"car": 0.5, "person": 0.25}, "test": {"car": 0.75, "bicycle": 1.0}}
    fig = figs.plot_bars(series, "AP", separator=0.5)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["val", "test"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["car", "person", "bicycle"]
    heights = np.array([p.get_height() for p in ax.patches])  # series by series, categories in order
    assert np.array_equal(heights, [0.5, 0.25, np.nan, 0.75, np.nan, 1.0], equal_nan=True)
    plt.close(fig)
    fig = figs.plot_bars({"VAL IoU": {"conv4+conv5": 0.6, "conv1+conv2": 0.3}}, "IoU", horizontal=True)
    assert [p.get_width() for p in fig.axes[0].patches] == [0.6, 0.3]
    plt.close(fig)


def test_plot_bars_needs_a_series():
    import pytest

    from wsss_lib.core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="at least one series"):
        figs.plot_bars({}, "AP")
