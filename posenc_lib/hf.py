r"""A drop-in ``rotary_emb`` for Hugging Face transformers models, with its angles formed in float64.

A transformers decoder computes RoPE's cosines and sines once per forward pass, in one module
(``model.model.rotary_emb`` for Llama, Mistral, Qwen2, Phi-3, Gemma...; ``model.gpt_neox.rotary_emb``
for GPT-NeoX and Pythia), and hands them to every attention layer. That module forms the angles
:math:`p\,\theta_c` as a float32 product: at position :math:`p \approx 2^{20}` the float32 angle is off by
up to half its last place, :math:`2^{20} \cdot 2^{-24} = 0.06` rad, so cosines and sines are off by up to
about 0.06. :class:`HFRotaryEmbedding` replaces it: the same ``forward(x, position_ids) -> (cos, sin)``, in
the same shapes and dtype, with the angles formed in float64 from :class:`posenc_lib.rope_spec.RopeSpec`'s
float64 frequencies and rounded once, to ``x``'s dtype, at the end::

    model.model.rotary_emb = HFRotaryEmbedding(model.config)

It works on transformers' models and configs without importing transformers (a config is read through its
``to_dict()``), so transformers stays an optional dependency; ``import posenc_lib`` does not import this
module.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc_lib._validation import check_floating_tensor, check_position_tensor
from posenc_lib.rope_spec import RopeSpec, _text_config_values, rope_layer_types

# Model types whose rotary module returns the angles once, ``[B, T, r/2]`` (gpt-oss), or each angle twice in a
# row, ``repeat_interleave(angles, 2)`` (Cohere); every other model type returns ``cat(angles, angles)``.
_UNREPEATED_MODEL_TYPES = frozenset({"gpt_oss"})
_REPEAT_INTERLEAVE_MODEL_TYPES = frozenset({"cohere", "cohere2"})


class _FrequencyState:
    """The frequencies one RoPE uses now, and what ``dynamic_rope_update`` keeps to change them."""

    def __init__(self, spec: RopeSpec) -> None:
        self.spec = spec
        self.original_inv_freq, self.attention_factor = spec.frequencies()
        self.inv_freq = self.original_inv_freq
        self.long_inv_freq: torch.Tensor | None = None  # LongRoPE's, computed when first needed
        # Dynamic NTK: the longest sequence the current frequencies were computed for (transformers starts at
        # max_position_embeddings, where the dynamic frequencies equal the original ones).
        self.max_seq_len_cached = spec.max_position_embeddings
        self.on_device: tuple[torch.Tensor, torch.Tensor] | None = None  # (inv_freq, the same on a device)

    def update(self, position_ids: torch.Tensor) -> None:
        """Switch the frequencies on the sequence length, as transformers' ``dynamic_rope_update`` does.

        The length is ``max(position_ids) + 1`` over the whole batch. LongRoPE uses its long factors while it
        exceeds :math:`L_0` (``original_max_position_embeddings``) and its short factors otherwise. Dynamic
        NTK recomputes its base whenever the length exceeds the longest seen so far, keeps those frequencies
        for shorter lengths, and goes back to the original frequencies (and forgets the longest length) when a
        length below ``max_position_embeddings`` comes after a longer one.
        """
        rope_type = self.spec.rope_type
        if rope_type not in ("dynamic", "longrope") or position_ids.numel() == 0:
            return
        seq_len = math.floor(position_ids.max().item()) + 1  # a host sync, as in transformers
        if rope_type == "longrope":
            original = self.spec.scaling["original_max_position_embeddings"]
            if seq_len <= original:
                self.inv_freq = self.original_inv_freq
                return
            if self.long_inv_freq is None:
                self.long_inv_freq = self.spec.frequencies(original + 1)[0]
            self.inv_freq = self.long_inv_freq
            return
        original = self.spec.max_position_embeddings
        longest_before = self.max_seq_len_cached
        if seq_len > longest_before:
            self.inv_freq, self.attention_factor = self.spec.frequencies(seq_len)
            self.max_seq_len_cached = seq_len
        if seq_len < original < longest_before:
            self.inv_freq = self.original_inv_freq
            self.max_seq_len_cached = original

    def inv_freq_on(self, device: torch.device) -> torch.Tensor:
        """The current float64 frequencies on ``device``, copied there once per change."""
        if (
            self.on_device is None
            or self.on_device[0] is not self.inv_freq
            or self.on_device[1].device != device
        ):
            self.on_device = (self.inv_freq, self.inv_freq.to(device))
        return self.on_device[1]


class HFRotaryEmbedding(nn.Module):
    r"""Drop-in replacement for a transformers model's rotary embedding module, with float64 angles.

    ``forward(x, position_ids)`` returns ``(cos, sin)`` as the module it replaces does: shape
    ``[B, T, r]`` holding ``cat(angles, angles)`` (``[B, T, r/2]`` for gpt-oss, interleaved copies for
    Cohere), dtype ``x.dtype``, both multiplied by the scaling's attention factor (YaRN, LongRoPE). The angles
    :math:`p\,\theta'_c` are formed in float64 from ``position_ids`` and the float64 frequencies of
    :class:`posenc_lib.rope_spec.RopeSpec`, and rounded once, so a float32 result is within about
    :math:`10^{-7}` of the exact cosine and sine at positions up to about :math:`2^{28}`, where the float64
    angle's own rounding (about :math:`p \cdot 10^{-16}` rad) reaches float32's (MPS devices, which have no
    float64, compute them on the CPU). Dynamic NTK and LongRoPE switch their frequencies on the
    sequence length exactly as transformers' ``dynamic_rope_update`` does (see ``_FrequencyState.update``),
    so generations match step by step.

    Gemma 3 keeps one RoPE per layer type and calls ``forward(x, position_ids, layer_type)``; so does this
    module for such configs.

    The module has no parameters and no buffers: ``model.to(dtype)`` cannot round its frequencies, and
    transformers' weight initialisation leaves it alone.

    Args:
        config: the model's config (``model.config``) or the dict of its ``config.json``; read by
            :meth:`posenc_lib.rope_spec.RopeSpec.from_config`.

    Example::

        model.model.rotary_emb = HFRotaryEmbedding(model.config)       # Llama, Qwen2, Phi-3, Gemma, ...
        model.gpt_neox.rotary_emb = HFRotaryEmbedding(model.config)    # GPT-NeoX, Pythia
    """

    def __init__(self, config: object) -> None:
        super().__init__()
        self.model_type = _text_config_values(config).get("model_type")
        self.layer_types = rope_layer_types(config)
        keys: tuple[str | None, ...] = self.layer_types or (None,)
        self._states = {key: _FrequencyState(RopeSpec.from_config(config, layer_type=key)) for key in keys}

    def spec(self, layer_type: str | None = None) -> RopeSpec:
        """The :class:`~posenc_lib.rope_spec.RopeSpec` this module computes (``layer_type``'s for Gemma 3)."""
        return self._state(layer_type).spec

    def _state(self, layer_type: str | None) -> _FrequencyState:
        if layer_type not in self._states:
            if self.layer_types:
                accepted = "one of " + ", ".join(repr(name) for name in self.layer_types)
            else:
                accepted = "None (this config has one RoPE for all layers)"
            raise ValueError(f"layer_type must be {accepted}; got {layer_type!r}")
        return self._states[layer_type]

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)`` for ``position_ids`` (``[B, T]``, integer or floating), in ``x``'s dtype.

        ``x`` only gives the dtype and device of the result, as in transformers.

        Raises:
            TypeError: ``x`` is not a floating tensor, or ``position_ids`` not a real-valued tensor.
            ValueError: ``position_ids`` is not 2-D, or ``layer_type`` does not fit the config.
        """
        check_floating_tensor("x", x)
        check_position_tensor("position_ids", position_ids)
        if position_ids.ndim != 2:
            raise ValueError(
                "position_ids must have shape [B, T] (one row per batch element), "
                f"got {tuple(position_ids.shape)}"
            )
        state = self._state(layer_type)
        state.update(position_ids)
        # MPS has no float64: form the angles on the CPU there.
        device = torch.device("cpu") if x.device.type == "mps" else x.device
        positions = position_ids.to(device=device, dtype=torch.float64)
        angles = positions[..., None] * state.inv_freq_on(device)
        cos, sin = angles.cos(), angles.sin()
        if state.attention_factor != 1.0:
            cos, sin = cos * state.attention_factor, sin * state.attention_factor
        cos, sin = cos.to(device=x.device, dtype=x.dtype), sin.to(device=x.device, dtype=x.dtype)
        if self.model_type in _UNREPEATED_MODEL_TYPES:
            return cos, sin
        if self.model_type in _REPEAT_INTERLEAVE_MODEL_TYPES:
            return cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        return torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)

    def extra_repr(self) -> str:
        specs = ", ".join(
            f"{key + ': ' if key else ''}rotary_dim={state.spec.rotary_dim}, "
            f"rope_type={state.spec.rope_type!r}"
            for key, state in self._states.items()
        )
        return f"model_type={self.model_type!r}, {specs}"
