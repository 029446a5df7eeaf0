r"""Sinusoidal absolute positional encoding (Vaswani et al. 2017, "Attention Is All You Need", §3.5).

Pair :math:`c` of the :math:`d` dimensions (:math:`c = 0, \dots, d/2 - 1`) oscillates with the angular
frequency :math:`\theta_c = \mathrm{base}^{-2c/d}`, ``base`` = 10000. Low :math:`c` means high frequency;
the wavelengths :math:`2\pi/\theta_c` run from :math:`2\pi` to (almost) :math:`2\pi \cdot \mathrm{base}`
tokens. The two members of a pair share one frequency: one holds :math:`\sin(p\,\theta_c)`, the other
:math:`\cos(p\,\theta_c)`.

Two layouts of the same numbers are in use:

* ``"interleaved"`` (the paper, XLM): :math:`PE[p, 2c] = \sin(p\,\theta_c)`,
  :math:`PE[p, 2c+1] = \cos(p\,\theta_c)`;
* ``"concat"`` (Marian, Transformer-XL's :math:`R`): all sines, then all cosines,
  :math:`[\sin(p\,\theta_0), \dots, \sin(p\,\theta_{d/2-1}),
  \cos(p\,\theta_0), \dots, \cos(p\,\theta_{d/2-1})]`.

``concat == interleaved[..., perm]`` with ``perm = [0, 2, ..., d-2, 1, 3, ..., d-1]``.

Angles :math:`p\,\theta_c` are formed in float64 and only the result is cast: formed in float32, with
:math:`\theta_c` rounded to float32 as well, they are off by up to about :math:`10^{-7}\,p\,\theta_c` rad
(0.05 rad at :math:`p = 10^6`, 0.004 rad at :math:`p = 2^{17}`). With float64 angles a float32 result stays
within about :math:`10^{-6}` of the exact one up to :math:`p = 2^{31}` (integers are exact in float64 up to
:math:`2^{53}`). Every integer position is accepted, negative ones included, and the encodings are computed
for the positions asked only: no table grows with the largest position.

:func:`sinusoidal_frequencies` is the one place where posenc_lib computes :math:`b^{-2c/d}`: Transformer-XL's
relative sinusoid uses it, and RoPE's frequencies :math:`\theta_c = b^{-2c/r}` (Su et al. 2021,
:func:`posenc_lib.rope_scaling.rope_inverse_frequencies`) are the same numbers.
"""

from __future__ import annotations

from numbers import Integral

import torch

from posenc_lib._validation import (
    check_choice,
    check_embed_inputs,
    check_even_positive_int,
    check_floating_dtype,
    check_integer_tensor,
    check_positive_float,
    check_positive_int,
)
from posenc_lib.base import PositionalEncoding

SINUSOIDAL_LAYOUTS = ("interleaved", "concat")


