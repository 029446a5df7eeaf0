"""The public contract: names importable from the package top level, with the promised shapes and dtypes."""

from __future__ import annotations

import pytest
import torch

import posenc_lib
from posenc_lib.device import get_device


def test_every_public_name_is_importable_and_documented() -> None:
    for name in posenc_lib.__all__:
        obj = getattr(posenc_lib, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"


def test_contract_shapes_and_dtypes() -> None:
    pe = posenc_lib.sinusoidal_encoding(10, 8)
    assert pe.shape == (10, 8) and pe.dtype == torch.float32
    assert posenc_lib.sinusoidal_encoding(10, 8, layout="concat").shape == (10, 8)
    rel = posenc_lib.relative_positions(3, 5)
    assert rel.dtype == torch.int64 and rel.shape == (3, 5) and rel[0, 4] == 4 and rel[2, 0] == -2
    assert posenc_lib.t5_bucket(torch.arange(-3, 4)).dtype == torch.int64
    slopes = posenc_lib.alibi_slopes(6)
    assert slopes.dtype == torch.float32 and slopes.shape == (6,)
    inv_freq, attention_factor = posenc_lib.rope_frequencies(64)
    assert inv_freq.shape == (32,) and attention_factor == 1.0
    x = torch.randn(2, 3, 5, 8, dtype=torch.bfloat16)
    assert posenc_lib.apply_rope(x).dtype == torch.bfloat16
    assert posenc_lib.rope_permutation(8).tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_get_device_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSENC_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    monkeypatch.setenv("POSENC_DEVICE", "tpu")
    with pytest.raises(ValueError, match="POSENC_DEVICE must be one of 'cpu', 'cuda'"):
        get_device()
    monkeypatch.delenv("POSENC_DEVICE")
    assert get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure on a machine without CUDA")
def test_get_device_fails_loudly_when_cuda_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSENC_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="asks for CUDA"):
        get_device()
