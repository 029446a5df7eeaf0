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
"""

from __future__ import annotations

import torch

from posenc_lib._validation import (
    check_choice,
    check_even_positive_int,
    check_floating_tensor,
    check_integer_tensor,
    check_non_negative_int,
    check_positive_float,
    check_tensor,
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
    rotary_dim = _check_rotary_dim(rotary_dim, dim)
    rotated = torch.arange(rotary_dim)
    return torch.cat([rotated[0::2], rotated[1::2], torch.arange(rotary_dim, dim)])


def rope_angles(positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    r"""Return the rotation angles :math:`p\,\theta_c` in float64, shape ``[len(positions), len(inv_freq)]``.

    Positions are integers, exact in float64 up to :math:`2^{53}`; the product is rounded once, in float64.
    """
    check_integer_tensor("positions", positions)
    check_floating_tensor("inv_freq", inv_freq)
    if positions.ndim != 1:
        raise ValueError(f"positions must be a 1-D tensor, got shape {tuple(positions.shape)}")
    if inv_freq.ndim != 1:
        raise ValueError(f"inv_freq must be a 1-D tensor, got shape {tuple(inv_freq.shape)}")
    return torch.outer(positions.to(torch.float64), inv_freq.to(device=positions.device, dtype=torch.float64))


def apply_rope(
    x: torch.Tensor,
    positions: torch.Tensor | None = None,
    *,
    base: float = 10000.0,
    layout: str = "half",
    rotary_dim: int | None = None,
    inv_freq: torch.Tensor | None = None,
    attention_factor: float = 1.0,
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
        x: queries or keys, ``[..., T, d_h]``, floating point.
        positions: 1-D integer tensor of length ``T`` (default ``0 .. T-1``); any integers, including
            negative ones and offsets for KV-cache decoding.
        base: the base of the geometric frequencies (10000 in RoFormer; Llama 3 uses 500000).
        layout: ``"half"`` (GPT-NeoX, Hugging Face Llama) or ``"interleaved"`` (GPT-J, Meta, the paper).
        rotary_dim: rotate only the first :math:`r` dimensions (even, at most :math:`d_h`); the frequencies
            are computed over :math:`r`, and the remaining :math:`d_h - r` dimensions pass through unchanged.
            Default :math:`d_h`.
        inv_freq: frequencies :math:`\theta_c`, 1-D of length ``r/2``; overrides ``base``.
        attention_factor: factor applied to cosine and sine (1 for plain RoPE).

    Returns:
        The rotated tensor, same shape and dtype as ``x``.

    Raises:
        ValueError: odd or too large ``rotary_dim``, unknown ``layout``, ``positions`` not of length ``T``,
            ``inv_freq`` of the wrong length, a non-positive ``base`` or ``attention_factor``.
        TypeError: ``x`` not a floating tensor, ``positions`` not an integer tensor.
    """
    check_floating_tensor("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape [..., T, D] (at least 2 dimensions), got shape {tuple(x.shape)}")
    seq_len, dim = x.shape[-2], x.shape[-1]
    if dim % 2:
        raise ValueError(f"x's last dimension D must be even to form pairs, got D = {dim}")
    check_choice("layout", layout, ROPE_LAYOUTS)
    rotary_dim = _check_rotary_dim(rotary_dim, dim)
    attention_factor = check_positive_float("attention_factor", attention_factor)
    if positions is None:
        positions = torch.arange(seq_len, device=x.device)
    else:
        check_integer_tensor("positions", positions)
        if positions.ndim != 1 or positions.shape[0] != seq_len:
            raise ValueError(
                f"positions must be a 1-D tensor of length T = x.shape[-2] = {seq_len}, "
                f"got shape {tuple(positions.shape)}"
            )
        positions = positions.to(x.device)
    if inv_freq is None:
        inv_freq = rope_inverse_frequencies(rotary_dim, base=check_positive_float("base", base))
    else:
        check_floating_tensor("inv_freq", inv_freq)
        if inv_freq.shape != (rotary_dim // 2,):
            raise ValueError(
                f"inv_freq must have shape [rotary_dim // 2] = [{rotary_dim // 2}], "
                f"got {tuple(inv_freq.shape)}"
            )
    angles = rope_angles(positions, inv_freq)
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    cos = (angles.cos() * attention_factor).to(compute_dtype)
    sin = (angles.sin() * attention_factor).to(compute_dtype)
    return rotate_with_cos_sin(x, cos, sin, layout=layout)


def rotate_with_cos_sin(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, layout: str = "half"
) -> torch.Tensor:
    r"""Rotate the first ``2 * cos.shape[-1]`` dimensions of ``x`` by precomputed cosines and sines.

    The kernel behind :func:`apply_rope` and :class:`RotaryEmbedding`. ``cos`` and ``sin`` have shape
    ``[T, r/2]`` (one entry per position and pair, not repeated) in float32 or float64. The result has ``x``'s
    dtype; a bfloat16 or float16 ``x`` is rotated in ``cos``'s dtype and rounded once at the end.

    The half layout is computed as ``y = x * [cos, cos]``, then ``y_1 -= x_2 sin`` and ``y_2 += x_1 sin``
    in place, with no ``rotate_half`` copy and no ``cat``; the interleaved layout is one complex
    multiplication :math:`(x_{2c} + i x_{2c+1}) e^{i p \theta_c}`. Both read ``x`` and write the result with
    few passes over memory (``benchmarks/rope_speed.py`` measures them against ``clone()``). When autograd
    records (an input requires grad), the same arithmetic runs out of place so that it can be differentiated.
    """
    check_floating_tensor("x", x)
    check_floating_tensor("cos", cos)
    check_floating_tensor("sin", sin)
    check_choice("layout", layout, ROPE_LAYOUTS)
    half = cos.shape[-1]
    rotary_dim = 2 * half
    if cos.shape != sin.shape or cos.ndim != 2 or cos.shape[0] != x.shape[-2] or rotary_dim > x.shape[-1]:
        raise ValueError(
            "cos and sin must both have shape [T, r/2] with T = x.shape[-2] and r <= x.shape[-1]; got "
            f"cos {tuple(cos.shape)}, sin {tuple(sin.shape)}, x {tuple(x.shape)}"
        )
    compute_dtype = cos.dtype
    x_rot, x_pass = x[..., :rotary_dim], x[..., rotary_dim:]
    if torch.is_grad_enabled() and (x.requires_grad or cos.requires_grad or sin.requires_grad):
        # Out-of-place ops that autograd can differentiate (training); the same arithmetic as below.
        if layout == "half":
            x1, x2 = x_rot[..., :half].to(compute_dtype), x_rot[..., half:].to(compute_dtype)
            rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        else:
            product = _complex_pairs(x_rot.to(compute_dtype)) * torch.complex(cos, sin)
            rotated = torch.view_as_real(product).flatten(-2)
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


def _complex_pairs(t: torch.Tensor) -> torch.Tensor:
    """Read ``[..., r]`` as complex ``[..., r/2]``, pairs ``(t_2c, t_2c+1)``; copy only if no view exists."""
    pairs = t.unflatten(-1, (-1, 2))
    try:
        return torch.view_as_complex(pairs)
    except RuntimeError:  # strides that no complex view can express (e.g. a transposed input)
        return torch.view_as_complex(pairs.contiguous())


def _check_rotary_dim(rotary_dim: int | None, dim: int) -> int:
    if rotary_dim is None:
        return dim
    rotary_dim = check_even_positive_int("rotary_dim", rotary_dim)
    if rotary_dim > dim:
        raise ValueError(f"rotary_dim must be an even integer in [2, D] = [2, {dim}], got {rotary_dim}")
    return rotary_dim


class RotaryEmbedding(PositionalEncoding):
    r"""RoPE as a module, with a cosine/sine cache that grows with the sequence (Su et al. 2021).

    The cache holds :math:`\cos(p\theta_c)` and :math:`\sin(p\theta_c)` for positions ``0 .. n-1`` (angles in
    float64, stored in float32) and doubles whenever a larger position is asked for, so a model can run on
    sequences longer than any seen before without a fixed maximum. The cache is a plain attribute, not a
    buffer: ``module.to(torch.bfloat16)`` cannot round it (a known source of error in models whose
    ``inv_freq`` buffer is cast with the weights, transformers #25681), and it moves to the device of the
    input on use.

    ``forward(x, offset)`` rotates ``x`` (``[..., T, d_h]``) as positions ``offset .. offset+T-1``, which is
    what a decoder with a KV cache needs when it rotates one new token at position ``offset``. ``rotate`` is
    the hook used by :class:`posenc_lib.transformer.MultiHeadAttention`.

    Args:
        dim: head width :math:`d_h` (even).
        base: frequency base (10000 in RoFormer).
        layout: ``"half"`` or ``"interleaved"`` (see :func:`apply_rope`).
        rotary_dim: rotate only the first ``r`` dimensions (partial rotary, as GPT-NeoX and Phi).
        inv_freq: explicit frequencies of length ``r/2`` (for instance scaled ones from
            :func:`posenc_lib.rope_scaling.rope_frequencies`); overrides ``base``.
        attention_factor: factor on cosine and sine (YaRN, LongRoPE).
        initial_cache_size: number of positions cached at first use.
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
        initial_cache_size: int = 256,
    ) -> None:
        super().__init__()
        self.dim = check_even_positive_int("dim", dim)
        self.layout = check_choice("layout", layout, ROPE_LAYOUTS)
        self.rotary_dim = _check_rotary_dim(rotary_dim, self.dim)
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
        self.inv_freq = inv_freq.detach().to(dtype=torch.float64, device="cpu")
        self.initial_cache_size = check_non_negative_int("initial_cache_size", initial_cache_size)
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None

    @property
    def cache_size(self) -> int:
        """Number of positions whose cosines and sines are cached (0 before first use)."""
        return 0 if self._cos is None else self._cos.shape[0]

    def cos_sin(
        self, positions: torch.Tensor, device: torch.device | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Return float32 ``(cos, sin)`` of shape ``[len(positions), r/2]`` for non-negative ``positions``."""
        check_integer_tensor("positions", positions)
        if positions.ndim != 1:
            raise ValueError(f"positions must be a 1-D tensor, got shape {tuple(positions.shape)}")
        device = positions.device if device is None else device
        if positions.numel() == 0:
            empty = torch.empty(0, self.rotary_dim // 2, device=device)
            return empty, empty
        lowest, highest = int(positions.min()), int(positions.max())
        if lowest < 0:
            raise ValueError(
                f"positions must be non-negative for the cache, got a smallest position of {lowest}"
            )
        self._grow_cache(highest + 1, device)
        index = positions.to(device)
        return self._cos[index], self._sin[index]

    def _grow_cache(self, needed: int, device: torch.device) -> None:
        size = self.cache_size
        if size >= needed and self._cos.device == device:
            return
        size = max(size, self.initial_cache_size, 1)
        while size < needed:
            size *= 2
        angles = rope_angles(torch.arange(size), self.inv_freq)
        self._cos = (angles.cos() * self.attention_factor).to(device=device, dtype=torch.float32)
        self._sin = (angles.sin() * self.attention_factor).to(device=device, dtype=torch.float32)

    def _rotate_at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        check_floating_tensor("x", x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x's last dimension must be dim = {self.dim}, got {x.shape[-1]}")
        if positions.shape != (x.shape[-2],):
            raise ValueError(
                f"positions must be a 1-D tensor of length T = x.shape[-2] = {x.shape[-2]}, "
                f"got shape {tuple(positions.shape)}"
            )
        if x.dtype == torch.float64:  # the float32 cache would limit a float64 input: compute exactly
            angles = rope_angles(positions, self.inv_freq.to(positions.device))
            cos, sin = angles.cos() * self.attention_factor, angles.sin() * self.attention_factor
        else:
            cos, sin = self.cos_sin(positions, x.device)
        return rotate_with_cos_sin(x, cos.to(x.device), sin.to(x.device), layout=self.layout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x`` (``[..., T, d_h]``) as positions ``offset .. offset + T - 1``."""
        offset = check_non_negative_int("offset", offset)
        check_tensor("x", x)
        positions = torch.arange(offset, offset + x.shape[-2], device=x.device)
        return self._rotate_at(x, positions)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate queries and keys by their own positions (the attention hook)."""
        return self._rotate_at(q, q_positions), self._rotate_at(k, k_positions)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rotary_dim={self.rotary_dim}, layout={self.layout!r}"
