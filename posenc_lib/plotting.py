r"""Figures shared by the chapters: encodings as heatmaps, per-head biases, wavelengths, position similarity,
and the two ways a chapter lets its reader explore a figure.

Each ``plot_*`` function draws one figure with pyplot (so a notebook shows it inline), sets a title, axis
labels with units and a colorbar where colour carries a value, and returns the
:class:`matplotlib.figure.Figure` without calling ``plt.show()``. Close it with ``plt.close(fig)`` when it is
no longer needed. Inputs may be tensors on any device or NumPy arrays.

Exploring a figure: a chapter writes one function that draws its figure for a setting of the parameters,
``draw(**setting) -> Figure``, and passes it to

* :func:`interactive_figure`, for readers who run the notebook: ipywidgets controls that redraw the figure
  (they need a live Python kernel);
* :func:`slider_animation`, for readers of the web book: the figure drawn once per value of one parameter
  and played by a slider that works in the browser without any kernel (matplotlib's ``to_jshtml``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation
from matplotlib.figure import Figure

from posenc_lib._validation import check_positive_int


def _to_numpy(name: str, values: torch.Tensor | np.ndarray, ndim: int) -> np.ndarray:
    """Return ``values`` as a float64 NumPy array with ``ndim`` dimensions, else raise naming ``name``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(values, np.ndarray):
        values = values.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(values).__name__}")
    if values.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {list(values.shape)}")
    return values


def plot_encoding_heatmap(
    encoding: torch.Tensor | np.ndarray,
    *,
    title: str = "Positional encoding",
    value_label: str = "encoding value",
) -> Figure:
    """Draw an encoding table ``[positions, dim]`` as a heatmap: position down, dimension across.

    The colour scale is symmetric around 0 (diverging colormap), so a sinusoid's high-frequency columns
    (left, for Vaswani et al. 2017's ordering) and slow ones (right) are easy to tell apart.

    Args:
        encoding: 2-D tensor or array, row ``p`` the vector of position ``p``.
        title: Figure title.
        value_label: Label of the colorbar.

    Returns:
        The figure (one heatmap axes and one colorbar axes).

    Raises:
        TypeError: If ``encoding`` is not a tensor or array.
        ValueError: If ``encoding`` is not 2-D.
    """
    values = _to_numpy("encoding", encoding, 2)
    limit = float(np.nanmax(np.abs(values))) if values.size else 1.0
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("dimension index")
    ax.set_ylabel("position (tokens)")
    fig.colorbar(image, ax=ax, label=value_label)
    return fig


def plot_bias_heads(
    bias: torch.Tensor | np.ndarray,
    *,
    title: str = "Attention bias per head",
    head_labels: Sequence[str] | None = None,
    max_columns: int = 4,
    value_label: str = "bias added to the logit",
) -> Figure:
    r"""Draw a bias ``[heads, T_q, T_k]`` (T5, ALiBi, Shaw, ...) as one heatmap per head.

    Each head gets its own colour scale and colorbar, because per-head magnitudes differ by orders of
    magnitude (ALiBi's slopes run from :math:`2^{-1}` to :math:`2^{-8}`). Entries that are not finite
    (:math:`-\infty` from a causal mask) are left blank.

    Args:
        bias: 3-D tensor or array ``[heads, T_q, T_k]``; row ``i`` is query position :math:`i`, column ``j``
            key position :math:`j`.
        title: Figure title.
        head_labels: One panel title per head (default ``"head 0"``, ``"head 1"``, ...).
        max_columns: Number of panels per row.
        value_label: Label of the colorbars.

    Returns:
        The figure, with one heatmap axes and one colorbar axes per head.

    Raises:
        TypeError: If ``bias`` is not a tensor or array.
        ValueError: If ``bias`` is not 3-D or has no head, ``head_labels`` has the wrong length, or
            ``max_columns`` is not positive.
    """
    values = _to_numpy("bias", bias, 3)
    num_heads = values.shape[0]
    if num_heads == 0:
        raise ValueError("bias must hold at least one head, got shape [0, ...]")
    labels = [f"head {h}" for h in range(num_heads)] if head_labels is None else list(head_labels)
    if len(labels) != num_heads:
        raise ValueError(f"head_labels must have one label per head ({num_heads}), got {len(labels)}")
    columns = min(num_heads, check_positive_int("max_columns", max_columns))
    rows = math.ceil(num_heads / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.2 * columns, 2.9 * rows), squeeze=False, layout="constrained"
    )
    for head, ax in enumerate(axes.flat):
        if head >= num_heads:
            ax.remove()
            continue
        panel = np.ma.masked_invalid(values[head])
        image = ax.imshow(panel, cmap="viridis", interpolation="nearest")
        ax.set_title(labels[head])
        ax.set_xlabel("key position j (tokens)")
        ax.set_ylabel("query position i (tokens)")
        fig.colorbar(image, ax=ax, label=value_label, shrink=0.8)
    fig.suptitle(title)
    return fig


