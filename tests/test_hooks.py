"""What every positional encoding's attention hooks share: inherited docs, checks that name the argument,
no value reads on the meta device, and graphs that torch.compile captures whole."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import posenc_lib
from posenc_lib.base import PositionalEncoding

HOOKS = ("embed", "rotate", "logit_bias", "value_term")
ENCODING_CLASSES = sorted(
    (
        value
        for value in vars(posenc_lib).values()
        if isinstance(value, type)
        and issubclass(value, PositionalEncoding)
        and value is not PositionalEncoding
    ),
    key=lambda cls: cls.__name__,
)
# Encodings that act inside attention, each with the hook it uses, built for 2 heads of width 4.
ATTENTION_ENCODINGS: dict[str, tuple[Callable[[], PositionalEncoding], str]] = {
    "alibi": (lambda: posenc_lib.ALiBi(2), "logit_bias"),
    "t5": (lambda: posenc_lib.T5RelativeBias(2, model_dim=8), "logit_bias"),
    "shaw": (lambda: posenc_lib.ShawRelativeEncoding(head_dim=4, max_distance=2), "logit_bias"),
    "transformer_xl": (
        lambda: posenc_lib.TransformerXLRelativeEncoding(num_heads=2, head_dim=4),
        "logit_bias",
    ),
    "rope": (lambda: posenc_lib.RotaryEmbedding(4), "rotate"),
    "chunked_rope": (lambda: posenc_lib.LocalRotaryEmbedding(4, chunk_size=3), "logit_bias"),
    "windowed_rope": (lambda: posenc_lib.LocalRotaryEmbedding(4, sliding_window=3), "logit_bias"),
    "temperature_nope": (lambda: posenc_lib.TemperatureNoPE(floor_scale=2, attn_scale=0.5), "rotate"),
    "xpos": (lambda: posenc_lib.XPos(4), "rotate"),
}


def test_every_encoding_class_is_covered() -> None:
    names = {cls.__name__ for cls in ENCODING_CLASSES}
    assert {"ALiBi", "NoPE", "RotaryEmbedding", "XPos", "T5RelativeBias", "TemperatureNoPE"} <= names
    assert len(ENCODING_CLASSES) == 11


@pytest.mark.parametrize("cls", ENCODING_CLASSES, ids=lambda cls: cls.__name__)
def test_hook_docstrings_are_inherited_from_the_base_class(cls: type) -> None:
    """The base class documents each hook once; an override adds at most one line of its own."""
    for hook in HOOKS:
        assert "Args:" in inspect.getdoc(getattr(PositionalEncoding, hook))
        override = vars(cls).get(hook)
        own = None if override is None else override.__doc__
        assert own is None or ("Args:" not in own and "\n" not in own.strip()), (cls.__name__, hook)


@pytest.mark.parametrize("name", list(ATTENTION_ENCODINGS))
def test_hook_reads_no_values_on_meta_and_compiles_without_graph_breaks(name: str) -> None:
    build, hook = ATTENTION_ENCODINGS[name]
    on_meta = getattr(build().to("meta"), hook)
    q, k = torch.empty(3, 2, 5, 4, device="meta"), torch.empty(3, 2, 7, 4, device="meta")
    result = on_meta(q, k, torch.arange(2, 7, device="meta"), torch.arange(7, device="meta"))
    for tensor in result if isinstance(result, tuple) else (result,):
        assert tensor.device.type == "meta"
    module = build()
    method = getattr(module, hook)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 2, 5, 4, generator=generator), torch.randn(3, 2, 7, 4, generator=generator)
    arguments = (q, k, torch.arange(2, 7), torch.arange(7))
    torch._dynamo.reset()
    compiled = torch.compile(method, fullgraph=True, backend="eager")(*arguments)
    eager = method(*arguments)
    for got, want in zip(
        compiled if isinstance(compiled, tuple) else (compiled,),
        eager if isinstance(eager, tuple) else (eager,),
        strict=True,
    ):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(list(ATTENTION_ENCODINGS)),
    q_len=st.integers(1, 5),
    k_len=st.integers(1, 5),
    wrong=st.integers(0, 6),
    which=st.sampled_from(["q_positions", "k_positions"]),
)
def test_positions_of_the_wrong_length_are_a_value_error_naming_them(
    name: str, q_len: int, k_len: int, wrong: int, which: str
) -> None:
    build, hook = ATTENTION_ENCODINGS[name]
    right = {"q_positions": q_len, "k_positions": k_len}
    positions = {argument: torch.arange(length) for argument, length in right.items()}
    positions[which] = torch.arange(wrong if wrong != right[which] else wrong + 1)
    q, k = torch.randn(1, 2, q_len, 4), torch.randn(1, 2, k_len, 4)
    with pytest.raises(ValueError, match=which):
        getattr(build(), hook)(q, k, positions["q_positions"], positions["k_positions"])
