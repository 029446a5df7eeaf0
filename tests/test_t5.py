"""Tests for posenc_lib.t5: T5's relative position buckets and bias, against Hugging Face transformers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import T5Config, T5EncoderModel
from transformers.models.t5.modeling_t5 import T5Attention

from posenc_lib.t5 import T5RelativeBias, t5_bucket

hf_bucket = T5Attention._relative_position_bucket

WIDE_RANGE = torch.arange(-5000, 5001)
EDGE_CASES = torch.tensor([-(2**40), -(2**31), -1_000_000, 2**31 - 1, 2**40, 1_000_000])


def valid_settings() -> list[tuple[bool, int, int]]:
    """(bidirectional, num_buckets, max_distance) combinations that posenc_lib accepts."""
    combos = []
    for bidirectional in (True, False):
        for num_buckets in (8, 10, 12, 16, 32, 33, 64):
            if bidirectional and num_buckets % 2:
                continue
            max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
            for max_distance in (16, 20, 100, 128, 1000, 1024):
                if max_distance > max_exact:
                    combos.append((bidirectional, num_buckets, max_distance))
    return combos


@pytest.mark.parametrize(("bidirectional", "num_buckets", "max_distance"), valid_settings())
def test_buckets_equal_hugging_face(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    settings_ = {"bidirectional": bidirectional, "num_buckets": num_buckets, "max_distance": max_distance}
    near = torch.cat([max_distance + torch.arange(-3, 4), -max_distance + torch.arange(-3, 4)])
    for relative in (WIDE_RANGE, EDGE_CASES, near):
        ours = t5_bucket(relative, **settings_)
        assert ours.dtype == torch.int64
        torch.testing.assert_close(ours, hf_bucket(relative, **settings_), rtol=0, atol=0)


def test_buckets_equal_hugging_face_for_int32_and_2d_input() -> None:
    relative = torch.arange(-300, 300, dtype=torch.int32).view(20, 30)
    expected = hf_bucket(relative.long(), bidirectional=False, num_buckets=32, max_distance=128)
    torch.testing.assert_close(t5_bucket(relative, bidirectional=False), expected, rtol=0, atol=0)


def test_default_buckets_cover_each_sign_and_saturate_before_max_distance() -> None:
    buckets = t5_bucket(torch.arange(-200, 201))
    assert set(buckets[:201].tolist()) == set(range(16))  # keys at or before the query: buckets 0 ... 15
    assert set(buckets[201:].tolist()) == set(range(17, 32))  # after: 16 + (1 ... 15)
    distances = torch.arange(1, 129)
    saturated = distances[t5_bucket(-distances) == 15]
    assert saturated.min() < 128  # truncation reaches the last bucket before max_distance


@settings(max_examples=60, deadline=None)
@given(
    bidirectional=st.booleans(),
    num_buckets=st.integers(4, 64),
    max_distance=st.integers(2, 2048),
    start=st.integers(-3000, 3000),
)
def test_buckets_are_monotone_in_distance(
    bidirectional: bool, num_buckets: int, max_distance: int, start: int
) -> None:
    if bidirectional:
        num_buckets += num_buckets % 2
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    max_distance = max(max_distance, max_exact + 1)
    settings_ = {"bidirectional": bidirectional, "num_buckets": num_buckets, "max_distance": max_distance}
    relative = torch.arange(start, start + 400)
    buckets = t5_bucket(relative, **settings_)
    assert int(buckets.min()) >= 0 and int(buckets.max()) < num_buckets
    if bidirectional:
        past, future = relative <= 0, relative > 0
        # within each sign, non-decreasing in |rel|
        assert torch.all(buckets[past].flip(0).diff() >= 0)
        assert torch.all(buckets[future].diff() >= 0)
        assert torch.all(buckets[future] >= num_buckets // 2)
        assert torch.all(buckets[past] < num_buckets // 2)
    else:
        # non-decreasing in -rel, i.e. non-increasing as rel grows
        assert torch.all(buckets.diff() <= 0)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_bias_matches_loop(bidirectional: bool) -> None:
    torch.manual_seed(0)
    module = T5RelativeBias(3, model_dim=12, bidirectional=bidirectional, num_buckets=16, max_distance=40)
    q_positions = torch.tensor([0, 7, 50, 3])
    k_positions = torch.tensor([-100, 0, 1, 7, 30, 60, 200])
    bias = module.bias(q_positions, k_positions)
    assert bias.shape == (1, 3, 4, 7)
    table = module.relative_attention_bias.weight.detach()
    for i, qp in enumerate(q_positions.tolist()):
        for j, kp in enumerate(k_positions.tolist()):
            bucket = int(
                hf_bucket(torch.tensor(kp - qp), bidirectional=bidirectional, num_buckets=16, max_distance=40)
            )
            torch.testing.assert_close(bias[0, :, i, j].detach(), table[bucket], rtol=0, atol=0)


@pytest.mark.parametrize(("is_decoder", "past"), [(False, 0), (True, 0), (True, 5)])
def test_bias_equals_hugging_face_compute_bias(is_decoder: bool, past: int) -> None:
    config = T5Config(
        d_model=16,
        d_kv=4,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        is_decoder=is_decoder,
    )
    torch.manual_seed(1)
    reference = T5Attention(config, has_relative_attention_bias=True, layer_idx=0)
    module = T5RelativeBias(4, model_dim=16, bidirectional=not is_decoder, num_buckets=32, max_distance=128)
    module.load_state_dict({"relative_attention_bias.weight": reference.relative_attention_bias.weight})
    q_len, k_len = 6, 200 + past
    expected = reference.compute_bias(q_len, k_len, past_seen_tokens=past)
    actual = module.bias(torch.arange(past, past + q_len), torch.arange(k_len))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_logit_bias_is_bias_in_query_dtype() -> None:
    torch.manual_seed(2)
    module = T5RelativeBias(2, model_dim=16)
    q = torch.randn(3, 2, 5, 8).to(torch.bfloat16)
    k = torch.randn(3, 2, 9, 8).to(torch.bfloat16)
    q_positions, k_positions = torch.arange(4, 9), torch.arange(9)
    bias = module.logit_bias(q, k, q_positions, k_positions)
    assert bias.shape == (1, 2, 5, 9) and bias.dtype == torch.bfloat16
    torch.testing.assert_close(bias, module.bias(q_positions, k_positions).to(torch.bfloat16), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("relative", "kwargs", "error", "name"),
    [
        (torch.arange(5.0), {}, TypeError, "relative_position"),
        (torch.ones(3, dtype=torch.bool), {}, TypeError, "relative_position"),
        ([1, 2], {}, TypeError, "relative_position"),
        (torch.arange(5), {"num_buckets": 31}, ValueError, "num_buckets"),
        (torch.arange(5), {"num_buckets": 2}, ValueError, "num_buckets"),
        (torch.arange(5), {"num_buckets": 1, "bidirectional": False}, ValueError, "num_buckets"),
        (torch.arange(5), {"num_buckets": 0}, ValueError, "num_buckets"),
        (torch.arange(5), {"num_buckets": 32.0}, TypeError, "num_buckets"),
        (torch.arange(5), {"max_distance": 0}, ValueError, "max_distance"),
        (torch.arange(5), {"max_distance": 8}, ValueError, "max_distance"),
        (torch.arange(5), {"max_distance": 16, "bidirectional": False}, ValueError, "max_distance"),
        (torch.arange(5), {"max_distance": 128.0}, TypeError, "max_distance"),
        (torch.arange(5), {"bidirectional": 1}, TypeError, "bidirectional"),
    ],
)
def test_t5_bucket_rejects_bad_input(
    relative: object, kwargs: dict, error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        t5_bucket(relative, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0,), {"model_dim": 8}, ValueError, "num_heads"),
        ((2.0,), {"model_dim": 8}, TypeError, "num_heads"),
        ((2,), {"model_dim": 0}, ValueError, "model_dim"),
        ((2,), {"model_dim": 8.0}, TypeError, "model_dim"),
        ((2,), {"model_dim": 8, "initializer_factor": 0.0}, ValueError, "initializer_factor"),
        ((2,), {"model_dim": 8, "num_buckets": 7}, ValueError, "num_buckets"),
        ((2,), {"model_dim": 8, "max_distance": 4}, ValueError, "max_distance"),
        ((2,), {"model_dim": 8, "bidirectional": "yes"}, TypeError, "bidirectional"),
    ],
)
def test_module_rejects_bad_settings(args: tuple, kwargs: dict, error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        T5RelativeBias(*args, **kwargs)


@pytest.mark.parametrize(
    ("q", "q_positions", "error", "name"),
    [
        (torch.randn(1, 3, 4, 8), torch.arange(4), ValueError, "num_heads"),
        (torch.randn(1, 2, 4, 8), torch.arange(4.0), TypeError, "q_positions"),
        (torch.randn(1, 2, 4, 8), torch.arange(3), ValueError, "q_positions"),
        (torch.randn(1, 2, 4, 8), torch.arange(4).view(2, 2), ValueError, "q_positions"),
    ],
)
def test_module_logit_bias_rejects_bad_inputs(
    q: object, q_positions: object, error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        T5RelativeBias(2, model_dim=16).logit_bias(q, torch.randn(1, 2, 4, 8), q_positions, torch.arange(4))


@pytest.mark.parametrize(("d_model", "factor"), [(64, 1.0), (512, 1.0), (256, 0.5)])
def test_table_is_initialised_as_transformers_initialises_t5(d_model: int, factor: float) -> None:
    """The table's entries have transformers' spread, factor / sqrt(d_model), not nn.Embedding's 1."""
    heads = 64  # 32 x 64 = 2048 entries: the sample std is within about 3 % of the true one
    config = T5Config(
        d_model=d_model,
        d_kv=8,
        d_ff=16,
        num_heads=heads,
        num_layers=1,
        vocab_size=8,
        initializer_factor=factor,
    )
    torch.manual_seed(3)
    reference = T5EncoderModel(config).encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    ours = T5RelativeBias(heads, model_dim=d_model, initializer_factor=factor).relative_attention_bias.weight
    expected = factor / d_model**0.5
    for table in (reference, ours):
        assert table.shape == (32, heads)
        assert abs(table.detach().std().item() / expected - 1) < 0.1
        assert abs(table.detach().mean().item()) < 0.1 * expected


