r"""Figures shared by the chapters: encodings as heatmaps, per-head biases, wavelengths, position similarity.

Each function draws one figure with pyplot (so a notebook shows it inline), sets a title, axis labels with
units and a colorbar where colour carries a value, and returns the :class:`matplotlib.figure.Figure`
without calling ``plt.show()``. Close it with ``plt.close(fig)`` when it is no longer needed. Inputs may be
tensors on any device or NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
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
    r"""Draw :math:`\cos\angle(PE_p, PE_q)` for all pairs of positions of a table ``[positions, dim]``.

    For the sinusoid, :math:`PE_p \cdot PE_q = \sum_i \cos((p - q)\,\omega_i)` depends only on :math:`p - q`
    (Vaswani et al. 2017), and every vector has norm :math:`\sqrt{d/2}`, so the matrix is constant along its
    diagonals; a learned table shows whatever training put there.

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
    ax.set_xlabel("position q (tokens)")
    ax.set_ylabel("position p (tokens)")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    return fig
