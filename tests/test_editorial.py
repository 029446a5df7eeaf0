"""The book reads as a textbook, and its structure stays linked: the editorial rules of the README, checked.

What a reader sees of a chapter is its prose and its visible code cells (cells tagged ``hide-input``,
``remove-input``, ``hide-cell`` or ``remove-cell`` are run and compared by nbval but folded away or removed in
the web book). These tests keep the visible part a lesson rather than a test suite, keep each misconception in
one canonical callout that later chapters link to, and keep cross-references as links that the ``-n -W``
build checks (rather than "chapter N" text that goes stale).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PAGES = sorted((ROOT / "book").glob("*.md"))
HIDDEN = {"hide-input", "remove-input", "hide-cell", "remove-cell"}

MAX_WORDS = 3500  # prose per chapter page: split a longer chapter rather than cut what it teaches
MAX_LINES = 60  # no visible code cell is longer
LONG_LINES = 30  # ... and at most MAX_LONG_CELLS visible cells in the whole book are longer than this
MAX_LONG_CELLS = 5

# Each misconception of shared/reference/misconceptions.md that the book handles has one canonical callout,
# named so that later chapters can link to it ({ref} to misc-...), in the chapter where it first arises.
CANONICAL_CALLOUTS = {
    "misc-permutation-invariant": "01_why_position",
    "misc-nope": "01_why_position",
    "misc-relative-input": "01_why_position",
    "misc-sinusoid-relative": "02_absolute",
    "misc-extrapolation": "02_absolute",
    "misc-frequency-index": "02_absolute",
    "misc-pair-index": "02_absolute",
    "misc-base": "02_absolute",
    "misc-relative-sign": "03_relative",
    "misc-rope-values": "04_rope",
    "misc-rope-decay": "04_rope",
    "misc-rope-layouts": "04_rope",
    "misc-rope-absolute-relative": "04_rope",
    "misc-yarn-direction": "07_context_extension",
    "misc-longrope": "07_context_extension",
    "misc-max-position": "07_context_extension",
    "misc-bf16": "08_rope_checkpoints",
    "misc-kv-rerotate": "09_rope_inference",
    "misc-left-padding": "10_real_llm",
    "misc-gguf-layout": "10_real_llm",
    "misc-mrope-text": "11_rope_nd",
    "misc-streaming-positions": "12_inference_positions",
    "misc-mla-latent-rope": "12_inference_positions",
    "misc-every-layer-rope": "12_inference_positions",
}


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _markdown(path: Path) -> str:
    return "\n".join("".join(cell["source"]) for cell in _cells(path) if cell["cell_type"] == "markdown")


def _visible_code(path: Path) -> list[tuple[int, str]]:
    return [
        (index, "".join(cell["source"]))
        for index, cell in enumerate(_cells(path))
        if cell["cell_type"] == "code" and not HIDDEN & set(cell.get("metadata", {}).get("tags", []))
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_prose_fits_one_chapter_page(path: Path) -> None:
    words = len(_markdown(path).split())
    assert words <= MAX_WORDS, f"{path.name}: {words} words of prose (at most {MAX_WORDS}: split the chapter)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_visible_code_cells_are_short(path: Path) -> None:
    too_long = [index for index, source in _visible_code(path) if len(source.splitlines()) > MAX_LINES]
    assert not too_long, (
        f"{path.name}: visible code cells {too_long} have more than {MAX_LINES} lines: move layout and "
        "secondary checks into posenc_lib or a hide-input cell"
    )


def test_few_visible_code_cells_over_thirty_lines_in_the_whole_book() -> None:
    long_cells = [
        f"{path.stem} cell {index}"
        for path in NOTEBOOKS
        for index, source in _visible_code(path)
        if len(source.splitlines()) > LONG_LINES
    ]
    assert len(long_cells) <= MAX_LONG_CELLS, (
        f"{len(long_cells)} visible cells over {LONG_LINES} lines: {long_cells}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_checks_print_measured_quantities_not_literal_booleans(path: Path) -> None:
    """``print("...:", True)`` after an assert prints a constant; print what was measured instead."""
    literal = re.compile(r"print\([^\n]*,\s*(True|False)\s*\)")
    offending = [index for index, source in _visible_code(path) if literal.search(source)]
    assert not offending, f"{path.name}: cells {offending} print a literal True/False"


SOURCES = NOTEBOOKS + PAGES


def _prose(path: Path) -> str:
    return _markdown(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_cross_references_are_links_not_chapter_numbers(path: Path) -> None:
    """'Chapter 6' as text goes stale when chapters move; a {ref} link to a label fails the build instead."""
    prose = _prose(path)
    stale = re.findall(r"[^\n]{0,30}\b[Cc]hapters? \d[^\n]{0,30}", prose)
    assert not stale, f"{path.name}: chapter numbers as text: {stale}"
    assert "in preparation" not in prose.lower(), f"{path.name} announces something 'in preparation'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_chapter_title_carries_a_label(path: Path) -> None:
    title_cell = next(
        "".join(cell["source"])
        for cell in _cells(path)
        if cell["cell_type"] == "markdown" and re.search(r"^# \S", "".join(cell["source"]), re.M)
    )
    assert re.match(r"\(ch-[a-z0-9-]+\)=\n# \S", title_cell.lstrip()), (
        f"{path.name}: the title cell must start with its label, e.g. '(ch-rope)=' on the line before '# ...'"
    )


def _callouts() -> list[tuple[str, str, str | None]]:
    """(chapter, title, name) of every admonition in the book whose title starts with 'Misconception'."""
    found = []
    pattern = re.compile(
        r"^(`{3,}|:{3,})\{admonition\}\s*(Misconception[^\n]*)\n((?::[a-z-]+:[^\n]*\n)*)", re.M
    )
    for path in SOURCES:
        for match in pattern.finditer(_prose(path)):
            name = re.search(r"^:name:\s*(\S+)", match[3], re.M)
            found.append((path.stem, match[2], name[1] if name else None))
    return found


def test_each_misconception_has_one_canonical_named_callout() -> None:
    callouts = _callouts()
    unnamed = [(chapter, title) for chapter, title, name in callouts if name is None]
    assert not unnamed, (
        f"misconception callouts without a :name: (link to the canonical one instead): {unnamed}"
    )
    names = [name for _, _, name in callouts]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    assert not duplicated, f"misconceptions boxed more than once: {duplicated}"
    where = {name: chapter for chapter, _, name in callouts}
    assert where == CANONICAL_CALLOUTS, "the canonical callouts moved, or one is missing or new"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_chapter_links_its_terms_to_the_glossary(path: Path) -> None:
    assert "{term}`" in _markdown(path), f"{path.name} links no term to the glossary"
