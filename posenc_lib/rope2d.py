r"""Two-dimensional RoPE for image patches: axial RoPE and RoPE-Mixed with learned frequencies.

**Axial 2-D RoPE.** A patch at row :math:`i` and column :math:`j` of a grid is rotated pair by pair, as 1-D
RoPE (Su et al. 2021, arXiv:2104.09864) rotates a token, but half of the :math:`d_h/2` rotary pairs turn with
the row and the other half with the column. Each axis uses the RoPE frequencies of a width :math:`d_h/2`,

.. math::

    \theta_c = b^{-2c/(d_h/2)} = b^{-4c/d_h}, \qquad c = 0, \dots, d_h/4 - 1,

so :math:`d_h` must be a multiple of 4. With ``first_axis="row"`` (Qwen2-VL's vision encoder), pair :math:`c`
is rotated by :math:`i\,\theta_c` and pair :math:`d_h/4 + c` by :math:`j\,\theta_c`; ``first_axis="column"``
swaps the two halves (RoPE-ViT's axial models). Which coordinates form pair :math:`c` is the ``layout`` of
:mod:`posenc_lib.rope`: ``"half"``, pairs :math:`(x_c, x_{c + d_h/2})`, or ``"interleaved"``, pairs
:math:`(x_{2c}, x_{2c+1})`.

Every pair is a 2-D rotation by (row or column index) :math:`\times\ \theta_c`, and
:math:`\langle R_a u, R_b v\rangle = \langle u, R_{b-a} v\rangle` holds pair by pair, so the score of a query
at :math:`(i, j)` and a key at :math:`(i', j')`,

.. math::

    \langle R(i, j)\,q,\; R(i', j')\,k\rangle = \langle q,\; R(i' - i,\; j' - j)\,k\rangle,

depends on the two positions only through the 2-D offset :math:`(i' - i, j' - j)`, which 1-D RoPE over the
flattened patches (position :math:`i \cdot W + j`) does not give: there, a patch one row down is as far as a
patch :math:`W` columns to the right.

**Qwen2-VL's vision encoder** (Wang et al. 2024, "Qwen2-VL", arXiv:2409.12191) is this axial RoPE with
``base`` :math:`b = 10000`, the ``"half"`` layout and ``first_axis="row"``; its patches come in
*spatial-merge order*: the :math:`m \times m` patches (:math:`m = 2`) that the merger fuses into one language
token are consecutive (:func:`patch_grid_positions` with ``merge_size=2``). The frames of a video repeat the
same row and column indices. This matches ``Qwen2VLVisionRotaryEmbedding`` with
``apply_rotary_pos_emb_vision`` and ``transformers.vision_utils.get_vision_position_ids`` in transformers
5.18.

**RoPE-Mixed** (Heo, Park, Han, Yun 2024, "Rotary Position Embedding for Vision Transformer",
arXiv:2403.13298) learns, per head :math:`h` and pair :math:`c`, a frequency for each axis and rotates pair
:math:`c` by :math:`\theta^{x}_{h,c}\, j + \theta^{y}_{h,c}\, i` (:math:`x` the column, :math:`y` the
row), so a pair can follow a diagonal direction. The score still depends only on the 2-D offset, for any
learned frequencies (:class:`RoPEMixed`).

Angles are formed in float64 from the indices and cast to the compute dtype as cosines and sines, as in
:mod:`posenc_lib.rope`; bfloat16 and float16 inputs are rotated in float32 and rounded once.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc_lib._validation import (
    check_bool,
    check_choice,
    check_finite_tensor,
    check_floating_tensor,
    check_position_tensor,
    check_positions_shape,
    check_positive_int,
    check_seq_dim,
    values_on_host,
)
from posenc_lib.rope import ROPE_LAYOUTS, rotate_with_cos_sin
from posenc_lib.rope_scaling import rope_inverse_frequencies

ROPE_2D_AXES = ("row", "column")


def rope_2d_frequencies(
    dim: int, *, base: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Per-axis frequencies of axial 2-D RoPE, :math:`\theta_c = b^{-2c/(d_h/2)}`, :math:`c < d_h/4`.

    The RoPE frequencies of a width :math:`d_h/2` (:func:`posenc_lib.rope_scaling.rope_inverse_frequencies`),
    shared by the row and the column. Equal to ``Qwen2VLVisionRotaryEmbedding.inv_freq`` of transformers
    (computed there in float32) for a vision head width :math:`d_h`.

    Args:
        dim: head width :math:`d_h`, a multiple of 4 (two axes, pairs of coordinates).
        base: :math:`b`, the ``rope_theta`` of the vision config (10000 in Qwen2-VL; RoPE-ViT uses 100).
        device: device of the result.

    Returns:
        float64 tensor of shape ``[dim // 4]``.

    Raises:
        ValueError: ``dim`` not a positive multiple of 4, or ``base`` not a finite number > 1.
        TypeError: ``dim`` not an integer or ``base`` not a number.
    """
    dim = _check_dim_2d(dim)
    return rope_inverse_frequencies(dim // 2, base=base, device=device)


def patch_grid_positions(
    height: int, width: int, *, merge_size: int = 1, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Row and column indices of the patches of a ``height`` x ``width`` grid, in sequence order.

    With ``merge_size=1`` the order is row-major: patch :math:`n` sits at row :math:`\lfloor n / W \rfloor`
    and column :math:`n \bmod W`. With ``merge_size`` :math:`m > 1` it is Qwen2-VL's spatial-merge order:
    the grid is cut into :math:`m \times m` blocks, the blocks come in row-major order and the patches inside
    each block too, so the :math:`m^2` patches that the patch merger fuses into one language token are
    consecutive. For :math:`m = 2` and a 4 x 4 grid the rows are ``0 0 1 1 0 0 1 1 2 2 3 3 ...`` and the
    columns ``0 1 0 1 2 3 2 3 0 1 0 1 ...``, as ``transformers.vision_utils.get_vision_position_ids`` gives.

    Args:
        height: number of patch rows :math:`H` (divisible by ``merge_size``).
        width: number of patch columns :math:`W` (divisible by ``merge_size``).
        merge_size: side :math:`m` of the merged blocks (``spatial_merge_size`` of Qwen2-VL, 2).
        device: device of the result.

    Returns:
        ``(rows, cols)``, two int64 tensors of shape ``[height * width]``.

    Raises:
        ValueError: a size that is not positive, or ``height``/``width`` not divisible by ``merge_size``.
        TypeError: a size that is not an integer.
    """
    height = check_positive_int("height", height)
    width = check_positive_int("width", width)
    merge_size = check_positive_int("merge_size", merge_size)
    if height % merge_size or width % merge_size:
        raise ValueError(
            f"height and width must be divisible by merge_size = {merge_size}, got {height} x {width}"
        )
    rows, cols = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    blocks = (height // merge_size, merge_size, width // merge_size, merge_size)
    # [block row, row in block, block column, column in block] -> block row, block column, then inside
    return tuple(t.reshape(blocks).transpose(1, 2).flatten() for t in (rows, cols))  # type: ignore[return-value]


def rope_2d_angles(
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    dim: int,
    base: float = 10000.0,
    first_axis: str = "row",
) -> torch.Tensor:
    r"""Rotation angle of every pair, in float64: shape ``[*rows.shape, dim // 2]``.

    Pairs :math:`c < d_h/4` get :math:`i\,\theta_c` and pairs :math:`d_h/4 + c` get :math:`j\,\theta_c` for
    ``first_axis="row"`` (row index :math:`i`, column index :math:`j`); ``first_axis="column"`` swaps the
    halves. :math:`\theta_c` is :func:`rope_2d_frequencies`.

    Args:
        rows: row indices, any shape (``[T]``, ``[B, T]``), integer or floating point.
        cols: column indices, the same shape.
        dim: head width :math:`d_h`, a multiple of 4.
        base: frequency base :math:`b`.
        first_axis: the axis of the first :math:`d_h/4` pairs, ``"row"`` or ``"column"``.

    Raises:
        ValueError: ``rows`` and ``cols`` of different shapes, NaN or infinite indices, a bad ``dim``,
            ``base`` or ``first_axis``.
        TypeError: indices that are not integer or floating tensors.
    """
    _check_indices(rows, cols)
    check_choice("first_axis", first_axis, ROPE_2D_AXES)
    inv_freq = rope_2d_frequencies(dim, base=base, device=rows.device)
    return _axial_angles(rows, cols, inv_freq, first_axis)


def _axial_angles(
    rows: torch.Tensor, cols: torch.Tensor, inv_freq: torch.Tensor, first_axis: str
) -> torch.Tensor:
    """:func:`rope_2d_angles` without checks; ``inv_freq`` is float64 on the indices' device."""
    row_angles = rows.to(torch.float64).unsqueeze(-1) * inv_freq
    col_angles = cols.to(torch.float64).unsqueeze(-1) * inv_freq
    halves = (row_angles, col_angles) if first_axis == "row" else (col_angles, row_angles)
    return torch.cat(halves, dim=-1)


def apply_rope_2d(
    x: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    *,
    base: float = 10000.0,
    layout: str = "half",
    first_axis: str = "row",
    seq_dim: int = -2,
) -> torch.Tensor:
    r"""Rotate ``x`` by axial 2-D RoPE at the patch positions ``(rows, cols)``; same shape and dtype.

    The defaults are Qwen2-VL's vision encoder (``"half"`` layout, rows on the first :math:`d_h/4` pairs,
    base 10000): with ``rows, cols = patch_grid_positions(h, w, merge_size=2)`` the result equals
    transformers' ``apply_rotary_pos_emb_vision`` with the cosines and sines of
    ``Qwen2VLVisionRotaryEmbedding`` (which forms its angles in float32). RoPE-ViT's axial models
    (Heo et al. 2024) are ``layout="interleaved", first_axis="column", base=100.0``.

    Args:
        x: queries or keys, floating point, ``[..., T, d_h]`` (``seq_dim=-2``, e.g. ``[B, H, T, d_h]``) or
            ``[..., T, H, d_h]`` (``seq_dim=-3``, e.g. Qwen2-VL's vision ``[T, H, d_h]``); :math:`d_h` a
            multiple of 4.
        rows: row index of each patch, ``[T]`` or ``[B, T]`` (as ``positions`` of
            :func:`posenc_lib.rope.apply_rope`), integer or floating point.
        cols: column index of each patch, the same shape as ``rows``.
        base: frequency base :math:`b`.
        layout: ``"half"`` or ``"interleaved"`` (which coordinates form a pair).
        first_axis: the axis of the first :math:`d_h/4` pairs, ``"row"`` or ``"column"``.
        seq_dim: the axis of ``x`` that holds the patches, ``-2`` or ``-3``.

    Raises:
        ValueError: :math:`d_h` not a multiple of 4, ``rows``/``cols`` of the wrong shape or with NaN, or a
            bad ``base``, ``layout``, ``first_axis`` or ``seq_dim``.
        TypeError: ``x`` not floating point, indices not integer or floating tensors.
    """
    check_floating_tensor("x", x)
    seq_dim = check_seq_dim(seq_dim, x)
    dim = _check_dim_2d(x.shape[-1], "x's last dimension d_h")
    check_choice("layout", layout, ROPE_LAYOUTS)
    check_choice("first_axis", first_axis, ROPE_2D_AXES)
    check_positions_shape(rows, x, seq_dim, "rows")
    _check_indices(rows, cols)
    inv_freq = rope_2d_frequencies(dim, base=base, device=x.device)
    angles = _axial_angles(rows.to(x.device), cols.to(x.device), inv_freq, first_axis)
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return rotate_with_cos_sin(
        x, angles.cos().to(compute_dtype), angles.sin().to(compute_dtype), layout=layout, seq_dim=seq_dim
    )


class RoPEMixed(nn.Module):
    r"""RoPE-Mixed (Heo et al. 2024, arXiv:2403.13298): 2-D RoPE with learned frequencies per head and axis.

    Pair :math:`c` of head :math:`h` at row :math:`i`, column :math:`j` is rotated by

    .. math::

        \alpha_{h,c}(i, j) = \theta^{x}_{h,c}\, j + \theta^{y}_{h,c}\, i,

    with :math:`\theta^{x}, \theta^{y}` the parameter ``frequencies`` (shape ``[2, num_heads, dim // 2]``:
    ``frequencies[0]`` multiplies the column :math:`j`, ``frequencies[1]`` the row :math:`i`). Since
    :math:`\alpha` is linear in :math:`(i, j)`, the score of a query and a key depends only on their 2-D
    offset, whatever the learned values. One instance belongs to one attention layer (RoPE-ViT learns the
    frequencies of every layer separately). Only patch tokens are rotated; RoPE-ViT leaves the class token
    as it is.

    Initialisation (RoPE-ViT's ``init_random_2d_freqs``): with the magnitudes
    :math:`\mu_c = b^{-2c/(d_h/2)}`, :math:`c < d_h/4` (:func:`rope_2d_frequencies`) and one angle
    :math:`\phi_h` per head drawn uniformly from :math:`[0, 2\pi)`,

    .. math::

        (\theta^{x}_{h,c}, \theta^{y}_{h,c}) = \mu_c(\cos\phi_h, \sin\phi_h), \qquad
        (\theta^{x}_{h,d_h/4+c}, \theta^{y}_{h,d_h/4+c}) = \mu_c(-\sin\phi_h, \cos\phi_h),

    two orthogonal directions per frequency. With ``random_rotation=False``, :math:`\phi_h = 0`: the first
    :math:`d_h/4` pairs follow the column and the others the row, which is axial RoPE,
    ``apply_rope_2d(x, rows, cols, base=base, layout=layout, first_axis="column")``, exactly. The paper's
    models use ``base`` 10 for RoPE-Mixed (100 for axial) and the interleaved layout.

    The frequencies are a float64 parameter, so that the angles are formed in float64 like everywhere in
    posenc_lib; casting the module to a lower precision rounds them.

    Args:
        dim: head width :math:`d_h`, a multiple of 4.
        num_heads: number of heads, each with its own frequencies.
        base: :math:`b` of the initial magnitudes.
        random_rotation: draw :math:`\phi_h` at random (RoPE-Mixed) or set it to 0 (axial start).
        layout: ``"interleaved"`` (RoPE-ViT's complex pairs) or ``"half"``.
        generator: the random generator for :math:`\phi_h` (default: torch's global one).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        base: float = 10.0,
        random_rotation: bool = True,
        layout: str = "interleaved",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_dim_2d(dim)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.layout = check_choice("layout", layout, ROPE_LAYOUTS)
        check_bool("random_rotation", random_rotation)
        with torch.device("cpu"):
            magnitudes = rope_2d_frequencies(self.dim, base=base)
            if random_rotation:
                phi = torch.rand(self.num_heads, 1, generator=generator, dtype=torch.float64) * (2 * math.pi)
            else:
                phi = torch.zeros(self.num_heads, 1, dtype=torch.float64)
            cos_phi, sin_phi = phi.cos(), phi.sin()
            theta_x = torch.cat([magnitudes * cos_phi, -magnitudes * sin_phi], dim=-1)
            theta_y = torch.cat([magnitudes * sin_phi, magnitudes * cos_phi], dim=-1)
        self.frequencies = nn.Parameter(torch.stack([theta_x, theta_y]))

    def angles(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        r"""Angles :math:`\alpha_{h,c}` in float64: ``[num_heads, T, dim // 2]`` for indices ``[T]``, or
        ``[B, num_heads, T, dim // 2]`` for ``[B, T]``. Differentiable with respect to ``frequencies``."""
        _check_indices(rows, cols)
        if rows.ndim not in (1, 2):
            raise ValueError(f"rows and cols must have shape [T] or [B, T], got {tuple(rows.shape)}")
        theta = self.frequencies.to(device=rows.device, dtype=torch.float64)
        # [..., 1, T, 1] * [H, 1, d/2]: heads before the patches
        col = cols.to(torch.float64)[..., None, :, None]
        row = rows.to(torch.float64)[..., None, :, None]
        return col * theta[0][:, None, :] + row * theta[1][:, None, :]

    def forward(self, x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` (``[B, num_heads, T, dim]`` or ``[num_heads, T, dim]``) at the patches
        ``(rows, cols)`` (``[T]``, or ``[B, T]`` with ``B`` equal to ``x.shape[0]`` or 1); same shape and
        dtype as ``x``.

        Raises:
            ValueError: ``x`` not ``[..., num_heads, T, dim]``, indices of the wrong shape or with NaN.
            TypeError: ``x`` not floating point, indices not integer or floating tensors.
        """
        check_floating_tensor("x", x)
        if x.ndim not in (3, 4) or x.shape[-3] != self.num_heads or x.shape[-1] != self.dim:
            raise ValueError(
                f"x must have shape [B, num_heads, T, dim] or [num_heads, T, dim] with num_heads = "
                f"{self.num_heads} and dim = {self.dim}, got {tuple(x.shape)}"
            )
        _check_indices(rows, cols)
        seq_len = x.shape[-2]
        batch_ok = rows.ndim == 1 or (rows.ndim == 2 and x.ndim == 4 and rows.shape[0] in (1, x.shape[0]))
        if not batch_ok or rows.shape[-1] != seq_len:
            raise ValueError(
                f"rows and cols must have shape [T] = [{seq_len}]"
                + (f" or [B, T] with B = {x.shape[0]} or 1" if x.ndim == 4 else "")
                + f" for x of shape {tuple(x.shape)}, got {tuple(rows.shape)}"
            )
        angles = self.angles(rows.to(x.device), cols.to(x.device))
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = angles.cos().to(compute_dtype), angles.sin().to(compute_dtype)
        if self.layout == "half":
            x1, x2 = x[..., : self.dim // 2].to(compute_dtype), x[..., self.dim // 2 :].to(compute_dtype)
            rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:
            x1, x2 = x[..., 0::2].to(compute_dtype), x[..., 1::2].to(compute_dtype)
            rotated = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        return rotated.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, layout={self.layout!r}"


def _check_dim_2d(dim: object, name: str = "dim") -> int:
    dim = check_positive_int(name, dim)
    if dim % 4:
        raise ValueError(
            f"{name} must be a positive multiple of 4 for 2-D RoPE (pairs of coordinates, half of them for "
            f"each axis), got {dim}"
        )
    return dim


def _check_indices(rows: object, cols: object) -> None:
    rows = check_position_tensor("rows", rows)
    cols = check_position_tensor("cols", cols)
    if rows.shape != cols.shape:
        raise ValueError(
            f"rows and cols must have the same shape, got {tuple(rows.shape)} and {tuple(cols.shape)}"
        )
    if rows.device != cols.device:
        raise ValueError(f"rows and cols must be on one device, got {rows.device} and {cols.device}")
    for name, indices in (("rows", rows), ("cols", cols)):
        if indices.dtype.is_floating_point and values_on_host(indices):
            check_finite_tensor(name, indices)
