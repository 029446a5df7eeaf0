"""Fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repository_url() -> str:
    """The course repository's URL, whose one source of truth is ``_config.yml`` (``repository.url``)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"].rstrip("/")


@pytest.fixture(scope="module")
def quiet_transformers():
    """transformers logs (not warns) about Phi-3's factor-less LongRoPE; keep the test output clean.

    Imported here, not at the top: only the tests that compare with transformers use it.
    """
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(verbosity)
