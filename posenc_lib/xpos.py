r"""xPos: RoPE with a per-pair exponential scale (Sun et al. 2022, "A Length-Extrapolatable Transformer").

In the book's notation (a query at position :math:`m`, a key at position :math:`n`, head width :math:`d_h`):
on top of interleaved RoPE (pairs :math:`(x_{2c}, x_{2c+1})`, :func:`posenc_lib.rope.apply_rope`), xPos
multiplies pair :math:`c` of the query by :math:`\zeta_c^{\,m/\gamma}` and pair :math:`c` of the key by
:math:`\zeta_c^{-n/\gamma}`, with

.. math::

    \zeta_c = \frac{2c + 0.4\,d_h}{1.4\,d_h} \in [0.29, 1), \qquad c = 0, \dots, d_h/2 - 1,
    \qquad \gamma = \mathrm{scale\_base} = 512.

The logit of pair :math:`c` is then the RoPE logit times :math:`\zeta_c^{(m-n)/\gamma}`: for a key in the
query's past (:math:`n < m`) it decays exponentially with the distance :math:`m - n`, fastest for the
high-frequency pairs (small :math:`c`), and it still depends on the positions only through :math:`n - m`.
(The paper writes the query position as :math:`n` and the key position as :math:`m`; the formulas are the
same with the letters swapped.)

Centring. :math:`\zeta^{m/\gamma}` alone under- or overflows for large :math:`m`, so implementations
measure the scale's exponent from a centre :math:`p_0` (a position): queries get
:math:`\zeta^{(m - p_0)/\gamma}`, keys :math:`\zeta^{-(n - p_0)/\gamma}`. The centre cancels in every logit,
so it changes the scaled vectors but never the attention scores, as long as queries and keys share it.
rotary-embedding-torch (``use_xpos=True``) uses positions :math:`0, \dots, T-1` with
:math:`p_0 = \lfloor T/2 \rfloor`; torchscale's ``XPOS`` uses :math:`p_0 = \lceil T/2 \rceil` (the two
differ by one for odd :math:`T`). Even centred, the float32 scale overflows once
:math:`|p - p_0| > 512 \ln(3.4 \cdot 10^{38}) / \ln(1.4/0.4) \approx 36\,000`.
"""

from __future__ import annotations

from numbers import Integral

import torch

from posenc_lib._validation import (
    check_even_positive_int,
    check_floating_tensor,
    check_integer_tensor,
    check_positive_float,
)
from posenc_lib.base import PositionalEncoding
from posenc_lib.rope import apply_rope


def xpos_zeta(dim: int) -> torch.Tensor:
    r"""The per-pair decay rates :math:`\zeta_c = (2c + 0.4\,d_h)/(1.4\,d_h)` for pairs :math:`c < d_h/2`.

    Sun et al. 2022, "A Length-Extrapolatable Transformer", §3.2; the same numbers as the ``scale`` buffer of
    rotary-embedding-torch's ``RotaryEmbedding(dim, use_xpos=True)`` and of torchscale's ``XPOS``.

    Args:
        dim: Head width :math:`d_h`, even.

    Returns:
        float64 tensor of shape ``[dim // 2]``, increasing from :math:`0.4/1.4` towards 1.

    Raises:
        ValueError: If ``dim`` is not an even positive integer.
    """
    dim = check_even_positive_int("dim", dim)
    return (torch.arange(0, dim, 2, dtype=torch.float64) + 0.4 * dim) / (1.4 * dim)


def xpos_scale(dim: int, positions: torch.Tensor, *, scale_base: float = 512.0) -> torch.Tensor:
    r"""The xPos scale :math:`\zeta_c^{\,p/\gamma}` for each position :math:`p` and dimension, interleaved.

    Sun et al. 2022, "A Length-Extrapolatable Transformer". The value of pair :math:`c` is repeated for both
    of its members :math:`2c` and :math:`2c+1`, like ``RotaryEmbedding.get_scale`` in rotary-embedding-torch.
    Positions are used as given: pass them already centred (:func:`apply_xpos` does), and negated for keys.

    Args:
        dim: Head width :math:`d_h`, even.
        positions: 1-D integer tensor of (signed) positions :math:`p`.
        scale_base: :math:`\gamma` (512 in the paper).

    Returns:
        float64 tensor of shape ``[len(positions), dim]`` on the device of ``positions``.

    Raises:
        TypeError: If ``positions`` is not an integer tensor.
        ValueError: If ``positions`` is not 1-D, or ``dim`` or ``scale_base`` is not accepted.
    """
    zeta = xpos_zeta(dim).to(check_integer_tensor("positions", positions).device)
    scale_base = check_positive_float("scale_base", scale_base)
    if positions.ndim != 1:
        raise ValueError(f"positions must be a 1-D tensor, got shape {list(positions.shape)}")
    exponents = positions.to(torch.float64).unsqueeze(-1) / scale_base
    return (zeta**exponents).repeat_interleave(2, dim=-1)


