"""Tests of posenc_lib.learned against GPT-2's input embedding in Hugging Face transformers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2Model

from posenc_lib.learned import LearnedPositionalEmbedding

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def test_embed_matches_gpt2_input_embedding() -> None:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = GPT2Model(config).eval()
    ours = LearnedPositionalEmbedding(config.n_positions, config.n_embd)
    with torch.no_grad():
        model.wpe.weight.copy_(ours.weight)
    captured: list[torch.Tensor] = []
    # GPT2Model passes wte(ids) + wpe(position_ids) to its dropout layer: record that input.
    model.drop.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    input_ids = torch.randint(0, config.vocab_size, (3, 9))
    positions = torch.arange(20, 29)  # as if 20 tokens were already in the cache
    with torch.no_grad():
        model(input_ids, position_ids=positions.unsqueeze(0))
        expected = captured[0]
        token_embeddings = model.wte(input_ids)
        torch.testing.assert_close(ours.embed(token_embeddings, positions), expected, rtol=0, atol=0)
        torch.testing.assert_close(ours(positions), model.wpe(positions), rtol=0, atol=0)


@settings(max_examples=30, deadline=None)
@given(
    max_positions=st.integers(1, 64),
    dim=st.integers(1, 16),
    data=st.data(),
)
def test_forward_returns_table_rows(max_positions: int, dim: int, data: st.DataObject) -> None:
    table = LearnedPositionalEmbedding(max_positions, dim)
    positions = data.draw(st.lists(st.integers(0, max_positions - 1), min_size=1, max_size=10))
    rows = table(torch.tensor(positions))
    expected = torch.stack([table.weight[p] for p in positions])
    torch.testing.assert_close(rows, expected, rtol=0, atol=0)


def test_initial_values_are_normal_with_init_std() -> None:
    torch.manual_seed(1)
    table = LearnedPositionalEmbedding(1024, 768)  # GPT-2 small; 0.02 is Hugging Face's initializer_range
    assert table.weight.shape == (1024, 768)
    assert table.weight.mean().abs().item() < 1e-3
    assert table.weight.std().item() == pytest.approx(0.02, rel=0.01)
    wide = LearnedPositionalEmbedding(512, 384, init_std=0.5)
    assert wide.weight.std().item() == pytest.approx(0.5, rel=0.02)


def test_embed_keeps_dtype_and_trains() -> None:
    torch.manual_seed(2)
    table = LearnedPositionalEmbedding(16, 8)
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    positions = torch.arange(5)
    out = table.embed(x, positions)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, (x.float() + table.weight[:5]).bfloat16())
    table.embed(torch.randn(2, 5, 8), torch.tensor([[0, 1, 2, 3, 4], [4, 4, 4, 4, 4]])).sum().backward()
    assert table.weight.grad is not None
    torch.testing.assert_close(table.weight.grad[:4].sum(-1), torch.full((4,), 8.0))
    torch.testing.assert_close(table.weight.grad[4].sum(), torch.tensor(6 * 8.0))
    assert table.weight.grad[5:].abs().sum().item() == 0.0


def test_position_past_the_table_is_a_clear_error() -> None:
    table = LearnedPositionalEmbedding(1024, 8)
    with pytest.raises(ValueError, match="positions") as info:
        table.embed(torch.zeros(1, 3, 8), torch.tensor([1022, 1023, 1024]))
    message = str(info.value)
    assert "1024" in message
    assert "largest position asked is 1024" in message
    assert "max_positions=1024" in message
    with pytest.raises(
        ValueError, match=r"max_positions=1024\), but the largest position asked is 3 and the smallest -1"
    ):
        table(torch.tensor([-1, 3]))
    # nn.Embedding, which GPT-2 uses, raises an IndexError instead; the check turns that into a message.
    with pytest.raises(IndexError):
        torch.nn.Embedding(1024, 8)(torch.tensor([1024]))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_positions"):
        LearnedPositionalEmbedding(0, 8)
    with pytest.raises(ValueError, match="init_std"):
        LearnedPositionalEmbedding(4, 8, init_std=0.0)
    table = LearnedPositionalEmbedding(4, 8)
    with pytest.raises(TypeError, match="positions"):
        table(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="x must have shape"):
        table.embed(torch.zeros(1, 3, 7), torch.arange(3))


@settings(max_examples=40, deadline=None)
@given(
    max_positions=st.integers(1, 64),
    start=st.integers(-8, 70) | st.integers(-(2**31), 2**31 - 8),
    length=st.integers(1, 8),
    per_batch=st.booleans(),
)
def test_positions_outside_the_table_anywhere_are_a_value_error(
    max_positions: int, start: int, length: int, per_batch: bool
) -> None:
    table = LearnedPositionalEmbedding(max_positions, 4)
    positions = torch.arange(start, start + length)
    if per_batch:
        positions = positions.expand(2, length)
    inside = start >= 0 and start + length <= max_positions
    x = torch.zeros(2, length, 4)
    if inside:
        torch.testing.assert_close(table.embed(x, positions), table(positions).expand(2, length, 4))
    else:  # negative or past the last row: never an IndexError
        for call in (lambda: table(positions), lambda: table.embed(x, positions)):
            with pytest.raises(ValueError, match=rf"positions must lie in \[0, {max_positions - 1}\]"):
                call()


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 3), length=st.integers(0, 6), dtype=st.sampled_from(DTYPES))
def test_embed_keeps_the_dtype_of_x(batch: int, length: int, dtype: torch.dtype) -> None:
    table = LearnedPositionalEmbedding(8, 4)
    x = torch.randn(batch, length, 4).to(dtype)
    out = table.embed(x, torch.arange(length))
    assert out.shape == x.shape and out.dtype == dtype
    expected = (x.to(torch.promote_types(dtype, torch.float32)) + table.weight[:length]).to(dtype)
    assert torch.equal(out, expected)


def test_range_check_is_skipped_where_values_cannot_be_read() -> None:
    table = LearnedPositionalEmbedding(16, 8)
    on_meta = LearnedPositionalEmbedding(16, 8).to("meta")
    out = on_meta.embed(torch.empty(2, 5, 8, device="meta"), torch.arange(5, device="meta"))
    assert out.shape == (2, 5, 8) and out.device.type == "meta"
    x, positions = torch.randn(2, 5, 8), torch.arange(3, 8)
    compiled = torch.compile(table.embed, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, positions), table.embed(x, positions))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda t: t(torch.tensor([True])), TypeError, "positions must be an integer tensor"),
        (lambda t: t([0, 1]), TypeError, "positions must be a torch.Tensor"),
        (lambda t: t.embed(torch.zeros(1, 3, 8).int(), torch.arange(3)), TypeError, "x must be a floating"),
        (lambda t: t.embed(torch.zeros(1, 3, 8), torch.arange(4)), ValueError, "positions must have shape"),
        (lambda t: t.embed(torch.zeros(8), torch.arange(1)), ValueError, "x must have shape"),
        (lambda t: LearnedPositionalEmbedding(4, 8, init_std=float("nan")), ValueError, "init_std"),
        (lambda t: LearnedPositionalEmbedding(4.0, 8), TypeError, "max_positions"),
    ],
)
def test_bad_input_names_the_argument(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call(LearnedPositionalEmbedding(4, 8))  # type: ignore[operator]
