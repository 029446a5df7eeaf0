r"""Which layers of a model have RoPE, with which base, and what else each layer does with positions.

Not every layer of a modern LLM rotates its queries and keys the same way, or at all (misconception 19).
This module reads, from a model's config, what each attention layer does with positions, following
transformers 5.18's modeling code for three families:

**Llama 4: interleaved NoPE layers (iRoPE).** Meta (2025), *The Llama 4 herd: The beginning of a new era of
natively multimodal AI innovation* (blog post, 5 April 2025), names the "iRoPE" architecture: attention
layers without positional embeddings interleaved with RoPE layers, and an attention temperature scaled at
inference time for length generalisation. In transformers (``Llama4TextConfig``, ``Llama4TextAttention``):

* ``no_rope_layers[i] = 1`` means layer :math:`i` **uses** RoPE (the name says the opposite). When the list
  is missing or empty, layer :math:`i` uses RoPE unless :math:`(i + 1)` is a multiple of
  ``no_rope_layer_interval`` (default 4): layers 3, 7, 11, ... are NoPE layers (:func:`llama4_rope_layers`).
* RoPE is applied in complex form, :math:`(x_{2c} + i\,x_{2c+1})\,e^{i p \theta_c}`, i.e. the interleaved
  layout of :mod:`posenc_lib.rope`, with base ``rope_theta`` (500,000 by default) and the config's scaling.
* RoPE layers use chunked attention (``layer_types`` ``"chunked_attention"``): query :math:`i` sees keys
  :math:`j \le i` with :math:`\lfloor j / C \rfloor = \lfloor i / C \rfloor` for the chunk size :math:`C`
  (``attention_chunk_size``, 8192 by default); NoPE layers attend to all earlier tokens
  (``"full_attention"``). With these default ``layer_types``, information from beyond the current chunk
  reaches a token only through the NoPE layers.
* With ``use_qk_norm`` (default true) RoPE layers normalise each rotated query and key head to unit root mean
  square, :math:`x / \sqrt{\overline{x^2} + \epsilon}` (transformers' ``Llama4TextL2Norm``, no learned weight;
  :math:`\epsilon` = ``rms_norm_eps``), after the rotation; NoPE layers do not.
* With ``attn_temperature_tuning`` (default true) NoPE layers multiply their queries by
  :math:`\tau(p) = 1 + \alpha \ln(\lfloor (p + 1)/F \rfloor + 1)` (:func:`llama4_attention_temperature`;
  :math:`F` = ``floor_scale``, 8192, :math:`\alpha` = ``attn_scale``, 0.1): 1 for the first :math:`F - 1`
  tokens, then growing logarithmically, which sharpens the softmax over long contexts (transformers cites
  Nakanishi 2025, *Scalable-Softmax Is Superior for Attention*, arXiv:2501.19399). In transformers
  :math:`p` is the token's index in the sequence and cache (``past_seen_tokens + 0 .. T-1``), not its
  ``position_ids``.

**Gemma 3: two bases.** Gemma Team (2025), *Gemma 3 Technical Report*, arXiv:2503.19786: five local
sliding-window layers for each global layer; the local layers keep RoPE base 10,000 and the global layers
use base 1,000,000 (with linear scaling by 8 in the models with a 128K context). transformers' default layer
pattern: layer :math:`i` is global (``"full_attention"``) when :math:`(i + 1)` is a multiple of
``sliding_window_pattern`` (6), else local (``"sliding_attention"``); ``layer_types`` overrides it, and the
bases come from ``rope_parameters`` per layer type (or the older ``rope_theta`` and ``rope_local_base_freq``),
read by :meth:`posenc_lib.rope_spec.RopeSpec.from_config`.

**Gemma 2: alternating windows, one base.** Gemma Team (2024), *Gemma 2: Improving Open Language Models at a
Practical Size*, arXiv:2408.00118: local sliding-window attention (4096 tokens) and global attention
alternate, every layer with the same RoPE (base 10,000); in transformers layer :math:`i` is local when
:math:`i` is even.

A sliding window of size :math:`W` (``sliding_window``) lets query :math:`i` see keys
:math:`i - W < j \le i`: itself and the :math:`W - 1` tokens before it (transformers'
``sliding_window_overlay``). Windows and chunks count tokens in the order they enter the sequence and cache,
not their positions.

**The same layers in posenc_lib's own decoder.** :class:`LocalRotaryEmbedding` is RoPE in a layer whose
attention is chunked (Llama 4) or windowed (Gemma), and :class:`TemperatureNoPE` is a NoPE layer whose queries
are multiplied by :math:`\tau(p)`; :func:`with_llama4_attention` gives a copy of a
:class:`~posenc_lib.transformer.TinyDecoder` (for instance one built with ``encoding=["rope", "nope"]``) whose
RoPE layers are chunked and whose NoPE layers use the temperature, Llama 4's layout on the course's tiny
model. Both read the positions the attention layer passes to its encoding, which are the tokens' indices in
the sequence and cache unless a caller gives other positions.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
from torch import nn

from posenc_lib._validation import (
    check_choice,
    check_floating_dtype,
    check_integer_tensor,
    check_non_negative_int,
    check_positions_shape,
    check_positive_float,
    check_positive_int,
    values_on_host,
    values_readable,
)
from posenc_lib.nope import NoPE
from posenc_lib.rope import RotaryEmbedding
from posenc_lib.rope_spec import RopeSpec
from posenc_lib.transformer import MultiHeadAttention

LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")
"""The attention types of transformers' ``layer_types`` that this module reads."""

