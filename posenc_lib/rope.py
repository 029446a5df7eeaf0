r"""Rotary positional encoding (RoPE).

Su, Lu, Pan, Murtadha, Wen, Liu (2021), *RoFormer: Enhanced Transformer with Rotary Position Embedding*,
arXiv:2104.09864.

A head vector :math:`x \in \mathbb{R}^{d_h}` at position :math:`p` is cut into :math:`d_h/2` pairs, and pair
:math:`c` is rotated by the angle :math:`p\,\theta_c` with :math:`\theta_c = b^{-2c/d_h}` for the base
:math:`b` (``base``) (the book's notation):

.. math::

    \begin{pmatrix} y_a \\ y_b \end{pmatrix} =
    \begin{pmatrix} \cos p\theta_c & -\sin p\theta_c \\ \sin p\theta_c & \cos p\theta_c \end{pmatrix}
    \begin{pmatrix} x_a \\ x_b \end{pmatrix}.

Rotations keep norms, and :math:`\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle` depends on the
positions only through :math:`n - m`. Only queries and keys are rotated, never values (RoFormer §3.2).

Which two coordinates form pair :math:`c` is a convention, the *layout*:

* ``"half"``: :math:`(x_c, x_{c + d_h/2})`, as in GPT-NeoX and Hugging Face's Llama (``rotate_half``);
* ``"interleaved"``: :math:`(x_{2c}, x_{2c+1})`, as in the paper, GPT-J, Meta's original LLaMA code and
  rotary-embedding-torch.

The two give the same attention scores only if the rows of :math:`W_q` and :math:`W_k` are permuted to match
(:func:`rope_permutation`); applying one layout to weights trained with the other degrades a model silently.

Precision: angles :math:`p\,\theta_c` are computed in float64 and cast to the compute dtype only as
cosines and sines, so float32 results stay within about 1e-6 of an exact computation at positions up to
:math:`2^{20}` and beyond, where a float32 angle (Hugging Face's path) is off by up to about 0.06 rad.
bfloat16 and float16 inputs are rotated in float32 and rounded once, to their own dtype, at the end.

Positions are any integers (negative ones included, the rule of every encoding in posenc_lib, see
:mod:`posenc_lib.base`) or finite floating-point numbers (Position Interpolation's :math:`p/s`), one row
``[T]`` shared by the batch or one row per batch element ``[B, T]`` (left padding, packed sequences). Memory
and time are proportional to the number of positions in a call, never to their size: a token at position
:math:`2^{31} - 1` costs what a token at position 0 costs.

The functions run under ``torch.func.vmap``, on the meta device and under ``torch.compile(fullgraph=True)``
(no host-device synchronisation and no data-dependent branch on those paths).
"""

from __future__ import annotations

import torch

from posenc_lib._validation import (
    check_choice,
    check_even_positive_int,
    check_finite_tensor,
    check_floating_tensor,
    check_position_tensor,
    check_positions_shape,
    check_positive_float,
    check_rotary_dim,
    check_seq_dim,
    values_on_host,
    values_readable,
)
from posenc_lib.base import PositionalEncoding
from posenc_lib.rope_scaling import rope_inverse_frequencies

ROPE_LAYOUTS = ("half", "interleaved")


def rope_permutation(dim: int, *, rotary_dim: int | None = None) -> torch.Tensor:
    """Return the index permutation that links the interleaved and half layouts.

    ``perm`` lists the even indices of the rotated part, then the odd ones, then the unrotated tail unchanged,
    so that for any ``x`` and positions ``p``::

        apply_rope(x, p, layout="interleaved")[..., perm] == apply_rope(x[..., perm], p, layout="half")

    Interleaved pair :math:`(x_{2c}, x_{2c+1})` lands at :math:`(c, c + r/2)`, the half-layout pair with the
    same frequency. Applied per head to the rows of :math:`W_q` and :math:`W_k`, it converts a checkpoint
    trained with interleaved RoPE (Meta's LLaMA) to the half layout (Hugging Face's ``LlamaForCausalLM``);
    transformers' ``convert_llama_weights_to_hf.py`` does the same with a reshape.

    Args:
        dim: head width :math:`d_h`.
        rotary_dim: number :math:`r` of leading dimensions that are rotated (default: all of them).

    Returns:
        int64 tensor of shape ``[dim]``.
    """
    dim = check_even_positive_int("dim", dim)
    rotary_dim = check_rotary_dim(rotary_dim, dim)
    rotated = torch.arange(rotary_dim)
    return torch.cat([rotated[0::2], rotated[1::2], torch.arange(rotary_dim, dim)])


