r"""Multi-head latent attention (MLA) with decoupled RoPE, as in DeepSeek-V2 and DeepSeek-V3.

DeepSeek-AI (2024), *DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model*,
arXiv:2405.04434, §2.1.2-2.1.3; DeepSeek-AI (2024), *DeepSeek-V3 Technical Report*, arXiv:2412.19437, §2.1.1.

**Low-rank keys and values.** For the hidden state :math:`h_t` of token :math:`t`, MLA caches one compressed
latent :math:`c_t = W^{DKV} h_t \in \mathbb{R}^{d_c}` (``kv_lora_rank``, normalised by an RMSNorm) instead of
the keys and values of every head; head :math:`i` reads its keys and values from it,
:math:`k^C_{t,i} = W^{UK}_i c_t` and :math:`v_{t,i} = W^{UV}_i c_t`. The query of head :math:`i` is
:math:`q^C_{t,i} = W^{UQ}_i c^Q_t` with :math:`c^Q_t = W^{DQ} h_t` (``q_lora_rank``; DeepSeek-V3 and V2, and
a plain :math:`q = W^Q h_t` when ``q_lora_rank`` is ``None``, as in V2-Lite). Because

.. math::

    {q^C_{t,i}}^\top k^C_{j,i} = (W^{UQ}_i c^Q_t)^\top W^{UK}_i c_j
    = \big(\underbrace{{W^{UK}_i}^\top W^{UQ}_i}_{\text{one fixed matrix}} c^Q_t\big)^\top c_j,

the key up-projection can be *absorbed* into the query projection (and :math:`W^{UV}_i` into the output
projection :math:`W^O`), and attention runs directly against the cached latents: the keys and values are
never expanded at inference.

**Why RoPE cannot sit there (misconception 18).** With RoPE on :math:`q^C` and :math:`k^C`, the score
becomes

.. math::

    (R_m W^{UQ}_i c^Q_m)^\top R_n W^{UK}_i c_n = {c^Q_m}^\top {W^{UQ}_i}^\top R_{n-m} W^{UK}_i c_n:

a rotation that depends on the offset :math:`n - m` sits between the two projections, so no single matrix
can be absorbed for all positions (DeepSeek-V2 §2.1.3). :func:`absorbed_rope_matrix` and
:func:`fixed_absorption_error` show it numerically.

**Decoupled RoPE.** MLA therefore carries the position in a separate, small part of each head: a rotary
query :math:`q^R_{t,i} = \mathrm{RoPE}_t(W^{QR}_i c^Q_t)` per head (``qk_rope_head_dim`` :math:`d^R_h`) and
*one* rotary key :math:`k^R_t = \mathrm{RoPE}_t(W^{KR} h_t)` shared by all heads, cached next to
:math:`c_t`. The head's query and key are the concatenations
:math:`q_{t,i} = [q^C_{t,i}; q^R_{t,i}]`, :math:`k_{j,i} = [k^C_{j,i}; k^R_j]`, and

.. math::

    o_{t,i} = \sum_{j \le t} \operatorname{softmax}_j\!\Big(\frac{q_{t,i}^\top k_{j,i}}{\sqrt{d_h + d^R_h}}
    \Big)\, v_{j,i}, \qquad u_t = W^O [o_{t,1}; \dots; o_{t,n_h}].

**Cache per token and layer.** :math:`d_c + d^R_h` numbers (:attr:`MultiHeadLatentAttention.cache_width`)
instead of :math:`2 n_h d_h` for multi-head attention and :math:`2 n_g d_h` for grouped-query attention with
:math:`n_g` key/value groups. DeepSeek-V3 (:math:`n_h = 128`, :math:`d_c = 512`, :math:`d^R_h = 64`,
key heads :math:`128 + 64`, value heads 128) caches 576 numbers per token and layer, where multi-head
attention with the same heads would cache :math:`128 \cdot (192 + 128) = 40\,960`, about 71 times more.

The module follows transformers 5.18's ``DeepseekV3Attention`` (module names and weight shapes are the
same, so ``load_state_dict`` of its weights works): ``q_a_proj`` (:math:`W^{DQ}`), ``q_a_layernorm``,
``q_b_proj`` (:math:`[W^{UQ}_i; W^{QR}_i]` per head) or ``q_proj``; ``kv_a_proj_with_mqa``
(:math:`[W^{DKV}; W^{KR}]`), ``kv_a_layernorm``, ``kv_b_proj`` (:math:`[W^{UK}_i; W^{UV}_i]` per head) and
``o_proj`` (:math:`W^O`). The RoPE is :class:`posenc_lib.rope.RotaryEmbedding` (angles in float64); with
YaRN, its attention factor multiplies cos and sin and the softmax scale gets DeepSeek's extra factor
(:func:`mla_softmax_scale`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from posenc_lib._validation import (
    check_bool,
    check_floating_tensor,
    check_integer_tensor,
    check_positive_float,
    check_positive_int,
)
from posenc_lib.rope import RotaryEmbedding, apply_rope
from posenc_lib.rope_spec import RopeSpec

# The attributes a config must have to describe MLA, as DeepseekV3Config names them.
_MLA_SIZES = ("hidden_size", "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim")


def mla_softmax_scale(qk_head_dim: int, scaling: Mapping[str, Any] | None = None) -> float:
    r"""The factor on :math:`q^\top k` in MLA: :math:`1/\sqrt{d_h + d^R_h}`, times DeepSeek's YaRN factor.

    With a context-extension scaling of factor :math:`s > 1` that has ``mscale_all_dim``
    (:math:`\kappa_\mathrm{all}`), DeepSeek multiplies the scale by
    :math:`(0.1\,\kappa_\mathrm{all} \ln s + 1)^2` on top of the attention factor on RoPE's cos and sin
    (:func:`posenc_lib.rope_scaling.yarn_scaling`), so that the whole logit, not only its rotary part, gets
    YaRN's temperature (transformers' ``yarn_apply_mscale``; DeepSeek-V3's config: :math:`s = 40`,
    :math:`\kappa_\mathrm{all} = 1`, a factor 1.874).

    Args:
        qk_head_dim: :math:`d_h + d^R_h`, the width of a query/key head (``qk_nope_head_dim +
            qk_rope_head_dim``).
        scaling: ``None`` or a scaling dict with ``rope_type`` (``RopeSpec.scaling``); only ``factor`` and
            ``mscale_all_dim`` are read, and only when ``rope_type`` is not ``"default"``.

    Raises:
        TypeError, ValueError: a non-positive ``qk_head_dim``, or a ``factor``/``mscale_all_dim`` that is
            not a positive number.
    """
    scale = check_positive_int("qk_head_dim", qk_head_dim) ** -0.5
    if scaling is None or scaling.get("rope_type", "default") == "default":
        return scale
    if not scaling.get("mscale_all_dim"):  # absent or 0: transformers reads it by truthiness
        return scale
    factor = check_positive_float("scaling['factor']", scaling.get("factor"))
    mscale_all_dim = check_positive_float("scaling['mscale_all_dim']", scaling["mscale_all_dim"])
    mscale = 1.0 if factor <= 1.0 else 0.1 * mscale_all_dim * math.log(factor) + 1.0
    return scale * mscale * mscale


class LatentKVCache:
    r"""MLA's cache for one layer: the latent :math:`c_t` and the shared rotated key :math:`k^R_t` per token.

    This is all that decoding needs: the absorbed path attends against these two directly, and the naive path
    expands them into per-head keys and values on each call. :math:`k^R_t` is stored after its rotation at
    its own position, so it is never rotated again (only relative offsets enter the scores).

    Attributes:
        latents: ``[batch, T, kv_lora_rank]`` (after ``kv_a_layernorm``), or ``None`` while empty.
        rotary_keys: ``[batch, T, qk_rope_head_dim]``, rotated, or ``None`` while empty.
    """

    def __init__(self) -> None:
        self.latents: torch.Tensor | None = None
        self.rotary_keys: torch.Tensor | None = None

    def __len__(self) -> int:
        """The number of cached tokens :math:`T`."""
        return 0 if self.latents is None else self.latents.shape[1]

    def __repr__(self) -> str:
        width = None if self.latents is None else self.latents.shape[-1] + self.rotary_keys.shape[-1]
        return f"LatentKVCache(tokens={len(self)}, numbers_per_token={width})"

    def _append(self, latents: torch.Tensor, rotary_keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append the new tokens and return everything cached."""
        if self.latents is None:
            self.latents, self.rotary_keys = latents, rotary_keys
        else:
            self.latents = torch.cat([self.latents, latents], dim=1)
            self.rotary_keys = torch.cat([self.rotary_keys, rotary_keys], dim=1)
        return self.latents, self.rotary_keys


