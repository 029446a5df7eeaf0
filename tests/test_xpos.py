"""Tests of posenc_lib.xpos against rotary-embedding-torch 0.9.1, a naive loop and the relative property."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rotary_embedding_torch import RotaryEmbedding

from posenc_lib.xpos import XPos, apply_xpos, xpos_scale, xpos_zeta


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
    used_centre = (max(q_positions + k_positions) + 1) // 2 if centre is None else centre
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
    # Without centring the key scale zeta^(-m/512) overflows float32 at m = 60000.
    _, uncentred_k = apply_xpos(q, k, torch.tensor([60_000]), torch.arange(60_001), centre=0)
    assert not torch.isfinite(uncentred_k).all()


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
    with pytest.raises(ValueError, match="positions must be a 1-D tensor"):
        xpos_scale(8, positions[None])
