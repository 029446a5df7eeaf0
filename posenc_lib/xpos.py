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
differ by one for odd :math:`T`). The default centre here is the middle of the positions actually given,
:math:`p_0 = \lfloor (\min p + \max p + 1)/2 \rfloor` over queries and keys together, which is
:math:`\lfloor T/2 \rfloor` for positions :math:`0, \dots, T-1` and keeps a short window finite wherever it
lies (positions near :math:`2^{31}`, or negative ones). The exponent :math:`(p - p_0)/\gamma` is formed in
float64 from exact integers.

Limit. The largest and smallest scales are :math:`\zeta_0^{\mp|p - p_0|/\gamma}` with
:math:`\zeta_0 = 2/7`, so the scale is a normal number of the input's dtype only for

.. math::

    |p - p_0| \le L = \left\lfloor \gamma \, \frac{\ln(1/\mathrm{tiny})}{\ln(7/2)} \right\rfloor,

``tiny`` the dtype's smallest normal number: :math:`L` = 35 694 for float32 and bfloat16, 3 966 for float16
and 289 519 for float64 (:math:`\gamma = 512`). With the default centre, any window of up to :math:`2L + 1`
positions works, wherever it lies. Past :math:`L` the scaled vectors would be infinite or lose their digits,
and the attention scores with them, so :func:`apply_xpos` raises a ``ValueError`` naming the positions (no
clamp: clamping the exponent would change the scores silently). :meth:`XPos.rotate`, the attention hook,
makes the same check where the positions sit on the CPU; on an accelerator it reads no values (that would
make the host wait for the device in every layer), so keep the positions of one call within :math:`2L + 1`
there, or check them once with :func:`apply_xpos`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral

import torch

from posenc_lib._validation import (
    check_even_positive_int,
    check_floating_dtype,
    check_floating_tensor,
    check_integer_tensor,
    check_positive_float,
    values_on_host,
    values_readable,
)
from posenc_lib.base import PositionalEncoding
from posenc_lib.rope import apply_rope

_SLOWEST_DECAY_LOG = math.log(3.5)
r""":math:`\ln(1/\zeta_0)`: pair 0 has the smallest rate, :math:`\zeta_0 = 0.4 d_h / (1.4 d_h) = 2/7`."""


