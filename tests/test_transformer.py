"""The attention layer, block and tiny decoder, with every positional encoding plugged in."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from posenc_lib.base import PositionalEncoding
from posenc_lib.transformer import (
    ENCODING_NAMES,
    MultiHeadAttention,
    TinyDecoder,
    TransformerBlock,
    build_positional_encoding,
    count_positional_parameters,
)

DIM, HEADS = 32, 4


def _inputs(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, seq_len, DIM, generator=torch.Generator().manual_seed(seed))


def test_attention_without_positions_is_permutation_equivariant_not_invariant() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(DIM, HEADS, causal=False)
    x = _inputs(2, 7)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    out, out_permuted = attention(x), attention(x[:, perm])
    assert_close(out_permuted, out[:, perm])  # outputs permute with the inputs
    assert not torch.allclose(out_permuted, out, atol=1e-3)  # but they are not unchanged


def test_causal_mask_breaks_permutation_equivariance() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(DIM, HEADS, causal=True)
    x = _inputs(1, 6)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    assert not torch.allclose(attention(x[:, perm]), attention(x)[:, perm], atol=1e-3)


def test_causal_attention_puts_no_weight_on_future_keys() -> None:
    torch.manual_seed(0)
    _, probs = MultiHeadAttention(DIM, HEADS)(_inputs(1, 5), return_attention=True)
    assert torch.equal(probs[..., torch.ones(5, 5, dtype=torch.bool).triu(1)], torch.zeros(1, HEADS, 10))
    assert_close(probs.sum(-1), torch.ones(1, HEADS, 5))


@pytest.mark.parametrize("name", ["shaw", "transformer_xl", "t5", "alibi", "rope", "xpos"])
def test_relative_methods_give_shift_invariant_attention(name: str) -> None:
    """Relative encodings: attention is unchanged when every position moves by the same amount."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(
        DIM, HEADS, positional=build_positional_encoding(name, dim=DIM, num_heads=HEADS)
    )
    x = _inputs(1, 9).double()
    attention.double()
    _, probs = attention(x, torch.arange(9), return_attention=True)
    _, shifted = attention(x, torch.arange(100, 109), return_attention=True)
    assert_close(probs, shifted)


@pytest.mark.parametrize("name", ["sinusoidal", "learned"])
def test_absolute_methods_are_not_shift_invariant(name: str) -> None:
    torch.manual_seed(0)
    model = TinyDecoder(11, DIM, HEADS, 1, encoding=name, max_positions=200)
    tokens = torch.randint(0, 11, (1, 9), generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(
        model(tokens, torch.arange(9)), model(tokens, torch.arange(100, 109)), atol=1e-4
    )


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_every_encoding_trains_in_the_tiny_decoder(name: str) -> None:
    torch.manual_seed(0)
    model = TinyDecoder(13, DIM, HEADS, 2, encoding=name, max_positions=64)
    tokens = torch.randint(0, 13, (3, 16), generator=torch.Generator().manual_seed(2))
    logits = model(tokens)
    assert logits.shape == (3, 16, 13)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 13), tokens[:, 1:].reshape(-1))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_decoder_is_causal() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(13, DIM, HEADS, 2, encoding="rope")
    tokens = torch.randint(0, 13, (1, 10), generator=torch.Generator().manual_seed(3))
    changed = tokens.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % 13
    assert_close(model(tokens)[:, :7], model(changed)[:, :7])


def test_t5_table_is_shared_by_all_layers_and_others_are_per_layer() -> None:
    t5 = TinyDecoder(5, DIM, HEADS, 3, encoding="t5")
    assert len({id(block.attention.positional) for block in t5.blocks}) == 1
    shaw = TinyDecoder(5, DIM, HEADS, 3, encoding="shaw")
    assert len({id(block.attention.positional) for block in shaw.blocks}) == 3


def test_learned_decoder_fails_clearly_past_its_table() -> None:
    model = TinyDecoder(5, DIM, HEADS, 1, encoding="learned", max_positions=8)
    with pytest.raises(ValueError, match="positions"):
        model(torch.zeros(1, 9, dtype=torch.int64))