# Defaults of transformers 5.18's config classes, used when a config.json leaves the key out.
_LLAMA4_NO_ROPE_LAYER_INTERVAL = 4
_LLAMA4_ATTENTION_CHUNK_SIZE = 8192
_LLAMA4_FLOOR_SCALE = 8192
_LLAMA4_ATTN_SCALE = 0.1
_GEMMA3_SLIDING_WINDOW_PATTERN = 6
_GEMMA_SLIDING_WINDOW = 4096
# The layer types each model family's code knows.
_FAMILY_LAYER_TYPES = {
    "llama4_text": ("full_attention", "chunked_attention"),
    "gemma2": ("full_attention", "sliding_attention"),
    "gemma3_text": ("full_attention", "sliding_attention"),
}


@dataclass(frozen=True)
class LayerPositioning:
    r"""What one attention layer does with positions.

    Attributes:
        layer_type: ``"full_attention"`` (every earlier token), ``"sliding_attention"`` (the last
            ``sliding_window`` tokens) or ``"chunked_attention"`` (earlier tokens of the same chunk).
        rope: the layer's RoPE (base, widths, layout, scaling), or ``None`` for a layer without positional
            encoding (NoPE).
        sliding_window: :math:`W` for ``"sliding_attention"``, else ``None``.
        chunk_size: :math:`C` for ``"chunked_attention"``, else ``None``.
        temperature: ``(floor_scale, attn_scale)`` when the layer scales its queries by
            :func:`llama4_attention_temperature` (Llama 4's NoPE layers), else ``None``.
        qk_norm: whether queries and keys are normalised to unit root mean square after RoPE (Llama 4's
            RoPE layers).
    """

    layer_type: str
    rope: RopeSpec | None
    sliding_window: int | None = None
    chunk_size: int | None = None
    temperature: tuple[float, float] | None = None
    qk_norm: bool = False

    def __post_init__(self) -> None:
        check_choice("layer_type", self.layer_type, LAYER_TYPES)
        if self.rope is not None and not isinstance(self.rope, RopeSpec):
            raise TypeError(f"rope must be a RopeSpec or None, got {type(self.rope).__name__}")
        for name, needed_by in (("sliding_window", "sliding_attention"), ("chunk_size", "chunked_attention")):
            value = getattr(self, name)
            if self.layer_type == needed_by:
                check_positive_int(name, value)
            elif value is not None:
                raise ValueError(f"{name} must be None for layer_type={self.layer_type!r}, got {value!r}")

    @property
    def base(self) -> float | None:
        """The RoPE base :math:`b` of this layer, ``None`` for a NoPE layer."""
        return None if self.rope is None else self.rope.base

    def attention_mask(self, length: int) -> torch.Tensor:
        r"""Which keys each query may attend to, for ``length`` tokens: bool ``[length, length]``.

        Entry :math:`(i, j)` is true when :math:`j \le i` and, for a sliding window, :math:`i - j < W`; for
        chunked attention, :math:`\lfloor j/C \rfloor = \lfloor i/C \rfloor` (no left padding).
        """
        length = check_non_negative_int("length", length)
        query = torch.arange(length)[:, None]
        key = torch.arange(length)[None, :]
        allowed = key <= query
        if self.sliding_window is not None:
            allowed &= query - key < self.sliding_window
        if self.chunk_size is not None:
            allowed &= query // self.chunk_size == key // self.chunk_size
        return allowed


