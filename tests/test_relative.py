"""Tests for posenc_lib.relative: the relative-position matrix and Shaw et al.'s relative attention."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc_lib.relative import ShawRelativeEncoding, pairwise_relative_positions, relative_positions

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def naive_shaw_terms(
    module: ShawRelativeEncoding,
    q: torch.Tensor,
    probs: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shaw et al.'s two terms by a direct loop over every (query, key) pair, in float64."""
    batch, heads, q_len, head_dim = q.shape
    k_len = k_positions.shape[0]
    key_table = module.key_table.detach().double()
    value_table = module.value_table.detach().double()
    clip = module.max_distance
    logits = torch.zeros(batch, heads, q_len, k_len, dtype=torch.float64)
    values = torch.zeros(batch, heads, q_len, head_dim, dtype=torch.float64)
    for i in range(q_len):
        for j in range(k_len):
            row = min(max(int(k_positions[j]) - int(q_positions[i]), -clip), clip) + clip
            logits[:, :, i, j] = (q[:, :, i, :].double() * key_table[row]).sum(-1) / math.sqrt(head_dim)
            values[:, :, i, :] += probs[:, :, i, j, None].double() * value_table[row]
    return logits, values


def test_relative_positions_is_key_minus_query() -> None:
    for q_len, k_len in [(1, 1), (3, 3), (4, 7), (6, 2)]:
        expected = torch.tensor([[j - i for j in range(k_len)] for i in range(q_len)], dtype=torch.int64)
        actual = relative_positions(q_len, k_len)
        assert actual.dtype == torch.int64
        torch.testing.assert_close(actual, expected)


def test_relative_positions_k_len_defaults_to_q_len_and_device() -> None:
    torch.testing.assert_close(relative_positions(5), relative_positions(5, 5))
    assert relative_positions(2, device="cpu").device == torch.device("cpu")