def rope_angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    r"""Return the rotation angles :math:`p\,\theta_c` in float64, shape ``[*positions.shape, r/2]``.

    ``positions`` may have any shape (``[T]``, ``[B, T]``) and an integer or floating dtype; integers are
    exact in float64 up to :math:`2^{53}`, and the product is rounded once, in float64. ``inv_freq`` holds
    the :math:`r/2` frequencies :math:`\theta_c`.

    Raises:
        TypeError: ``positions`` is not an integer or floating tensor, ``inv_freq`` not a floating one.
        ValueError: ``inv_freq`` is not 1-D, or either holds NaN or infinity.
    """
    check_position_tensor("positions", positions)
    check_floating_tensor("inv_freq", inv_freq)
    if inv_freq.ndim != 1:
        raise ValueError(f"inv_freq must be a 1-D tensor of frequencies, got shape {tuple(inv_freq.shape)}")
    check_finite_tensor("inv_freq", inv_freq)
    check_finite_tensor("positions", positions)
    return _angles(positions, inv_freq)


def _angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """:func:`rope_angles` without checks, for callers that checked their arguments already."""
    return positions.to(torch.float64).unsqueeze(-1) * inv_freq.to(
        device=positions.device, dtype=torch.float64
    )


def apply_rope(
    x: torch.Tensor,
    positions: torch.Tensor | None = None,
    *,
    base: float = 10000.0,
    layout: str = "half",
    rotary_dim: int | None = None,
    inv_freq: torch.Tensor | None = None,
    attention_factor: float = 1.0,
    seq_dim: int = -2,
) -> torch.Tensor:
    r"""Rotate ``x`` by RoPE and return a new tensor of the same shape and dtype.

    Pair :math:`c` of the vector at position :math:`p` is rotated by :math:`p\,\theta_c`, with
    :math:`\theta_c = b^{-2c/r}` unless ``inv_freq`` gives the frequencies (for instance a scaled
    set from :func:`posenc_lib.rope_scaling.rope_frequencies`). Both cosine and sine are multiplied by
    ``attention_factor``, as Hugging Face does for YaRN and LongRoPE, so attention logits scale by its square.

    Matches ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb`` (``layout="half"``),
    ``transformers.models.gptj.modeling_gptj.apply_rotary_pos_emb`` and rotary-embedding-torch
    (``layout="interleaved"``), and GPT-NeoX's partial rotary (``rotary_dim``), with angles in float64.

    Args:
        x: queries or keys, floating point: ``[..., T, d_h]`` (``seq_dim=-2``, e.g. ``[B, H, T, d_h]``) or
            ``[B, T, H, d_h]`` (``seq_dim=-3``, the layout of flash-attention and GPT-J).
        positions: ``[T]`` (shared by the batch) or ``[B, T]`` (one row per batch element, ``B`` equal to
            ``x.shape[0]`` or 1), integer or floating point (fractional positions, e.g. :math:`p/s`); any
            finite values, negative ones included. Default ``0 .. T-1``.
        base: the base of the geometric frequencies (10000 in RoFormer; Llama 3 uses 500000).
        layout: ``"half"`` (GPT-NeoX, Hugging Face Llama) or ``"interleaved"`` (GPT-J, Meta, the paper).
        rotary_dim: rotate only the first :math:`r` dimensions (even, at most :math:`d_h`); the frequencies
            are computed over :math:`r`, and the remaining :math:`d_h - r` dimensions pass through unchanged.
            Default :math:`d_h`.
        inv_freq: frequencies :math:`\theta_c`, 1-D of length ``r/2``; overrides ``base``.
        attention_factor: factor applied to cosine and sine (1 for plain RoPE).
        seq_dim: the axis of ``x`` that holds the sequence: ``-2`` or ``-3``.

    Returns:
        The rotated tensor, same shape and dtype as ``x``.

    Raises:
        ValueError: odd or too large ``rotary_dim``, unknown ``layout`` or ``seq_dim``, ``positions`` whose
            last axis is not ``T`` or whose batch does not match ``x``, ``inv_freq`` of the wrong length,
            NaN or infinite positions or frequencies (checked when they are on the CPU; on an accelerator
            the check would make the host wait for the device, so it is skipped there), a non-positive
            ``base`` or ``attention_factor``.
        TypeError: ``x`` not a floating tensor, ``positions`` neither an integer nor a floating tensor.
    """
    check_floating_tensor("x", x)
    seq_dim = check_seq_dim(seq_dim, x)
    dim = x.shape[-1]
    if dim % 2:
        raise ValueError(f"x's last dimension D must be even to form pairs, got D = {dim}")
    check_choice("layout", layout, ROPE_LAYOUTS)
    rotary_dim = check_rotary_dim(rotary_dim, dim)
    attention_factor = check_positive_float("attention_factor", attention_factor)
    if positions is None:
        positions = torch.arange(x.shape[seq_dim], device=x.device)
    else:
        check_positions_shape(positions, x, seq_dim)
        positions = positions.to(x.device)
    if inv_freq is None:
        inv_freq = rope_inverse_frequencies(
            rotary_dim, base=check_positive_float("base", base), device=x.device
        )
    else:
        check_floating_tensor("inv_freq", inv_freq)
        if inv_freq.shape != (rotary_dim // 2,):
            raise ValueError(
                f"inv_freq must have shape [rotary_dim // 2] = [{rotary_dim // 2}], "
                f"got {tuple(inv_freq.shape)}"
            )
        if values_on_host(inv_freq):
            check_finite_tensor("inv_freq", inv_freq)
    if positions.dtype.is_floating_point and values_on_host(positions):
        check_finite_tensor("positions", positions)
    angles = _angles(positions, inv_freq)
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos = (angles.cos() * attention_factor).to(compute_dtype)
    sin = (angles.sin() * attention_factor).to(compute_dtype)
    return rotate_with_cos_sin(x, cos, sin, layout=layout, rotary_dim=rotary_dim, seq_dim=seq_dim)


def rotate_with_cos_sin(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    layout: str = "half",
    rotary_dim: int | None = None,
    seq_dim: int = -2,
) -> torch.Tensor:
    r"""Rotate the first ``rotary_dim`` dimensions of ``x`` by precomputed cosines and sines.

    The kernel behind :func:`apply_rope` and :class:`RotaryEmbedding`. ``cos`` and ``sin`` hold one entry per
    position and pair, not repeated: shape ``[T, r/2]`` or ``[B, T, r/2]`` (one row per batch element, ``B``
    equal to ``x.shape[0]`` or 1), both float32 or both float64. Hugging Face's cos/sin repeat every
    frequency (``[B, T, r]``, ``cat(freqs, freqs)``): pass ``cos[..., : r // 2]``. Because the two forms
    cannot be told apart by shape when :math:`r < d_h`, a ``cos`` narrower than ``x.shape[-1] / 2`` is
    accepted only with ``rotary_dim`` given.

    The result has ``x``'s dtype; a bfloat16 or float16 ``x`` is rotated in ``cos``'s dtype and rounded
    once at the end. The half layout is computed as ``y = x * [cos, cos]``, then ``y_1 -= x_2 sin`` and
    ``y_2 += x_1 sin`` in place, with no ``rotate_half`` copy and no ``cat``; the interleaved layout is one
    complex multiplication :math:`(x_{2c} + i x_{2c+1}) e^{i p \theta_c}`. Both read ``x`` and write the
    result with few passes over memory (``benchmarks/rope_speed.py`` measures them against ``clone()``). When
    autograd records, under ``torch.func`` transforms and under ``torch.compile``, the same arithmetic runs
    out of place.

    Args:
        x: ``[..., T, D]`` (``seq_dim=-2``) or ``[B, T, H, D]`` (``seq_dim=-3``), floating point.
        cos: cosines, ``[T, r/2]`` or ``[B, T, r/2]``.
        sin: sines, the same shape, dtype and device as ``cos``.
        layout: ``"half"`` or ``"interleaved"``.
        rotary_dim: :math:`r`, the number of leading dimensions rotated (default ``D``).
        seq_dim: the axis of ``x`` that holds the sequence: ``-2`` or ``-3``.

    Raises:
        ValueError: shapes that do not fit together (the message gives the expected ones).
        TypeError: a tensor of the wrong dtype, or ``cos`` and ``sin`` of different dtypes.
    """
    check_floating_tensor("x", x)
    check_floating_tensor("cos", cos)
    check_floating_tensor("sin", sin)
    check_choice("layout", layout, ROPE_LAYOUTS)
    seq_dim = check_seq_dim(seq_dim, x)
    rotary_dim = check_rotary_dim(rotary_dim, x.shape[-1])
    half = rotary_dim // 2
    if cos.dtype != sin.dtype or cos.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"cos and sin must both be float32 or both float64, got {cos.dtype} and {sin.dtype}")
    if cos.device != x.device or sin.device != x.device:
        raise ValueError(f"cos, sin and x must be on one device, got {cos.device}, {sin.device}, {x.device}")
    seq_len = x.shape[seq_dim]
    batch_ok = cos.ndim == 2 or (cos.ndim == 3 and x.ndim + seq_dim >= 1 and cos.shape[0] in (1, x.shape[0]))
    if cos.shape != sin.shape or not batch_ok or cos.shape[-2:] != (seq_len, half):
        expected = f"[T, r/2] = [{seq_len}, {half}]"
        if x.ndim + seq_dim >= 1:
            expected += f" or [B, T, r/2] with B = x.shape[0] = {x.shape[0]} or 1"
        hint = (
            " (Hugging Face's cos/sin repeat each frequency twice: pass cos[..., :r/2], and rotary_dim=r "
            "for a partial rotary)"
            if cos.shape[-1] in (rotary_dim, 2 * half) and cos.shape[-1] != half
            else ""
        )
        raise ValueError(
            f"cos and sin must have shape {expected}, one entry per position and pair, for x of shape "
            f"{tuple(x.shape)}, seq_dim={seq_dim} and rotary_dim={rotary_dim}; got cos {tuple(cos.shape)} "
            f"and sin {tuple(sin.shape)}{hint}"
        )
    cos, sin = _broadcast_to_x(cos, x, seq_dim), _broadcast_to_x(sin, x, seq_dim)
    compute_dtype = torch.promote_types(x.dtype, cos.dtype)
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    if not _fast_path_allowed(x, cos, sin):
        if layout == "half":
            x1, x2 = x_rot[..., :half].to(compute_dtype), x_rot[..., half:].to(compute_dtype)
            rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:
            x1, x2 = x_rot[..., 0::2].to(compute_dtype), x_rot[..., 1::2].to(compute_dtype)
            rotated = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        return torch.cat([rotated.to(x.dtype), x_pass], dim=-1)
    out = torch.empty(x.shape, dtype=compute_dtype, device=x.device)
    if rotary_dim < x.shape[-1]:
        out[..., rotary_dim:] = x_pass
    out_rot = out[..., :rotary_dim]
    if layout == "half":
        # Three passes: y = x * [cos, cos], then one addcmul_ per half, with no rotate_half copy and no cat.
        torch.mul(x_rot, torch.cat([cos, cos], dim=-1), out=out_rot)
        out_rot[..., :half].addcmul_(x_rot[..., half:], sin, value=-1)
        out_rot[..., half:].addcmul_(x_rot[..., :half], sin)
    else:
        out_pairs = torch.view_as_complex(out_rot.unflatten(-1, (-1, 2)))  # a view: ``out`` is contiguous
        torch.mul(_complex_pairs(x_rot.to(compute_dtype)), torch.complex(cos, sin), out=out_pairs)
    return out if out.dtype == x.dtype else out.to(x.dtype)


