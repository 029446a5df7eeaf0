"""Tests for posenc_lib.transformer_xl: rel_shift and Transformer-XL's relative attention terms."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

from posenc_lib.sinusoidal import sinusoidal_encoding_at
from posenc_lib.transformer_xl import TransformerXLRelativeEncoding, rel_shift

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def general_path(module: TransformerXLRelativeEncoding) -> Callable[..., torch.Tensor]:
    """``module.logit_bias`` under torch.compile, where positions cannot be read: the general path."""
    return torch.compile(module.logit_bias, fullgraph=True, backend="eager")


def naive_sinusoid(distance: int, dim: int, base: float = 10000.0) -> list[float]:
    """[sin(r w_0), ..., sin(r w_{D/2-1}), cos(r w_0), ...] with w_c = base^(-2c/D), one value at a time."""
    angles = [distance * base ** (-2 * c / dim) for c in range(dim // 2)]
    return [math.sin(a) for a in angles] + [math.cos(a) for a in angles]


def naive_transformer_xl_bias(
    module: TransformerXLRelativeEncoding,
    q: torch.Tensor,
    k: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
) -> torch.Tensor:
    """(u.k_j + (q_i + v).W_R R_{i-j}) / sqrt(d_head) for every (b, h, i, j), in float64."""
    batch, heads, q_len, head_dim = q.shape
    k_len = k.shape[2]
    weight = module.relative_projection.weight.detach().double()
    u, v = module.u.detach().double(), module.v.detach().double()
    out = torch.empty(batch, heads, q_len, k_len, dtype=torch.float64)
    for i in range(q_len):
        for j in range(k_len):
            distance = int(q_positions[i]) - int(k_positions[j])
            encoding = torch.tensor(
                naive_sinusoid(distance, module.encoding_dim, module.base), dtype=torch.float64
            )
            projected = (weight @ encoding).view(heads, head_dim)
            for b in range(batch):
                for h in range(heads):
                    content = u[h] @ k[b, h, j].double()
                    position = (q[b, h, i].double() + v[h]) @ projected[h]
                    out[b, h, i, j] = (content + position) / math.sqrt(head_dim)
    return out


@settings(max_examples=50, deadline=None)
@given(
    q_len=st.integers(1, 7),
    mlen=st.integers(0, 6),
    batch_shape=st.lists(st.integers(1, 3), max_size=2),
    seed=st.integers(0, 2**31 - 1),
)
def test_rel_shift_matches_loop_on_valid_region(
    q_len: int, mlen: int, batch_shape: list[int], seed: int
) -> None:
    k_len = q_len + mlen
    scores = torch.randn(*batch_shape, q_len, k_len, generator=torch.Generator().manual_seed(seed))
    shifted = rel_shift(scores)
    assert shifted.shape == scores.shape
    for i in range(q_len):
        for j in range(i + mlen + 1):
            torch.testing.assert_close(shifted[..., i, j], scores[..., i, j + q_len - 1 - i], rtol=0, atol=0)


@pytest.mark.parametrize(("q_len", "mlen"), [(1, 0), (4, 0), (3, 5), (6, 2)])
def test_rel_shift_indexes_by_distance(q_len: int, mlen: int) -> None:
    """With column c holding distance k_len - 1 - c, entry [i, j] holds distance (i + mlen) - j."""
    k_len = q_len + mlen
    by_distance = torch.randn(q_len, k_len)  # by_distance[i, r]: the score of query i at distance r
    scores = by_distance.flip(-1)  # column c <-> distance k_len - 1 - c, as Transformer-XL lays them out
    shifted = rel_shift(scores)
    for i in range(q_len):
        for j in range(i + mlen + 1):
            assert shifted[i, j] == by_distance[i, i + mlen - j]


def test_rel_shift_puts_zero_just_past_the_valid_region() -> None:
    shifted = rel_shift(torch.randn(2, 5, 4, 6))
    for i in range(3):
        assert torch.all(shifted[..., i, i + 3] == 0)


@pytest.mark.parametrize(
    ("scores", "error", "message"),
    [
        ([[1.0, 2.0]], TypeError, "scores"),
        (torch.randn(5), ValueError, "scores"),
        (torch.randn(4, 3), ValueError, "k_len >= q_len"),
    ],
)
def test_rel_shift_rejects_bad_input(scores: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        rel_shift(scores)


def test_relative_encodings_match_marian_and_the_formula() -> None:
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=8)
    marian = MarianSinusoidalPositionalEmbedding(40, 16).create_weight()
    torch.testing.assert_close(module.relative_encodings(torch.arange(40)), marian)
    distances = torch.tensor([-1000, -7, -1, 0, 3, 123456])
    expected = torch.tensor([naive_sinusoid(int(r), 16) for r in distances], dtype=torch.float32)
    torch.testing.assert_close(module.relative_encodings(distances), expected)


POSITION_CASES = {
    "no memory": (torch.arange(5), torch.arange(5)),
    "memory of 3": (torch.arange(3, 7), torch.arange(7)),
    "offset positions": (torch.arange(10, 13), torch.arange(2, 8)),
    "queries after keys": (torch.arange(4), torch.arange(1, 3)),
    "scattered positions": (torch.tensor([5, 0, 9]), torch.tensor([2, 2, 11, -4])),
}


@pytest.mark.parametrize("path", ["positions read", "general"])
@pytest.mark.parametrize("case", POSITION_CASES)
def test_module_matches_naive_loop(case: str, path: str) -> None:
    """Both paths give the loop's bias: the one that reads the positions (rel_shift when they are
    consecutive) and the angle-addition path taken where they cannot be read (here torch.compile)."""
    q_positions, k_positions = POSITION_CASES[case]
    torch.manual_seed(0)
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4, encoding_dim=6).double()
    with torch.no_grad():
        module.u.normal_()
        module.v.normal_()
    q = torch.randn(2, 2, len(q_positions), 4, dtype=torch.float64)
    k = torch.randn(2, 2, len(k_positions), 4, dtype=torch.float64)
    expected = naive_transformer_xl_bias(module, q, k, q_positions, k_positions)
    logit_bias = module.logit_bias if path == "positions read" else general_path(module)
    torch.testing.assert_close(logit_bias(q, k, q_positions, k_positions), expected)


@settings(max_examples=30, deadline=None)
@given(
    q_len=st.integers(1, 5),
    k_len=st.integers(1, 6),
    q_start=st.integers(-50, 50),
    k_start=st.integers(-50, 50),
    seed=st.integers(0, 2**31 - 1),
)
def test_module_float32_matches_naive_loop_for_consecutive_positions(
    q_len: int, k_len: int, q_start: int, k_start: int, seed: int
) -> None:
    torch.manual_seed(seed)
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4)
    q = torch.randn(1, 2, q_len, 4)
    k = torch.randn(1, 2, k_len, 4)
    q_positions = torch.arange(q_start, q_start + q_len)
    k_positions = torch.arange(k_start, k_start + k_len)
    bias = module.logit_bias(q, k, q_positions, k_positions)
    assert bias.dtype == torch.float32
    expected = naive_transformer_xl_bias(module, q, k, q_positions, k_positions)
    torch.testing.assert_close(bias.double(), expected, rtol=1e-4, atol=1e-5)


def test_module_low_precision_input_keeps_its_dtype_with_one_rounding() -> None:
    torch.manual_seed(4)
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=8)
    q = torch.randn(1, 2, 5, 8).to(torch.bfloat16)
    k = torch.randn(1, 2, 5, 8).to(torch.bfloat16)
    positions = torch.arange(5)
    bias = module.logit_bias(q, k, positions, positions)
    assert bias.dtype == torch.bfloat16
    expected = module.logit_bias(q.float(), k.float(), positions, positions).to(torch.bfloat16)
    torch.testing.assert_close(bias, expected, rtol=0, atol=0)


def test_module_parameters_and_gradients() -> None:
    torch.manual_seed(5)
    module = TransformerXLRelativeEncoding(num_heads=3, head_dim=4, encoding_dim=10)
    shapes = {name: tuple(p.shape) for name, p in module.named_parameters()}
    assert shapes == {"u": (3, 4), "v": (3, 4), "relative_projection.weight": (12, 10)}
    q = torch.randn(2, 3, 4, 4)
    module.logit_bias(q, q, torch.arange(4), torch.arange(4)).sum().backward()
    for parameter in module.parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0, 4), {}, ValueError, "num_heads"),
        ((2, 0), {}, ValueError, "head_dim"),
        ((2, 4.0), {}, TypeError, "head_dim"),
        ((2, 4), {"encoding_dim": 7}, ValueError, "encoding_dim"),
        ((3, 3), {}, ValueError, "encoding_dim"),
        ((2, 4), {"base": 0.0}, ValueError, "base"),
        ((2, 4), {"base": "big"}, TypeError, "base"),
        ((2, 4), {"base": float("nan")}, ValueError, "base must be a finite positive number"),
        ((2, 4), {"base": float("inf")}, ValueError, "base must be a finite positive number"),
    ],
)
def test_module_rejects_bad_settings(args: tuple, kwargs: dict, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        TransformerXLRelativeEncoding(*args, **kwargs)


@pytest.mark.parametrize(
    ("q", "k", "q_positions", "error", "name"),
    [
        (torch.randn(1, 3, 3, 4), torch.randn(1, 3, 3, 4), torch.arange(3), ValueError, "num_heads"),
        (torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 5), torch.arange(3), ValueError, "head_dim"),
        (torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.arange(3.0), TypeError, "q_positions"),
        (torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.arange(4), ValueError, "q_positions"),
        (torch.randn(2, 3, 4), torch.randn(1, 2, 3, 4), torch.arange(3), ValueError, "q must"),
    ],
)
def test_module_logit_bias_rejects_bad_inputs(
    q: object, k: object, q_positions: object, error: type[Exception], name: str
) -> None:
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4)
    with pytest.raises(error, match=name):
        module.logit_bias(q, k, q_positions, torch.arange(3))


def test_relative_encodings_reject_float_distances() -> None:
    with pytest.raises(TypeError, match="distances"):
        TransformerXLRelativeEncoding(num_heads=2, head_dim=4).relative_encodings(torch.arange(3.0))


def test_relative_encodings_are_the_concat_sinusoid() -> None:
    """One formula: PE(Delta) is posenc_lib.sinusoidal's concat-layout encoding of Delta."""
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4, encoding_dim=12, base=500.0)
    distances = torch.tensor([-(2**31), -5, 0, 7, 2**31])
    expected = sinusoidal_encoding_at(distances, 12, base=500.0, layout="concat")
    assert torch.equal(module.relative_encodings(distances), expected)