def llama4_rope_layers(config: object) -> list[bool]:
    """For each layer of a Llama 4 text model, whether it applies RoPE (``False``: a NoPE layer).

    Reads ``no_rope_layers`` (1 = the layer uses RoPE, 0 = it does not) or, when it is missing or empty,
    builds transformers' default: layer :math:`i` uses RoPE unless :math:`(i + 1)` is a multiple of
    ``no_rope_layer_interval`` (default 4).

    Args:
        config: a ``Llama4TextConfig`` or ``Llama4Config`` (its ``text_config`` is read), or the dict of a
            ``config.json``.

    Raises:
        TypeError: ``config`` is neither a dict nor an object with ``to_dict()``, or an entry has the wrong
            type.
        ValueError: not a Llama 4 config, or ``no_rope_layers`` has fewer entries than layers or entries
            other than 0 and 1.
    """
    values = _text_config_values(config)
    _check_model_type(values, ("llama4_text",))
    num_layers = check_positive_int("config['num_hidden_layers']", values.get("num_hidden_layers"))
    flags = values.get("no_rope_layers")
    if not flags:  # transformers: None or [] gives the default pattern
        interval = check_positive_int(
            "config['no_rope_layer_interval']",
            values.get("no_rope_layer_interval", _LLAMA4_NO_ROPE_LAYER_INTERVAL),
        )
        return [(layer + 1) % interval != 0 for layer in range(num_layers)]
    if isinstance(flags, (str, bytes)) or not isinstance(flags, Sequence):
        raise TypeError(f"config['no_rope_layers'] must be a list of 0 and 1, got {type(flags).__name__}")
    if len(flags) < num_layers or any(flag not in (0, 1) or isinstance(flag, float) for flag in flags):
        raise ValueError(
            f"config['no_rope_layers'] must hold 0 or 1 for each of the num_hidden_layers = {num_layers} "
            f"layers (1: the layer uses RoPE), got {list(flags)}"
        )
    return [bool(flag) for flag in flags[:num_layers]]