@settings(max_examples=30, deadline=None)
@given(
    shift=st.integers(-(2**31), 2**31),
    q_list=st.lists(st.integers(-300, 300), max_size=5),
    k_list=st.lists(st.integers(-300, 300), max_size=6),
    bidirectional=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_windows_anywhere_give_hugging_face_buckets_and_the_bias_of_the_window_at_0(
    shift: int, q_list: list[int], k_list: list[int], bidirectional: bool, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    module = T5RelativeBias(2, model_dim=8, bidirectional=bidirectional)
    q_positions, k_positions = (
        torch.tensor(q_list, dtype=torch.int64),
        torch.tensor(k_list, dtype=torch.int64),
    )
    q, k = torch.randn(1, 2, len(q_list), 4).to(dtype), torch.randn(1, 2, len(k_list), 4).to(dtype)
    bias = module.logit_bias(q, k, q_positions + shift, k_positions + shift)
    assert bias.shape == (1, 2, len(q_list), len(k_list)) and bias.dtype == dtype
    assert torch.isfinite(bias).all()
    assert torch.equal(bias, module.logit_bias(q, k, q_positions, k_positions))
    relative = (k_positions + shift)[None, :] - (q_positions + shift)[:, None]
    expected = hf_bucket(relative, bidirectional=bidirectional, num_buckets=32, max_distance=128)
    assert torch.equal(t5_bucket(relative, bidirectional=bidirectional), expected)


@settings(max_examples=20, deadline=None)
@given(start=st.integers(-(2**31), 2**31 - 1), span=st.integers(0, 2**31))
def test_buckets_of_distances_up_to_2_to_the_32_equal_hugging_face(start: int, span: int) -> None:
    relative = torch.tensor([start, start + span, -(start + span), start - span])
    for bidirectional in (True, False):
        expected = hf_bucket(relative, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        assert torch.equal(t5_bucket(relative, bidirectional=bidirectional), expected)


def test_bias_rejects_bad_positions_and_nan_settings() -> None:
    module = T5RelativeBias(2, model_dim=8)
    with pytest.raises(TypeError, match="q_positions must be an integer tensor"):
        module.bias(torch.arange(3.0), torch.arange(3))
    with pytest.raises(ValueError, match="k_positions must be a 1-D integer tensor"):
        module.bias(torch.arange(3), torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="initializer_factor must be a finite positive number"):
        T5RelativeBias(2, model_dim=8, initializer_factor=float("nan"))