@settings(max_examples=15, deadline=None)
@given(
    start=st.integers(-(2**31), 2**31 - 16),
    q_len=st.integers(1, 5),
    memory=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_windows_anywhere_up_to_2_to_the_31_give_the_bias_of_the_window_at_0(
    start: int, q_len: int, memory: int, seed: int
) -> None:
    torch.manual_seed(seed)
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4)
    q, k = torch.randn(1, 2, q_len, 4), torch.randn(1, 2, q_len + memory, 4)
    q_positions = torch.arange(memory, memory + q_len)
    k_positions = torch.arange(memory + q_len)
    at_zero = module.logit_bias(q, k, q_positions, k_positions)
    far = module.logit_bias(q, k, q_positions + start, k_positions + start)
    assert torch.equal(far, at_zero)  # the fast path sees the same distances
    general = general_path(module)(q, k, q_positions + start, k_positions + start)
    assert torch.isfinite(general).all()
    # sin and cos of positions near 2^31, formed in float64, rounded to float32 once
    torch.testing.assert_close(general, at_zero, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("q_len", "k_len"), [(0, 4), (3, 0), (0, 0)])
def test_empty_queries_or_keys_give_an_empty_bias(q_len: int, k_len: int) -> None:
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4)
    for device in ("cpu", "meta"):
        q = torch.randn(3, 2, q_len, 4, device=device)
        k = torch.randn(3, 2, k_len, 4, device=device)
        bias = module.to(device).logit_bias(
            q, k, torch.arange(5, 5 + q_len, device=device), torch.arange(k_len, device=device)
        )
        assert bias.shape == (3, 2, q_len, k_len) and bias.device.type == device