def llama4_attention_temperature(
    positions: torch.Tensor,
    *,
    floor_scale: float = 8192,
    attn_scale: float = 0.1,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    r"""Llama 4's query scale in NoPE layers, :math:`\tau(p) = 1 + \alpha \ln(\lfloor (p+1)/F \rfloor + 1)`.

    Equal to 1 for :math:`p < F - 1`, then :math:`1 + \alpha \ln 2` up to :math:`p = 2F - 2`, and so on,
    growing like :math:`\alpha \ln(p / F)`. Multiplying the query scales every logit of that query by
    :math:`\tau(p)`, which sharpens the attention of late tokens over many keys. Computed in float64 and cast
    once to ``dtype``; transformers computes it in float32 (``Llama4TextAttention``).

    Args:
        positions: the tokens' indices :math:`p \ge 0` in the sequence and cache, integer, any shape.
        floor_scale: :math:`F` (``floor_scale``, 8192 in Llama 4).
        attn_scale: :math:`\alpha \ge 0` (``attn_scale``, 0.1 in Llama 4).
        dtype: floating dtype of the result.

    Returns:
        :math:`\tau(p)`, same shape as ``positions``.

    Raises:
        TypeError: ``positions`` not an integer tensor, or an argument of the wrong type.
        ValueError: a negative position (checked where values can be read), a non-positive ``floor_scale``
            or a negative or infinite ``attn_scale``.
    """
    check_integer_tensor("positions", positions)
    floor_scale = check_positive_float("floor_scale", floor_scale)
    attn_scale = _check_attn_scale("attn_scale", attn_scale)
    check_floating_dtype("dtype", dtype)
    if positions.numel() and values_readable(positions) and bool((positions < 0).any()):
        raise ValueError(
            "positions must be indices >= 0 in the sequence and cache, got a smallest value "
            f"{int(positions.min())}"
        )
    return _temperature(positions, floor_scale, attn_scale).to(dtype)


def _temperature(positions: torch.Tensor, floor_scale: float, attn_scale: float) -> torch.Tensor:
    """:math:`\\tau(p)` in float64, unchecked."""
    steps = torch.floor((positions.to(torch.float64) + 1.0) / floor_scale)
    return 1.0 + attn_scale * torch.log1p(steps)


def _check_attn_scale(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number >= 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number >= 0, got {value!r} of type {type(value).__name__}")
    if not 0.0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def layer_positioning(config: object) -> list[LayerPositioning]:
    """What each attention layer of a Llama 4, Gemma 2 or Gemma 3 model does with positions.

    One :class:`LayerPositioning` per layer, as transformers 5.18's modeling code reads the config
    (``model_type`` ``"llama4_text"``, ``"gemma2"`` or ``"gemma3_text"``; a multimodal ``"llama4"`` or
    ``"gemma3"`` config is read through its ``text_config``). See the module docstring for each family's
    rules and defaults.

    Args:
        config: a transformers config object or the dict of a ``config.json``.

    Raises:
        TypeError: ``config`` is neither a dict nor an object with ``to_dict()``, or a value has the wrong
            type.
        ValueError: another model type, ``layer_types`` of the wrong length or with a type the family does
            not use, a missing chunk size or window where a layer needs one, or an invalid RoPE entry (from
            :meth:`~posenc_lib.rope_spec.RopeSpec.from_config`). Gemma 3 with ``use_bidirectional_attention``
            (not causal) is refused.
    """
    values = _text_config_values(config)
    model_type = _check_model_type(values, tuple(_FAMILY_LAYER_TYPES))
    num_layers = check_positive_int("config['num_hidden_layers']", values.get("num_hidden_layers"))
    if model_type == "llama4_text":
        return _llama4_layers(values, num_layers)
    if values.get("use_bidirectional_attention"):
        raise ValueError(
            "config['use_bidirectional_attention'] is true: this module describes causal decoders only"
        )
    if model_type == "gemma2":
        default_types = [
            "sliding_attention" if layer % 2 == 0 else "full_attention" for layer in range(num_layers)
        ]
        shared = RopeSpec.from_config(values)
        specs = {"sliding_attention": shared, "full_attention": shared}
    else:
        pattern = check_positive_int(
            "config['sliding_window_pattern']",
            values.get("sliding_window_pattern") or _GEMMA3_SLIDING_WINDOW_PATTERN,
        )
        default_types = [
            "full_attention" if (layer + 1) % pattern == 0 else "sliding_attention"
            for layer in range(num_layers)
        ]
        specs = {
            name: RopeSpec.from_config(values, layer_type=name) for name in _FAMILY_LAYER_TYPES[model_type]
        }
    layer_types = _layer_types(values, model_type, num_layers, default_types)
    window = values.get("sliding_window", _GEMMA_SLIDING_WINDOW)
    return [
        LayerPositioning(
            layer_type,
            specs[layer_type],
            sliding_window=_required_size("sliding_window", window)
            if layer_type == "sliding_attention"
            else None,
        )
        for layer_type in layer_types
    ]


def rotary_bases_and_windows(config: object) -> list[tuple[float | None, int | None]]:
    """``(RoPE base or None, sliding window or None)`` for each layer: :func:`layer_positioning` in brief.

    For Gemma 3's default config: five ``(10000.0, 4096)`` then one ``(1000000.0, None)``, repeated; for
    Llama 4, ``None`` as the base of every NoPE layer (its chunk size is in :func:`layer_positioning`).
    """
    return [(layer.base, layer.sliding_window) for layer in layer_positioning(config)]


def _llama4_layers(values: Mapping[str, Any], num_layers: int) -> list[LayerPositioning]:
    uses_rope = llama4_rope_layers(values)
    default_types = ["chunked_attention" if rope else "full_attention" for rope in uses_rope]
    layer_types = _layer_types(values, "llama4_text", num_layers, default_types)
    rope = RopeSpec.from_config(
        values
    )  # interleaved: Llama 4 multiplies (x_2c + i x_2c+1) by e^(i p theta_c)
    chunk_size = values.get("attention_chunk_size", _LLAMA4_ATTENTION_CHUNK_SIZE)
    tuning = bool(values.get("attn_temperature_tuning", True))
    temperature = (
        check_positive_float("config['floor_scale']", values.get("floor_scale", _LLAMA4_FLOOR_SCALE)),
        _check_attn_scale("config['attn_scale']", values.get("attn_scale", _LLAMA4_ATTN_SCALE)),
    )
    qk_norm = bool(values.get("use_qk_norm", True))
    return [
        LayerPositioning(
            layer_type,
            rope if with_rope else None,
            chunk_size=_required_size("attention_chunk_size", chunk_size)
            if layer_type == "chunked_attention"
            else None,
            temperature=temperature if tuning and not with_rope else None,
            qk_norm=qk_norm and with_rope,
        )
        for layer_type, with_rope in zip(layer_types, uses_rope, strict=True)
    ]


def _required_size(name: str, value: object) -> int:
    if value is None:
        raise ValueError(
            f"config[{name!r}] is null, but a layer of this config needs it (a positive integer)"
        )
    return check_positive_int(f"config[{name!r}]", value)


def _layer_types(
    values: Mapping[str, Any], model_type: str, num_layers: int, default: list[str]
) -> list[str]:
    layer_types = values.get("layer_types")
    if layer_types is None:
        return default
    if isinstance(layer_types, (str, bytes)) or not isinstance(layer_types, Sequence):
        raise TypeError(f"config['layer_types'] must be a list of strings, got {type(layer_types).__name__}")
    if len(layer_types) != num_layers:
        raise ValueError(
            f"config['layer_types'] must have one entry per layer, num_hidden_layers = {num_layers}; "
            f"got {len(layer_types)}"
        )
    for layer_type in layer_types:
        check_choice("each entry of config['layer_types']", layer_type, _FAMILY_LAYER_TYPES[model_type])
    return list(layer_types)


def _check_model_type(values: Mapping[str, Any], accepted: tuple[str, ...]) -> str:
    model_type = values.get("model_type")
    if model_type not in accepted:
        raise ValueError(
            "config['model_type'] must be one of "
            + ", ".join(repr(name) for name in accepted)
            + f" (or a multimodal config whose text_config is); got {model_type!r}"
        )
    return model_type


def _text_config_values(config: object) -> dict[str, Any]:
    """The config as a dict; a multimodal config without layers of its own gives its ``text_config``."""
    if isinstance(config, Mapping):
        values = dict(config)
    elif callable(getattr(config, "to_dict", None)) and isinstance(as_dict := config.to_dict(), Mapping):
        values = dict(as_dict)
    else:
        raise TypeError(
            "config must be a transformers config object (with to_dict()) or the dict of a config.json, "
            f"got {type(config).__name__}"
        )
    text = values.get("text_config")
    if values.get("num_hidden_layers") is None and isinstance(text, Mapping):
        model_type = {"llama4": "llama4_text", "gemma3": "gemma3_text"}.get(values.get("model_type"))
        values = {"model_type": model_type, **text}
    return values


# --- Llama 4's layers on posenc_lib's attention ---------------------------------------------------------


class LocalRotaryEmbedding(RotaryEmbedding):
    r"""RoPE in a layer that attends locally: Llama 4's chunked attention or Gemma's sliding window.

    ``rotate`` is :class:`~posenc_lib.rope.RotaryEmbedding`'s; ``logit_bias`` adds :math:`-\infty` to the
    logit of every key the layer may not see, so that query :math:`m` attends to key :math:`n` only if

    * ``chunk_size`` :math:`C`: :math:`\lfloor n / C \rfloor = \lfloor m / C \rfloor` (same chunk;
      transformers' ``chunked_overlay``, Llama 4's RoPE layers);
    * ``sliding_window`` :math:`W`: :math:`|m - n| < W` (with the causal mask: the query and the
      :math:`W - 1` tokens before it, transformers' ``sliding_window_overlay``).

    A query always sees its own key, so in :class:`~posenc_lib.transformer.MultiHeadAttention` no row of the
    logits is all :math:`-\infty`. :math:`m, n` are the positions the attention layer passes, which are the
    tokens' indices in the sequence and cache by default (the counting transformers uses for its masks).
    With sequences no longer than :math:`C` (or :math:`W`) and positions from 0 the layer computes exactly
    what plain RoPE computes.

    Args:
        dim: head width :math:`d_h` (even).
        chunk_size: :math:`C`; give it or ``sliding_window``, not both.
        sliding_window: :math:`W`.
        base, layout, rotary_dim, inv_freq, attention_factor: as for
            :class:`~posenc_lib.rope.RotaryEmbedding`.

    Raises:
        TypeError, ValueError: for a bad size (not a positive integer), both or neither of ``chunk_size`` and
            ``sliding_window``, or a bad RoPE argument.
    """

    def __init__(
        self,
        dim: int,
        *,
        chunk_size: int | None = None,
        sliding_window: int | None = None,
        base: float = 10000.0,
        layout: str = "half",
        rotary_dim: int | None = None,
        inv_freq: torch.Tensor | None = None,
        attention_factor: float = 1.0,
    ) -> None:
        super().__init__(
            dim,
            base=base,
            layout=layout,
            rotary_dim=rotary_dim,
            inv_freq=inv_freq,
            attention_factor=attention_factor,
        )
        if (chunk_size is None) == (sliding_window is None):
            raise ValueError(
                "give exactly one of chunk_size (Llama 4's chunked attention) and sliding_window, got "
                f"chunk_size={chunk_size!r}, sliding_window={sliding_window!r}"
            )
        self.chunk_size = None if chunk_size is None else check_positive_int("chunk_size", chunk_size)
        self.sliding_window = (
            None if sliding_window is None else check_positive_int("sliding_window", sliding_window)
        )

    def visible(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        """Whether query :math:`m` may see key :math:`n`: bool ``[..., T_q, T_k]``, before the causal mask."""
        m, n = q_positions[..., :, None], k_positions[..., None, :]
        if self.chunk_size is not None:
            return torch.div(m, self.chunk_size, rounding_mode="floor") == torch.div(
                n, self.chunk_size, rounding_mode="floor"
            )
        return (m - n).abs() < self.sliding_window

    def logit_bias(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor:
        check_positions_shape(q_positions, q, -2, "q_positions")  # shapes only: no value is read
        check_positions_shape(k_positions, k, -2, "k_positions")
        visible = self.visible(q_positions.to(q.device), k_positions.to(q.device))
        if visible.ndim == 3:  # [B, T_q, T_k] from positions [B, T]: one mask for every head
            visible = visible[:, None]
        blocked = torch.full((), -math.inf, dtype=q.dtype, device=q.device)
        return torch.where(visible, torch.zeros((), dtype=q.dtype, device=q.device), blocked)

    def extra_repr(self) -> str:
        size = f"chunk_size={self.chunk_size}" if self.chunk_size else f"sliding_window={self.sliding_window}"
        return f"{super().extra_repr()}, {size}"


class TemperatureNoPE(NoPE):
    r"""A NoPE layer with Llama 4's attention temperature: queries multiplied by :math:`\tau(p)`.

    ``rotate`` returns :math:`(\tau(m)\, q, k)` with
    :math:`\tau(m) = 1 + \alpha \ln(\lfloor (m+1)/F \rfloor + 1)` (:func:`llama4_attention_temperature`),
    as transformers' ``Llama4TextAttention`` does in its NoPE layers when ``attn_temperature_tuning`` is on;
    keys are unchanged and there is no other positional term. Every logit of query :math:`m` is multiplied
    by :math:`\tau(m)`: 1 for :math:`m < F - 1`, growing like :math:`\alpha \ln(m / F)` after.
    :math:`m` is the position the attention layer passes, the token's index in the sequence and cache by
    default (transformers uses that index, not ``position_ids``). Computed in float64, multiplied in the
    queries' dtype. With :math:`\alpha = 0` the layer is NoPE exactly.

    Args:
        floor_scale: :math:`F > 0` (8192 in Llama 4).
        attn_scale: :math:`\alpha \ge 0` (0.1 in Llama 4).

    Raises:
        TypeError, ValueError: for a non-positive ``floor_scale`` or a negative or infinite ``attn_scale``;
            ``rotate`` refuses a query position below 0 where the positions are on the CPU (where
            :math:`\tau` is not defined, :math:`-\infty` or NaN).
    """

    def __init__(
        self, *, floor_scale: float = _LLAMA4_FLOOR_SCALE, attn_scale: float = _LLAMA4_ATTN_SCALE
    ) -> None:
        super().__init__()
        self.floor_scale = check_positive_float("floor_scale", floor_scale)
        self.attn_scale = _check_attn_scale("attn_scale", attn_scale)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_positions_shape(q_positions, q, -2, "q_positions")
        check_positions_shape(k_positions, k, -2, "k_positions")
        if q_positions.numel() and values_on_host(q_positions) and bool((q_positions < 0).any()):
            raise ValueError(
                f"q_positions must be >= 0 for the attention temperature, got {int(q_positions.min())}"
            )
        tau = _temperature(q_positions.to(q.device), self.floor_scale, self.attn_scale)
        tau = tau[..., None] if tau.ndim == 1 else tau[:, None, :, None]  # [T, 1] or [B, 1, T, 1]
        return (q * tau).to(q.dtype), k

    def extra_repr(self) -> str:
        return f"floor_scale={self.floor_scale:g}, attn_scale={self.attn_scale:g}"


def with_llama4_attention(
    model: nn.Module,
    *,
    chunk_size: int | None,
    attn_scale: float = 0.0,
    floor_scale: float | None = None,
) -> nn.Module:
    r"""Return a copy of ``model`` with Llama 4's attention: chunked RoPE layers, NoPE with temperature.

    Every attention layer (:class:`~posenc_lib.transformer.MultiHeadAttention`) of the copy whose encoding
    is RoPE gets a :class:`LocalRotaryEmbedding` with the same frequencies, layout and widths and chunks of
    ``chunk_size`` (``None``: plain RoPE, full attention); every one whose encoding is NoPE gets a
    :class:`TemperatureNoPE` with ``attn_scale`` and ``floor_scale`` (``attn_scale=0``: plain NoPE). The
    result depends only on the arguments, not on what a layer had before, so the same call turns a model
    built with ``encoding=["rope", "rope", "rope", "nope"]`` into Llama 4's layout and
    ``chunk_size=None, attn_scale=0`` turns it back. Weights are copied, ``model`` is not modified, and an
    encoding shared by several layers stays shared. Other encodings are refused: Llama 4 has none.

    Args:
        model: a module with RoPE and NoPE attention layers, for example a
            :class:`~posenc_lib.transformer.TinyDecoder`.
        chunk_size: :math:`C` for the RoPE layers, or ``None``.
        attn_scale: :math:`\alpha` of the NoPE layers (Llama 4: 0.1).
        floor_scale: :math:`F` of the NoPE layers; default ``chunk_size`` (Llama 4 uses 8192 for both).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or a bad argument type.
        ValueError: ``model`` has no attention layer, a layer's encoding is neither RoPE nor NoPE, or
            ``attn_scale > 0`` with neither ``floor_scale`` nor ``chunk_size``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if chunk_size is not None:
        chunk_size = check_positive_int("chunk_size", chunk_size)
    attn_scale = _check_attn_scale("attn_scale", attn_scale)
    if floor_scale is None and attn_scale > 0:
        if chunk_size is None:
            raise ValueError("floor_scale must be given when attn_scale > 0 and chunk_size is None")
        floor_scale = chunk_size
    if floor_scale is not None:
        floor_scale = check_positive_float("floor_scale", floor_scale)
    copied = copy.deepcopy(model)
    layers = [(name, m) for name, m in copied.named_modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError("model has no MultiHeadAttention layer")
    replacements: dict[int, nn.Module] = {}
    for name, attention in layers:
        old = attention.positional
        if id(old) not in replacements:
            replacements[id(old)] = _llama4_encoding(name, old, chunk_size, attn_scale, floor_scale)
        attention.positional = replacements[id(old)]
    return copied


def _llama4_encoding(
    name: str, old: nn.Module, chunk_size: int | None, attn_scale: float, floor_scale: float | None
) -> nn.Module:
    if isinstance(old, RotaryEmbedding):
        sizes = {
            "rotary_dim": old.rotary_dim,
            "inv_freq": old.inv_freq,
            "attention_factor": old.attention_factor,
        }
        if chunk_size is None:
            return RotaryEmbedding(old.dim, layout=old.layout, **sizes)
        return LocalRotaryEmbedding(old.dim, chunk_size=chunk_size, layout=old.layout, **sizes)
    if isinstance(old, NoPE):
        if attn_scale == 0:
            return NoPE()
        return TemperatureNoPE(floor_scale=floor_scale, attn_scale=attn_scale)
    raise ValueError(
        f"{name}.positional is {type(old).__name__}: with_llama4_attention changes RoPE and NoPE layers only"
    )
