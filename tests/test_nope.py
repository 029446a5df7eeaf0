"""Tests of posenc_lib.nope: no positional term, and the two claims of its docstring about attention."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc_lib.base import PositionalEncoding
from posenc_lib.nope import NoPE


def test_every_hook_is_the_identity_or_none() -> None:
    torch.manual_seed(0)
    nope = NoPE()
    assert isinstance(nope, PositionalEncoding)
    assert list(nope.parameters()) == [] and list(nope.buffers()) == []
    x = torch.randn(2, 5, 8)
    positions = torch.arange(5)
    assert nope.embed(x, positions) is x
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4)
    rotated_q, rotated_k = nope.rotate(q, k, positions, torch.arange(7))
    assert rotated_q is q and rotated_k is k
    assert nope.logit_bias(q, k, positions, torch.arange(7)) is None
    probs = torch.softmax(torch.randn(2, 3, 5, 7), dim=-1)
    assert nope.value_term(probs, positions, torch.arange(7)) is None


def _attention(x: torch.Tensor, weights: torch.Tensor, causal: bool) -> torch.Tensor:
    """One attention head over ``x`` [T, d] with NoPE's hooks applied; ``weights`` holds W_q, W_k, W_v."""
    nope = NoPE()
    positions = torch.arange(x.shape[0])
    x = nope.embed(x[None], positions)[0]
    q, k, v = (x @ w for w in weights)
    q, k = nope.rotate(q, k, positions, positions)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


@settings(max_examples=20, deadline=None)
@given(length=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_without_mask_attention_is_permutation_equivariant(length: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(length, 8, dtype=torch.float64, generator=generator)
    weights = torch.randn(3, 8, 8, dtype=torch.float64, generator=generator)
    permutation = torch.randperm(length, generator=generator)
    out = _attention(x, weights, causal=False)
    torch.testing.assert_close(_attention(x[permutation], weights, causal=False), out[permutation])


def test_causal_mask_breaks_equivariance_and_lets_the_first_layer_count() -> None:
    generator = torch.Generator().manual_seed(1)
    length = 6
    x = torch.randn(length, 8, dtype=torch.float64, generator=generator)
    weights = torch.randn(3, 8, 8, dtype=torch.float64, generator=generator)
    reverse = torch.arange(length - 1, -1, -1)
    out = _attention(x, weights, causal=True)
    assert not torch.allclose(_attention(x[reverse], weights, causal=True), out[reverse])
    # Kazemnejad et al. 2023, Theorem 1: zero query weights give uniform attention over keys 0..i; a value
    # that only the first token has then reads 1 / (i + 1) at position i, an absolute position.
    tokens = torch.zeros(length, 2, dtype=torch.float64)
    tokens[:, 1] = 1.0
    tokens[0, 0] = 1.0  # a beginning-of-sequence marker
    w_q = torch.zeros(2, 2, dtype=torch.float64)
    w_k = w_v = torch.eye(2, dtype=torch.float64)
    counted = _attention(tokens, torch.stack((w_q, w_k, w_v)), causal=True)[:, 0]
    expected = 1.0 / torch.arange(1, length + 1, dtype=torch.float64)
    torch.testing.assert_close(counted, expected)


@settings(max_examples=20, deadline=None)
@given(
    start=st.integers(-(2**31), 2**31 - 8),
    length=st.integers(0, 8),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_any_positions_leave_everything_unchanged(start: int, length: int, dtype: torch.dtype) -> None:
    nope = NoPE()
    positions = torch.arange(start, start + length)
    x, q = torch.randn(2, length, 8).to(dtype), torch.randn(2, 3, length, 4).to(dtype)
    assert nope.embed(x, positions) is x
    assert nope.rotate(q, q, positions, positions) == (q, q)
    assert nope.logit_bias(q, q, positions, positions) is None
    assert nope.value_term(torch.rand(2, 3, length, length), positions, positions) is None


@pytest.mark.parametrize("hook", ["embed", "rotate", "logit_bias", "value_term"])
def test_base_class_documents_every_hook_once(hook: str) -> None:
    """The overrides inherit these docstrings (Sphinx autodoc does by default), so they must be complete."""
    doc = inspect.getdoc(getattr(PositionalEncoding, hook))
    for section in ("Args:", "Returns:", "Raises:"):
        assert section in doc
    assert inspect.getdoc(getattr(NoPE, hook)) == doc
    assert hook not in vars(NoPE)