def xpos_zeta(dim: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    r"""The per-pair decay rates :math:`\zeta_c = (2c + 0.4\,d_h)/(1.4\,d_h)` for pairs :math:`c < d_h/2`.

    Sun et al. 2022, "A Length-Extrapolatable Transformer", §3.2; the same numbers as the ``scale`` buffer of
    rotary-embedding-torch's ``RotaryEmbedding(dim, use_xpos=True)`` and of torchscale's ``XPOS``.

    Args:
        dim: Head width :math:`d_h`, even.
        device: Device of the result (computed there, with no copy from the host).

    Returns:
        float64 tensor of shape ``[dim // 2]``, increasing from :math:`0.4/1.4` towards 1.

    Raises:
        ValueError: If ``dim`` is not an even positive integer.
    """
    dim = check_even_positive_int("dim", dim)
    return (torch.arange(0, dim, 2, dtype=torch.float64, device=device) + 0.4 * dim) / (1.4 * dim)


def xpos_max_offset(*, scale_base: float = 512.0, dtype: torch.dtype = torch.float32) -> int:
    r"""The largest :math:`|p - p_0|` for which every xPos scale is a normal number of ``dtype``.

    :math:`L = \lfloor \gamma \ln(1/\mathrm{tiny}) / \ln(7/2) \rfloor` (see the module docstring): 35 694
    for float32 and bfloat16, 3 966 for float16, 289 519 for float64, with :math:`\gamma = 512`.

    Args:
        scale_base: :math:`\gamma`, a finite number > 0.
        dtype: The floating dtype of the queries or keys.

    Returns:
        :math:`L`, a non-negative integer.

    Raises:
        TypeError: If ``dtype`` is not a floating dtype.
        ValueError: If ``scale_base`` is not a finite positive number.
    """
    scale_base = check_positive_float("scale_base", scale_base)
    dtype = check_floating_dtype("dtype", dtype)
    return math.floor(scale_base * -math.log(torch.finfo(dtype).tiny) / _SLOWEST_DECAY_LOG)


def xpos_scale(dim: int, positions: torch.Tensor, *, scale_base: float = 512.0) -> torch.Tensor:
    r"""The xPos scale :math:`\zeta_c^{\,p/\gamma}` for each position :math:`p` and dimension, interleaved.

    Sun et al. 2022, "A Length-Extrapolatable Transformer". The value of pair :math:`c` is repeated for both
    of its members :math:`2c` and :math:`2c+1`, like ``RotaryEmbedding.get_scale`` in rotary-embedding-torch.
    Positions are used as given: pass them already centred (:func:`apply_xpos` does), and negated for keys.
    The exponent is formed in float64.

    Args:
        dim: Head width :math:`d_h`, even.
        positions: 1-D integer tensor of (signed, centred) positions :math:`p`.
        scale_base: :math:`\gamma` (512 in the paper).

    Returns:
        float64 tensor of shape ``[len(positions), dim]`` on the device of ``positions``.

    Raises:
        TypeError: If ``positions`` is not an integer tensor.
        ValueError: If ``positions`` is not 1-D, ``dim`` or ``scale_base`` is not accepted, or a position
            lies beyond :func:`xpos_max_offset` for float64 (the scale would not be a normal float64).
    """
    check_integer_tensor("positions", positions)
    scale_base = check_positive_float("scale_base", scale_base)
    if positions.ndim != 1:
        raise ValueError(f"positions must be a 1-D integer tensor, got shape {list(positions.shape)}")
    zeta = xpos_zeta(dim, device=positions.device)
    positions = positions.to(torch.int64)
    if values_readable(positions):
        _check_offsets("positions", positions, 0, scale_base, torch.float64)
    return _scale(zeta, positions, scale_base)


def _scale(zeta: torch.Tensor, exponents: torch.Tensor, scale_base: float) -> torch.Tensor:
    """``zeta ** (exponents / scale_base)`` in float64, each pair's value repeated for its two members."""
    return (zeta ** (exponents.to(torch.float64).unsqueeze(-1) / scale_base)).repeat_interleave(2, dim=-1)


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

    The arithmetic runs in at least float32 (float64 angles and exponents) and the results are rounded once
    to the dtypes of ``q`` and ``k``. Any integer positions are accepted, negative ones included, as long as
    they lie within :func:`xpos_max_offset` of the centre (see the module docstring); this function checks
    that, reading the positions once.

    Args:
        q: Queries ``[..., T_q, d_h]``, floating.
        k: Keys ``[..., T_k, d_h]``, floating.
        q_positions: 1-D integer tensor of length ``T_q``.
        k_positions: 1-D integer tensor of length ``T_k``.
        base: RoPE frequency base.
        scale_base: :math:`\gamma` (512 in the paper).
        centre: :math:`p_0`. Default: the middle of the positions given,
            :math:`\lfloor (\min p + \max p + 1)/2 \rfloor` over all query and key positions, which is
            :math:`\lfloor T/2 \rfloor` for positions ``0 .. T-1``, as in rotary-embedding-torch. Fix it
            when keys are scaled once and cached while the sequence grows.

    Returns:
        ``(q', k')`` with the shapes and dtypes of ``q`` and ``k``.

    Raises:
        TypeError: If a tensor has the wrong dtype or ``centre`` is not an integer.
        ValueError: If the shapes do not fit (``d_h`` odd or different for ``q`` and ``k``, positions of the
            wrong length), ``base`` or ``scale_base`` is not a finite positive number, or a position lies
            farther than :func:`xpos_max_offset` from the centre.
    """
    return _xpos(q, k, q_positions, k_positions, base, scale_base, centre, values_readable)


def _xpos(
    q: torch.Tensor,
    k: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    base: float,
    scale_base: float,
    centre: int | None,
    can_check_values: Callable[..., bool],
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply_xpos`, reading the positions for the range check only where ``can_check_values`` says."""
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
    base = check_positive_float("base", base)
    scale_base = check_positive_float("scale_base", scale_base)
    centre = _check_centre(centre)
    q_positions = q_positions.to(device=q.device, dtype=torch.int64)
    k_positions = k_positions.to(device=q.device, dtype=torch.int64)
    centre_tensor = _default_centre(q_positions, k_positions) if centre is None else centre
    if can_check_values(q_positions, k_positions):
        _check_offsets("q_positions", q_positions, centre_tensor, scale_base, q.dtype)
        _check_offsets("k_positions", k_positions, centre_tensor, scale_base, k.dtype)
    rotated_q = _scale_and_rotate(q, q_positions, q_positions - centre_tensor, base, scale_base)
    rotated_k = _scale_and_rotate(k, k_positions, centre_tensor - k_positions, base, scale_base)
    return rotated_q, rotated_k


def _default_centre(q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
    r""":math:`\lfloor (\min p + \max p + 1)/2 \rfloor` over both sets, a 0-d int64 tensor (no value read)."""
    positions = torch.cat((q_positions, k_positions))
    if positions.numel() == 0:
        return positions.new_zeros(())
    lowest, highest = torch.aminmax(positions)
    return torch.div(lowest + highest + 1, 2, rounding_mode="floor")


def _check_offsets(
    name: str, positions: torch.Tensor, centre: torch.Tensor | int, scale_base: float, dtype: torch.dtype
) -> None:
    """Raise a ValueError if a position lies farther than :func:`xpos_max_offset` from ``centre``."""
    if positions.numel() == 0:
        return
    limit = xpos_max_offset(scale_base=scale_base, dtype=dtype)
    farthest = int((positions - centre).abs().max())
    if farthest > limit:
        raise ValueError(
            f"{name} must lie within {limit} positions of the centre p0 = {int(centre)} for {dtype} inputs "
            f"(scale_base={scale_base}), where xPos's scale zeta^((p - p0) / scale_base) is a normal "
            f"{dtype} number; one lies {farthest} away. Keep the positions of one call within a window of "
            f"{2 * limit + 1} (with the default centre), or use float64 inputs."
        )


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
    zeta = xpos_zeta(x.shape[-1], device=x.device)
    scale = _scale(zeta, exponents, scale_base).to(work_dtype)
    rotated = apply_rope(x.to(work_dtype) * scale, positions, base=base, layout="interleaved")
    return rotated.to(x.dtype)


class XPos(PositionalEncoding):
    r"""xPos as the attention's ``rotate`` hook (Sun et al. 2022, "A Length-Extrapolatable Transformer").

    See :func:`apply_xpos`; matches rotary-embedding-torch's ``RotaryEmbedding(head_dim, use_xpos=True)``.
    The paper pairs xPos with blockwise causal attention at inference to extrapolate; that belongs to the
    attention mask, not to this module. The hook checks the positions' distance from the centre only where
    they sit on the CPU (see the module docstring).

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
        """:func:`apply_xpos` at the module's settings; ``head_dim`` must be the last dimension of both."""
        check_floating_tensor("q", q)
        if q.shape[-1] != self.head_dim:
            raise ValueError(
                f"q's last dimension must be head_dim = {self.head_dim}, got shape {list(q.shape)}"
            )
        return _xpos(q, k, q_positions, k_positions, self.base, self.scale_base, self.centre, values_on_host)