@settings(max_examples=50, deadline=None)
@given(
    q_list=st.lists(st.integers(-1000, 1000), min_size=1, max_size=8),
    k_list=st.lists(st.integers(-1000, 1000), min_size=1, max_size=8),
    dtype=st.sampled_from([torch.int64, torch.int32, torch.int16]),
)
def test_pairwise_relative_positions_matches_loop(
    q_list: list[int], k_list: list[int], dtype: torch.dtype
) -> None:
    expected = torch.tensor([[kp - qp for kp in k_list] for qp in q_list], dtype=torch.int64)
    actual = pairwise_relative_positions(torch.tensor(q_list, dtype=dtype), torch.tensor(k_list, dtype=dtype))
    assert actual.dtype == torch.int64
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"q_len": 0}, ValueError, "q_len"),
        ({"q_len": -2}, ValueError, "q_len"),
        ({"q_len": 2.0}, TypeError, "q_len"),
        ({"q_len": True}, TypeError, "q_len"),
        ({"q_len": 2, "k_len": 0}, ValueError, "k_len"),
        ({"q_len": 2, "k_len": "3"}, TypeError, "k_len"),
    ],
)
def test_relative_positions_rejects_bad_sizes(kwargs: dict, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        relative_positions(**kwargs)


@pytest.mark.parametrize(
    ("q_positions", "k_positions", "error", "name"),
    [
        (torch.arange(3.0), torch.arange(3), TypeError, "q_positions"),
        (torch.arange(3), torch.ones(3, dtype=torch.bool), TypeError, "k_positions"),
        ([0, 1, 2], torch.arange(3), TypeError, "q_positions"),
        (torch.arange(6).view(2, 3), torch.arange(3), ValueError, "q_positions"),
        (torch.arange(3), torch.tensor(4), ValueError, "k_positions"),
    ],
)
def test_pairwise_relative_positions_rejects_bad_positions(
    q_positions: object, k_positions: object, error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        pairwise_relative_positions(q_positions, k_positions)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 6),
    max_distance=st.integers(0, 5),
    q_list=st.lists(st.integers(-12, 12), min_size=1, max_size=6),
    k_list=st.lists(st.integers(-12, 12), min_size=1, max_size=7),
    seed=st.integers(0, 2**31 - 1),
)
def test_shaw_matches_naive_loop(
    batch: int,
    heads: int,
    head_dim: int,
    max_distance: int,
    q_list: list[int],
    k_list: list[int],
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = ShawRelativeEncoding(head_dim, max_distance)
    q_positions, k_positions = torch.tensor(q_list), torch.tensor(k_list)
    q = torch.randn(batch, heads, len(q_list), head_dim, generator=generator)
    k = torch.randn(batch, heads, len(k_list), head_dim, generator=generator)
    probs = torch.randn(batch, heads, len(q_list), len(k_list), generator=generator).softmax(-1)
    expected_logits, expected_values = naive_shaw_terms(module, q, probs, q_positions, k_positions)
    logits = module.logit_bias(q, k, q_positions, k_positions)
    values = module.value_term(probs, q_positions, k_positions)
    assert logits.dtype == values.dtype == torch.float32
    torch.testing.assert_close(logits.double(), expected_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values.double(), expected_values, rtol=1e-5, atol=1e-6)


def test_shaw_clips_far_distances_to_the_edge_rows() -> None:
    torch.manual_seed(0)
    module = ShawRelativeEncoding(head_dim=4, max_distance=2)
    index = module.table_index(torch.tensor([0]), torch.tensor([-9, -3, -2, -1, 0, 1, 2, 3, 9]))
    torch.testing.assert_close(index, torch.tensor([[0, 0, 0, 1, 2, 3, 4, 4, 4]]))


def test_shaw_full_attention_equals_paper_formula() -> None:
    """Logits q.(k + a^K)/sqrt(d) and outputs sum_j alpha (v + a^V) built from the hooks, against a loop."""
    torch.manual_seed(1)
    module = ShawRelativeEncoding(head_dim=8, max_distance=3).double()
    q, k, v = (torch.randn(2, 2, 5, 8, dtype=torch.float64) for _ in range(3))
    positions = torch.arange(5)
    logits = q @ k.transpose(-1, -2) / math.sqrt(8) + module.logit_bias(q, k, positions, positions)
    probs = logits.softmax(-1)
    output = probs @ v + module.value_term(probs, positions, positions)
    expected_logits = torch.empty_like(logits)
    for i in range(5):
        for j in range(5):
            row = min(max(j - i, -3), 3) + 3
            key = k[:, :, j] + module.key_table[row]
            expected_logits[:, :, i, j] = (q[:, :, i] * key).sum(-1) / math.sqrt(8)
    expected_probs = expected_logits.softmax(-1)
    expected_output = torch.zeros_like(output)
    for i in range(5):
        for j in range(5):
            row = min(max(j - i, -3), 3) + 3
            expected_output[:, :, i] += expected_probs[:, :, i, j, None] * (
                v[:, :, j] + module.value_table[row]
            )
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(output, expected_output)


def test_shaw_gradients_reach_both_tables() -> None:
    torch.manual_seed(2)
    module = ShawRelativeEncoding(head_dim=4, max_distance=2)
    q = torch.randn(1, 2, 3, 4)
    positions = torch.arange(3)
    probs = torch.rand(1, 2, 3, 3)
    (
        module.logit_bias(q, q, positions, positions).sum()
        + module.value_term(probs, positions, positions).sum()
    ).backward()
    assert module.key_table.grad is not None and module.key_table.grad.abs().sum() > 0
    assert module.value_table.grad is not None and module.value_table.grad.abs().sum() > 0


def test_shaw_low_precision_inputs_keep_their_dtype_with_one_rounding() -> None:
    torch.manual_seed(3)
    module = ShawRelativeEncoding(head_dim=8, max_distance=4)
    q = torch.randn(2, 2, 6, 8).to(torch.bfloat16)
    probs = torch.rand(2, 2, 6, 6).to(torch.bfloat16)
    positions = torch.arange(6)
    logits = module.logit_bias(q, q, positions, positions)
    values = module.value_term(probs, positions, positions)
    assert logits.dtype == values.dtype == torch.bfloat16
    expected_logits = module.logit_bias(q.float(), q.float(), positions, positions).to(torch.bfloat16)
    expected_values = module.value_term(probs.float(), positions, positions).to(torch.bfloat16)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
    torch.testing.assert_close(values, expected_values, rtol=0, atol=0)


def test_shaw_parameters_have_the_paper_shapes() -> None:
    module = ShawRelativeEncoding(head_dim=16, max_distance=5)
    assert dict(module.named_parameters()).keys() == {"key_table", "value_table"}
    assert module.key_table.shape == module.value_table.shape == (11, 16)


@pytest.mark.parametrize(
    ("args", "error", "name"),
    [
        ((0, 2), ValueError, "head_dim"),
        ((-4, 2), ValueError, "head_dim"),
        ((4.0, 2), TypeError, "head_dim"),
        ((4, -1), ValueError, "max_distance"),
        ((4, 1.5), TypeError, "max_distance"),
        ((4, None), TypeError, "max_distance"),
    ],
)
def test_shaw_rejects_bad_settings(args: tuple, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        ShawRelativeEncoding(*args)


@pytest.mark.parametrize(
    ("q", "k", "q_positions", "k_positions", "error", "name"),
    [
        (
            torch.randn(1, 2, 3, 4),
            torch.randn(1, 2, 3, 4),
            torch.arange(3.0),
            torch.arange(3),
            TypeError,
            "q_positions",
        ),
        (
            torch.randn(1, 2, 3, 4),
            torch.randn(1, 2, 3, 4),
            torch.arange(3),
            torch.ones(1, 3).long(),
            ValueError,
            "k_positions",
        ),
        (
            torch.randn(1, 2, 3, 4),
            torch.randn(1, 2, 3, 4),
            torch.arange(2),
            torch.arange(3),
            ValueError,
            "q_positions",
        ),
        (
            torch.randn(1, 2, 3, 4),
            torch.randn(1, 2, 3, 4),
            torch.arange(3),
            torch.arange(5),
            ValueError,
            "k_positions",
        ),
        (
            torch.randn(1, 2, 3, 5),
            torch.randn(1, 2, 3, 5),
            torch.arange(3),
            torch.arange(3),
            ValueError,
            "head_dim",
        ),
        (
            torch.randn(2, 3, 4),
            torch.randn(1, 2, 3, 4),
            torch.arange(3),
            torch.arange(3),
            ValueError,
            "q must",
        ),
        (
            torch.ones(1, 2, 3, 4).long(),
            torch.randn(1, 2, 3, 4),
            torch.arange(3),
            torch.arange(3),
            TypeError,
            "q must",
        ),
        (torch.randn(1, 2, 3, 4), None, torch.arange(3), torch.arange(3), TypeError, "k must"),
    ],
)
def test_shaw_logit_bias_rejects_bad_inputs(
    q: object, k: object, q_positions: object, k_positions: object, error: type[Exception], name: str
) -> None:
    module = ShawRelativeEncoding(head_dim=4, max_distance=2)
    with pytest.raises(error, match=name):
        module.logit_bias(q, k, q_positions, k_positions)


@pytest.mark.parametrize(
    ("probs", "q_positions", "error", "name"),
    [
        (torch.rand(1, 2, 3, 3), torch.arange(4), ValueError, "probs"),
        (torch.rand(2, 3, 3), torch.arange(3), ValueError, "probs"),
        (torch.ones(1, 2, 3, 3).long(), torch.arange(3), TypeError, "probs"),
        (torch.rand(1, 2, 3, 3), torch.arange(3.0), TypeError, "q_positions"),
    ],
)
def test_shaw_value_term_rejects_bad_inputs(
    probs: object, q_positions: object, error: type[Exception], name: str
) -> None:
    module = ShawRelativeEncoding(head_dim=4, max_distance=2)
    with pytest.raises(error, match=name):
        module.value_term(probs, q_positions, torch.arange(3))


@settings(max_examples=30, deadline=None)
@given(
    shift=st.integers(-(2**31), 2**31),
    q_list=st.lists(st.integers(-20, 20), max_size=5),
    k_list=st.lists(st.integers(-20, 20), max_size=6),
    dtype=st.sampled_from(DTYPES),
    position_dtype=st.sampled_from([torch.int64, torch.int32]),
    seed=st.integers(0, 2**16),
)
def test_shaw_windows_anywhere_give_the_terms_of_the_window_at_0(
    shift: int,
    q_list: list[int],
    k_list: list[int],
    dtype: torch.dtype,
    position_dtype: torch.dtype,
    seed: int,
) -> None:
    """Only clipped differences matter: a common shift, negative or up to 2^31, changes nothing."""
    torch.manual_seed(seed)
    module = ShawRelativeEncoding(head_dim=4, max_distance=3).to(dtype)
    q = torch.randn(2, 3, len(q_list), 4).to(dtype)
    probs = torch.rand(2, 3, len(q_list), len(k_list)).to(dtype)
    q_positions, k_positions = (
        torch.tensor(q_list, dtype=torch.int64),
        torch.tensor(k_list, dtype=torch.int64),
    )
    if position_dtype == torch.int32:  # int32 positions stay within int32
        shift = max(min(shift, 2**31 - 21), -(2**31) + 20)
    shifted = ((q_positions + shift).to(position_dtype), (k_positions + shift).to(position_dtype))
    k = torch.randn(2, 3, len(k_list), 4).to(dtype)
    logits = module.logit_bias(q, k, *shifted)
    values = module.value_term(probs, *shifted)
    assert logits.shape == (2, 3, len(q_list), len(k_list)) and logits.dtype == dtype
    assert values.shape == (2, 3, len(q_list), 4) and values.dtype == dtype
    assert torch.isfinite(logits).all() and torch.isfinite(values).all()
    assert torch.equal(logits, module.logit_bias(q, k, q_positions, k_positions))
    assert torch.equal(values, module.value_term(probs, q_positions, k_positions))


def test_shaw_hooks_read_no_values_on_meta_and_compile_without_graph_breaks() -> None:
    module = ShawRelativeEncoding(head_dim=4, max_distance=2)
    on_meta = ShawRelativeEncoding(head_dim=4, max_distance=2).to("meta")
    q, k = torch.empty(2, 3, 5, 4, device="meta"), torch.empty(2, 3, 7, 4, device="meta")
    q_positions, k_positions = torch.arange(2, 7, device="meta"), torch.arange(7, device="meta")
    assert on_meta.logit_bias(q, k, q_positions, k_positions).shape == (2, 3, 5, 7)
    probs = torch.empty(2, 3, 5, 7, device="meta")
    assert on_meta.value_term(probs, q_positions, k_positions).shape == (2, 3, 5, 4)
    q, k, probs = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.rand(2, 3, 5, 7)
    q_positions, k_positions = torch.arange(2, 7), torch.arange(7)
    logit_bias = torch.compile(module.logit_bias, fullgraph=True, backend="eager")
    value_term = torch.compile(module.value_term, fullgraph=True, backend="eager")
    torch.testing.assert_close(
        logit_bias(q, k, q_positions, k_positions), module.logit_bias(q, k, q_positions, k_positions)
    )
    torch.testing.assert_close(
        value_term(probs, q_positions, k_positions), module.value_term(probs, q_positions, k_positions)
    )


@settings(max_examples=30, deadline=None)
@given(
    q_len=st.integers(1, 5),
    k_len=st.integers(1, 5),
    wrong=st.integers(0, 6),
    which=st.sampled_from(["q_positions", "k_positions"]),
)
def test_shaw_positions_of_the_wrong_length_are_a_value_error_naming_them(
    q_len: int, k_len: int, wrong: int, which: str
) -> None:
    module = ShawRelativeEncoding(head_dim=4, max_distance=2)
    right = {"q_positions": q_len, "k_positions": k_len}
    if wrong == right[which]:
        wrong += 1
    positions = {name: torch.arange(length) for name, length in right.items()}
    positions[which] = torch.arange(wrong)
    q, k = torch.randn(1, 2, q_len, 4), torch.randn(1, 2, k_len, 4)
    with pytest.raises(ValueError, match=which):
        module.logit_bias(q, k, positions["q_positions"], positions["k_positions"])
    with pytest.raises(ValueError, match="probs must be 4-D"):
        module.value_term(torch.rand(1, 2, q_len, k_len), positions["q_positions"], positions["k_positions"])