def plot_wavelengths(
    inv_freqs: Mapping[str, torch.Tensor | np.ndarray],
    *,
    title: str = "Wavelength of each dimension pair",
    context_length: int | None = None,
) -> Figure:
    r"""Plot the wavelength :math:`\lambda_c = 2\pi/\theta_c` of every pair :math:`c`, one line per method.

    The y axis is logarithmic; for base 10000 the wavelengths run from :math:`2\pi` to nearly
    :math:`2\pi \cdot 10^4` tokens. Pairs whose wavelength exceeds the training context never complete a
    turn during training, which is what position interpolation, NTK scaling and YaRN adjust: a horizontal
    line at ``context_length`` marks that boundary.

    Args:
        inv_freqs: Method name to 1-D frequencies :math:`\theta_c` (radians per token), for instance
            ``{"RoPE": rope_frequencies, "YaRN x8": yarn_frequencies}``.
        title: Figure title.
        context_length: If given, draw a horizontal line at this many tokens.

    Returns:
        The figure (one axes with a legend).

    Raises:
        TypeError: If a value is not a tensor or array.
        ValueError: If ``inv_freqs`` is empty, a value is not 1-D or holds a non-positive frequency, or
            ``context_length`` is not positive.
    """
    if not inv_freqs:
        raise ValueError("inv_freqs must map at least one method name to its frequencies, got {}")
    wavelengths: dict[str, np.ndarray] = {}
    for name, frequencies in inv_freqs.items():
        values = _to_numpy(f"inv_freqs[{name!r}]", frequencies, 1)
        if not (values > 0).all():
            raise ValueError(f"inv_freqs[{name!r}] must hold positive frequencies (radians per token)")
        wavelengths[name] = 2 * np.pi / values
    if context_length is not None:
        context_length = check_positive_int("context_length", context_length)
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for name, values in wavelengths.items():
        ax.plot(np.arange(values.size), values, marker=".", label=name)
    if context_length is not None:
        ax.axhline(context_length, color="black", linestyle="--", label=f"context length {context_length}")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("pair index c")
    ax.set_ylabel(r"wavelength $2\pi/\theta_c$ (tokens)")
    ax.legend()
    return fig


