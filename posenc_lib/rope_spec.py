r"""The RoPE of a real model, read from its configuration: :class:`RopeSpec`.

A Hugging Face model does not state its rotary embedding in one place. The head width :math:`d_h` is
``head_dim`` or ``hidden_size // num_attention_heads`` (``qk_rope_head_dim`` for the multi-head latent
attention of DeepSeek-V2/V3, whose rotary part is a separate slice of each head); the rotated width
:math:`r = \lfloor d_h \cdot p \rfloor` comes from ``partial_rotary_factor`` :math:`p` (Phi-2, StableLM) or
``rotary_pct`` (GPT-NeoX, Pythia); the base :math:`b` is ``rope_theta`` (or ``rotary_emb_base``), at the top
level of a ``config.json`` or inside transformers 5.x ``rope_parameters``; the context-extension scaling is
the legacy ``rope_scaling`` dict or ``rope_parameters``, whose ``original_max_position_embeddings``
:math:`L_0` some models keep at the top level (Phi-3) and whose ``factor`` some leave out (Phi-3's LongRoPE).
Which coordinates form a pair (the *layout*, see :mod:`posenc_lib.rope`) is set by the model's code, not its
config: GPT-J, CodeGen, Cohere, GLM, Helium, ERNIE 4.5, DeepSeek-V2 and Llama 4 rotate adjacent pairs
:math:`(x_{2c}, x_{2c+1})`, DeepSeek-V3 does so when ``rope_interleave`` is true (its default), and the Llama
family rotates :math:`(x_c, x_{c + r/2})`.

:meth:`RopeSpec.from_config` reads all of this from a transformers config object or from the plain dict of a
published ``config.json``, following transformers 5.18's own rules (``RotaryEmbeddingConfigMixin`` and each
model's config class), and returns one frozen description whose :meth:`RopeSpec.frequencies` equal
transformers' ``ROPE_INIT_FUNCTIONS`` for that model (computed in float64 here, float32 there).
``posenc_lib/data/rope_configs.json`` holds the RoPE entries of the config.json of well-known models
(:func:`load_rope_configs`); :func:`rope_table` reads each of them and gives one :class:`RopeSummary` per
model (layout, widths, base, scaling, trained and extended context, longest wavelengths), plain data for a
table or a plot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from importlib import resources
from numbers import Real
from typing import Any

import torch

from posenc_lib._validation import check_choice, check_even_positive_int, check_positive_int
from posenc_lib.rope import ROPE_LAYOUTS, RotaryEmbedding
from posenc_lib.rope_scaling import ROPE_TYPES, rope_frequencies

# Model types whose transformers code rotates adjacent pairs (x_2c, x_2c+1): ``rotate_every_two`` (GPT-J,
# CodeGen), a ``rotate_half`` over even/odd coordinates (Cohere, GLM, Helium, ERNIE 4.5) or complex
# multiplication (DeepSeek-V2, Llama 4). Every other model type rotates (x_c, x_c+r/2), the Llama/GPT-NeoX
# layout.
_INTERLEAVED_MODEL_TYPES = frozenset(
    {
        "gptj",
        "codegen",
        "cohere",
        "cohere2",
        "glm",
        "glm4",
        "helium",
        "ernie4_5",
        "deepseek_v2",
        "llama4_text",
    }
)
# Model types whose config has a ``rope_interleave`` flag, with transformers' default for it.
_ROPE_INTERLEAVE_DEFAULTS = {"deepseek_v3": True}
# Model types that hard-code the base in their modeling code and read no ``rope_theta``.
_FIXED_BASE = {"gptj": 10000.0, "codegen": 10000.0}
# ``rope_theta`` that transformers 5.18's config class assumes when config.json has none. A model type not
# listed here must state its base: guessing 10000 for it could be silently wrong.
_DEFAULT_ROPE_THETA = {
    "llama": 10000.0,
    "mistral": 10000.0,
    "qwen2": 10000.0,
    "phi": 10000.0,
    "phi3": 10000.0,
    "gemma": 10000.0,
    "gemma2": 10000.0,
    "stablelm": 10000.0,
    "gpt_neox": 10000.0,
    "deepseek_v3": 10000.0,
    "gpt_oss": 150000.0,
    "glm": 10000.0,
    "glm4": 10000.0,
    "llama4_text": 500000.0,
}
# The rope dict transformers 5.18's config class sets when config.json has none (GptOssConfig.__post_init__).
_DEFAULT_ROPE_PARAMETERS = {
    "gpt_oss": {
        "rope_type": "yarn",
        "factor": 32.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": False,
        "original_max_position_embeddings": 4096,
    }
}
# ``partial_rotary_factor`` that transformers 5.18's config class assumes when config.json has none.
_DEFAULT_PARTIAL_ROTARY_FACTOR = {"phi": 0.5, "stablelm": 0.25, "gpt_neox": 0.25, "glm": 0.5, "glm4": 0.5}
# ``head_dim`` that transformers 5.18's config class assumes when config.json has none (GlmConfig and
# Glm4Config: 128, whatever hidden_size / num_attention_heads is).
_DEFAULT_HEAD_DIM = {"glm": 128, "glm4": 128}
# Phi3Config's default ``original_max_position_embeddings`` (a field of the config class, so transformers
# uses it even when config.json leaves it out).
_DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS = {"phi3": 4096}
# Gemma 3: a per-layer-type RoPE; transformers' defaults for the two bases (global, local).
_GEMMA3_THETAS = (1_000_000.0, 10_000.0)
# Keys of a rope dict that RopeSpec moves into its own fields (base, rotary_dim) or reads as the type.
_MOVED_KEYS = ("rope_type", "type", "rope_theta", "partial_rotary_factor")
# Names of the sizes in config.json, with the aliases of GPT-J-style configs (transformers' attribute_map).
_SIZE_KEYS = {
    "hidden_size": ("hidden_size", "n_embd"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions"),
}


class _ReadOnlyDict(Mapping):
    """A dict that cannot be changed, and can be hashed, copied and pickled (unlike ``MappingProxyType``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)