def apply_xpos(
    q: torch.Tensor,
    k: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    *,
    base: float = 10000.0,
    scale_base: float = 512.0,
    centre: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Apply xPos to queries and keys: interleaved RoPE, then :math:`\zeta^{\pm(p - p_0)/\gamma}` per pair.

    Sun et al. 2022, "A Length-Extrapolatable Transformer": the query at position :math:`m` becomes
    :math:`\zeta^{(m - p_0)/\gamma} \odot R_m q` and the key at position :math:`n` becomes
    :math:`\zeta^{-(n - p_0)/\gamma} \odot R_n k`, so the logit of pair :math:`c` is
    :math:`\zeta_c^{(m-n)/\gamma}` times the RoPE logit and depends only on :math:`n - m`; :math:`p_0`
    cancels (see the module docstring). Because the scale is the same for both members of a pair, it
    commutes with the pair's rotation; this function scales first and then calls
    :func:`posenc_lib.rope.apply_rope` with ``layout="interleaved"``. Matches rotary-embedding-torch 0.9.1
    ``RotaryEmbedding(dim, use_xpos=True, xpos_scale_base=scale_base).rotate_queries_and_keys(q, k)`` for
    ``q_positions = k_positions = arange(T)``.

    The arithmetic runs in at least float32 (float64 angles and scales) and the results are rounded once to
    the dtypes of ``q`` and ``k``.

    Args:
        q: Queries ``[..., T_q, d_h]``, floating.
        k: Keys ``[..., T_k, d_h]``, floating.
        q_positions: 1-D integer tensor of length ``T_q``.
        k_positions: 1-D integer tensor of length ``T_k``.
        base: RoPE frequency base.
        scale_base: :math:`\gamma` (512 in the paper).
        centre: :math:`p_0`. Default: :math:`\lfloor (\max p + 1)/2 \rfloor` over all query and key
            positions, which is :math:`\lfloor T/2 \rfloor` for positions ``0 .. T-1``, as in
            rotary-embedding-torch. Fix it when keys are scaled once and cached while the sequence grows.

    Returns:
        ``(q', k')`` with the shapes and dtypes of ``q`` and ``k``.

    Raises:
        TypeError: If a tensor has the wrong dtype or ``centre`` is not an integer.
        ValueError: If the shapes do not fit (``d_h`` odd or different for ``q`` and ``k``, positions of the
            wrong length) or ``base`` or ``scale_base`` is not positive.
    """
    check_floating_tensor("q", q)
    check_floating_tensor("k", k)
    check_integer_tensor("q_positions", q_positions)
    check_integer_tensor("k_positions", k_positions)
    if q.ndim < 2 or k.ndim < 2 or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have shapes [..., T_q, d] and [..., T_k, d] with the same d, "
            f"got {list(q.shape)} and {list(k.shape)}"
        )
    for name, positions, x in (("q_positions", q_positions, q), ("k_positions", k_positions, k)):
        if positions.shape != x.shape[-2:-1]:
            raise ValueError(
                f"{name} must be a 1-D tensor of length {x.shape[-2]} (the sequence axis), "
                f"got shape {list(positions.shape)}"
            )
    centre = _check_centre(centre)
    if centre is None:
        all_positions = torch.cat((q_positions.cpu(), k_positions.cpu()))
        centre = (int(all_positions.max()) + 1) // 2 if all_positions.numel() else 0
    rotated_q = _scale_and_rotate(q, q_positions, q_positions - centre, base, scale_base)
    rotated_k = _scale_and_rotate(k, k_positions, centre - k_positions, base, scale_base)
    return rotated_q, rotated_k


def _check_centre(centre: object) -> int | None:
    """Return ``centre`` as an int (or None), else raise a TypeError naming it."""
    if centre is None:
        return None
    if isinstance(centre, bool) or not isinstance(centre, Integral):
        raise TypeError(f"centre must be an integer or None, got {centre!r} of type {type(centre).__name__}")
    return int(centre)


def _scale_and_rotate(
    x: torch.Tensor, positions: torch.Tensor, exponents: torch.Tensor, base: float, scale_base: float
) -> torch.Tensor:
    """Multiply ``x`` by ``zeta ** (exponents / scale_base)`` and rotate it by RoPE at ``positions``."""
    work_dtype = torch.promote_types(x.dtype, torch.float32)
    scale = xpos_scale(x.shape[-1], exponents, scale_base=scale_base).to(device=x.device, dtype=work_dtype)
    rotated = apply_rope(x.to(work_dtype) * scale, positions.to(x.device), base=base, layout="interleaved")
    return rotated.to(x.dtype)


class XPos(PositionalEncoding):
    r"""xPos as the attention's ``rotate`` hook (Sun et al. 2022, "A Length-Extrapolatable Transformer").

    See :func:`apply_xpos`; matches rotary-embedding-torch's ``RotaryEmbedding(head_dim, use_xpos=True)``.
    The paper pairs xPos with blockwise causal attention at inference to extrapolate; that belongs to the
    attention mask, not to this module.

    Args:
        head_dim: Head width :math:`d_h`, even.
        base: RoPE frequency base.
        scale_base: :math:`\gamma` (512 in the paper).
        centre: Fixed :math:`p_0`, or ``None`` for the default of :func:`apply_xpos`.
    """

    def __init__(
        self, head_dim: int, *, base: float = 10000.0, scale_base: float = 512.0, centre: int | None = None
    ) -> None:
        super().__init__()
        self.head_dim = check_even_positive_int("head_dim", head_dim)
        self.base = check_positive_float("base", base)
        self.scale_base = check_positive_float("scale_base", scale_base)
        self.centre = _check_centre(centre)

    def extra_repr(self) -> str:
        """Describe the settings in the module's repr."""
        return (
            f"head_dim={self.head_dim}, base={self.base}, scale_base={self.scale_base}, centre={self.centre}"
        )

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return :func:`apply_xpos` of ``q`` and ``k`` (``[batch, heads, T, head_dim]``) at their positions.

        Raises:
            ValueError: If the last dimension of ``q`` is not ``head_dim``, or as :func:`apply_xpos`.
        """
        if q.shape[-1] != self.head_dim:
            raise ValueError(
                f"q's last dimension must be head_dim = {self.head_dim}, got shape {list(q.shape)}"
            )
        return apply_xpos(
            q, k, q_positions, k_positions, base=self.base, scale_base=self.scale_base, centre=self.centre
        )
