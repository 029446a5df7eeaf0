"""Tests for posenc_lib.alibi: ALiBi slopes and biases, against the paper's rule and Hugging Face's Bloom."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.bloom.modeling_bloom import build_alibi_tensor

from posenc_lib.alibi import ALiBi, _alibi_slopes_float64, alibi_bias, alibi_slopes


def paper_slopes(num_heads: int) -> list[float]:
    """Press et al. (2022), section 3: a geometric sequence starting at 2^(-8/n) with that same ratio, for n a
    power of two; otherwise the slopes of the nearest smaller power of two p, then every other slope of 2p."""
    if math.log2(num_heads).is_integer():
        first = 2.0 ** (-8.0 / num_heads)
        return [first ** (k + 1) for k in range(num_heads)]
    smaller = 2 ** math.floor(math.log2(num_heads))
    return paper_slopes(smaller) + paper_slopes(2 * smaller)[0::2][: num_heads - smaller]


def bloom_slopes(num_heads: int) -> torch.Tensor:
    """Bloom's slopes: its alibi tensor is slope * key index, so index 1 holds the slope."""
    return build_alibi_tensor(torch.ones(1, 2), num_heads, torch.float32)[:, 0, 1]


@pytest.mark.parametrize("num_heads", range(1, 65))
def test_slopes_follow_the_paper_rule(num_heads: int) -> None:
    slopes = alibi_slopes(num_heads)
    assert slopes.shape == (num_heads,) and slopes.dtype == torch.float32
    expected = torch.tensor(paper_slopes(num_heads), dtype=torch.float64)
    torch.testing.assert_close(slopes.double(), expected, rtol=1e-7, atol=0)


@pytest.mark.parametrize("num_heads", range(1, 65))
def test_slopes_equal_bloom(num_heads: int) -> None:
    # Bloom raises a float32 base to integer powers: a few ulps of error on later heads.
    torch.testing.assert_close(alibi_slopes(num_heads), bloom_slopes(num_heads), rtol=2e-6, atol=0)