@settings(max_examples=20, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    q_len=st.integers(1, 4),
    k_len=st.integers(1, 5),
    consecutive=st.booleans(),
)
def test_bias_keeps_the_dtype_of_q(dtype: torch.dtype, q_len: int, k_len: int, consecutive: bool) -> None:
    torch.manual_seed(q_len * 10 + k_len)
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4)
    q, k = torch.randn(1, 2, q_len, 4).to(dtype), torch.randn(1, 2, k_len, 4).to(dtype)
    q_positions = torch.arange(k_len, k_len + q_len) if consecutive else torch.randperm(q_len) * 3
    k_positions = torch.arange(k_len)
    bias = module.logit_bias(q, k, q_positions, k_positions)
    assert bias.dtype == dtype and bias.shape == (1, 2, q_len, k_len)
    promoted = torch.promote_types(dtype, torch.float32)
    expected = module.logit_bias(q.to(promoted), k.to(promoted), q_positions, k_positions).to(dtype)
    assert torch.equal(bias, expected)  # computed in at least float32, rounded once


def test_fast_path_costs_what_the_paper_says() -> None:
    """Chapter 3 counts these FLOPs: W_R times the 2T - 1 distances, (q + v) and u times the keys."""
    heads, head_dim, length = 4, 8, 64
    width = heads * head_dim
    module = TransformerXLRelativeEncoding(heads, head_dim)
    q, k = torch.randn(1, heads, length, head_dim), torch.randn(1, heads, length, head_dim)
    with FlopCounterMode(display=False) as counter:
        module.logit_bias(q, k, torch.arange(length), torch.arange(length))
    distances = 2 * length - 1
    projections = 2 * distances * width * width
    products = 2 * heads * length * distances * head_dim + 2 * heads * length * head_dim
    assert counter.get_total_flops() == projections + products


def test_vmap_over_positions_takes_the_general_path() -> None:
    """Inside torch.func.vmap the positions cannot be read: the bias is still the loop's."""
    torch.manual_seed(6)
    module = TransformerXLRelativeEncoding(num_heads=2, head_dim=4).double()
    q, k = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(1, 2, 5, 4, dtype=torch.float64)
    q_rows, k_rows = torch.tensor([[2, 3, 4], [7, 0, -3]]), torch.tensor([[0, 1, 2, 3, 4], [9, 9, 1, -2, 5]])
    biases = torch.func.vmap(lambda qp, kp: module.logit_bias(q, k, qp, kp))(q_rows, k_rows)
    for bias, q_positions, k_positions in zip(biases, q_rows, k_rows, strict=True):
        torch.testing.assert_close(bias, naive_transformer_xl_bias(module, q, k, q_positions, k_positions))