def plot_similarity_matrix(
    encoding: torch.Tensor | np.ndarray,
    *,
    title: str = "Cosine similarity between positions",
) -> Figure:
    r"""Draw :math:`\cos\angle(\mathrm{PE}(p), \mathrm{PE}(p'))` for all pairs of positions of a table.

    For the sinusoid, :math:`\mathrm{PE}(p) \cdot \mathrm{PE}(p') = \sum_c \cos((p - p')\,\theta_c)` depends
    only on :math:`p - p'` (Vaswani et al. 2017), and every vector has norm :math:`\sqrt{d/2}`, so the matrix
    is constant along its diagonals; a learned table shows whatever training put there.

    Args:
        encoding: 2-D tensor or array, row ``p`` the vector of position ``p``.
        title: Figure title.

    Returns:
        The figure (one heatmap axes and one colorbar axes).

    Raises:
        TypeError: If ``encoding`` is not a tensor or array.
        ValueError: If ``encoding`` is not 2-D or has a zero row.
    """
    values = _to_numpy("encoding", encoding, 2)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("encoding has a zero row: the cosine similarity of a zero vector is undefined")
    unit = values / norms
    fig, ax = plt.subplots(figsize=(5, 4.2), layout="constrained")
    image = ax.imshow(unit @ unit.T, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("position p' (tokens)")
    ax.set_ylabel("position p (tokens)")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    return fig


def interactive_figure(draw: Callable[..., Figure], /, **controls: Any) -> Any:
    """Controls that redraw ``draw(**setting)`` whenever one of them changes (ipywidgets, live kernel only).

    Each keyword names a parameter of ``draw`` and gives its control: an ipywidgets value widget (an
    ``IntSlider``, a ``Dropdown``, ...) used as it is, or a shorthand: a ``range`` becomes an ``IntSlider``
    over it, a list or tuple of options (or of ``(label, value)`` pairs) a ``Dropdown``, a ``bool`` a
    ``Checkbox``. The first value of each control is its initial setting. The figure is drawn into an
    ``Output`` widget and closed, so a notebook cell shows the controls and one figure, and a test runner
    such as nbval sees the same outputs on every run.

    In the web book the controls would not respond (there is no Python behind the page): put this call in a
    cell tagged ``remove-cell`` and show :func:`slider_animation` of the same ``draw`` next to it.

    Args:
        draw: Function of the keyword parameters named in ``controls`` that returns a new figure.
        **controls: Parameter name to control (or shorthand), in display order.

    Returns:
        An ``ipywidgets.VBox``: the controls, then the figure.

    Raises:
        ImportError: If ipywidgets is not installed (``pip install ipywidgets``).
        TypeError: If ``draw`` is not callable or a control is neither a widget nor a shorthand.
        ValueError: If no control is given, or a shorthand is empty.
    """
    try:
        import ipywidgets as widgets
    except ImportError as error:  # the library itself does not need ipywidgets
        raise ImportError("interactive_figure needs ipywidgets: pip install ipywidgets") from error
    if not callable(draw):
        raise TypeError(f"draw must be a function returning a matplotlib Figure, got {type(draw).__name__}")
    if not controls:
        raise ValueError("interactive_figure needs at least one control, e.g. p=range(0, 64)")
    built = {name: _control(widgets, name, control) for name, control in controls.items()}
    view = widgets.Output()

    def redraw(_change: object = None) -> None:
        fig = draw(**{name: control.value for name, control in built.items()})
        view.outputs = ()
        view.append_display_data(fig)
        plt.close(fig)

    for control in built.values():
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([*built.values(), view])


def _control(widgets: Any, name: str, control: Any) -> Any:
    """The ipywidgets control for one keyword of :func:`interactive_figure`."""
    if isinstance(control, widgets.ValueWidget):
        if not control.description:
            control.description = name
        return control
    style = {"description_width": "initial"}
    if isinstance(control, bool):
        return widgets.Checkbox(value=control, description=name, style=style)
    if isinstance(control, range):
        if len(control) == 0:
            raise ValueError(f"control {name!r} is an empty range")
        return widgets.IntSlider(
            value=control.start,
            min=min(control[0], control[-1]),
            max=max(control[0], control[-1]),
            step=abs(control.step),
            description=name,
            style=style,
        )
    if isinstance(control, (list, tuple)):
        if not control:
            raise ValueError(f"control {name!r} has no options")
        return widgets.Dropdown(options=list(control), description=name, style=style)
    raise TypeError(
        f"control {name!r} must be an ipywidgets value widget, a range, a list or tuple of options, or a "
        f"bool, got {type(control).__name__}"
    )


class SliderAnimation:
    """A figure drawn for several values of one parameter, played by a slider in HTML (no kernel needed).

    Made by :func:`slider_animation`. In a notebook or in the web book it shows matplotlib's animation
    player (play, step and a slider over the frames); its text form, which a test runner compares, names
    the parameter and its values.
    """

    def __init__(self, html: str, parameter: str, values: Sequence[Any]) -> None:
        self.html = html
        self.parameter = parameter
        self.values = list(values)

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        shown = ", ".join(str(value) for value in self.values[:8])
        more = ", ..." if len(self.values) > 8 else ""
        return f"<slider over {self.parameter} = {shown}{more} ({len(self.values)} frames)>"


def slider_animation(
    draw: Callable[..., Figure],
    parameter: str,
    values: Sequence[Any],
    /,
    *,
    dpi: float = 72.0,
    interval_ms: int = 700,
    **fixed: Any,
) -> SliderAnimation:
    """Draw ``draw(**fixed, **{parameter: value})`` for every value and play the figures with a slider.

    This is the web book's counterpart of :func:`interactive_figure`: each figure is rendered once to an
    image (at ``dpi``), and matplotlib's ``Animation.to_jshtml`` embeds the images with a player whose
    slider and buttons run in the browser, without a Python kernel. Every call of ``draw`` must return a
    figure of the same size. Keep the frames few and small: the page carries every image (about
    10-40 kB each at 72 dpi).

    Args:
        draw: Function returning a new figure for one setting of its keyword parameters.
        parameter: Name of the keyword parameter of ``draw`` that the slider moves.
        values: The values of ``parameter``, one frame each, in slider order.
        dpi: Resolution of the frames.
        interval_ms: Time between frames when the animation plays.
        **fixed: The other keyword parameters of ``draw``, the same for every frame.

    Returns:
        A :class:`SliderAnimation`, shown as the player when it is the last value of a notebook cell.

    Raises:
        TypeError: If ``draw`` is not callable or does not return a matplotlib Figure.
        ValueError: If ``values`` is empty, ``dpi`` or ``interval_ms`` is not positive, or the figures
            differ in size.
    """
    if not callable(draw):
        raise TypeError(f"draw must be a function returning a matplotlib Figure, got {type(draw).__name__}")
    if not isinstance(parameter, str) or not parameter:
        raise TypeError(f"parameter must be the name of a keyword parameter of draw, got {parameter!r}")
    values = list(values)
    if not values:
        raise ValueError("values must hold at least one value of the parameter")
    if not (isinstance(dpi, (int, float)) and dpi > 0):
        raise ValueError(f"dpi must be a positive number, got {dpi!r}")
    interval_ms = check_positive_int("interval_ms", interval_ms)
    frames = []
    for value in values:
        fig = draw(**fixed, **{parameter: value})
        if not isinstance(fig, Figure):
            raise TypeError(f"draw must return a matplotlib Figure, got {type(fig).__name__} for {value!r}")
        fig.set_dpi(dpi)
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
        plt.close(fig)
    height, width = frames[0].shape[:2]
    if any(frame.shape != frames[0].shape for frame in frames):
        sizes = sorted({f"{frame.shape[1]}x{frame.shape[0]}" for frame in frames})
        raise ValueError(f"draw must return figures of one size for every value; got {', '.join(sizes)} px")
    player = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    axes = player.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    image = axes.imshow(frames[0], interpolation="none", aspect="auto")

    def show(index: int) -> list[Any]:
        image.set_data(frames[index])
        return [image]

    movie = animation.FuncAnimation(player, show, frames=len(frames), interval=interval_ms, blit=False)
    return SliderAnimation(movie.to_jshtml(default_mode="once"), parameter, values)
