"""Tests of posenc_lib.sinusoidal: against transformers, 40-digit arithmetic and the paper's identities."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding
from transformers.models.xlm.modeling_xlm import create_sinusoidal_embeddings

from posenc_lib.sinusoidal import (
    SinusoidalPositionalEncoding,
    sinusoid_offset_matrix,
    sinusoidal_encoding,
    sinusoidal_encoding_at,
    sinusoidal_frequencies,
)

even_dims = st.integers(min_value=1, max_value=64).map(lambda half: 2 * half)
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _encode(position: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The interleaved encoding of one position, in float64."""
    return sinusoidal_encoding_at(torch.tensor(position), dim, base=base, dtype=torch.float64)


def test_frequencies_equal_the_exp_log_div_term() -> None:
    dim = 512
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    torch.testing.assert_close(sinusoidal_frequencies(dim), div_term, rtol=1e-13, atol=0)
    expected = torch.tensor([10000.0 ** (-2 * i / dim) for i in range(dim // 2)], dtype=torch.float64)
    torch.testing.assert_close(sinusoidal_frequencies(dim), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize(("num_positions", "dim"), [(1, 2), (50, 16), (513, 64), (128, 6)])
def test_interleaved_matches_xlm(num_positions: int, dim: int) -> None:
    reference = create_sinusoidal_embeddings(num_positions, dim, torch.empty(num_positions, dim))
    torch.testing.assert_close(sinusoidal_encoding(num_positions, dim), reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("num_positions", "dim"), [(1, 2), (50, 16), (513, 64), (128, 6)])
def test_concat_matches_marian(num_positions: int, dim: int) -> None:
    marian = MarianSinusoidalPositionalEmbedding(num_positions, dim)
    # In transformers 5.18 the constructor leaves nn.Embedding's random N(0, 1) weight in place: the sinusoid
    # is written by MarianPreTrainedModel._init_weights, which copies create_weight() into it. Do the same.
    with torch.no_grad():
        marian.weight.copy_(marian.create_weight())
    reference = marian(torch.Size([1, num_positions]))
    torch.testing.assert_close(
        sinusoidal_encoding(num_positions, dim, layout="concat"), reference, rtol=0, atol=1e-6
    )
    offset = 7 if num_positions > 7 else 0
    shifted = marian(torch.Size([1, num_positions - offset]), past_key_values_length=offset)
    ours = sinusoidal_encoding_at(torch.arange(offset, num_positions), dim, layout="concat")
    torch.testing.assert_close(ours, shifted, rtol=0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(dim=even_dims, positions=st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=8))
def test_concat_is_interleaved_permuted(dim: int, positions: list[int]) -> None:
    position_tensor = torch.tensor(positions)
    interleaved = sinusoidal_encoding_at(position_tensor, dim, layout="interleaved")
    concat = sinusoidal_encoding_at(position_tensor, dim, layout="concat")
    permutation = torch.cat((torch.arange(0, dim, 2), torch.arange(1, dim, 2)))
    torch.testing.assert_close(concat, interleaved[..., permutation], rtol=0, atol=0)


@settings(max_examples=50, deadline=None)
@given(
    dim=even_dims,
    position=st.integers(-5000, 5000),
    offset=st.integers(-5000, 5000),
    base=st.sampled_from([10000.0, 500000.0, 100.0]),
)
def test_offset_matrix_maps_position_p_to_p_plus_k(dim: int, position: int, offset: int, base: float) -> None:
    matrix = sinusoid_offset_matrix(offset, dim, base=base)
    shifted = _encode(position + offset, dim, base)
    torch.testing.assert_close(matrix @ _encode(position, dim, base), shifted, rtol=0, atol=1e-9)
    # M_k is orthogonal and M_k M_j = M_{k+j}: rotations compose.
    torch.testing.assert_close(matrix @ matrix.T, torch.eye(dim, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        matrix @ sinusoid_offset_matrix(3, dim, base=base),
        sinusoid_offset_matrix(offset + 3, dim, base=base),
        rtol=0,
        atol=1e-9,
    )


def test_offset_matrix_does_not_depend_on_position() -> None:
    dim, offset = 32, 11
    table = sinusoidal_encoding_at(torch.arange(0, 4000, 37), dim, dtype=torch.float64)
    shifted = sinusoidal_encoding_at(torch.arange(offset, 4000 + offset, 37), dim, dtype=torch.float64)
    torch.testing.assert_close(table @ sinusoid_offset_matrix(offset, dim).T, shifted, rtol=0, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    dim=even_dims,
    p=st.integers(-(10**5), 10**5),
    q=st.integers(-(10**5), 10**5),
    shift=st.integers(-999, 999),
)
def test_dot_product_depends_only_on_distance(dim: int, p: int, q: int, shift: int) -> None:
    expected = sum(math.cos((p - q) * 10000.0 ** (-2 * i / dim)) for i in range(dim // 2))
    dot = torch.dot(_encode(p, dim), _encode(q, dim)).item()
    assert dot == pytest.approx(expected, abs=1e-8)
    assert torch.dot(_encode(p + shift, dim), _encode(q + shift, dim)).item() == pytest.approx(dot, abs=1e-8)


def _exact_encoding(positions: list[int], dim: int) -> torch.Tensor:
    """Interleaved sinusoid in 40-digit arithmetic, rounded to float64 at the end."""
    with mpmath.workdps(40):
        rows = []
        for p in positions:
            row = []
            for i in range(dim // 2):
                angle = p * mpmath.power(10000, mpmath.mpf(-2 * i) / dim)
                row += [float(mpmath.sin(angle)), float(mpmath.cos(angle))]
            rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def test_precision_up_to_2_to_the_17() -> None:
    dim = 64
    positions = [*range(0, 2**17 + 1, 2**17 // 64), 2**17 - 1, 99_991, 123_457]
    exact = _exact_encoding(positions, dim)
    ours = sinusoidal_encoding_at(torch.tensor(positions), dim)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), exact, rtol=0, atol=1e-6)
    # The same formula with float32 angles misses the tolerance by orders of magnitude: the test can fail.
    angles32 = torch.tensor(positions, dtype=torch.float32)[:, None] * sinusoidal_frequencies(dim).float()
    naive32 = torch.stack((angles32.sin(), angles32.cos()), dim=-1).flatten(-2)
    assert (naive32.double() - exact).abs().max().item() > 1e-3


def test_module_adds_encoding_and_keeps_dtype() -> None:
    torch.manual_seed(0)
    dim, length = 16, 12
    encoding = SinusoidalPositionalEncoding(dim, layout="concat")
    x = torch.randn(3, length, dim)
    positions = torch.arange(5, 5 + length)
    expected = x + sinusoidal_encoding(5 + length, dim, layout="concat")[5:]
    torch.testing.assert_close(encoding.embed(x, positions), expected)
    per_batch_positions = positions.expand(3, length)
    torch.testing.assert_close(encoding.embed(x, per_batch_positions), expected)
    x_bf16 = x.bfloat16()
    out = encoding.embed(x_bf16, positions)
    assert out.dtype == torch.bfloat16
    exact = x_bf16.double() + sinusoidal_encoding_at(positions, dim, layout="concat", dtype=torch.float64)
    assert torch.equal(out, exact.bfloat16())  # one rounding, at the end
    assert list(encoding.parameters()) == []
    q = torch.randn(1, 2, 4, 8)
    assert encoding.rotate(q, q, torch.arange(4), torch.arange(4)) == (q, q)
    assert encoding.logit_bias(q, q, torch.arange(4), torch.arange(4)) is None


@pytest.mark.parametrize("dim", [3, 0, -2])
def test_bad_dim(dim: int) -> None:
    with pytest.raises(ValueError, match="dim"):
        sinusoidal_encoding(4, dim)
    with pytest.raises(ValueError, match="dim"):
        SinusoidalPositionalEncoding(dim)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"layout must be one of 'interleaved', 'concat'; got 'half'"):
        sinusoidal_encoding(4, 8, layout="half")
    with pytest.raises(ValueError, match="layout"):
        SinusoidalPositionalEncoding(8, layout="Interleaved")
    with pytest.raises(ValueError, match="num_positions"):
        sinusoidal_encoding(0, 8)
    with pytest.raises(ValueError, match="base"):
        sinusoidal_frequencies(8, base=-1.0)
    with pytest.raises(TypeError, match="positions"):
        sinusoidal_encoding_at(torch.tensor([0.0, 1.0]), 8)
    with pytest.raises(TypeError, match="offset"):
        sinusoid_offset_matrix(1.5, 8)  # type: ignore[arg-type]
    module = SinusoidalPositionalEncoding(8)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., T, dim\] with dim=8"):
        module.embed(torch.zeros(2, 5, 6), torch.arange(5))
    with pytest.raises(ValueError, match="positions must have shape"):
        module.embed(torch.zeros(2, 5, 8), torch.arange(4))


@settings(max_examples=25, deadline=None)
@given(
    start=st.integers(-(2**31), 2**31 - 8),
    length=st.integers(1, 8),
    dim=st.integers(1, 8).map(lambda half: 2 * half),
    layout=st.sampled_from(["interleaved", "concat"]),
)
def test_windows_anywhere_up_to_2_to_the_31_are_accurate(
    start: int, length: int, dim: int, layout: str
) -> None:
    positions = list(range(start, start + length))
    ours = sinusoidal_encoding_at(torch.tensor(positions), dim, layout=layout)
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    exact = _exact_encoding(positions, dim)
    if layout == "concat":
        exact = exact[:, torch.cat((torch.arange(0, dim, 2), torch.arange(1, dim, 2)))]
    # float64 angles near 2^31 carry up to 2^31 * 2^-53 rad; float32 rounding adds 6e-8
    torch.testing.assert_close(ours.double(), exact, rtol=0, atol=1e-6)


def test_last_int32_position_is_accurate() -> None:
    position = 2**31 - 1
    ours = sinusoidal_encoding_at(torch.tensor([position], dtype=torch.int32), 64)
    torch.testing.assert_close(ours.double(), _exact_encoding([position], 64), rtol=0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(0, 6),
    half_dim=st.integers(1, 8),
    start=st.integers(-(2**31), 2**31 - 6),
    dtype=st.sampled_from(DTYPES),
    per_batch=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_embed_keeps_dtype_and_precision_for_any_window(
    batch: int, length: int, half_dim: int, start: int, dtype: torch.dtype, per_batch: bool, seed: int
) -> None:
    dim = 2 * half_dim
    x = torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(seed)).to(dtype)
    positions = torch.arange(start, start + length)
    if per_batch:
        positions = positions.expand(batch, length)
    out = SinusoidalPositionalEncoding(dim).embed(x, positions)
    assert out.shape == x.shape and out.dtype == dtype
    exact = x.double() + sinusoidal_encoding_at(positions, dim, dtype=torch.float64)
    # float64: exact up to rounding; float32: the encoding and the sum rounded to float32; bfloat16: the
    # float32 sum rounded once more, to bfloat16 (2^-8 relative)
    tolerance = {torch.float64: (1e-15, 1e-15), torch.float32: (2.4e-7, 6e-8), torch.bfloat16: (2**-8, 1e-6)}
    rtol, atol = tolerance[dtype]
    torch.testing.assert_close(out.double(), exact, rtol=rtol, atol=atol)


def test_frequencies_on_a_device_and_embed_without_value_reads() -> None:
    on_meta = sinusoidal_frequencies(16, device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == (8,) and on_meta.dtype == torch.float64
    module = SinusoidalPositionalEncoding(16)
    x = torch.empty(2, 5, 16, device="meta", dtype=torch.bfloat16)
    out = module.embed(x, torch.arange(5, device="meta"))
    assert out.shape == x.shape and out.dtype == torch.bfloat16 and out.device.type == "meta"
    x, positions = torch.randn(2, 5, 16), torch.arange(-2, 3)
    compiled = torch.compile(module.embed, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, positions), module.embed(x, positions))


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 6), wrong=st.integers(0, 6), extra=st.integers(1, 3), dim=st.sampled_from([4, 8])
)
def test_embed_rejects_positions_of_the_wrong_shape(length: int, wrong: int, extra: int, dim: int) -> None:
    module = SinusoidalPositionalEncoding(dim)
    x = torch.randn(2, length, dim)
    bad = [torch.zeros((extra, 2, length), dtype=torch.int64)]
    if wrong != length:
        bad.append(torch.arange(wrong))
    for positions in bad:
        with pytest.raises(ValueError, match="positions must have shape"):
            module.embed(x, positions)
    with pytest.raises(ValueError, match=rf"x must have shape \[\.\.\., T, dim\] with dim={dim}"):
        module.embed(torch.randn(2, length, dim + 2), torch.arange(length))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: sinusoidal_frequencies(8, base=float("nan")), ValueError, "base must be a finite positive"),
        (lambda: sinusoidal_frequencies(8, base=float("inf")), ValueError, "base must be a finite positive"),
        (lambda: SinusoidalPositionalEncoding(8, base=float("nan")), ValueError, "base"),
        (lambda: sinusoidal_encoding_at(torch.arange(3), 8, dtype=torch.int64), TypeError, "dtype must be"),
        (lambda: sinusoidal_encoding_at(torch.arange(3), 8, dtype="float32"), TypeError, "dtype must be"),
        (lambda: sinusoidal_encoding_at([0, 1], 8), TypeError, "positions must be a torch.Tensor"),
        (
            lambda: SinusoidalPositionalEncoding(8).embed(torch.zeros(1, 3, 8).long(), torch.arange(3)),
            TypeError,
            r"x must be a floating-point tensor \(torch.float32",
        ),
        (
            lambda: SinusoidalPositionalEncoding(8).embed(torch.zeros(1, 3, 8), torch.arange(3.0)),
            TypeError,
            "positions must be an integer tensor",
        ),
    ],
)
def test_bad_input_names_the_argument(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]