class MultiHeadLatentAttention(nn.Module):
    r"""DeepSeek's multi-head latent attention with decoupled RoPE (causal self-attention).

    See the module docstring for the formulas. Two computation paths give the same output:

    * ``absorbed=False`` (naive, as in training and in transformers): expand the cached latents into
      per-head keys :math:`k^C_{j,i} = W^{UK}_i c_j` and values :math:`W^{UV}_i c_j`, then attend;
    * ``absorbed=True`` (inference, as in DeepSeek's own inference code): attend with the latent query
      :math:`\tilde q_{t,i} = {W^{UK}_i}^\top W^{UQ}_i c^Q_t \in \mathbb{R}^{d_c}` against the cached
      :math:`c_j`, plus :math:`{q^R_{t,i}}^\top k^R_j`, and map the attended latent
      :math:`\sum_j a_{tj,i} c_j` through :math:`W^O_i W^{UV}_i` (:meth:`absorbed_weights`).

    Args:
        hidden_size: model width.
        num_heads: :math:`n_h`.
        kv_lora_rank: :math:`d_c`, the width of the cached latent.
        qk_nope_head_dim: :math:`d_h`, the per-head query/key width without RoPE.
        qk_rope_head_dim: :math:`d^R_h`, the rotary width (even), of the per-head rotary query and of the
            one shared rotary key.
        v_head_dim: the per-head value width.
        q_lora_rank: :math:`d'_c`, the width of the query latent (``q_a_proj``, ``q_a_layernorm``,
            ``q_b_proj``), or ``None`` for one ``q_proj``.
        rotary: the RoPE of the rotary part, a :class:`~posenc_lib.rope.RotaryEmbedding` of width
            ``qk_rope_head_dim`` rotating all of it (default: base 10,000, DeepSeek's interleaved layout).
        softmax_scale: factor on :math:`q^\top k` (default :math:`1/\sqrt{d_h + d^R_h}`; see
            :func:`mla_softmax_scale` for YaRN).
        attention_bias: biases on ``q_a_proj``, ``kv_a_proj_with_mqa`` and ``o_proj`` (as transformers'
            ``attention_bias``; the up-projections never have one).
        norm_eps: epsilon of the two RMSNorms (transformers uses 1e-6, whatever ``rms_norm_eps`` says).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        *,
        kv_lora_rank: int,
        qk_nope_head_dim: int,
        qk_rope_head_dim: int,
        v_head_dim: int,
        q_lora_rank: int | None = None,
        rotary: RotaryEmbedding | None = None,
        softmax_scale: float | None = None,
        attention_bias: bool = False,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.kv_lora_rank = check_positive_int("kv_lora_rank", kv_lora_rank)
        self.qk_nope_head_dim = check_positive_int("qk_nope_head_dim", qk_nope_head_dim)
        self.qk_rope_head_dim = check_positive_int("qk_rope_head_dim", qk_rope_head_dim)
        self.v_head_dim = check_positive_int("v_head_dim", v_head_dim)
        self.q_lora_rank = None if q_lora_rank is None else check_positive_int("q_lora_rank", q_lora_rank)
        if rotary is None:
            if qk_rope_head_dim % 2:
                raise ValueError(
                    f"qk_rope_head_dim must be even (RoPE rotates pairs), got {qk_rope_head_dim}"
                )
            rotary = RotaryEmbedding(qk_rope_head_dim, layout="interleaved")
        elif not isinstance(rotary, RotaryEmbedding):
            raise TypeError(f"rotary must be a RotaryEmbedding or None, got {type(rotary).__name__}")
        if rotary.dim != qk_rope_head_dim or rotary.rotary_dim != qk_rope_head_dim:
            raise ValueError(
                f"rotary must rotate all qk_rope_head_dim = {qk_rope_head_dim} dimensions, got a "
                f"RotaryEmbedding with dim={rotary.dim} and rotary_dim={rotary.rotary_dim}"
            )
        self.rotary = rotary
        qk_head_dim = qk_nope_head_dim + qk_rope_head_dim
        self.softmax_scale = (
            qk_head_dim**-0.5
            if softmax_scale is None
            else check_positive_float("softmax_scale", softmax_scale)
        )
        attention_bias = check_bool("attention_bias", attention_bias)
        norm_eps = check_positive_float("norm_eps", norm_eps)
        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(hidden_size, num_heads * qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden_size, self.q_lora_rank, bias=attention_bias)
            self.q_a_layernorm = nn.RMSNorm(self.q_lora_rank, eps=norm_eps)
            self.q_b_proj = nn.Linear(self.q_lora_rank, num_heads * qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden_size, kv_lora_rank + qk_rope_head_dim, bias=attention_bias)
        self.kv_a_layernorm = nn.RMSNorm(kv_lora_rank, eps=norm_eps)
        self.kv_b_proj = nn.Linear(kv_lora_rank, num_heads * (qk_nope_head_dim + v_head_dim), bias=False)
        self.o_proj = nn.Linear(num_heads * v_head_dim, hidden_size, bias=attention_bias)

    @classmethod
    def from_config(cls, config: object) -> MultiHeadLatentAttention:
        """Build the attention of a DeepSeek-V3 config (a ``DeepseekV3Config`` or its ``config.json`` dict).

        Sizes, ``q_lora_rank``, ``attention_bias``; the RoPE from
        :meth:`~posenc_lib.rope_spec.RopeSpec.from_config` (base, YaRN frequencies and attention factor, the
        layout set by ``rope_interleave``, default true); the softmax scale from :func:`mla_softmax_scale`.
        ``num_key_value_heads`` is not read: MLA's keys and values come from the latent, one per query head,
        as ``kv_b_proj`` in transformers' module makes them. Weights are initialised by PyTorch's defaults;
        load real ones with ``load_state_dict``.

        Raises:
            TypeError: ``config`` is neither a dict nor an object with ``to_dict()``.
            ValueError: ``model_type`` is not ``"deepseek_v3"``, or a size is missing or invalid.
        """
        if isinstance(config, Mapping):
            values = dict(config)
        elif callable(getattr(config, "to_dict", None)):
            values = dict(config.to_dict())
        else:
            raise TypeError(
                "config must be a DeepseekV3Config (with to_dict()) or the dict of a config.json, "
                f"got {type(config).__name__}"
            )
        if values.get("model_type") != "deepseek_v3":
            raise ValueError(f"config['model_type'] must be 'deepseek_v3', got {values.get('model_type')!r}")
        for key in _MLA_SIZES:
            if values.get(key) is None:
                raise ValueError(f"config is missing the key {key!r}")
        spec = RopeSpec.from_config(values)
        rotary = spec.rotary_embedding()
        qk_head_dim = values["qk_nope_head_dim"] + values["qk_rope_head_dim"]
        return cls(
            values["hidden_size"],
            values["num_attention_heads"],
            kv_lora_rank=values["kv_lora_rank"],
            qk_nope_head_dim=values["qk_nope_head_dim"],
            qk_rope_head_dim=values["qk_rope_head_dim"],
            v_head_dim=128 if values.get("v_head_dim") is None else values["v_head_dim"],  # the class default
            q_lora_rank=values.get("q_lora_rank"),
            rotary=rotary,
            softmax_scale=mla_softmax_scale(qk_head_dim, spec.scaling),
            attention_bias=bool(values.get("attention_bias", False)),
        )

    @property
    def cache_width(self) -> int:
        r"""How many numbers the latent cache holds per token, :math:`d_c + d^R_h`.

        That is ``kv_lora_rank + qk_rope_head_dim``.
        """
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def expanded_cache_width(self) -> int:
        r"""How many numbers per token a standard cache of the expanded heads would hold.

        That is :math:`n_h (d_h + d^R_h + d_v)`.
        """
        return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)

    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The merged matrices of the absorbed path: :math:`{W^{UK}_i}^\top W^{UQ}_i` and :math:`W^O W^{UV}`.

        Returns:
            ``(query, output)``: ``query`` ``[n_h, d_c, d_q]`` maps the query input (:math:`c^Q_t`, width
            ``q_lora_rank``, or :math:`h_t` without a query latent) to the latent query of each head;
            ``output`` ``[hidden_size, n_h, d_c]`` maps each head's attended latent to the model width.
        """
        up_kv = self.kv_b_proj.weight.view(self.num_heads, self.qk_nope_head_dim + self.v_head_dim, -1)
        up_key, up_value = up_kv[:, : self.qk_nope_head_dim], up_kv[:, self.qk_nope_head_dim :]
        query_weight = (self.q_proj if self.q_lora_rank is None else self.q_b_proj).weight
        up_query = query_weight.view(self.num_heads, self.qk_nope_head_dim + self.qk_rope_head_dim, -1)
        query = up_key.transpose(1, 2) @ up_query[:, : self.qk_nope_head_dim]
        output = torch.einsum(
            "dhv,hvc->dhc", self.o_proj.weight.view(self.hidden_size, self.num_heads, -1), up_value
        )
        return query, output

    def forward(
        self,
        hidden_states: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        cache: LatentKVCache | None = None,
        absorbed: bool = False,
    ) -> torch.Tensor:
        """Causal self-attention of the new tokens over themselves and the cache.

        Args:
            hidden_states: ``[batch, T, hidden_size]``, floating.
            positions: integer positions of the new tokens, ``[T]`` or ``[batch, T]``; default ``t .. t+T-1``
                with ``t`` the number of cached tokens. They set the rotations only; the causal order is the
                order in which tokens enter (query :math:`i` sees the cached tokens and new tokens
                :math:`0..i`).
            cache: a :class:`LatentKVCache` for this layer; the new latents and rotary keys are appended and
                the queries attend to all of it.
            absorbed: compute with the absorbed weights against the latents (``True``) or by expanding
                keys and values (``False``); the results are equal up to rounding.

        Returns:
            ``[batch, T, hidden_size]``.

        Raises:
            TypeError: a tensor or the cache of the wrong type.
            ValueError: shapes that do not fit (the message gives the expected ones).
        """
        check_floating_tensor("hidden_states", hidden_states)
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"hidden_states must have shape [batch, T, hidden_size={self.hidden_size}], "
                f"got {tuple(hidden_states.shape)}"
            )
        batch, seq_len, _ = hidden_states.shape
        self._check_cache(cache, hidden_states)
        past = 0 if cache is None else len(cache)
        if positions is None:
            positions = torch.arange(past, past + seq_len, device=hidden_states.device)
        else:
            check_integer_tensor("positions", positions)
            if positions.shape not in ((seq_len,), (batch, seq_len)):
                raise ValueError(
                    f"positions must have shape [T] = [{seq_len}] or [batch, T] = [{batch}, {seq_len}], "
                    f"got {tuple(positions.shape)}"
                )
            positions = positions.to(hidden_states.device)
        absorbed = check_bool("absorbed", absorbed)

        query_input = (
            hidden_states if self.q_lora_rank is None else self.q_a_layernorm(self.q_a_proj(hidden_states))
        )
        query = (self.q_proj if self.q_lora_rank is None else self.q_b_proj)(query_input)
        query = query.view(batch, seq_len, self.num_heads, -1).transpose(1, 2)  # [B, H, T, d_h + d_R]
        query_nope, query_rope = query.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        latents, rotary_keys = self.kv_a_proj_with_mqa(hidden_states).split(
            [self.kv_lora_rank, self.qk_rope_head_dim], dim=-1
        )
        latents = self.kv_a_layernorm(latents)  # [B, T, d_c]
        query_rope = self.rotary(query_rope, positions)
        rotary_keys = self.rotary(rotary_keys, positions)  # [B, T, d_R]: one key for all heads
        if cache is not None:
            latents, rotary_keys = cache._append(latents, rotary_keys)
        rope_logits = query_rope @ rotary_keys.unsqueeze(1).transpose(-1, -2)  # [B, H, T, T_k]

        if absorbed:
            absorbed_query, absorbed_output = self.absorbed_weights()
            latent_query = torch.einsum("hcq,btq->bhtc", absorbed_query, query_input)
            logits = latent_query @ latents.unsqueeze(1).transpose(-1, -2) + rope_logits
            probs = self._softmax(logits)
            attended = probs @ latents.unsqueeze(1)  # [B, H, T, d_c]
            out = torch.einsum("bhtc,dhc->btd", attended, absorbed_output)
            return out if self.o_proj.bias is None else out + self.o_proj.bias
        up = self.kv_b_proj(latents).view(batch, -1, self.num_heads, self.qk_nope_head_dim + self.v_head_dim)
        keys_nope, values = up.transpose(1, 2).split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        logits = query_nope @ keys_nope.transpose(-1, -2) + rope_logits
        attended = self._softmax(logits) @ values  # [B, H, T, d_v]
        return self.o_proj(attended.transpose(1, 2).reshape(batch, seq_len, -1))

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Scaled, causally masked softmax over the keys (the last ``T_q`` keys are the new tokens)."""
        q_len, k_len = logits.shape[-2:]
        future = torch.ones(q_len, k_len, dtype=torch.bool, device=logits.device).triu(k_len - q_len + 1)
        logits = (logits * self.softmax_scale).masked_fill(future, float("-inf"))
        return torch.softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(
            logits.dtype
        )

    def _check_cache(self, cache: object, hidden_states: torch.Tensor) -> None:
        if cache is None:
            return
        if not isinstance(cache, LatentKVCache):
            raise TypeError(f"cache must be a LatentKVCache or None, got {type(cache).__name__}")
        if cache.latents is None:
            return
        found = (cache.latents.shape[0], cache.latents.shape[2], cache.rotary_keys.shape[2])
        expected = (hidden_states.shape[0], self.kv_lora_rank, self.qk_rope_head_dim)
        if found != expected:
            raise ValueError(
                f"cache holds batch, kv_lora_rank, qk_rope_head_dim = {found}, which do not fit this layer "
                f"and input: expected {expected}"
            )
        if cache.latents.device != hidden_states.device:
            raise ValueError(
                f"cache is on {cache.latents.device} but hidden_states on {hidden_states.device}; "
                "they must be on one device"
            )

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, q_lora_rank={self.q_lora_rank}, kv_lora_rank={self.kv_lora_rank}, "
            f"qk_nope_head_dim={self.qk_nope_head_dim}, qk_rope_head_dim={self.qk_rope_head_dim}, "
            f"v_head_dim={self.v_head_dim}, softmax_scale={self.softmax_scale:.6g}"
        )


def absorbed_rope_matrix(
    w_query: torch.Tensor,
    w_key: torch.Tensor,
    offsets: torch.Tensor,
    *,
    base: float = 10000.0,
    layout: str = "half",
) -> torch.Tensor:
    r"""The matrix :math:`W_q^\top R_{n-m} W_k` to absorb if RoPE sat between the projections, per offset.

    With RoPE applied to :math:`q = W_q x` at position :math:`m` and to the up-projected key
    :math:`k = W_k c` at position :math:`n`, the score is

    .. math::

        (R_m W_q x)^\top (R_n W_k c) = x^\top \underbrace{W_q^\top R_m^\top R_n W_k}_{A(n - m)}\, c,
        \qquad R_m^\top R_n = R_{n-m},

    so the "absorbed" matrix :math:`A` changes with the offset :math:`n - m` (misconception 18; DeepSeek-V2
    §2.1.3). Computed in float64.

    Args:
        w_query: :math:`W_q`, ``[d_h, d_in]`` (one head's query projection, rows as in ``nn.Linear.weight``).
        w_key: :math:`W_k`, ``[d_h, d_c]`` (the head's key up-projection :math:`W^{UK}_i`).
        offsets: integer offsets :math:`n - m`, ``[K]``.
        base: RoPE's base :math:`b`.
        layout: ``"half"`` or ``"interleaved"`` (:func:`posenc_lib.rope.apply_rope`).

    Returns:
        float64 ``[K, d_in, d_c]``: :math:`A(\Delta)` for each offset :math:`\Delta`.

    Raises:
        TypeError, ValueError: tensors of the wrong dtype or shape (``d_h`` must be even and the same in
            both), or an invalid ``base`` or ``layout``.
    """
    check_floating_tensor("w_query", w_query)
    check_floating_tensor("w_key", w_key)
    check_integer_tensor("offsets", offsets)
    if w_query.ndim != 2 or w_key.ndim != 2 or w_query.shape[0] != w_key.shape[0]:
        raise ValueError(
            "w_query must be [d_h, d_in] and w_key [d_h, d_c] with the same d_h, got shapes "
            f"{tuple(w_query.shape)} and {tuple(w_key.shape)}"
        )
    if offsets.ndim != 1:
        raise ValueError(f"offsets must be a 1-D integer tensor, got shape {tuple(offsets.shape)}")
    columns = w_key.T.to(torch.float64).expand(len(offsets), -1, -1)  # [K, d_c, d_h]: the columns of W_k
    rotated = apply_rope(columns, offsets[:, None].expand(-1, columns.shape[1]), base=base, layout=layout)
    return w_query.T.to(torch.float64) @ rotated.transpose(1, 2)


def fixed_absorption_error(
    w_query: torch.Tensor,
    w_key: torch.Tensor,
    offsets: torch.Tensor,
    *,
    base: float = 10000.0,
    layout: str = "half",
) -> float:
    r"""How far the best single absorbed matrix is from :math:`A(\Delta)` over the given offsets.

    The relative error

    .. math::

        \varepsilon = \min_B \sqrt{\frac{\sum_\Delta \lVert A(\Delta) - B \rVert_F^2}
        {\sum_\Delta \lVert A(\Delta) \rVert_F^2}},

    attained at the mean :math:`B = \overline{A(\Delta)}`, with :math:`A` from :func:`absorbed_rope_matrix`.
    :math:`\varepsilon = 0` means one matrix serves all offsets (as without RoPE between the projections, or
    with all offsets equal); values near 1 mean the offsets' matrices have almost nothing in common, as for
    RoPE's fast-turning pairs over many offsets. Arguments as in :func:`absorbed_rope_matrix`.
    """
    matrices = absorbed_rope_matrix(w_query, w_key, offsets, base=base, layout=layout)
    if matrices.shape[0] == 0:
        raise ValueError("offsets must hold at least one offset")
    total = matrices.square().sum()
    if total == 0:  # zero weights: every A(offset) is the zero matrix, which one matrix serves exactly
        return 0.0
    residual = (matrices - matrices.mean(dim=0)).square().sum()
    return float((residual / total).sqrt())
