"""Tests of posenc_lib.plotting: each helper returns a titled, labelled figure with the expected panels."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from posenc_lib.plotting import (
    SliderAnimation,
    interactive_figure,
    plot_bias_heads,
    plot_encoding_heatmap,
    plot_similarity_matrix,
    plot_wavelengths,
    slider_animation,
)


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def _colorbar_labels(fig: Figure) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _sinusoid(num_positions: int, dim: int) -> torch.Tensor:
    """Interleaved sinusoid written out independently of posenc_lib.sinusoidal."""
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * 10000.0 ** (
        -torch.arange(0, dim, 2, dtype=torch.float64) / dim
    )
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def test_encoding_heatmap() -> None:
    table = _sinusoid(50, 16)
    fig = plot_encoding_heatmap(table, title="Sinusoid")
    assert isinstance(fig, Figure)
    main, colorbar = fig.axes
    assert main.get_title() == "Sinusoid"
    assert main.get_xlabel() == "dimension index"
    assert main.get_ylabel() == "position (tokens)"
    assert _colorbar_labels(fig) == ["encoding value"]
    image = main.get_images()[0]
    np.testing.assert_array_equal(image.get_array(), table.numpy())
    np.testing.assert_allclose(image.get_clim(), (-1.0, 1.0))  # symmetric around 0
    assert colorbar.get_label() == "<colorbar>"


@pytest.mark.parametrize(("heads", "columns", "rows"), [(1, 1, 1), (4, 4, 1), (6, 4, 2)])
def test_bias_heads(heads: int, columns: int, rows: int) -> None:
    length = 5
    distance = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    slopes = 2.0 ** -torch.arange(1, heads + 1, dtype=torch.float64)
    bias = -slopes[:, None, None] * distance.abs()
    bias = bias.masked_fill(distance > 0, float("-inf"))  # a causal mask
    fig = plot_bias_heads(bias, title="ALiBi")
    assert fig.get_suptitle() == "ALiBi"
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == heads
    assert _colorbar_labels(fig) == ["bias added to the logit"] * heads
    assert [ax.get_title() for ax in panels] == [f"head {h}" for h in range(heads)]
    for head, ax in enumerate(panels):
        assert ax.get_xlabel() == "key position j (tokens)"
        assert ax.get_ylabel() == "query position i (tokens)"
        shown = ax.get_images()[0].get_array()
        assert shown.mask[0, 1] and not shown.mask[1, 0]  # -inf is blank, the rest is drawn
        assert shown[length - 1, 0] == pytest.approx(-float(slopes[head]) * (length - 1))
    grid = panels[0].get_subplotspec().get_gridspec()
    assert (grid.nrows, grid.ncols) == (rows, columns)


def test_bias_heads_labels_and_errors() -> None:
    fig = plot_bias_heads(np.zeros((2, 3, 3)), head_labels=["slope 1/2", "slope 1/4"])
    assert [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"] == ["slope 1/2", "slope 1/4"]
    with pytest.raises(ValueError, match="head_labels"):
        plot_bias_heads(np.zeros((2, 3, 3)), head_labels=["only one"])
    with pytest.raises(ValueError, match="bias must have 3 dimensions"):
        plot_bias_heads(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="max_columns"):
        plot_bias_heads(np.zeros((2, 3, 3)), max_columns=0)


def test_wavelengths() -> None:
    theta = 10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    fig = plot_wavelengths({"RoPE": theta, "PI x4": theta / 4}, context_length=2048, title="Wavelengths")
    (ax,) = fig.axes
    assert ax.get_title() == "Wavelengths"
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "pair index c"
    assert "tokens" in ax.get_ylabel()
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "RoPE",
        "PI x4",
        "context length 2048",
    ]
    rope_line, pi_line, context_line = ax.get_lines()
    np.testing.assert_allclose(rope_line.get_ydata(), 2 * np.pi / theta.numpy())
    np.testing.assert_allclose(pi_line.get_ydata(), 4 * 2 * np.pi / theta.numpy())
    assert rope_line.get_ydata()[0] == pytest.approx(2 * np.pi)
    np.testing.assert_array_equal(context_line.get_ydata(), [2048, 2048])


def test_wavelengths_errors_leave_no_figure() -> None:
    with pytest.raises(ValueError, match="inv_freqs"):
        plot_wavelengths({})
    with pytest.raises(ValueError, match=r"inv_freqs\['bad'\] must hold positive"):
        plot_wavelengths({"bad": torch.tensor([1.0, 0.0])})
    with pytest.raises(ValueError, match="context_length"):
        plot_wavelengths({"RoPE": torch.ones(4)}, context_length=0)
    with pytest.raises(TypeError, match="inv_freqs"):
        plot_wavelengths({"RoPE": [1.0, 0.5]})  # type: ignore[dict-item]
    assert plt.get_fignums() == []


def test_similarity_matrix() -> None:
    table = _sinusoid(40, 32)
    fig = plot_similarity_matrix(table.float(), title="Sinusoid similarity")
    main = fig.axes[0]
    assert main.get_title() == "Sinusoid similarity"
    assert main.get_xlabel() == "position p' (tokens)"
    assert main.get_ylabel() == "position p (tokens)"
    assert _colorbar_labels(fig) == ["cosine similarity"]
    matrix = np.asarray(main.get_images()[0].get_array())
    expected = torch.nn.functional.cosine_similarity(table[:, None, :], table[None, :, :], dim=-1).numpy()
    np.testing.assert_allclose(matrix, expected, atol=1e-6)
    # The sinusoid's similarity depends only on p - q: constant along every diagonal.
    np.testing.assert_allclose(np.diagonal(matrix, offset=3), matrix[0, 3], atol=1e-6)
    with pytest.raises(ValueError, match="zero row"):
        plot_similarity_matrix(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="encoding must have 2 dimensions"):
        plot_encoding_heatmap(torch.zeros(3))
    with pytest.raises(TypeError, match="encoding"):
        plot_encoding_heatmap([[0.0, 1.0]])  # type: ignore[arg-type]


def _sine_figure(period: int, width: float = 4.0) -> Figure:
    fig, ax = plt.subplots(figsize=(width, 2.0))
    ax.plot(np.sin(2 * np.pi * np.arange(32) / period))
    ax.set_title(f"period {period}")
    return fig


def test_slider_animation_has_one_frame_per_value_and_a_working_player() -> None:
    player = slider_animation(_sine_figure, "period", [4, 8, 16], dpi=40)
    assert isinstance(player, SliderAnimation)
    assert repr(player) == "<slider over period = 4, 8, 16 (3 frames)>"
    html = player._repr_html_()
    # matplotlib's to_jshtml player: the frames as PNG data, an <img>, and a range input over the frames
    assert html.count("data:image/png;base64,") == 3
    assert 'type="range" class="anim-slider"' in html
    assert "<img" in html
    assert plt.get_fignums() == []  # every frame's figure is closed


def test_slider_animation_frames_differ_with_the_parameter() -> None:
    html = slider_animation(_sine_figure, "period", [4, 4, 9], dpi=40).html
    frames = [chunk.split('"')[0] for chunk in html.split("data:image/png;base64,")[1:]]
    assert frames[0] == frames[1] != frames[2]


def test_slider_animation_passes_fixed_parameters() -> None:
    seen = []

    def draw(period: int, width: float) -> Figure:
        seen.append((period, width))
        return _sine_figure(period, width)

    slider_animation(draw, "period", [3, 5], dpi=30, width=3.0)
    assert seen == [(3, 3.0), (5, 3.0)]


@pytest.mark.parametrize(
    ("draw", "parameter", "values", "kwargs", "error", "match"),
    [
        (_sine_figure, "period", [], {}, ValueError, "values"),
        ("not callable", "period", [4], {}, TypeError, "draw"),
        (_sine_figure, "", [4], {}, TypeError, "parameter"),
        (_sine_figure, "period", [4], {"dpi": 0}, ValueError, "dpi"),
        (_sine_figure, "period", [4], {"interval_ms": 0}, ValueError, "interval_ms"),
        (lambda period: period, "period", [4], {}, TypeError, "Figure"),
        (lambda period: _sine_figure(4, width=period), "period", [2.0, 3.0], {}, ValueError, "one size"),
    ],
)
def test_slider_animation_rejects_bad_input(draw, parameter, values, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        slider_animation(draw, parameter, values, **kwargs)


def test_interactive_figure_redraws_on_every_change() -> None:
    widgets = pytest.importorskip("ipywidgets")
    calls = []

    def draw(period: int, width: float, labelled: bool) -> Figure:
        calls.append((period, width, labelled))
        return _sine_figure(period, width)

    box = interactive_figure(
        draw, period=range(2, 10, 2), width=[("small", 3.0), ("large", 4.0)], labelled=True
    )
    period, width, labelled, view = box.children
    assert isinstance(period, widgets.IntSlider) and (period.min, period.max, period.step) == (2, 8, 2)
    assert isinstance(width, widgets.Dropdown) and width.value == 3.0
    assert isinstance(labelled, widgets.Checkbox) and labelled.value is True
    assert isinstance(view, widgets.Output) and len(view.outputs) == 1
    period.value = 6
    width.value = 4.0
    assert calls == [(2, 3.0, True), (6, 3.0, True), (6, 4.0, True)]
    assert len(view.outputs) == 1  # the old figure is replaced, not appended to
    assert plt.get_fignums() == []


def test_interactive_figure_keeps_given_widgets() -> None:
    widgets = pytest.importorskip("ipywidgets")
    slider = widgets.FloatSlider(value=0.5, min=0.0, max=1.0)
    box = interactive_figure(lambda amplitude: _sine_figure(4), amplitude=slider)
    assert box.children[0] is slider and slider.description == "amplitude"


@pytest.mark.parametrize(
    ("controls", "error", "match"),
    [
        ({}, ValueError, "at least one control"),
        ({"period": range(0)}, ValueError, "empty range"),
        ({"period": []}, ValueError, "no options"),
        ({"period": 3.5}, TypeError, "'period'"),
    ],
)
def test_interactive_figure_rejects_bad_controls(controls, error, match) -> None:
    pytest.importorskip("ipywidgets")
    with pytest.raises(error, match=match):
        interactive_figure(lambda **setting: _sine_figure(4), **controls)
