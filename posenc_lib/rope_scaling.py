r"""RoPE frequencies and the context-extension scalings of Hugging Face transformers.

Rotary position embedding (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
Embedding") rotates pair :math:`c` of a query or key at position :math:`p` by the angle
:math:`p\,\theta_c`, with :math:`\theta_c = b^{-2c/d_h}`, :math:`c = 0, \dots, d_h/2 - 1`, for the base
:math:`b` (``base``, ``rope_theta``) and the rotated width :math:`d_h` (``dim``: the head width, or the
rotated part :math:`r` of it with partial rotary). The notation is the book's.
A model trained on contexts of :math:`L_0` tokens has never seen the angles that longer contexts produce;
the scalings below change the frequencies (and sometimes the size of cos/sin) so that a longer context
maps onto angles the model knows.

Each scaling is one function returning ``(inv_freq, attention_factor)``, as
``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`` (transformers 5.18) does:

* ``inv_freq``: float64 tensor ``[dim // 2]``, the scaled :math:`\theta_c`. It is float64 on purpose:
  angles :math:`p\,\theta_c` formed from float32 frequencies are off by about
  :math:`p \cdot 6 \cdot 10^{-8}` rad (0.06 rad at :math:`p = 10^6`); form them in float64 and cast the
  cos/sin at the end. Hugging Face computes ``inv_freq`` in float32; cast ours to float32 to compare.
* ``attention_factor``: a number that multiplies both cos and sin, so the attention logits
  :math:`q^\top k` are multiplied by its square.

:func:`rope_frequencies` dispatches on a scaling dict with Hugging Face's keys, exactly as found in a
model's ``config.json`` (``rope_scaling``) or in transformers 5.x ``config.rope_parameters``:

=============  =========================================================  ===============================
``rope_type``  required keys                                              optional keys
=============  =========================================================  ===============================
``default``    (none)                                                     (none)
``linear``     ``factor``                                                 (none)
``dynamic``    ``factor``, ``original_max_position_embeddings``           (none)
``yarn``       ``factor``, ``original_max_position_embeddings``           ``beta_fast``, ``beta_slow``,
                                                                          ``mscale``, ``mscale_all_dim``,
                                                                          ``attention_factor``,
                                                                          ``truncate``
``llama3``     ``factor``, ``low_freq_factor``, ``high_freq_factor``,     (none)
               ``original_max_position_embeddings``
``longrope``   ``short_factor``, ``long_factor``,                         ``factor``, ``attention_factor``
               ``original_max_position_embeddings``
=============  =========================================================  ===============================

Every type also accepts ``rope_type`` (or the older key ``type``, which transformers 5.18 still reads),
``rope_theta`` and ``partial_rotary_factor``. How this module differs from Hugging Face in handling the dict:

* ``original_max_position_embeddings`` (:math:`L_0`) is always read from the dict. Hugging Face copies it
  there from the model config for ``yarn``, ``llama3`` and ``longrope`` (Phi-3 keeps it at the top level of
  its config.json), and for ``dynamic`` it does not use it at all: it takes :math:`L_0` from the model
  config's ``max_position_embeddings``. For ``dynamic`` put that value in the dict.
* ``longrope``'s ``factor`` (Phi-3: ``max_position_embeddings / original_max_position_embeddings``) is
  needed only to derive ``attention_factor``; Hugging Face computes it from the model config when it is
  missing, here it must be given unless ``attention_factor`` is.
* ``rope_theta`` is the base when ``base`` is not passed (``base=None``, the default; 10000 when the dict
  has no ``rope_theta`` either), so a transformers 5.x ``rope_parameters`` dict is enough on its own. A
  ``base`` passed as well must equal it (a :class:`ValueError` otherwise): overriding one with the other
  silently would hide a mismatch.
* ``dim`` is always the rotated width :math:`r`. A ``partial_rotary_factor`` other than 1 is a
  :class:`ValueError`, because this function cannot tell whether ``dim`` already has it applied (Hugging
  Face's ``int(head_dim * partial_rotary_factor)``) or not: compute :math:`r` and drop the key, or build a
  :class:`posenc_lib.rope_spec.RopeSpec` from the model's config, which reads the head width and applies the
  factor (also ``rotary_pct`` of GPT-NeoX configs).
* A key that the type does not use is a :class:`ValueError` (Hugging Face only logs it): an ignored key
  could change what the real model computes, e.g. Phi-3.5-MoE's ``short_mscale``/``long_mscale``, which its
  own rotary module applies. An optional key set to ``None`` counts as absent, as in Hugging Face.
* A missing ``rope_type`` is an error (Hugging Face falls back to ``default``), and so are Phi-3's legacy
  names ``su`` and ``yarn`` for LongRoPE, which only ``Phi3Config`` renames; ``proportional`` (Gemma) is
  not implemented.
* Values are checked: factors below 1, non-positive betas/mscales/attention factors, a ``truncate`` that is
  not a bool, short/long factor lists of the wrong length. Hugging Face logs a warning for most of these.
* The functions are pure. Hugging Face's ``dynamic`` and ``longrope`` modules are stateful: they recompute
  ``inv_freq`` in ``forward`` from the largest position seen (see ``dynamic_rope_update``); here the caller
  passes ``seq_len``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch

from posenc_lib._validation import (
    check_choice,
    check_even_positive_int,
    check_positive_float,
    check_positive_int,
)
from posenc_lib.sinusoidal import sinusoidal_frequencies

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")
# The base of RoFormer (Su et al. 2021) and of most configs that leave ``rope_theta`` out.
_DEFAULT_BASE = 10000.0


def _check_base(value: object) -> float:
    """Return ``base`` as a float if it is a finite number > 1, else raise naming it."""
    base = check_positive_float("base", value)
    if base <= 1.0:
        raise ValueError(f"base must be a finite number > 1 (so that base^(-2c/d) decreases), got {base}")
    return base


def _check_factor(name: str, value: object) -> float:
    """Return a scaling factor as a float if it is a finite number >= 1, else raise naming ``name``."""
    factor = check_positive_float(name, value)
    if factor < 1.0:
        raise ValueError(
            f"{name} must be a number >= 1 (it extends the context by that factor), got {factor}"
        )
    return factor


def _check_optional_positive_float(name: str, value: object) -> float | None:
    """Return ``None`` unchanged, else ``value`` checked as a finite positive number."""
    return None if value is None else check_positive_float(name, value)


def _check_optional_seq_len(value: object) -> int | None:
    """Return ``None`` unchanged, else ``seq_len`` checked as a positive integer."""
    return None if value is None else check_positive_int("seq_len", value)


def _check_per_pair_factors(name: str, value: object, num_pairs: int) -> torch.Tensor:
    """Return a list of ``num_pairs`` positive numbers as a float64 tensor, else raise naming ``name``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list of {num_pairs} positive numbers, got {type(value).__name__}")
    if len(value) != num_pairs:
        raise ValueError(
            f"{name} must have one entry per rotated pair, dim // 2 = {num_pairs}; got {len(value)}"
        )
    for index, entry in enumerate(value):
        check_positive_float(f"{name}[{index}]", entry)
    return torch.tensor([float(entry) for entry in value], dtype=torch.float64)