def sinusoidal_frequencies(
    dim: int, *, base: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Angular frequencies :math:`\theta_c = \mathrm{base}^{-2c/d}`, :math:`c = 0, \dots, d/2 - 1`.

    From Vaswani et al. 2017, "Attention Is All You Need", §3.5. The exp/log form found in many
    tutorials, ``div_term = exp(arange(0, d, 2) * (-ln(base) / d))``, computes the same numbers:
    :math:`e^{-2c \ln(\mathrm{base})/d} = \mathrm{base}^{-2c/d}`. Note that ``arange(0, d, 2)`` already
    steps by two, so it holds :math:`2c`, not :math:`c`. tensor2tensor and fairseq space the frequencies
    differently, :math:`\theta_c = \mathrm{base}^{-c/(d/2 - 1)}` (last frequency exactly
    :math:`1/\mathrm{base}`); this function follows the paper, as do XLM and Marian in Hugging Face
    transformers.

    Args:
        dim: Model dimension :math:`d`, even.
        base: The base of the geometric progression (10000 in the paper), a finite number > 0.
        device: Device of the result. Computed there, so that a caller on an accelerator copies nothing
            from the host (a blocking copy would make the host wait for the device).

    Returns:
        float64 tensor of shape ``[dim // 2]``, decreasing from 1 when ``base > 1``.

    Raises:
        TypeError: If ``dim`` is not an integer or ``base`` not a number.
        ValueError: If ``dim`` is not an even positive integer or ``base`` is not a finite positive number
            (NaN and infinity included).
    """
    dim = check_even_positive_int("dim", dim)
    base = check_positive_float("base", base)
    exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim
    return torch.pow(base, -exponents)


def sinusoidal_encoding_at(
    positions: torch.Tensor,
    dim: int,
    *,
    base: float = 10000.0,
    layout: str = "interleaved",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Sinusoidal encodings of arbitrary integer positions (any shape, any integers, negative ones too).

    :math:`PE[p, 2c] = \sin(p\,\theta_c)`, :math:`PE[p, 2c+1] = \cos(p\,\theta_c)` (Vaswani et al. 2017,
    "Attention Is All You Need", §3.5) in the ``"interleaved"`` layout, which matches
    ``transformers.models.xlm.modeling_xlm.create_sinusoidal_embeddings``. ``"concat"`` puts all sines
    first and all cosines after, which matches
    ``transformers.models.marian.modeling_marian.MarianSinusoidalPositionalEmbedding``. The angles are
    computed in float64 and the result is cast to ``dtype`` at the end.

    Args:
        positions: Integer tensor of positions, any shape; the result lives on its device.
        dim: Model dimension :math:`d`, even.
        base: Base of the frequencies (see :func:`sinusoidal_frequencies`).
        layout: ``"interleaved"`` or ``"concat"``.
        dtype: Floating dtype of the result.

    Returns:
        Tensor of shape ``[*positions.shape, dim]`` and dtype ``dtype``.

    Raises:
        TypeError: If ``positions`` is not an integer tensor or ``dtype`` is not a floating dtype.
        ValueError: If ``dim``, ``base`` or ``layout`` is not accepted.
    """
    positions = check_integer_tensor("positions", positions)
    layout = check_choice("layout", layout, SINUSOIDAL_LAYOUTS)
    dtype = check_floating_dtype("dtype", dtype)
    frequencies = sinusoidal_frequencies(dim, base=base, device=positions.device)
    angles = positions.to(torch.float64).unsqueeze(-1) * frequencies
    sines, cosines = angles.sin(), angles.cos()
    if layout == "interleaved":
        encoding = torch.stack((sines, cosines), dim=-1).flatten(-2)
    else:
        encoding = torch.cat((sines, cosines), dim=-1)
    return encoding.to(dtype)


def sinusoidal_encoding(
    num_positions: int, dim: int, *, base: float = 10000.0, layout: str = "interleaved"
) -> torch.Tensor:
    r"""The table of sinusoidal encodings of positions :math:`0, 1, \dots, \mathrm{num\_positions} - 1`.

    :func:`sinusoidal_encoding_at` applied to ``arange(num_positions)`` (Vaswani et al. 2017, "Attention
    Is All You Need", §3.5). With ``layout="interleaved"`` it equals the table that XLM's
    ``create_sinusoidal_embeddings`` fills, with ``layout="concat"`` the weight of Marian's
    ``MarianSinusoidalPositionalEmbedding`` (both in Hugging Face transformers), up to float32 rounding.

    Args:
        num_positions: Number of rows (positions), >= 1.
        dim: Model dimension :math:`d`, even.
        base: Base of the frequencies (see :func:`sinusoidal_frequencies`).
        layout: ``"interleaved"`` or ``"concat"``.

    Returns:
        float32 tensor of shape ``[num_positions, dim]``.

    Raises:
        ValueError: If an argument is not accepted.
    """
    num_positions = check_positive_int("num_positions", num_positions)
    return sinusoidal_encoding_at(torch.arange(num_positions), dim, base=base, layout=layout)


def sinusoid_offset_matrix(offset: int, dim: int, *, base: float = 10000.0) -> torch.Tensor:
    r"""The matrix :math:`M_\Delta` with :math:`PE(p + \Delta) = M_\Delta\, PE(p)` for every :math:`p`.

    For the interleaved layout. Vaswani et al. 2017 ("Attention Is All You Need", §3.5) chose sinusoids
    because :math:`PE(p + \Delta)` is a linear function of :math:`PE(p)`. By the angle-addition formulas,
    pair :math:`c` maps as

    .. math::

        \begin{pmatrix} \sin((p+\Delta)\theta_c) \\ \cos((p+\Delta)\theta_c) \end{pmatrix} =
        \begin{pmatrix} \cos(\Delta\theta_c) & \sin(\Delta\theta_c) \\
        -\sin(\Delta\theta_c) & \cos(\Delta\theta_c) \end{pmatrix}
        \begin{pmatrix} \sin(p\theta_c) \\ \cos(p\theta_c) \end{pmatrix},

    so :math:`M_\Delta` is block diagonal with one 2x2 rotation per pair (by :math:`-\Delta\,\theta_c`,
    because the pair is stored as (sin, cos)), and it does not depend on :math:`p`. The derivation is the
    one in d2l.ai, "Self-Attention and Positional Encoding".

    Args:
        offset: The shift :math:`\Delta` (any integer, negative allowed).
        dim: Model dimension :math:`d`, even.
        base: Base of the frequencies (see :func:`sinusoidal_frequencies`).

    Returns:
        float64 tensor of shape ``[dim, dim]``.

    Raises:
        TypeError: If ``offset`` is not an integer.
        ValueError: If ``dim`` or ``base`` is not accepted.
    """
    if isinstance(offset, bool) or not isinstance(offset, Integral):
        raise TypeError(f"offset must be an integer, got {offset!r} of type {type(offset).__name__}")
    angles = int(offset) * sinusoidal_frequencies(dim, base=base)
    cosines, sines = angles.cos(), angles.sin()
    matrix = torch.zeros(dim, dim, dtype=torch.float64)
    even = torch.arange(0, dim, 2)
    matrix[even, even] = cosines
    matrix[even, even + 1] = sines
    matrix[even + 1, even] = -sines
    matrix[even + 1, even + 1] = cosines
    return matrix


class SinusoidalPositionalEncoding(PositionalEncoding):
    r"""Adds the fixed sinusoidal encoding to the layer input: :math:`x_p + PE(p)`.

    Vaswani et al. 2017, "Attention Is All You Need", §3.5. The encoding is
    :func:`sinusoidal_encoding_at`, computed on the fly for the positions asked, so there is no maximum
    length and no parameter. Only the :meth:`embed` hook is used. Vaswani et al. also multiply the token
    embeddings by :math:`\sqrt{d}` before the sum (§3.4); that belongs to the token embedding and is left
    to the caller.

    Args:
        dim: Model dimension :math:`d`, even.
        base: Base of the frequencies.
        layout: ``"interleaved"`` (the paper) or ``"concat"``.
    """

    def __init__(self, dim: int, *, base: float = 10000.0, layout: str = "interleaved") -> None:
        super().__init__()
        self.dim = check_even_positive_int("dim", dim)
        self.base = check_positive_float("base", base)
        self.layout = check_choice("layout", layout, SINUSOIDAL_LAYOUTS)

    def extra_repr(self) -> str:
        """Describe the settings in the module's repr."""
        return f"dim={self.dim}, base={self.base}, layout={self.layout!r}"

    def embed(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """:math:`x + PE(p)`, the sum formed in at least float32 and rounded once to the dtype of ``x``."""
        x, positions = check_embed_inputs(x, positions, self.dim)
        work_dtype = torch.promote_types(x.dtype, torch.float32)
        encoding = sinusoidal_encoding_at(
            positions, self.dim, base=self.base, layout=self.layout, dtype=work_dtype
        )
        return (x.to(work_dtype) + encoding).to(x.dtype)
