"""The translated editions of the book are complete and in step with the English sources.

Each translated edition (``posenc_editions`` in ``_config.yml``) has one message catalogue per page under
``locales/<language>/LC_MESSAGES/``. These tests extract the messages from the current sources with Sphinx's
gettext builder, as ``make translations`` does, and fail when a catalogue is not what ``make translations``
would write (a message added, changed or removed in the English since), when any message is untranslated
or fuzzy, or when a translation lost markup of its source (a role, a formula, code, a link).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import editions  # noqa: E402

TRANSLATIONS = editions.translations()
CATALOGUES = sorted(
    path for chosen in TRANSLATIONS for path in editions.catalogue_dir(chosen.language).rglob("*.po")
)
CJK = re.compile(r"[\u4e00-\u9fff]")


def _label(path: Path) -> str:
    return path.relative_to(editions.LOCALES).as_posix()


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return editions.extract_templates(tmp_path_factory.mktemp("gettext"))


def test_editions_are_configured() -> None:
    all_editions = editions.editions()
    assert all_editions[0].language == "en" and all_editions[0].folder == ""
    assert len({entry.language for entry in all_editions}) == len(all_editions)
    assert len({entry.folder for entry in all_editions}) == len(all_editions)
    assert [entry.language for entry in TRANSLATIONS] == ["zh_CN"]
    for chosen in TRANSLATIONS:
        assert editions.catalogue_dir(chosen.language).is_dir(), chosen


def test_every_page_has_an_up_to_date_catalogue(templates: dict) -> None:
    """A catalogue holds exactly the messages of the current sources, as `make translations` writes it."""
    pages = {"book/intro", "book/glossary", "notebooks/04_rope"}
    assert pages <= set(templates), sorted(templates)
    expected = editions.expected_catalogues(templates)
    missing = [_label(path) for path in expected if not path.is_file()]
    stale = [_label(path) for path, text in expected.items() if path.is_file() and path.read_bytes() != text]
    orphaned = [_label(path) for path in CATALOGUES if path not in expected]
    assert not (missing or stale or orphaned), (
        f"catalogues out of step with the English sources (run `make translations`, then translate what it "
        f"marks): missing {missing}, stale {stale}, of no page {orphaned}"
    )


@pytest.mark.parametrize("path", CATALOGUES, ids=_label)
def test_every_message_is_translated(path: Path) -> None:
    catalogue = editions.read_catalogue(path)
    translated, fuzzy, untranslated = editions.counts(catalogue)
    assert translated > 0
    unfinished = [
        message.id[:80] for message in catalogue if message.id and (message.fuzzy or not message.string)
    ]
    assert fuzzy == 0 and untranslated == 0, (
        f"{_label(path)}: {untranslated} untranslated and {fuzzy} fuzzy messages, e.g. {unfinished[:3]} "
        f"(`python book/editions.py export <language> <page>` lists them)"
    )


@pytest.mark.parametrize("path", CATALOGUES, ids=_label)
def test_translations_keep_the_markup_of_their_source(path: Path) -> None:
    problems = [
        f"message {index} ({message.id[:50]!r}): {problem}"
        for index, message in enumerate(item for item in editions.read_catalogue(path) if item.id)
        for problem in editions.markup_problems(message.id, message.string)
    ]
    assert not problems, f"{_label(path)}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "translation"),
    [
        ("derive {term}`RoPE` from $n - m$;", "从 $n - m$ 推导出 {term}`RoPE`；"),
        ("each token {term}`embedding`", "每个词元的{term}`嵌入 <embedding>`"),
        ("{ref}`The absolute encodings <ch-absolute>` add", "{ref}`绝对位置编码 <ch-absolute>`加上"),
        ("$x \\text{ for a column vector }$", "$x \\text{ 对列向量 }$"),
        ("4. Rotary positional encoding (RoPE)", "4\\. 旋转位置编码（RoPE）"),
        (
            "Angles :math:`p\\,\\theta_c` of ``base``, see :func:`rope`.",
            "角度 :math:`p\\,\\theta_c`，``base``，见 :func:`rope`。",
        ),
        (
            "See [the paper](https://arxiv.org/abs/2104.09864)[^a].",
            "见[论文](https://arxiv.org/abs/2104.09864)[^a]。",
        ),
        ("$$\nx = y\n$$", "$$\nx = y\n$$"),
    ],
)
def test_markup_check_accepts_faithful_translations(source: str, translation: str) -> None:
    assert editions.markup_problems(source, translation) == []


@pytest.mark.parametrize(
    ("source", "translation", "problem"),
    [
        ("each token {term}`embedding`", "每个词元的嵌入", "roles differ"),
        ("each token {term}`embedding`", "每个词元的{term}`嵌入 <embeding>`", "roles differ"),
        ("see {ref}`ch-rope`", "见{ref}`旋转 <ch-absolute>`", "roles differ"),
        ("as {cite:t}`su2021roformer` shows", "如 {cite:p}`su2021roformer` 所示", "roles differ"),
        ("the angle $m\\,\\theta_c$", "角度 $m\\theta_c$", "math differs"),
        ("the angle $m\\,\\theta_c$ and $n$", "角度 $m\\,\\theta_c$", "math differs"),
        ("call `apply_rope`", "调用 `apply_ropes`", "code differs"),
        ("the ``base`` argument", "参数 base", "code differs"),
        ("[paper](https://arxiv.org/abs/1)", "[论文](https://arxiv.org/abs/2)", "link addresses differ"),
        ("text[^a]", "文本", "footnote references differ"),
        ("4. Rotary positional encoding (RoPE)", "4. 旋转位置编码（RoPE）", "N\\. "),
        ("Summary", "- 小结", "starts like a list"),
    ],
)
def test_markup_check_catches_what_a_translation_lost(source: str, translation: str, problem: str) -> None:
    problems = editions.markup_problems(source, translation)
    assert any(problem in found for found in problems), problems


def test_export_and_import_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A translator's edited export file lands in the catalogue, whitespace and fuzzy flag handled."""
    from babel.messages.catalog import Catalog

    monkeypatch.setattr(editions, "LOCALES", tmp_path)
    catalogue = Catalog(locale="zh_CN")
    catalogue.add("Intuition")
    catalogue.add("\nx = y\n")
    catalogue.add("Summary", "旧的小结", flags=["fuzzy"])
    catalogue.add("Exercises", "练习")
    path = editions.catalogue_dir("zh_CN") / "notebooks" / "page.po"
    path.parent.mkdir(parents=True)
    path.write_bytes(editions.po_text(catalogue))

    exported = editions.export("zh_CN", "notebooks/page")
    assert "Exercises" not in exported  # translated, not fuzzy: not asked again
    edited = (
        exported.replace("Intuition\n##### translation\n", "Intuition\n##### translation\n直觉\n")
        .replace("x = y\n##### translation\n", "x = y\n##### translation\n=\n")
        .replace("旧的小结", "小结")
    )
    (tmp_path / "edited.txt").write_text(edited, encoding="utf-8")
    assert editions.import_translations("zh_CN", tmp_path / "edited.txt") == 3

    result = {message.id: message for message in editions.read_catalogue(path) if message.id}
    assert result["Intuition"].string == "直觉"
    assert result["\nx = y\n"].string == "\nx = y\n"
    assert result["Summary"].string == "小结" and not result["Summary"].fuzzy
    assert editions.counts(editions.read_catalogue(path)) == (4, 0, 0)


