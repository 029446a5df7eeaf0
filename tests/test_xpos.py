"""Tests of posenc_lib.xpos against rotary-embedding-torch 0.9.1, a naive loop and the relative property."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rotary_embedding_torch import RotaryEmbedding

from posenc_lib.xpos import XPos, apply_xpos, xpos_max_offset, xpos_scale, xpos_zeta

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def _naive_xpos(x: torch.Tensor, positions: list[int], centre: int, sign: int) -> torch.Tensor:
    """xPos of ``x`` [T, d] by the formula: one 2x2 rotation and one scale per pair, in Python floats."""
    dim = x.shape[-1]
    out = torch.empty(x.shape, dtype=torch.float64)
    for t, position in enumerate(positions):
        for c in range(dim // 2):
            theta = 10000.0 ** (-2 * c / dim)
            zeta = (2 * c + 0.4 * dim) / (1.4 * dim)
            scale = zeta ** (sign * (position - centre) / 512.0)
            cos, sin = math.cos(position * theta), math.sin(position * theta)
            a, b = float(x[t, 2 * c]), float(x[t, 2 * c + 1])
            out[t, 2 * c] = scale * (a * cos - b * sin)
            out[t, 2 * c + 1] = scale * (a * sin + b * cos)
    return out


# rotary-embedding-torch divides by dim - 2 in its constructor, so dim = 2 cannot be compared.
@pytest.mark.parametrize(("length", "dim"), [(1, 4), (7, 16), (64, 32), (300, 64)])
def test_matches_rotary_embedding_torch(length: int, dim: int) -> None:
    torch.manual_seed(length)
    q, k = torch.randn(2, 3, length, dim), torch.randn(2, 3, length, dim)
    positions = torch.arange(length)
    reference = RotaryEmbedding(dim, use_xpos=True, xpos_scale_base=512, cache_if_possible=False)
    expected_q, expected_k = reference.rotate_queries_and_keys(q, k)
    ours_q, ours_k = apply_xpos(q, k, positions, positions)
    # rotary-embedding-torch forms its angles in float32: allow for that error (~T * 6e-8 rad).
    torch.testing.assert_close(ours_q, expected_q, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours_k, expected_k, rtol=1e-4, atol=1e-4)


def test_zeta_and_scale_match_rotary_embedding_torch() -> None:
    dim, length = 24, 9
    reference = RotaryEmbedding(dim, use_xpos=True, xpos_scale_base=512, cache_if_possible=False).double()
    # The library builds zeta in float32; .double() only casts it.
    torch.testing.assert_close(xpos_zeta(dim), reference.scale, rtol=2e-7, atol=0)
    expected = reference.get_scale(torch.arange(length, dtype=torch.float64))  # centred on length // 2
    ours = xpos_scale(dim, torch.arange(length) - length // 2)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=0)
    assert torch.equal(ours[:, 0::2], ours[:, 1::2])


@settings(max_examples=20, deadline=None)
@given(
    dim=st.integers(1, 8).map(lambda half: 2 * half),
    q_positions=st.lists(st.integers(-3000, 3000), min_size=1, max_size=5),
    k_positions=st.lists(st.integers(-3000, 3000), min_size=1, max_size=5),
    centre=st.none() | st.integers(-1000, 1000),
)
def test_matches_naive_loop(
    dim: int, q_positions: list[int], k_positions: list[int], centre: int | None
) -> None:
    generator = torch.Generator().manual_seed(dim)
    q = torch.randn(len(q_positions), dim, dtype=torch.float64, generator=generator)
    k = torch.randn(len(k_positions), dim, dtype=torch.float64, generator=generator)
    ours_q, ours_k = apply_xpos(q, k, torch.tensor(q_positions), torch.tensor(k_positions), centre=centre)
    everywhere = q_positions + k_positions
    used_centre = (min(everywhere) + max(everywhere) + 1) // 2 if centre is None else centre
    torch.testing.assert_close(ours_q, _naive_xpos(q, q_positions, used_centre, +1), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours_k, _naive_xpos(k, k_positions, used_centre, -1), rtol=1e-9, atol=1e-9)


def _logit(q: torch.Tensor, k: torch.Tensor, n: int, m: int, centre: int) -> float:
    rotated_q, rotated_k = apply_xpos(q, k, torch.tensor([n]), torch.tensor([m]), centre=centre)
    return float(rotated_q[0] @ rotated_k[0])


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(0, 4000),
    m=st.integers(0, 4000),
    shift=st.integers(-2000, 2000),
    centres=st.tuples(st.integers(0, 4000), st.integers(-4000, 4000)),
    seed=st.integers(0, 2**16),
)
def test_logit_depends_only_on_distance(
    n: int, m: int, shift: int, centres: tuple[int, int], seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 16, dtype=torch.float64, generator=generator)
    k = torch.randn(1, 16, dtype=torch.float64, generator=generator)
    reference = _logit(q, k, n, m, centres[0])
    assert _logit(q, k, n + shift, m + shift, centres[1]) == pytest.approx(reference, rel=1e-9, abs=1e-9)
    # Equal positions: rotations and scales cancel, the plain dot product is left.
    assert _logit(q, k, n, n, centres[0]) == pytest.approx(float(q[0] @ k[0]), rel=1e-9, abs=1e-9)


def test_logit_decays_with_distance_per_pair() -> None:
    dim = 8
    q = torch.zeros(1, dim, dtype=torch.float64)
    k = torch.zeros(1, dim, dtype=torch.float64)
    q[0, 0] = k[0, 0] = 1.0  # only pair 0 (theta = 1, zeta = 0.4/1.4)
    for distance in (1, 100, 512, 2048):
        rotated_q, rotated_k = apply_xpos(q, k, torch.tensor([distance]), torch.tensor([0]), centre=0)
        rope_logit = math.cos(distance)  # pair 0 rotated by distance * theta_0 = distance rad
        expected = (0.4 / 1.4) ** (distance / 512) * rope_logit
        assert float(rotated_q[0] @ rotated_k[0]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_centring_keeps_long_sequences_finite() -> None:
    q, k = torch.ones(1, 1, 1, 32), torch.ones(1, 1, 60_001, 32)
    ours_q, ours_k = apply_xpos(q, k, torch.tensor([60_000]), torch.arange(60_001))
    assert torch.isfinite(ours_q).all() and torch.isfinite(ours_k).all()
    # Centred at 0, the key scale zeta^(-n/512) would overflow float32 at n = 60000: a clear error instead.
    with pytest.raises(ValueError, match=r"q_positions must lie within 35694 positions of the centre p0 = 0"):
        apply_xpos(q, k, torch.tensor([60_000]), torch.arange(60_001), centre=0)


def test_low_precision_rounds_once() -> None:
    torch.manual_seed(3)
    q, k = torch.randn(2, 40, 16).bfloat16(), torch.randn(2, 40, 16).bfloat16()
    positions = torch.arange(100, 140)
    out_q, out_k = apply_xpos(q, k, positions, positions)
    assert out_q.dtype == out_k.dtype == torch.bfloat16
    exact_q, exact_k = apply_xpos(q.double(), k.double(), positions, positions)
    # One rounding to bfloat16 (8 significant bits) is off by at most 2^-8 relative.
    torch.testing.assert_close(out_q.double(), exact_q, rtol=2**-8, atol=1e-30)
    torch.testing.assert_close(out_k.double(), exact_k, rtol=2**-8, atol=1e-30)


def test_module_rotate_hook() -> None:
    torch.manual_seed(4)
    module = XPos(16, scale_base=256.0)
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 4, 9, 16)
    q_positions, k_positions = torch.arange(4, 9), torch.arange(9)
    got_q, got_k = module.rotate(q, k, q_positions, k_positions)
    want_q, want_k = apply_xpos(q, k, q_positions, k_positions, scale_base=256.0)
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
    x = torch.randn(2, 5, 16)
    assert module.embed(x, q_positions) is x
    assert module.logit_bias(q, k, q_positions, k_positions) is None
    assert list(module.parameters()) == []


def test_bad_arguments() -> None:
    q, k = torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    positions = torch.arange(3)
    with pytest.raises(ValueError, match="dim"):
        xpos_zeta(7)
    with pytest.raises(ValueError, match="head_dim"):
        XPos(6).rotate(q, k, positions, positions)
    with pytest.raises(ValueError, match="same d"):
        apply_xpos(q, torch.randn(1, 3, 6), positions, positions)
    with pytest.raises(ValueError, match="k_positions must be a 1-D tensor of length 3"):
        apply_xpos(q, k, positions, torch.arange(4))
    with pytest.raises(TypeError, match="q_positions"):
        apply_xpos(q, k, positions.float(), positions)
    with pytest.raises(TypeError, match="centre"):
        apply_xpos(q, k, positions, positions, centre=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="centre"):
        XPos(8, centre="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale_base"):
        xpos_scale(8, positions, scale_base=0.0)
    with pytest.raises(ValueError, match="positions must be a 1-D integer tensor"):
        xpos_scale(8, positions[None])


@settings(max_examples=30, deadline=None)
@given(
    start=st.integers(-(2**31), 2**31 - 40),
    length=st.integers(1, 40),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)
def test_windows_anywhere_up_to_2_to_the_31_are_finite_with_the_scores_of_the_window_at_0(
    start: int, length: int, dtype: torch.dtype, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 2, length, 16, dtype=torch.float64, generator=generator)
    k = torch.randn(1, 2, length, 16, dtype=torch.float64, generator=generator)
    positions = torch.arange(start, start + length)
    out_q, out_k = apply_xpos(q.to(dtype), k.to(dtype), positions, positions)
    assert out_q.dtype == out_k.dtype == dtype
    assert torch.isfinite(out_q).all() and torch.isfinite(out_k).all()
    # The same window in float64 and shifted to 0: the scores depend only on n - m.
    exact_q, exact_k = apply_xpos(q, k, positions, positions)
    tolerance = {torch.float32: 1e-5, torch.float64: 1e-9, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out_q.double(), exact_q, rtol=tolerance, atol=tolerance)
    at_zero_q, at_zero_k = apply_xpos(q, k, positions - start, positions - start)
    scores = exact_q @ exact_k.transpose(-1, -2)
    # float64 angles near 2^31 carry about 2^31 * 2^-53 rad of rounding
    torch.testing.assert_close(scores, at_zero_q @ at_zero_k.transpose(-1, -2), rtol=1e-6, atol=1e-6)
    module_q, module_k = XPos(16).rotate(q.to(dtype), k.to(dtype), positions, positions)
    assert torch.equal(module_q, out_q) and torch.equal(module_k, out_k)


@pytest.mark.parametrize(
    ("dtype", "limit"),
    [(torch.float32, 35_694), (torch.bfloat16, 35_694), (torch.float16, 3_966), (torch.float64, 289_519)],
)
def test_scale_is_finite_up_to_the_limit_and_an_error_past_it(dtype: torch.dtype, limit: int) -> None:
    assert xpos_max_offset(dtype=dtype) == limit
    assert xpos_max_offset(scale_base=256.0, dtype=dtype) == math.floor(limit / 2)
    q, k = torch.ones(2, 8, dtype=dtype), torch.ones(2, 8, dtype=dtype)
    extremes = torch.tensor([-limit, limit])
    out_q, out_k = apply_xpos(q, k, extremes, extremes, centre=0)
    assert torch.isfinite(out_q).all() and torch.isfinite(out_k).all()
    scale = xpos_scale(8, extremes)
    assert scale.min() >= torch.finfo(dtype).tiny  # a normal number of the dtype: no digits lost
    for q_positions, k_positions, name in [
        (torch.tensor([0, limit + 1]), extremes, "q_positions"),
        (extremes, torch.tensor([-limit - 1, 0]), "k_positions"),
    ]:
        with pytest.raises(
            ValueError, match=rf"{name} must lie within {limit} positions of the centre p0 = 0"
        ):
            apply_xpos(q, k, q_positions, k_positions, centre=0)
        with pytest.raises(ValueError, match=name):  # the hook checks too where the positions are on the CPU
            XPos(8, centre=0).rotate(q[None, None], k[None, None], q_positions, k_positions)


def test_default_centre_is_the_middle_of_the_positions_given() -> None:
    # A window of 2L + 1 positions far from 0 fits; one more position does not.
    limit = xpos_max_offset()
    q = torch.ones(1, 4)
    start = 2**31 - 2 * limit - 1
    window = torch.arange(start, start + 2 * limit + 1, 1000)
    window = torch.cat((window, torch.tensor([start + 2 * limit])))
    out_q, out_k = apply_xpos(q.expand(len(window), 4), q.expand(len(window), 4), window, window)
    assert torch.isfinite(out_q).all() and torch.isfinite(out_k).all()
    wider = torch.tensor([start, start + 2 * limit + 2])
    with pytest.raises(ValueError, match="positions must lie within"):
        apply_xpos(q.expand(2, 4), q.expand(2, 4), wider, wider)


def test_xpos_scale_limits_float64() -> None:
    limit = xpos_max_offset(dtype=torch.float64)
    assert torch.isfinite(xpos_scale(8, torch.tensor([-limit, limit]))).all()
    with pytest.raises(ValueError, match="positions must lie within"):
        xpos_scale(8, torch.tensor([limit + 1]))


def test_empty_queries_or_keys() -> None:
    module = XPos(8)
    q, k = torch.randn(1, 2, 0, 8), torch.randn(1, 2, 4, 8)
    out_q, out_k = module.rotate(q, k, torch.arange(0), torch.arange(4))
    assert out_q.shape == (1, 2, 0, 8) and out_k.shape == k.shape
    out_q, out_k = module.rotate(q, k[:, :, :0], torch.arange(0), torch.arange(0))
    assert out_q.shape == out_k.shape == (1, 2, 0, 8)


@settings(max_examples=30, deadline=None)
@given(
    length=st.integers(1, 6),
    wrong_length=st.integers(0, 6),
    extra_dims=st.integers(1, 2),
    which=st.sampled_from(["q_positions", "k_positions"]),
)
def test_positions_of_the_wrong_shape_are_a_value_error_naming_them(
    length: int, wrong_length: int, extra_dims: int, which: str
) -> None:
    q, k = torch.randn(1, 2, length, 8), torch.randn(1, 2, length, 8)
    bad = [
        torch.zeros((1,) * extra_dims + (length,), dtype=torch.int64),  # not 1-D
        *([torch.arange(wrong_length)] if wrong_length != length else []),
    ]
    for positions in bad:
        args = {"q_positions": torch.arange(length), "k_positions": torch.arange(length), which: positions}
        with pytest.raises(ValueError, match=which):
            apply_xpos(q, k, args["q_positions"], args["k_positions"])
        with pytest.raises(ValueError, match=which):
            XPos(8).rotate(q, k, args["q_positions"], args["k_positions"])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: XPos(8).rotate(
                torch.ones(1, 1, 3, 8).long(), torch.randn(1, 1, 3, 8), *[torch.arange(3)] * 2
            ),
            TypeError,
            "q must be a floating-point tensor",
        ),
        (
            lambda: XPos(8).rotate(
                torch.randn(1, 1, 3, 8), torch.randn(1, 1, 3, 8), torch.arange(3.0), torch.arange(3)
            ),
            TypeError,
            "q_positions must be an integer tensor",
        ),
        (
            lambda: XPos(8).rotate(torch.randn(1, 1, 3, 8), None, torch.arange(3), torch.arange(3)),
            TypeError,
            "k must be a torch.Tensor",
        ),
        (lambda: XPos(8, base=float("nan")), ValueError, "base must be a finite positive number"),
        (lambda: XPos(8, scale_base=float("inf")), ValueError, "scale_base must be a finite positive number"),
        (
            lambda: apply_xpos(*[torch.randn(3, 8)] * 2, *[torch.arange(3)] * 2, base=float("nan")),
            ValueError,
            "base",
        ),
        (lambda: xpos_max_offset(dtype=torch.int32), TypeError, "dtype must be a floating torch.dtype"),
        (lambda: xpos_max_offset(scale_base=-1.0), ValueError, "scale_base"),
    ],
)
def test_bad_input_names_the_argument(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]