def test_slopes_for_eight_heads_are_the_papers_example() -> None:
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-k for k in range(1, 9)]), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    num_heads=st.integers(1, 12),
    q_list=st.lists(st.integers(-500, 500), min_size=1, max_size=6),
    k_list=st.lists(st.integers(-500, 500), min_size=1, max_size=6),
    causal=st.booleans(),
)
def test_bias_matches_loop(num_heads: int, q_list: list[int], k_list: list[int], causal: bool) -> None:
    slopes = paper_slopes(num_heads)
    expected = torch.empty(num_heads, len(q_list), len(k_list), dtype=torch.float64)
    for h in range(num_heads):
        for i, qp in enumerate(q_list):
            for j, kp in enumerate(k_list):
                expected[h, i, j] = -slopes[h] * ((qp - kp) if causal else abs(qp - kp))
    bias = alibi_bias(num_heads, torch.tensor(q_list), torch.tensor(k_list), causal=causal)
    assert bias.dtype == torch.float32
    torch.testing.assert_close(bias.double(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("num_heads", "length"), [(1, 5), (4, 9), (6, 16), (12, 33)])
def test_softmax_equals_bloom_under_causal_mask(num_heads: int, length: int) -> None:
    torch.manual_seed(num_heads)
    batch = 2
    scores = torch.randn(batch, num_heads, length, length, dtype=torch.float64)
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    positions = torch.arange(length)
    ours = scores + alibi_bias(num_heads, positions, positions).double()
    bloom = scores + build_alibi_tensor(torch.ones(batch, length), num_heads, torch.float32).double().view(
        batch, num_heads, 1, length
    )
    ours_probs = ours.masked_fill(future, -math.inf).softmax(-1)
    bloom_probs = bloom.masked_fill(future, -math.inf).softmax(-1)
    torch.testing.assert_close(ours_probs, bloom_probs, rtol=1e-5, atol=1e-6)
    # the raw biases differ: Bloom adds +m j, ALiBi -m (i - j)
    assert not torch.allclose(ours, bloom)


def test_non_causal_bias_is_symmetric_and_causal_agrees_on_the_past() -> None:
    positions = torch.arange(7)
    symmetric = alibi_bias(4, positions, positions, causal=False)
    causal = alibi_bias(4, positions, positions)
    torch.testing.assert_close(symmetric, symmetric.transpose(-1, -2))
    past = torch.ones(7, 7, dtype=torch.bool).tril()
    torch.testing.assert_close(symmetric[:, past], causal[:, past])
    assert torch.all(symmetric <= 0)


def test_module_logit_bias_and_dtypes() -> None:
    module = ALiBi(8)
    assert list(module.parameters()) == [] and list(module.buffers()) == []
    q = torch.randn(2, 8, 4, 16).to(torch.bfloat16)
    k = torch.randn(2, 8, 10, 16).to(torch.bfloat16)
    q_positions, k_positions = torch.arange(6, 10), torch.arange(10)
    bias = module.logit_bias(q, k, q_positions, k_positions)
    assert bias.shape == (1, 8, 4, 10) and bias.dtype == torch.bfloat16
    exact = torch.tensor(paper_slopes(8), dtype=torch.float64)[:, None, None] * (
        k_positions[None, None, :] - q_positions[None, :, None]
    )
    torch.testing.assert_close(bias[0], exact.to(torch.bfloat16), rtol=0, atol=0)
    symmetric = ALiBi(8, causal=False).logit_bias(q.float(), k.float(), q_positions, k_positions)
    torch.testing.assert_close(symmetric[0], alibi_bias(8, q_positions, k_positions, causal=False))


@pytest.mark.parametrize(
    ("num_heads", "error"),
    [(0, ValueError), (-3, ValueError), (4.0, TypeError), (None, TypeError), (True, TypeError)],
)
def test_slopes_reject_bad_head_counts(num_heads: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="num_heads"):
        alibi_slopes(num_heads)
    with pytest.raises(error, match="num_heads"):
        ALiBi(num_heads)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0, torch.arange(3), torch.arange(3)), {}, ValueError, "num_heads"),
        ((2, torch.arange(3.0), torch.arange(3)), {}, TypeError, "q_positions"),
        ((2, torch.arange(3), torch.arange(6).view(2, 3)), {}, ValueError, "k_positions"),
        ((2, [0, 1], torch.arange(3)), {}, TypeError, "q_positions"),
        ((2, torch.arange(3), torch.arange(3)), {"causal": "yes"}, TypeError, "causal"),
    ],
)
def test_bias_rejects_bad_input(args: tuple, kwargs: dict, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        alibi_bias(*args, **kwargs)


@pytest.mark.parametrize(
    ("q", "q_positions", "error", "name"),
    [
        (torch.randn(1, 3, 4, 8), torch.arange(4), ValueError, "num_heads"),
        (torch.randn(1, 2, 4, 8), torch.arange(4.0), TypeError, "q_positions"),
        (torch.randn(1, 2, 4, 8), torch.arange(5), ValueError, "q_positions"),
        (torch.randn(2, 4, 8), torch.arange(4), ValueError, "q must"),
    ],
)
def test_module_logit_bias_rejects_bad_inputs(
    q: object, q_positions: object, error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        ALiBi(2).logit_bias(q, torch.randn(1, 2, 4, 8), q_positions, torch.arange(4))


def test_module_rejects_non_bool_causal() -> None:
    with pytest.raises(TypeError, match="causal"):
        ALiBi(2, causal=0)


@settings(max_examples=30, deadline=None)
@given(
    shift=st.integers(-(2**31), 2**31),
    q_list=st.lists(st.integers(-500, 500), max_size=5),
    k_list=st.lists(st.integers(-500, 500), max_size=6),
    causal=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_windows_anywhere_give_the_bias_of_the_window_at_0(
    shift: int, q_list: list[int], k_list: list[int], causal: bool, dtype: torch.dtype
) -> None:
    module = ALiBi(6, causal=causal)
    q_positions, k_positions = (
        torch.tensor(q_list, dtype=torch.int64),
        torch.tensor(k_list, dtype=torch.int64),
    )
    q, k = torch.randn(2, 6, len(q_list), 4).to(dtype), torch.randn(2, 6, len(k_list), 4).to(dtype)
    bias = module.logit_bias(q, k, q_positions + shift, k_positions + shift)
    assert bias.shape == (1, 6, len(q_list), len(k_list)) and bias.dtype == dtype
    assert torch.isfinite(bias).all()
    assert torch.equal(bias, module.logit_bias(q, k, q_positions, k_positions))
    # formed in float64, rounded once to the dtype of q
    key_minus_query = k_positions[None, :] - q_positions[:, None]
    distance = key_minus_query if causal else -key_minus_query.abs()
    expected = _alibi_slopes_float64(6)[:, None, None] * distance
    assert torch.equal(bias[0], expected.to(dtype))


def test_far_keys_keep_a_finite_bias() -> None:
    bias = alibi_bias(8, torch.tensor([2**31]), torch.tensor([-(2**31), 0, 2**31]))
    assert torch.isfinite(bias).all()
    torch.testing.assert_close(bias[0, 0], torch.tensor([-0.5 * 2**32, -0.5 * 2**31, 0.0]))


def test_slopes_are_computed_on_the_device_asked() -> None:
    on_meta = _alibi_slopes_float64(12, device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == (12,) and on_meta.dtype == torch.float64