def rope_inverse_frequencies(
    dim: int, *, base: float = 10000.0, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Unscaled RoPE frequencies :math:`\theta_c = b^{-2c/d_h}`, :math:`c = 0, \dots, d_h/2 - 1`.

    From Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding", eq. (15): the
    frequencies of the sinusoid of Vaswani et al. (2017) over the rotated width, computed by
    :func:`posenc_lib.sinusoidal.sinusoidal_frequencies` (the one place where :math:`b^{-2c/d}` is written),
    with the stricter check :math:`b > 1`. Matches ``LlamaRotaryEmbedding.compute_default_rope_parameters``
    in transformers (rope_type ``"default"``) and the frequencies of rotary-embedding-torch, which compute the
    same numbers in float32.

    Args:
        dim: Rotated width :math:`d_h` (the head width, or the rotated part of it), even.
        base: :math:`b`, the ``rope_theta`` of Hugging Face configs (10000 in the paper,
            500000 in Llama 3).
        device: Device of the result (computed there, with no copy from the host).

    Returns:
        float64 tensor of shape ``[dim // 2]``, decreasing from 1.

    Raises:
        TypeError: ``dim`` is not an integer or ``base`` not a number.
        ValueError: ``dim`` is not even and positive, or ``base`` is not a finite number > 1.
    """
    return sinusoidal_frequencies(check_even_positive_int("dim", dim), base=_check_base(base), device=device)


def linear_scaling(dim: int, *, base: float = 10000.0, factor: float) -> tuple[torch.Tensor, float]:
    r"""Position Interpolation: every frequency divided by the factor, :math:`\theta'_c = \theta_c / s`.

    From Chen et al. 2023, "Extending Context Window of Large Language Models via Positional
    Interpolation" (and kaiokendev's SuperHOT, 2023). The paper scales positions, :math:`p \mapsto p/s`;
    since the angle is :math:`p\,\theta_c`, dividing the frequencies is the same thing. Matches
    ``ROPE_INIT_FUNCTIONS["linear"]`` in transformers.

    Args:
        dim: Rotated width :math:`d_h`, even.
        base: Frequency base (``rope_theta``).
        factor: :math:`s \ge 1`, the context-extension factor (``factor``).

    Returns:
        ``(inv_freq, attention_factor)``: float64 tensor ``[dim // 2]`` and 1.0.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``dim`` is not even and positive, ``base`` not > 1, or ``factor`` < 1.
    """
    factor = _check_factor("factor", factor)
    return rope_inverse_frequencies(dim, base=base) / factor, 1.0


def dynamic_ntk_scaling(
    dim: int,
    *,
    base: float = 10000.0,
    factor: float,
    original_max_position_embeddings: int,
    seq_len: int | None = None,
) -> tuple[torch.Tensor, float]:
    r"""Dynamic NTK-aware scaling: a larger base once the sequence is longer than :math:`L_0`.

    NTK-aware scaling (bloc97 2023, "NTK-Aware Scaled RoPE allows LLaMA models to have extended (8k+)
    context size without any fine-tuning", Reddit r/LocalLLaMA) raises the base instead of dividing every
    frequency, so the highest frequencies barely move and the lowest are interpolated; with
    :math:`b' = b \cdot \alpha^{d_h/(d_h-2)}` the lowest frequency is divided by exactly :math:`\alpha`.
    The dynamic form (emozilla 2023, "Dynamically Scaled RoPE further increases performance of long context
    LLaMA with zero fine-tuning", Reddit r/LocalLLaMA) picks :math:`\alpha` from the current length
    :math:`T`:

    .. math::

        b' = b \cdot \left(\frac{s\,T}{L_0} - (s - 1)\right)^{d_h/(d_h-2)}
        \quad \text{if } T > L_0, \qquad \theta'_c = b'^{-2c/d_h},

    and the unscaled frequencies for :math:`T \le L_0` (or no ``seq_len``). Matches
    ``ROPE_INIT_FUNCTIONS["dynamic"]`` in transformers, with one difference: Hugging Face takes
    :math:`L_0` from the model config's ``max_position_embeddings``, this function from
    ``original_max_position_embeddings``. Hugging Face's rotary module recomputes the frequencies whenever
    the longest position seen grows, and returns to the unscaled ones when a shorter input comes; this
    function is pure, the caller passes ``seq_len``. With ``dim == 2`` the only frequency is
    :math:`b'^{0} = 1` whatever the base, so it is returned unchanged (Hugging Face divides by
    zero in the exponent there).

    Args:
        dim: Rotated width :math:`d_h`, even.
        base: Frequency base (``rope_theta``).
        factor: :math:`s \ge 1` (``factor``).
        original_max_position_embeddings: :math:`L_0`, the context length the model was trained on.
        seq_len: :math:`T`, the current sequence length (largest position + 1); ``None`` means
            :math:`L_0`, as at Hugging Face's initialisation.

    Returns:
        ``(inv_freq, attention_factor)``: float64 tensor ``[dim // 2]`` and 1.0.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range (``factor`` < 1, non-positive lengths, odd ``dim``, ``base``
            not > 1).
    """
    dim = check_even_positive_int("dim", dim)
    base = _check_base(base)
    factor = _check_factor("factor", factor)
    original_length = check_positive_int("original_max_position_embeddings", original_max_position_embeddings)
    seq_len = _check_optional_seq_len(seq_len)
    if seq_len is None or seq_len <= original_length or dim == 2:
        return rope_inverse_frequencies(dim, base=base), 1.0
    alpha = factor * seq_len / original_length - (factor - 1.0)
    return rope_inverse_frequencies(dim, base=base * alpha ** (dim / (dim - 2))), 1.0


def _yarn_correction_index(rotations: float, dim: int, base: float, original_length: int) -> float:
    r"""Pair index :math:`c` whose wavelength fits ``rotations`` times into :math:`L_0` (not rounded).

    Solves :math:`\rho_c = L_0 \theta_c / (2\pi) = \beta` for :math:`c`, with :math:`\beta` = ``rotations``:
    :math:`c = d_h \ln(L_0 / (2\pi \beta)) / (2 \ln b)`.
    """
    return dim * math.log(original_length / (2.0 * math.pi * rotations)) / (2.0 * math.log(base))


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    r"""YaRN's :math:`0.1 \cdot \kappa \ln s + 1` for :math:`s > 1`, and 1 for :math:`s \le 1`."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_scaling(
    dim: int,
    *,
    base: float = 10000.0,
    factor: float,
    original_max_position_embeddings: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
    attention_factor: float | None = None,
    truncate: bool = True,
) -> tuple[torch.Tensor, float]:
    r"""YaRN: NTK-by-parts interpolation plus an attention temperature.

    From Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language Models". Pair
    :math:`c` turns :math:`\rho_c = L_0\,\theta_c / (2\pi)` times over the training context. Pairs that turn
    often (:math:`\rho_c > \beta_\mathrm{fast}`, the high frequencies) are left alone, pairs that turn less
    than :math:`\beta_\mathrm{slow}` times (the low frequencies) are interpolated like Position
    Interpolation, and a ramp joins them. As in Hugging Face and in the authors' code, the ramp is linear
    in the pair index between the indices where :math:`\rho_c = \beta_\mathrm{fast}` and
    :math:`\rho_c = \beta_\mathrm{slow}`:

    .. math::

        c(\beta) = \frac{d_h \ln(L_0 / (2\pi \beta))}{2 \ln b}, \quad
        c_\mathrm{low} = \max(\lfloor c(\beta_\mathrm{fast}) \rfloor, 0), \quad
        c_\mathrm{high} = \min(\lceil c(\beta_\mathrm{slow}) \rceil, d_h - 1),

        \mu_c = \mathrm{clip}\left(\frac{c - c_\mathrm{low}}{c_\mathrm{high} - c_\mathrm{low}}, 0, 1\right),
        \quad \theta'_c = (1 - \mu_c)\,\theta_c + \mu_c\,\theta_c / s.

    The paper defines the ramp linear in the number of turns :math:`\rho_c` itself (its
    :math:`\gamma(r) = (r - \alpha)/(\beta - \alpha)`), i.e. exponential in :math:`c`, and does not round;
    the floor/ceil is ``truncate=True`` (``truncate=False``, used by gpt-oss, keeps the real bounds). The
    upper clamp is :math:`d_h - 1` in Hugging Face although pair indices stop at :math:`d_h/2 - 1`; it is
    kept so that the slope matches. When :math:`c_\mathrm{high} = c_\mathrm{low}` the ramp is a step (pairs
    above :math:`c_\mathrm{low}` interpolated), as Hugging Face's singularity guard makes it.

    The attention factor is the paper's :math:`\sqrt{1/t} = 0.1 \ln s + 1` (1 for :math:`s \le 1`), unless
    ``attention_factor`` is given, or both ``mscale`` (:math:`\kappa`) and ``mscale_all_dim``
    (:math:`\kappa_\mathrm{all}`) are, which gives
    :math:`(0.1\,\kappa \ln s + 1) / (0.1\,\kappa_\mathrm{all} \ln s + 1)` (DeepSeek-V2/V3). A lone
    ``mscale`` or ``mscale_all_dim`` is ignored, as in Hugging Face. DeepSeek's attention additionally
    multiplies its softmax scale by :math:`(0.1\,\kappa_\mathrm{all} \ln s + 1)^2`; that lives in the
    attention module, not here.

    Matches ``ROPE_INIT_FUNCTIONS["yarn"]`` in transformers (whose ``beta_fast``/``beta_slow`` of 0 also
    mean the defaults; here they must be positive).

    Args:
        dim: Rotated width :math:`d_h`, even.
        base: Frequency base (``rope_theta``).
        factor: :math:`s \ge 1` (``factor``).
        original_max_position_embeddings: :math:`L_0`, the context length the model was trained on.
        beta_fast: :math:`\beta_\mathrm{fast}`, turns above which a pair is not scaled (default 32).
        beta_slow: :math:`\beta_\mathrm{slow}`, turns below which a pair is fully interpolated (default 1);
            at most ``beta_fast``.
        mscale: :math:`\kappa`, see above.
        mscale_all_dim: :math:`\kappa_\mathrm{all}`, see above.
        attention_factor: Overrides the computed attention factor.
        truncate: Round the ramp bounds outward to integers (default, as in the paper's code).

    Returns:
        ``(inv_freq, attention_factor)``: float64 tensor ``[dim // 2]`` and a float.

    Raises:
        TypeError: An argument has the wrong type (``truncate`` must be a bool).
        ValueError: An argument is out of range, ``beta_fast < beta_slow``, or :math:`L_0` is so small
            (below about :math:`2\pi\beta_\mathrm{slow}`) or so large that the ramp bounds cross.
    """
    dim = check_even_positive_int("dim", dim)
    base = _check_base(base)
    factor = _check_factor("factor", factor)
    original_length = check_positive_int("original_max_position_embeddings", original_max_position_embeddings)
    beta_fast = check_positive_float("beta_fast", beta_fast)
    beta_slow = check_positive_float("beta_slow", beta_slow)
    if beta_fast < beta_slow:
        raise ValueError(
            f"beta_fast must be >= beta_slow, got beta_fast={beta_fast} and beta_slow={beta_slow}"
        )
    mscale = _check_optional_positive_float("mscale", mscale)
    mscale_all_dim = _check_optional_positive_float("mscale_all_dim", mscale_all_dim)
    attention_factor = _check_optional_positive_float("attention_factor", attention_factor)
    if not isinstance(truncate, bool):
        raise TypeError(f"truncate must be a bool (True or False), got {truncate!r}")

    low = _yarn_correction_index(beta_fast, dim, base, original_length)
    high = _yarn_correction_index(beta_slow, dim, base, original_length)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if high < low:
        raise ValueError(
            f"original_max_position_embeddings={original_length} leaves no YaRN ramp for dim={dim}, "
            f"base={base}, beta_fast={beta_fast}, beta_slow={beta_slow} (bounds {low} > {high}); it must be "
            f"at least about 2*pi*beta_slow = {2 * math.pi * beta_slow:.1f}"
        )
    pair_index = torch.arange(dim // 2, dtype=torch.float64)
    if high > low:
        ramp = ((pair_index - low) / (high - low)).clamp(0.0, 1.0)
    else:
        ramp = (pair_index > low).to(torch.float64)
    theta = rope_inverse_frequencies(dim, base=base)
    inv_freq = (1.0 - ramp) * theta + ramp * (theta / factor)

    if attention_factor is None:
        if mscale is not None and mscale_all_dim is not None:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    return inv_freq, attention_factor


def llama3_scaling(
    dim: int,
    *,
    base: float = 10000.0,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_max_position_embeddings: int,
) -> tuple[torch.Tensor, float]:
    r"""Llama 3.1's scaling: interpolate by wavelength, with a smooth band between.

    Used by Llama 3.1 and 3.2 (Meta 2024; the model family is described in Grattafiori et al. 2024, "The
    Llama 3 Herd of Models", but the formula is only in Meta's reference code, ``apply_scaling`` in
    llama-models). With wavelength :math:`\lambda_c = 2\pi/\theta_c`, turns :math:`\rho_c = L_0/\lambda_c`
    over the training context, :math:`f_\mathrm{low}` = ``low_freq_factor`` and :math:`f_\mathrm{high}` =
    ``high_freq_factor``:

    .. math::

        \theta'_c = \begin{cases}
            \theta_c & \lambda_c < L_0 / f_\mathrm{high} \\
            \theta_c / s & \lambda_c > L_0 / f_\mathrm{low} \\
            (1 - \mu_c)\,\theta_c + \mu_c\,\theta_c / s,\quad
            \mu_c = \dfrac{f_\mathrm{high} - \rho_c}{f_\mathrm{high} - f_\mathrm{low}} & \text{otherwise.}
        \end{cases}

    The band is a ramp linear in the turns :math:`\rho_c`, the form of the YaRN paper's ramp with
    :math:`\alpha = f_\mathrm{low}`, :math:`\beta = f_\mathrm{high}`; there is no attention factor.
    Llama 3.1: :math:`s = 8`, :math:`f_\mathrm{low} = 1`, :math:`f_\mathrm{high} = 4`, :math:`L_0 = 8192`,
    :math:`b = 500\,000`. Matches
    ``ROPE_INIT_FUNCTIONS["llama3"]`` in transformers.

    Args:
        dim: Rotated width :math:`d_h`, even.
        base: Frequency base (``rope_theta``).
        factor: :math:`s \ge 1` (``factor``).
        low_freq_factor: :math:`f_\mathrm{low} > 0`: wavelengths longer than :math:`L_0/f_\mathrm{low}` are
            fully interpolated.
        high_freq_factor: :math:`f_\mathrm{high} > f_\mathrm{low}`: wavelengths shorter than
            :math:`L_0/f_\mathrm{high}` are kept.
        original_max_position_embeddings: :math:`L_0`, the context length the model was trained on.

    Returns:
        ``(inv_freq, attention_factor)``: float64 tensor ``[dim // 2]`` and 1.0.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range, or ``high_freq_factor <= low_freq_factor``.
    """
    factor = _check_factor("factor", factor)
    low_freq_factor = check_positive_float("low_freq_factor", low_freq_factor)
    high_freq_factor = check_positive_float("high_freq_factor", high_freq_factor)
    if high_freq_factor <= low_freq_factor:
        raise ValueError(
            f"high_freq_factor must be > low_freq_factor, got high_freq_factor={high_freq_factor} and "
            f"low_freq_factor={low_freq_factor}"
        )
    original_length = check_positive_int("original_max_position_embeddings", original_max_position_embeddings)
    theta = rope_inverse_frequencies(dim, base=base)
    wavelength = 2.0 * math.pi / theta
    smooth = (original_length / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    banded = (1.0 - smooth) * theta / factor + smooth * theta
    inv_freq = torch.where(
        wavelength < original_length / high_freq_factor,
        theta,
        torch.where(wavelength > original_length / low_freq_factor, theta / factor, banded),
    )
    return inv_freq, 1.0


def longrope_scaling(
    dim: int,
    *,
    base: float = 10000.0,
    short_factor: Sequence[float],
    long_factor: Sequence[float],
    original_max_position_embeddings: int,
    factor: float | None = None,
    attention_factor: float | None = None,
    seq_len: int | None = None,
) -> tuple[torch.Tensor, float]:
    r"""LongRoPE as used by Phi-3: one rescale factor per pair, short or long by sequence length.

    From Ding et al. 2024, "LongRoPE: Extending LLM Context Window Beyond 2 Million Tokens", as used by
    the Phi-3 family (Abdin et al. 2024, "Phi-3 Technical Report"; not Phi-2). The paper finds per-pair
    factors :math:`e_c` by evolutionary search (and also leaves the first positions unscaled, which
    Phi-3 does not); Phi-3 ships two lists and switches between them at :math:`L_0`:

    .. math::

        \theta'_c = \frac{\theta_c}{e_c}, \qquad e = \begin{cases}
            \texttt{long\_factor} & T > L_0 \\
            \texttt{short\_factor} & T \le L_0 \text{ or no } T.
        \end{cases}

    The attention factor, from Phi-3's code rather than the paper, is
    :math:`\sqrt{1 + \ln s / \ln L_0}` for :math:`s > 1` (1 otherwise), where :math:`s` = ``factor`` is
    ``max_position_embeddings / original_max_position_embeddings`` (131072 / 4096 = 32 for Phi-3-mini-128k),
    unless ``attention_factor`` is given. Because of the switch, keys cached while :math:`T \le L_0` were
    rotated with the short factors and stay so after the switch (Hugging Face recomputes only the new
    positions' cos/sin). Matches ``ROPE_INIT_FUNCTIONS["longrope"]`` in transformers, which reads
    :math:`s` from the model config when ``factor`` is missing.

    Args:
        dim: Rotated width :math:`d_h`, even.
        base: Frequency base (``rope_theta``).
        short_factor: ``dim // 2`` positive numbers, used up to :math:`L_0`.
        long_factor: ``dim // 2`` positive numbers, used beyond :math:`L_0`.
        original_max_position_embeddings: :math:`L_0 \ge 2`, the context length the model was trained on.
        factor: :math:`s \ge 1`; required unless ``attention_factor`` is given.
        attention_factor: Overrides the computed attention factor.
        seq_len: :math:`T`, the current sequence length (largest position + 1).

    Returns:
        ``(inv_freq, attention_factor)``: float64 tensor ``[dim // 2]`` and a float.

    Raises:
        TypeError: An argument has the wrong type (the factor lists must be lists of numbers).
        ValueError: An argument is out of range, a list has not ``dim // 2`` entries, or neither
            ``factor`` nor ``attention_factor`` is given.
    """
    theta = rope_inverse_frequencies(dim, base=base)
    short = _check_per_pair_factors("short_factor", short_factor, theta.numel())
    long = _check_per_pair_factors("long_factor", long_factor, theta.numel())
    original_length = check_positive_int("original_max_position_embeddings", original_max_position_embeddings)
    if original_length < 2:
        raise ValueError(f"original_max_position_embeddings must be >= 2 (ln L0 > 0), got {original_length}")
    factor = None if factor is None else _check_factor("factor", factor)
    attention_factor = _check_optional_positive_float("attention_factor", attention_factor)
    seq_len = _check_optional_seq_len(seq_len)
    if attention_factor is None:
        if factor is None:
            raise ValueError(
                "longrope needs 'factor' (max_position_embeddings / original_max_position_embeddings) or "
                "'attention_factor' to set the attention factor; got neither"
            )
        attention_factor = (
            1.0 if factor <= 1.0 else math.sqrt(1.0 + math.log(factor) / math.log(original_length))
        )
    rescale = long if seq_len is not None and seq_len > original_length else short
    return theta / rescale, attention_factor


def _default_scaling(dim: int, *, base: float = 10000.0) -> tuple[torch.Tensor, float]:
    """The unscaled frequencies in the ``(inv_freq, attention_factor)`` form of the scalings."""
    return rope_inverse_frequencies(dim, base=base), 1.0


# rope_type -> (function, required keys, optional keys); the keys are the functions' keyword arguments.
_SCALINGS: dict[str, tuple[Callable[..., tuple[torch.Tensor, float]], tuple[str, ...], tuple[str, ...]]] = {
    "default": (_default_scaling, (), ()),
    "linear": (linear_scaling, ("factor",), ()),
    "dynamic": (dynamic_ntk_scaling, ("factor", "original_max_position_embeddings"), ()),
    "yarn": (
        yarn_scaling,
        ("factor", "original_max_position_embeddings"),
        ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor", "truncate"),
    ),
    "llama3": (
        llama3_scaling,
        ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
        (),
    ),
    "longrope": (
        longrope_scaling,
        ("short_factor", "long_factor", "original_max_position_embeddings"),
        ("factor", "attention_factor"),
    ),
}
# Keys every rope_type accepts; rope_frequencies handles them itself.
_COMMON_KEYS = ("rope_type", "type", "rope_theta", "partial_rotary_factor")
# The types whose frequencies depend on the current sequence length.
_LENGTH_DEPENDENT = ("dynamic", "longrope")


def _scaling_rope_type(scaling: Mapping[str, object]) -> str:
    """Read ``rope_type`` (or the older ``type``) from a scaling dict and check it."""
    if "rope_type" not in scaling and "type" not in scaling:
        raise ValueError(
            "scaling must have the key 'rope_type' (or the older 'type'), one of "
            + ", ".join(repr(name) for name in ROPE_TYPES)
        )
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if "type" in scaling and scaling["type"] != rope_type:
        raise ValueError(
            f"scaling['rope_type'] = {rope_type!r} and scaling['type'] = {scaling['type']!r} disagree; "
            "give one of them"
        )
    return check_choice("scaling['rope_type']", rope_type, ROPE_TYPES)


def rope_frequencies(
    dim: int,
    *,
    base: float | None = None,
    scaling: Mapping[str, object] | None = None,
    seq_len: int | None = None,
) -> tuple[torch.Tensor, float]:
    r"""RoPE frequencies for a Hugging Face ``rope_scaling`` / ``rope_parameters`` dict.

    Dispatches to :func:`rope_inverse_frequencies` (``scaling`` is ``None`` or has ``rope_type``
    ``"default"``), :func:`linear_scaling`, :func:`dynamic_ntk_scaling`, :func:`yarn_scaling`,
    :func:`llama3_scaling` or :func:`longrope_scaling`, passing the dict's keys as keyword arguments. The
    module docstring lists the keys of each type and where this differs from Hugging Face
    (``original_max_position_embeddings`` always comes from the dict, ``dim`` is the rotated width, unknown
    keys are errors). Matches ``ROPE_INIT_FUNCTIONS[rope_type]`` of transformers 5.18 and, for
    ``default``, ``LlamaRotaryEmbedding.compute_default_rope_parameters``. To start from a whole model
    config (head width, partial rotary, base and scaling read for you), use
    :meth:`posenc_lib.rope_spec.RopeSpec.from_config`.

    Args:
        dim: Rotated width :math:`r`, even (the head width :math:`d_h` unless the model rotates only part of
            each head).
        base: Frequency base :math:`b`. ``None`` (default) takes ``scaling["rope_theta"]``, or 10000 if the
            dict has none; a number must equal ``scaling["rope_theta"]`` when both are given.
        scaling: ``None`` (plain RoPE) or the scaling dict, e.g. Llama 3.1's ``{"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}``.
        seq_len: Current sequence length (largest position + 1); used by ``dynamic`` and ``longrope``,
            checked and ignored by the other types.

    Returns:
        ``(inv_freq, attention_factor)``: float64 tensor ``[dim // 2]`` and the factor that multiplies
        cos and sin.

    Raises:
        TypeError: ``scaling`` is not a dict, or a value has the wrong type.
        ValueError: Unknown ``rope_type``, a missing required key, a key the type does not use,
            ``rope_theta`` different from ``base``, a ``partial_rotary_factor`` other than 1, or a value out
            of range.
    """
    dim = check_even_positive_int("dim", dim)
    if base is not None:
        base = _check_base(base)
    seq_len = _check_optional_seq_len(seq_len)
    if scaling is None:
        return _default_scaling(dim, base=_DEFAULT_BASE if base is None else base)
    if not isinstance(scaling, Mapping):
        raise TypeError(
            f"scaling must be None or a dict of Hugging Face RoPE parameters, got {type(scaling).__name__}"
        )
    rope_type = _scaling_rope_type(scaling)
    function, required, optional = _SCALINGS[rope_type]

    if scaling.get("rope_theta") is not None:
        rope_theta = check_positive_float("scaling['rope_theta']", scaling["rope_theta"])
        if base is None:
            base = _check_base(rope_theta)
        elif rope_theta != base:
            raise ValueError(
                f"scaling['rope_theta'] = {rope_theta} differs from base = {base}; give one of them "
                "(base=None takes scaling['rope_theta'])"
            )
    base = _DEFAULT_BASE if base is None else base
    if scaling.get("partial_rotary_factor") is not None:
        partial = check_positive_float("scaling['partial_rotary_factor']", scaling["partial_rotary_factor"])
        if partial > 1.0:
            raise ValueError(f"scaling['partial_rotary_factor'] must be in (0, 1], got {partial}")
        if partial != 1.0:
            raise ValueError(
                f"scaling['partial_rotary_factor'] = {partial}: rope_frequencies takes the rotated width "
                "itself as dim, so it cannot apply the factor; pass dim = int(head_dim * "
                "partial_rotary_factor) without the key, or use posenc_lib.rope_spec.RopeSpec.from_config"
            )

    accepted = ", ".join(repr(key) for key in (*required, *optional, *_COMMON_KEYS))
    for key in scaling:
        if key not in required and key not in optional and key not in _COMMON_KEYS:
            raise ValueError(
                f"scaling has the key {key!r}, which rope_type {rope_type!r} does not use; "
                f"accepted: {accepted}"
            )
    for key in required:
        if scaling.get(key) is None:
            raise ValueError(
                f"scaling is missing the key {key!r} (or it is None), required by rope_type {rope_type!r}; "
                "required: " + ", ".join(repr(name) for name in required)
            )

    arguments = {key: scaling[key] for key in (*required, *optional) if scaling.get(key) is not None}
    if rope_type in _LENGTH_DEPENDENT:
        arguments["seq_len"] = seq_len
    return function(dim, base=base, **arguments)