class RotaryEmbedding(PositionalEncoding):
    r"""RoPE as a module (Su et al. 2021), for any positions, with memory proportional to the tokens.

    Each call forms the angles of the positions it is given, in float64, and casts their cosines and sines
    to the compute dtype: no table sized by the largest position, so decoding one token at position
    :math:`2^{31} - 1` costs what it costs at position 0, and a model can run past any length seen before.
    The frequencies are a plain float64 attribute, not a buffer: ``module.to(torch.bfloat16)`` cannot round
    them (a known source of error in models whose ``inv_freq`` buffer is cast with the weights,
    transformers #25681), and the module has no state that depends on the device, so one instance serves
    every layer of a model (:class:`posenc_lib.transformer.TinyDecoder` shares one).

    ``forward(x, positions)`` rotates ``x``; ``forward(x, offset=t)`` rotates ``x`` (``[..., T, d_h]``) as
    positions ``t .. t+T-1``, which is what a decoder with a KV cache needs when it rotates one new token at
    position ``t``. ``rotate`` is the hook used by :class:`posenc_lib.transformer.MultiHeadAttention`.

    Args:
        dim: head width :math:`d_h` (even).
        base: frequency base (10000 in RoFormer).
        layout: ``"half"`` or ``"interleaved"`` (see :func:`apply_rope`).
        rotary_dim: rotate only the first ``r`` dimensions (partial rotary, as GPT-NeoX and Phi).
        inv_freq: explicit frequencies of length ``r/2`` (for instance scaled ones from
            :func:`posenc_lib.rope_scaling.rope_frequencies`); overrides ``base``.
        attention_factor: factor on cosine and sine (YaRN, LongRoPE).
    """

    def __init__(
        self,
        dim: int,
        *,
        base: float = 10000.0,
        layout: str = "half",
        rotary_dim: int | None = None,
        inv_freq: torch.Tensor | None = None,
        attention_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.dim = check_even_positive_int("dim", dim)
        self.layout = check_choice("layout", layout, ROPE_LAYOUTS)
        self.rotary_dim = check_rotary_dim(rotary_dim, self.dim)
        self.attention_factor = check_positive_float("attention_factor", attention_factor)
        if inv_freq is None:
            with torch.device("cpu"):  # also under ``with torch.device("meta")``: the module has no weights
                inv_freq = rope_inverse_frequencies(self.rotary_dim, base=check_positive_float("base", base))
        else:
            check_floating_tensor("inv_freq", inv_freq)
            if inv_freq.shape != (self.rotary_dim // 2,):
                raise ValueError(
                    f"inv_freq must have shape [rotary_dim // 2] = [{self.rotary_dim // 2}], "
                    f"got {tuple(inv_freq.shape)}"
                )
            check_finite_tensor("inv_freq", inv_freq)
        self.inv_freq = inv_freq.detach().to(dtype=torch.float64, device="cpu")

    def cos_sin(
        self, positions: torch.Tensor, *, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)`` of shape ``[*positions.shape, r/2]`` in ``dtype`` (angles formed in float64).

        Both include ``attention_factor``; ``positions`` may be ``[T]`` or ``[B, T]``, integer or floating.
        """
        check_position_tensor("positions", positions)
        if positions.dtype.is_floating_point and values_on_host(positions):
            check_finite_tensor("positions", positions)
        angles = _angles(positions, self.inv_freq)
        return (
            (angles.cos() * self.attention_factor).to(dtype),
            (angles.sin() * self.attention_factor).to(dtype),
        )

    def _rotate_at(self, x: torch.Tensor, positions: torch.Tensor, seq_dim: int) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"x's last dimension must be dim = {self.dim}, got {x.shape[-1]}")
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        cos, sin = self.cos_sin(positions.to(x.device), dtype=dtype)
        return rotate_with_cos_sin(
            x, cos, sin, layout=self.layout, rotary_dim=self.rotary_dim, seq_dim=seq_dim
        )

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        offset: int = 0,
        seq_dim: int = -2,
    ) -> torch.Tensor:
        """Rotate ``x`` at ``positions`` (``[T]`` or ``[B, T]``), or at ``offset .. offset + T - 1``.

        Raises:
            ValueError: both ``positions`` and a non-zero ``offset`` given, or the shapes of
                :func:`apply_rope`.
        """
        check_floating_tensor("x", x)
        seq_dim = check_seq_dim(seq_dim, x)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an integer, got {offset!r} of type {type(offset).__name__}")
        if positions is None:
            positions = torch.arange(offset, offset + x.shape[seq_dim], device=x.device)
        elif offset:
            raise ValueError(f"give either positions or offset, not both (got offset={offset})")
        else:
            check_positions_shape(positions, x, seq_dim)
        return self._rotate_at(x, positions, seq_dim)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_positions_shape(q_positions, q, -2, "q_positions")  # shapes only: no value is read
        check_positions_shape(k_positions, k, -2, "k_positions")
        return self._rotate_at(q, q_positions, -2), self._rotate_at(k, k_positions, -2)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rotary_dim={self.rotary_dim}, layout={self.layout!r}"


def _complex_pairs(t: torch.Tensor) -> torch.Tensor:
    """Read ``[..., r]`` as complex ``[..., r/2]``, pairs ``(t_2c, t_2c+1)``; copy only if no view exists."""
    pairs = t.unflatten(-1, (-1, 2))
    try:
        return torch.view_as_complex(pairs)
    except RuntimeError:  # strides that no complex view can express (e.g. a transposed input)
        return torch.view_as_complex(pairs.contiguous())


def _fast_path_allowed(*tensors: torch.Tensor) -> bool:
    """The in-place kernel needs plain tensors whose values exist (no compiler, functorch wrapper, fake or
    meta tensor; see ``values_readable``) and no autograd recording."""
    if not values_readable(*tensors):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def _broadcast_to_x(table: torch.Tensor, x: torch.Tensor, seq_dim: int) -> torch.Tensor:
    """View a ``[T, r/2]`` or ``[B, T, r/2]`` table so that it broadcasts against ``x``'s rotated part."""
    if seq_dim == -3:
        table = table.unsqueeze(-2)  # [..., T, 1, r/2]: the head axis after the sequence
    if table.ndim == x.ndim or table.ndim == (3 if seq_dim == -2 else 4) - 1:
        return table
    # [B, T, r/2] against [B, ..., T, D]: singleton axes between the batch and the sequence
    between = x.ndim - table.ndim
    return table.reshape(table.shape[0], *([1] * between), *table.shape[1:])