def test_a_changed_source_message_becomes_fuzzy_and_a_removed_one_goes() -> None:
    """What `make translations` does to a catalogue when the English changes."""
    from babel.messages.catalog import Catalog

    old = Catalog(locale="zh_CN")
    old.add("RoPE rotates each pair of coordinates by an angle.", "RoPE 把每个坐标对转过一个角度。")
    old.add("A paragraph that was deleted.", "一段已删除的文字。")
    template = Catalog()
    template.add("RoPE rotates each pair of coordinates by an angle proportional to the position.")
    template.add("A new paragraph.")
    merged = {message.id: message for message in editions.merged(template, old, "zh_CN") if message.id}
    assert set(merged) == {
        "RoPE rotates each pair of coordinates by an angle proportional to the position.",
        "A new paragraph.",
    }
    changed = merged["RoPE rotates each pair of coordinates by an angle proportional to the position."]
    assert changed.fuzzy and changed.string == "RoPE 把每个坐标对转过一个角度。"
    assert not merged["A new paragraph."].string


# Glossary entries named by a proper name that Chinese writing uses as it is, with no Chinese name to add:
# their term lines stay in English (their definitions are translated like every other message).
NAMES = {"ALiBi", "config.json", "FlashAttention", "GGUF", "Hugging Face", "LongRoPE", "StreamingLLM"}
NAMES |= {"Transformer-XL", "xPos", "YaRN"}


def test_glossary_shows_each_entry_in_both_languages() -> None:
    """Each glossary entry of the Chinese edition names its term in Chinese and in English.

    A translated term line keeps the English term beside the Chinese one ("外推（extrapolation）"), and
    every entry but those named by a proper name (NAMES) has at least one such line.
    """
    glossary = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    body = glossary.split("```{glossary}\n", 1)[1].split("\n```", 1)[0]
    entries, current = [], None
    for line in body.splitlines():
        if not line.strip() or line[0].isspace():
            current = None
        elif current is None:
            current = [line.strip()]
            entries.append(current)
        else:
            current.append(line.strip())
    assert len(entries) > 50
    catalogue = {
        message.id: message.string
        for message in editions.read_catalogue(editions.catalogue_dir("zh_CN") / "book" / "glossary.po")
        if message.id
    }
    one_language, english_lost = [], []
    for terms in entries:
        translated = [catalogue[term] for term in terms if catalogue[term] != term]
        if not any(CJK.search(text) for text in translated) and terms[0] not in NAMES:
            one_language.append(terms)
        english_lost += [
            catalogue[term]
            for term in terms
            # "kernel (compute)" is shown as "计算内核（kernel）": the qualifier is translated too
            if catalogue[term] != term and term.split(" (")[0].lower() not in catalogue[term].lower()
        ]
    assert not one_language, f"glossary entries without a Chinese name: {one_language}"
    assert not english_lost, f"translated term lines that dropped the English term: {english_lost}"
    translated_terms = [catalogue[term].lower() for terms in entries for term in terms]
    assert len(set(translated_terms)) == len(translated_terms), "two glossary terms translate the same"


def test_folded_cells_are_code_cells_as_the_translated_labels_say() -> None:
    """A translated edition labels folded cells "显示代码" (show code) in _config.yml: right only while the
    chapters fold nothing but code (hide-input), not outputs or whole cells."""
    import json

    labels = [edition.sphinx_config.get("nb_code_prompt_show", "") for edition in TRANSLATIONS]
    assert all("{type}" not in label for label in labels) and "显示代码" in labels
    folding = set()
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            folding |= {tag for tag in cell.get("metadata", {}).get("tags", []) if tag.startswith("hide-")}
    assert folding == {"hide-input"}, folding