@dataclass(frozen=True)
class RopeSpec:
    r"""A model's rotary position embedding: widths, base, layout and context-extension scaling.

    Build it with :meth:`from_config` from a model's config, or directly. Pair :math:`c` of the rotated
    :math:`r` leading dimensions of each query and key head turns by :math:`p\,\theta'_c`, where
    :math:`\theta'_c` are the frequencies :math:`\theta_c = b^{-2c/r}` changed by ``scaling``
    (:mod:`posenc_lib.rope_scaling`), and cosine and sine are multiplied by the scaling's attention factor.

    Attributes:
        head_dim: :math:`d_h`, the width of the part of each head that RoPE acts on (for DeepSeek-V3 the
            ``qk_rope_head_dim`` slice).
        rotary_dim: :math:`r \le d_h`, even: the leading dimensions that are rotated.
        base: :math:`b` (``rope_theta``), > 1.
        layout: ``"half"`` or ``"interleaved"`` (:mod:`posenc_lib.rope`).
        scaling: ``None`` for plain RoPE, else a read-only dict with ``rope_type`` and the keys
            :func:`~posenc_lib.rope_scaling.rope_frequencies` takes for that type, every one filled in
            (``original_max_position_embeddings`` always; Phi-3's LongRoPE ``factor``), lists as tuples.
        max_position_embeddings: the model's ``max_position_embeddings``.
    """

    head_dim: int
    rotary_dim: int
    base: float
    layout: str
    scaling: Mapping[str, Any] | None
    max_position_embeddings: int

    def __post_init__(self) -> None:
        head_dim = check_positive_int("head_dim", self.head_dim)
        rotary_dim = check_even_positive_int("rotary_dim", self.rotary_dim)
        if rotary_dim > head_dim:
            raise ValueError(f"rotary_dim must be at most head_dim = {head_dim}, got {rotary_dim}")
        check_choice("layout", self.layout, ROPE_LAYOUTS)
        max_positions = check_positive_int("max_position_embeddings", self.max_position_embeddings)
        scaling = self.scaling
        if scaling is not None:
            if not isinstance(scaling, Mapping):
                raise TypeError(f"scaling must be None or a dict, got {type(scaling).__name__}")
            if "rope_type" not in scaling:
                raise ValueError("scaling must have the key 'rope_type'")
            frozen = {key: tuple(v) if isinstance(v, list) else v for key, v in scaling.items()}
            scaling = None if frozen == {"rope_type": "default"} else _ReadOnlyDict(frozen)
        # Checks base and every scaling key, with the messages of rope_frequencies.
        rope_frequencies(rotary_dim, base=self.base, scaling=scaling)
        object.__setattr__(self, "head_dim", head_dim)
        object.__setattr__(self, "rotary_dim", rotary_dim)
        object.__setattr__(self, "base", float(self.base))
        object.__setattr__(self, "max_position_embeddings", max_positions)
        object.__setattr__(self, "scaling", scaling)

    @property
    def rope_type(self) -> str:
        """``"default"`` for plain RoPE, else ``scaling["rope_type"]``."""
        return "default" if self.scaling is None else self.scaling["rope_type"]

    @classmethod
    def from_config(cls, config: object, *, layer_type: str | None = None) -> RopeSpec:
        """Read the RoPE of a transformers config object or of a ``config.json`` dict.

        The dict is the published file unchanged: legacy ``rope_scaling`` and top-level ``rope_theta`` keys,
        transformers 5.x ``rope_parameters``, GPT-NeoX's ``rotary_pct``/``rotary_emb_base``, GPT-J's
        ``rotary_dim``/``n_embd``/``n_head``/``n_positions``, a multimodal config's ``text_config``. A config
        object is read through its ``to_dict()``. The rules are transformers 5.18's:

        * ``rope_scaling``, when set, is used instead of ``rope_parameters``; keys inside it win over the
          same keys at the top level (``rope_theta``, ``partial_rotary_factor``);
        * the base defaults to the config class's (10000, 150000 for gpt-oss); a model type this module does
          not know must state ``rope_theta``;
        * ``partial_rotary_factor`` defaults to the config class's (0.5 for Phi and GLM, 0.25 for StableLM
          and GPT-NeoX, 1 otherwise) and ``rotary_dim = int(head_dim * partial_rotary_factor)``; a GLM
          config without ``head_dim`` has 128, as GlmConfig assumes;
        * for ``llama3``, ``yarn`` and ``longrope``, a top-level ``original_max_position_embeddings``
          (Phi-3) wins over the dict's, and ``max_position_embeddings`` is the fallback; ``dynamic`` always
          uses ``max_position_embeddings`` as :math:`L_0`, whatever its dict says, as transformers does;
        * a missing (``None``) YaRN or LongRoPE ``factor`` is ``max_position_embeddings /
          original_max_position_embeddings``; YaRN's ``beta_fast``, ``beta_slow``, ``mscale`` and
          ``mscale_all_dim`` set to 0 count as absent; Phi-3's legacy type names ``su`` and ``yarn`` mean
          ``longrope``;
        * Gemma 3 has one RoPE per layer type: pass ``layer_type="full_attention"`` or
          ``"sliding_attention"``.

        Where transformers only logs a warning (a key the scaling type does not use, a factor below 1, a
        list of the wrong length), this raises, since the model would not compute what the config says.

        Raises:
            TypeError: ``config`` is neither a mapping nor an object with ``to_dict()``, or a value has the
                wrong type.
            ValueError: a missing or invalid key, named in the message.
        """
        values = _text_config_values(config)
        model_type = values.get("model_type")
        source, rope = _rope_dict(values, model_type, layer_type)
        max_positions = check_positive_int(
            "config['max_position_embeddings']", _size(values, "max_position_embeddings")
        )
        head_dim = _head_dim(values, model_type)
        rotary_dim = _rotary_dim(values, rope, model_type, head_dim, source)
        base = _base(values, rope, model_type, source)
        scaling = _normalised_scaling(values, rope, model_type, max_positions, source)
        try:
            return cls(
                head_dim=head_dim,
                rotary_dim=rotary_dim,
                base=base,
                layout=_layout(values, model_type),
                scaling=scaling,
                max_position_embeddings=max_positions,
            )
        except (TypeError, ValueError) as error:  # from the scaling's keys: say which dict they are in
            raise type(error)(f"{source}: {error}") from error

    def frequencies(self, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        """``(inv_freq, attention_factor)``: float64 ``[rotary_dim // 2]`` and the factor on cos and sin.

        Equal to transformers' ``ROPE_INIT_FUNCTIONS[rope_type](config, device, seq_len)`` (its model's
        ``compute_default_rope_parameters`` for plain RoPE), computed in float64. ``seq_len`` (largest
        position + 1) matters only for ``dynamic`` and ``longrope``; ``None`` gives their frequencies at
        initialisation.
        """
        return rope_frequencies(self.rotary_dim, base=self.base, scaling=self.scaling, seq_len=seq_len)

    def rotary_embedding(self, seq_len: int | None = None) -> RotaryEmbedding:
        """A :class:`posenc_lib.rope.RotaryEmbedding` with this spec's frequencies at ``seq_len``.

        It acts on ``[..., T, head_dim]`` and rotates the first ``rotary_dim`` dimensions in this spec's
        layout. Its frequencies are fixed: for ``dynamic`` and ``longrope``, which change them with the
        sequence length, pass the length to serve, or use :class:`posenc_lib.hf.HFRotaryEmbedding`, which
        switches as transformers does.
        """
        with torch.device("cpu"):  # also under ``with torch.device("meta")``: the module has no weights
            inv_freq, attention_factor = self.frequencies(seq_len)
        return RotaryEmbedding(
            self.head_dim,
            base=self.base,
            layout=self.layout,
            rotary_dim=self.rotary_dim,
            inv_freq=inv_freq,
            attention_factor=attention_factor,
        )


def rope_layer_types(config: object) -> tuple[str, ...]:
    """The layer types that have a RoPE of their own, or ``()`` when one RoPE serves every layer.

    Gemma 3 gives ``("full_attention", "sliding_attention")``: pass one of them as ``layer_type`` to
    :meth:`RopeSpec.from_config`.
    """
    values = _text_config_values(config)
    return tuple(_nested_rope(values, values.get("model_type"))[1])


def load_rope_configs() -> dict[str, dict[str, Any]]:
    """The RoPE-related entries of well-known models' ``config.json``, by model name.

    Each entry has ``"source"`` (the Hugging Face repository and file the values come from) and the keys
    of that ``config.json`` that set the positional encoding and the sizes needed to build the config
    (``model_type``, ``hidden_size``, ``num_attention_heads``, ...). ``RopeSpec.from_config(entry)`` reads an
    entry directly (the ``source`` and ``note`` keys are ignored).
    """
    text = resources.files("posenc_lib").joinpath("data", "rope_configs.json").read_text(encoding="utf-8")
    return json.loads(text)["models"]


@dataclass(frozen=True)
class RopeSummary:
    r"""The positional encoding of one model in numbers: one row of the "which RoPE does model X use" table.

    Built by :func:`rope_summary` from a :class:`RopeSpec`. With :math:`r` the rotated width, :math:`b` the
    base and pairs :math:`c = 0, \dots, r/2 - 1`, the unscaled frequencies are
    :math:`\theta_c = b^{-2c/r}` and the wavelengths :math:`\lambda_c = 2\pi/\theta_c` (positions per full
    turn of pair :math:`c`); :math:`\theta'_c` are the frequencies after the context-extension scaling.

    Attributes:
        layout: ``"half"`` (pairs :math:`(x_c, x_{c + r/2})`) or ``"interleaved"``
            (:math:`(x_{2c}, x_{2c+1})`).
        head_dim: :math:`d_h`, the width of the part of a head that RoPE acts on.
        rotary_dim: :math:`r`, the rotated leading dimensions.
        base: :math:`b`.
        rope_type: ``"default"`` (plain RoPE) or the scaling's type (``"linear"``, ``"dynamic"``,
            ``"yarn"``, ``"llama3"``, ``"longrope"``).
        scaling: the scaling's parameters other than :math:`L_0`, as ``"key=value"`` separated by commas,
            ``factor`` first (per-pair LongRoPE factors as ``min..max (count)``); ``""`` for plain RoPE.
        attention_factor: the number that multiplies cos and sin at the extended context (1 unless YaRN or
            LongRoPE).
        trained_context: :math:`L_0`, the context the model was trained on before any extension: the
            scaling's ``original_max_position_embeddings`` when it has one (YaRN, Llama 3, LongRoPE; for
            dynamic NTK transformers takes ``max_position_embeddings``), ``max_position_embeddings`` for plain
            RoPE (the length the config states, also for a model whose context was extended by further
            training), and ``None`` for linear scaling, whose config does not state it.
        extended_context: the longest context the config admits: ``max_position_embeddings``, or
            :math:`s L_0` when a scaling by :math:`s` leaves ``max_position_embeddings`` at :math:`L_0` (as
            Qwen2.5's recommended YaRN dict does: 4 x 32768 = 131072).
        longest_wavelength: :math:`\lambda_{r/2-1} = 2\pi/\theta_{r/2-1} = 2\pi\, b^{(r-2)/r}`, the
            wavelength of the slowest pair without scaling (float64).
        longest_scaled_wavelength: :math:`2\pi / \min_c \theta'_c`, the longest wavelength of the
            frequencies the model uses on a sequence of ``extended_context`` tokens (float64): LongRoPE's long
            factors, dynamic NTK's frequencies at that length (unscaled: it scales only past it).
        wavelength_over_trained_context: :math:`\lambda_{r/2-1} / L_0`, how many trained contexts one turn
            of the slowest pair spans (the inverse of the book's :math:`\rho_c = L_0/\lambda_c` for that
            pair): below 1, the slowest pair turns fully within the trained context; ``None`` when
            :math:`L_0` is.
        scaled_wavelength_over_extended_context: ``longest_scaled_wavelength / extended_context``, the same
            ratio for the scaled frequencies and the extended context.
    """

    layout: str
    head_dim: int
    rotary_dim: int
    base: float
    rope_type: str
    scaling: str
    attention_factor: float
    trained_context: int | None
    extended_context: int
    longest_wavelength: float
    longest_scaled_wavelength: float
    wavelength_over_trained_context: float | None
    scaled_wavelength_over_extended_context: float


@dataclass(frozen=True)
class RopeTableRow:
    """One row of :func:`rope_table`: a model (or one layer type of it) and its :class:`RopeSummary`.

    Attributes:
        model: the model's name in ``posenc_lib/data/rope_configs.json``.
        layer_type: the layer type this RoPE serves (``"full_attention"``, ``"sliding_attention"``), or
            ``None`` when one RoPE serves every layer.
        source: where the config values come from (Hugging Face repository and file).
        note: the data file's remark on the entry, ``""`` when it has none.
        summary: the numbers.
    """

    model: str
    layer_type: str | None
    source: str
    note: str
    summary: RopeSummary

    def as_dict(self) -> dict[str, Any]:
        """The row as one flat dict: ``model``, ``layer_type``, the summary's fields, ``source``, ``note``."""
        return {
            "model": self.model,
            "layer_type": self.layer_type,
            **asdict(self.summary),
            "source": self.source,
            "note": self.note,
        }


def rope_summary(spec: RopeSpec) -> RopeSummary:
    r"""The numbers of :class:`RopeSummary` for one model's RoPE, in float64.

    :math:`\lambda_{r/2-1} = 2\pi\, b^{(r-2)/r}` is computed from the formula; the scaled frequencies
    :math:`\theta'_c` are ``spec.frequencies(seq_len=spec.max_position_embeddings)``, which equal
    transformers' for that sequence length.

    Raises:
        TypeError: ``spec`` is not a :class:`RopeSpec`.
    """
    if not isinstance(spec, RopeSpec):
        raise TypeError(f"spec must be a RopeSpec (RopeSpec.from_config(config)), got {type(spec).__name__}")
    trained = _trained_context(spec)
    extended = spec.max_position_embeddings
    factor = None if spec.scaling is None else spec.scaling.get("factor")
    if trained is not None and factor is not None and extended <= trained:
        # A config that adds the scaling without raising max_position_embeddings (Qwen2.5's YaRN): s L0.
        extended = round(float(factor) * trained)
    scaled_inv_freq, attention_factor = spec.frequencies(seq_len=extended)
    longest = 2.0 * math.pi * spec.base ** ((spec.rotary_dim - 2) / spec.rotary_dim)
    longest_scaled = 2.0 * math.pi / float(scaled_inv_freq.min())
    return RopeSummary(
        layout=spec.layout,
        head_dim=spec.head_dim,
        rotary_dim=spec.rotary_dim,
        base=spec.base,
        rope_type=spec.rope_type,
        scaling=_scaling_text(spec.scaling),
        attention_factor=float(attention_factor),
        trained_context=trained,
        extended_context=extended,
        longest_wavelength=longest,
        longest_scaled_wavelength=longest_scaled,
        wavelength_over_trained_context=None if trained is None else longest / trained,
        scaled_wavelength_over_extended_context=longest_scaled / extended,
    )


def rope_table(names: Iterable[str] | None = None) -> list[RopeTableRow]:
    """The :class:`RopeSummary` of every model of :func:`load_rope_configs`, or of the ``names`` given.

    Rows come in the data file's order, whatever the order of ``names``; a model with one RoPE per layer
    type (Gemma 3) has one row per layer type. Each entry is read with :meth:`RopeSpec.from_config`.

    Raises:
        TypeError: ``names`` is a string or not an iterable of strings.
        ValueError: a name that is not in the data file (the message lists the known names).
    """
    configs = load_rope_configs()
    selected = list(configs) if names is None else _check_model_names(names, configs)
    rows = []
    for name in selected:
        entry = configs[name]
        for layer_type in rope_layer_types(entry) or (None,):
            spec = RopeSpec.from_config(entry, layer_type=layer_type)
            rows.append(
                RopeTableRow(
                    model=name,
                    layer_type=layer_type,
                    source=entry["source"],
                    note=entry.get("note", ""),
                    summary=rope_summary(spec),
                )
            )
    return rows


def _check_model_names(names: object, configs: Mapping[str, Any]) -> list[str]:
    """The known models among ``names``, in the data file's order; TypeError/ValueError naming ``names``."""
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(
            f"names must be None or a list of model names (e.g. ['Llama-2-7b']), got {type(names).__name__}"
        )
    wanted = list(names)
    for name in wanted:
        if not isinstance(name, str):
            raise TypeError(f"names must hold model names (str), got {name!r}")
        if name not in configs:
            raise ValueError(f"names: unknown model {name!r}; known models: {', '.join(configs)}")
    return [name for name in configs if name in wanted]


def _trained_context(spec: RopeSpec) -> int | None:
    """:math:`L_0`: see :class:`RopeSummary`."""
    if spec.scaling is None:
        return spec.max_position_embeddings
    return spec.scaling.get("original_max_position_embeddings")


def _scaling_text(scaling: Mapping[str, Any] | None) -> str:
    """The scaling's parameters other than ``rope_type`` and :math:`L_0`, ``factor`` first."""
    if scaling is None:
        return ""
    keys = [key for key in scaling if key not in ("rope_type", "original_max_position_embeddings")]
    keys.sort(key=lambda key: key != "factor")  # stable: the config's order after factor
    return ", ".join(f"{key}={_value_text(scaling[key])}" for key in keys)


def _value_text(value: object) -> str:
    if isinstance(value, tuple):  # LongRoPE's per-pair factors
        return f"{min(value):.4g}..{max(value):.4g} ({len(value)})"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _text_config_values(config: object) -> dict[str, Any]:
    """The config as a dict; for a multimodal config without sizes of its own, its ``text_config``."""
    if isinstance(config, Mapping):
        values = dict(config)
    elif callable(getattr(config, "to_dict", None)) and isinstance(values := config.to_dict(), Mapping):
        values = dict(values)
    else:
        raise TypeError(
            "config must be a transformers config object (with to_dict()) or the dict of a config.json, "
            f"got {type(config).__name__}"
        )
    if "text_config" in values and not _has_size(values, "num_attention_heads"):
        text = values["text_config"]
        if not isinstance(text, Mapping):
            raise TypeError(f"config['text_config'] must be a dict, got {type(text).__name__}")
        values = {"model_type": values.get("model_type"), **text}
    return values


def _has_size(values: Mapping[str, Any], name: str) -> bool:
    return any(values.get(key) is not None for key in _SIZE_KEYS[name])


def _size(values: Mapping[str, Any], name: str) -> object:
    """A size by its transformers name or alias; ValueError naming it when absent."""
    for key in _SIZE_KEYS[name]:
        if values.get(key) is not None:
            return values[key]
    raise ValueError(f"config is missing the key {name!r} (or an alias: {', '.join(_SIZE_KEYS[name][1:])})")


def _head_dim(values: Mapping[str, Any], model_type: object) -> int:
    if values.get("qk_rope_head_dim") is not None:  # multi-head latent attention: the rotary slice
        return check_positive_int("config['qk_rope_head_dim']", values["qk_rope_head_dim"])
    if values.get("head_dim") is not None:
        return check_positive_int("config['head_dim']", values["head_dim"])
    if model_type in _DEFAULT_HEAD_DIM:
        return _DEFAULT_HEAD_DIM[model_type]
    hidden = check_positive_int("config['hidden_size']", _size(values, "hidden_size"))
    heads = check_positive_int("config['num_attention_heads']", _size(values, "num_attention_heads"))
    return hidden // heads


def _nested_rope(values: Mapping[str, Any], model_type: object) -> tuple[str, list[str], dict[str, Any]]:
    """``(config key, layer types with their own RoPE or [], rope dict)``, read as transformers does."""
    key = "rope_scaling" if values.get("rope_scaling") else "rope_parameters"
    raw = values.get(key) or _DEFAULT_ROPE_PARAMETERS.get(model_type, {})
    if not isinstance(raw, Mapping):
        raise TypeError(f"config[{key!r}] must be a dict or null, got {type(raw).__name__}")
    labels = {"full_attention", "sliding_attention", *(values.get("layer_types") or ())}
    nested = [name for name in raw if name in labels]
    if model_type == "gemma3_text" and not nested:
        # Gemma3TextConfig: the legacy flat dict scales the global (full-attention) layers only.
        full = {"rope_type": "default", **raw}
        full.setdefault("rope_theta", values.get("rope_theta") or _GEMMA3_THETAS[0])
        local = {
            "rope_type": "default",
            "rope_theta": values.get("rope_local_base_freq") or _GEMMA3_THETAS[1],
        }
        return (
            "rope_parameters",
            ["full_attention", "sliding_attention"],
            {"full_attention": full, "sliding_attention": local},
        )
    return key, nested, dict(raw)


def _rope_dict(
    values: Mapping[str, Any], model_type: object, layer_type: str | None
) -> tuple[str, dict[str, Any]]:
    """The rope dict that applies, with its name for messages."""
    key, nested, raw = _nested_rope(values, model_type)
    if not nested:
        if layer_type is not None:
            raise ValueError(
                f"layer_type must be None: this config has one RoPE for all layers, got {layer_type!r}"
            )
        return f"config[{key!r}]", raw
    if layer_type is None:
        raise ValueError(
            "this config has one RoPE per layer type; pass layer_type, one of "
            + ", ".join(repr(name) for name in nested)
        )
    check_choice("layer_type", layer_type, nested)
    selected = raw[layer_type]
    if not isinstance(selected, Mapping):
        raise ValueError(f"config[{key!r}][{layer_type!r}] is {selected!r}: layers of that type have no RoPE")
    return f"config[{key!r}][{layer_type!r}]", dict(selected)


def _rope_type(rope: Mapping[str, Any], model_type: object, source: str) -> str:
    def canonical(name: object) -> object:
        return "longrope" if model_type == "phi3" and name in ("su", "yarn") else name

    rope_type = canonical(rope.get("rope_type", rope.get("type", "default")))
    if "type" in rope and "rope_type" in rope and canonical(rope["type"]) != rope_type:
        raise ValueError(
            f"{source}['rope_type'] = {rope['rope_type']!r} and {source}['type'] = {rope['type']!r} "
            "disagree; give one of them"
        )
    return check_choice(f"{source}['rope_type']", rope_type, ROPE_TYPES)


def _base(values: Mapping[str, Any], rope: Mapping[str, Any], model_type: object, source: str) -> float:
    if model_type in _FIXED_BASE:
        return _FIXED_BASE[model_type]
    for name, candidate in (
        (f"{source}['rope_theta']", rope.get("rope_theta")),
        ("config['rope_theta']", values.get("rope_theta")),
        ("config['rotary_emb_base']", values.get("rotary_emb_base")),
    ):
        if candidate is not None:
            if isinstance(candidate, bool) or not isinstance(candidate, Real):
                raise TypeError(f"{name} must be a number, got {candidate!r}")
            if not 1.0 < candidate < float("inf"):
                raise ValueError(f"{name} must be a finite number > 1, got {candidate!r}")
            return float(candidate)
    if model_type in _DEFAULT_ROPE_THETA:
        return _DEFAULT_ROPE_THETA[model_type]
    raise ValueError(
        f"config has no 'rope_theta' (the RoPE base), and its model_type {model_type!r} has no default known "
        "here; add rope_theta to the config"
    )


def _rotary_dim(
    values: Mapping[str, Any], rope: Mapping[str, Any], model_type: object, head_dim: int, source: str
) -> int:
    if model_type in _FIXED_BASE:  # GPT-J and CodeGen name the rotated width itself
        rotary_dim = check_even_positive_int("config['rotary_dim']", values.get("rotary_dim"))
        if rotary_dim > head_dim:
            raise ValueError(
                f"config['rotary_dim'] must be at most the head width {head_dim}, got {rotary_dim}"
            )
        return rotary_dim
    candidates = [
        (f"{source}['partial_rotary_factor']", rope.get("partial_rotary_factor")),
        ("config['partial_rotary_factor']", values.get("partial_rotary_factor")),
        ("config['rotary_pct']", values.get("rotary_pct")),
    ]
    given = [(name, value) for name, value in candidates if value is not None]
    name, partial = (
        given[0] if given else ("partial_rotary_factor", _DEFAULT_PARTIAL_ROTARY_FACTOR.get(model_type, 1.0))
    )
    if isinstance(partial, bool) or not isinstance(partial, Real):
        raise TypeError(f"{name} must be a number in (0, 1], got {partial!r}")
    if not 0.0 < partial <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {partial!r}")
    rotary_dim = int(head_dim * partial)
    if rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(
            f"{name} = {partial} gives int(head_dim * {name}) = {rotary_dim} rotated dimensions for "
            f"head_dim = {head_dim}; it must give an even number >= 2"
        )
    return rotary_dim


def _layout(values: Mapping[str, Any], model_type: object) -> str:
    if model_type in _ROPE_INTERLEAVE_DEFAULTS:
        interleave = values.get("rope_interleave")
        return (
            "interleaved"
            if (_ROPE_INTERLEAVE_DEFAULTS[model_type] if interleave is None else interleave)
            else "half"
        )
    return "interleaved" if model_type in _INTERLEAVED_MODEL_TYPES else "half"


def _normalised_scaling(
    values: Mapping[str, Any],
    rope: Mapping[str, Any],
    model_type: object,
    max_positions: int,
    source: str,
) -> dict[str, Any]:
    """The rope dict as :func:`rope_frequencies` takes it, with the values transformers fills in."""
    rope_type = _rope_type(rope, model_type, source)
    scaling: dict[str, Any] = {"rope_type": rope_type}
    scaling.update(
        (key, value) for key, value in rope.items() if key not in _MOVED_KEYS and value is not None
    )
    original_key = "original_max_position_embeddings"
    if rope_type == "dynamic":
        scaling[original_key] = max_positions  # transformers' dynamic NTK: L0 = max_position_embeddings
    elif rope_type in ("llama3", "yarn", "longrope"):
        if values.get(original_key) is not None:
            scaling[original_key] = values[original_key]
        elif original_key not in scaling:
            scaling[original_key] = _DEFAULT_ORIGINAL_MAX_POSITION_EMBEDDINGS.get(model_type, max_positions)
    if rope_type == "yarn":
        for key in ("beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            if scaling.get(key) == 0:  # transformers reads these with `or` / truthiness: 0 is the default
                del scaling[key]
    # A missing YaRN factor, or a LongRoPE one needed for the attention factor: transformers' ratio.
    if "factor" not in scaling and (
        rope_type == "yarn" or (rope_type == "longrope" and "attention_factor" not in scaling)
    ):
        original = check_positive_int(f"{source}['{original_key}']", scaling[original_key])
        factor = max_positions / original
        if rope_type == "longrope" and factor <= 1.0:
            scaling["attention_factor"] = 1.0  # transformers: no attention scaling without extension
        else:
            scaling["factor"] = factor
    return scaling