def test_block_keeps_shape() -> None:
    block = TransformerBlock(
        DIM, HEADS, positional=build_positional_encoding("alibi", dim=DIM, num_heads=HEADS)
    )
    assert block(_inputs(2, 5)).shape == (2, 5, DIM)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="dim must be divisible by num_heads"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        MultiHeadAttention(32, 0)
    with pytest.raises(TypeError, match="positional must be a PositionalEncoding"):
        MultiHeadAttention(32, 4, positional=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="encoding must be one of 'nope', 'sinusoidal'"):
        TinyDecoder(5, DIM, HEADS, 1, encoding="rotary")
    with pytest.raises(ValueError, match="max_positions must be given"):
        build_positional_encoding("learned", dim=DIM, num_heads=HEADS)
    with pytest.raises(ValueError, match="positions must be a 1-D tensor of length T = 5"):
        MultiHeadAttention(DIM, HEADS)(_inputs(1, 5), torch.arange(4))
    with pytest.raises(ValueError, match=r"x must have shape \[batch, T, dim=32\]"):
        MultiHeadAttention(DIM, HEADS)(torch.zeros(5, DIM))
    with pytest.raises(TypeError, match="tokens must be an integer tensor"):
        TinyDecoder(5, DIM, HEADS, 1)(torch.zeros(1, 4))
    assert isinstance(build_positional_encoding("nope", dim=DIM, num_heads=HEADS), PositionalEncoding)


def test_scale_option_multiplies_the_content_logits() -> None:
    torch.manual_seed(0)
    default = MultiHeadAttention(DIM, HEADS, causal=False)
    unscaled = MultiHeadAttention(DIM, HEADS, causal=False, scale=1.0)
    unscaled.load_state_dict(default.state_dict())
    x = _inputs(1, 4).double()
    default.double(), unscaled.double()
    _, probs_default = default(x, return_attention=True)
    q, k, _ = unscaled.qkv(x).view(1, 4, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
    assert_close(probs_default, torch.softmax(q @ k.transpose(-1, -2) / (DIM // HEADS) ** 0.5, dim=-1))
    _, probs_unscaled = unscaled(x, return_attention=True)
    assert_close(probs_unscaled, torch.softmax(q @ k.transpose(-1, -2), dim=-1))
    with pytest.raises(ValueError, match="scale"):
        MultiHeadAttention(DIM, HEADS, scale=0.0)


def test_encoder_models_get_the_bidirectional_forms_of_t5_and_alibi() -> None:
    encoder_t5 = build_positional_encoding("t5", dim=DIM, num_heads=HEADS, causal=False)
    decoder_t5 = build_positional_encoding("t5", dim=DIM, num_heads=HEADS)
    assert encoder_t5.bidirectional and not decoder_t5.bidirectional
    encoder = TinyDecoder(5, DIM, HEADS, 1, encoding="alibi", causal=False)
    assert not encoder.blocks[0].attention.positional.causal
    assert TinyDecoder(5, DIM, HEADS, 1, encoding="alibi").blocks[0].attention.positional.causal


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nope", 0),
        ("sinusoidal", 0),
        ("alibi", 0),
        ("rope", 0),
        ("xpos", 0),
        ("learned", 20 * DIM),  # one vector per position, once
        ("t5", 32 * HEADS),  # one table shared by all layers
        ("shaw", 3 * 2 * (2 * 16 + 1) * (DIM // HEADS)),  # per layer: key and value tables
        ("transformer_xl", 3 * (2 * DIM + DIM * DIM)),  # per layer: u, v and W_R
    ],
)
def test_count_positional_parameters(name: str, expected: int) -> None:
    model = TinyDecoder(5, DIM, HEADS, 3, encoding=name, max_positions=20)
    assert count_positional_parameters(model) == expected
    named = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith("input_encoding.") or ".positional." in n
    )
    assert named == expected  # named_parameters lists a shared parameter once, too


def test_count_positional_parameters_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="model"):
        count_positional_parameters([torch.zeros(3)])
