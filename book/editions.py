"""Build the book in each of its languages, and keep the translations in step with the English sources.

The English sources (``book/*.md`` and the markdown cells of ``notebooks/*.ipynb``) are the only sources of
the text. Every other edition is the same book built with Sphinx's ``language`` set and a message catalogue
per page, ``locales/<language>/LC_MESSAGES/<page>.po``, that maps each English message (a paragraph, a
heading, a list item, a table cell, a glossary term, a docstring paragraph of the API page) to its
translation. Code, outputs and figures are not in the catalogues: they are single-sourced.

Usage (the Makefile calls these)::

    python book/editions.py build         # every translation, e.g. _build/html/zh_CN/ (English: jupyter-book)
    python book/editions.py update        # rewrite every catalogue from the current sources
    python book/editions.py status        # translated, fuzzy and untranslated messages per catalogue
    python book/editions.py export zh_CN notebooks/04_rope > 04.txt   # the messages still to translate
    python book/editions.py import zh_CN 04.txt                       # ... and back, once translated
    python book/editions.py check         # markup that a translation must keep (roles, math, code, links)

``update`` extracts the messages with Sphinx's gettext builder into ``_build/gettext/`` and merges them
into the catalogues with Babel (the library Sphinx itself uses): a new message arrives untranslated, a
changed one keeps its old translation marked *fuzzy* (to be checked and the mark removed), and messages no
longer in the sources are dropped. ``tests/test_translations.py`` fails while any message is untranslated or
fuzzy, or while a catalogue differs from what ``update`` would write.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po
from docutils import nodes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
LOCALES = ROOT / "locales"
BUILD = ROOT / "_build"
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


@dataclass(frozen=True)
class Edition:
    """One language of the book, as ``posenc_editions`` in ``_config.yml`` lists it."""

    language: str
    folder: str  # where it is published, relative to the English edition's root ("" for English itself)
    name: str  # the language's name in that language, shown on the link that switches to it
    title: str | None = None  # the book's title in that language (None: the top-level `title`)
    sphinx_config: dict = field(default_factory=dict)  # Sphinx settings of this edition only


def load_config() -> dict:
    return yaml.safe_load(CONFIG.read_text(encoding="utf-8"))


def editions(config: dict | None = None) -> list[Edition]:
    """Every edition of the book, English first."""
    config = load_config() if config is None else config
    return [Edition(**entry) for entry in config["sphinx"]["config"]["posenc_editions"]]


def translations(config: dict | None = None) -> list[Edition]:
    """The editions built from message catalogues (all but the English one)."""
    return [edition for edition in editions(config) if edition.folder]


def edition(language: str) -> Edition:
    known = {entry.language: entry for entry in editions()}
    if language not in known:
        raise SystemExit(f"unknown language {language!r}: _config.yml lists {sorted(known)}")
    return known[language]


def catalogue_dir(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES"


def edition_config(language: str) -> dict:
    """``_config.yml`` for one edition: its language and title; local extension paths made absolute."""
    config = load_config()
    chosen = edition(language)
    if chosen.title:
        config["title"] = chosen.title
    config["sphinx"]["config"]["language"] = language
    config["sphinx"]["config"].update(chosen.sphinx_config)
    # Jupyter Book resolves local extension folders against the configuration file, which is written
    # elsewhere; every other path in the configuration is relative to the source folder, the repository root.
    extensions = config["sphinx"].get("local_extensions", {})
    for name, folder in extensions.items():
        extensions[name] = str((ROOT / folder).resolve())
    return config


def _jupyter_book(*arguments: str, quiet: bool = False) -> None:
    """Run ``jupyter-book build`` on the repository; with ``quiet``, show its output only if it fails."""
    command = [str(JUPYTER_BOOK), "build", str(ROOT), *arguments]
    result = subprocess.run(command, cwd=ROOT, check=False, capture_output=quiet, text=True)
    if result.returncode != 0:
        if quiet:
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
        raise SystemExit(result.returncode)


def build(language: str, quiet: bool = False) -> Path:
    """Build one translated edition, warnings as errors, into ``_build/html/<folder>/``."""
    chosen = edition(language)
    if not chosen.folder:
        raise SystemExit(f"{language} is the source language: `make book` builds it into _build/html/")
    work = BUILD / "editions" / language
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config_file = work / "_config.yml"
    config_file.write_text(yaml.safe_dump(edition_config(language), allow_unicode=True), encoding="utf-8")
    options = ["--all", "-W", "-n", "--keep-going"]
    _jupyter_book("--config", str(config_file), "--path-output", str(work), *options, quiet=quiet)
    target = BUILD / "html" / chosen.folder
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(work / "_build" / "html", target)
    print(f"The {chosen.name} edition ({language}) is at file://{target / 'index.html'}")
    return target


def extract_templates(output: Path) -> dict[str, Catalog]:
    """Every page's messages as Sphinx's gettext builder extracts them, keyed by page (``book/intro``)."""
    shutil.rmtree(output, ignore_errors=True)
    _jupyter_book(
        "--builder",
        "custom",
        "--custom-builder",
        "gettext",
        "--path-output",
        str(output),
        "--all",
        quiet=True,
    )
    folder = output / "_build" / "gettext"
    templates = {}
    for path in sorted(folder.rglob("*.pot")):
        with path.open("rb") as file:
            templates[path.relative_to(folder).with_suffix("").as_posix()] = read_po(file)
    return templates


def merged(template: Catalog, existing: Catalog | None, language: str) -> Catalog:
    """The catalogue ``update`` writes: ``template``'s messages, translated as far as ``existing`` allows."""
    catalogue = Catalog(locale=language, project="posenc-course", fuzzy=False)
    if existing is not None:
        for message in existing:
            if message.id:
                catalogue.add(message.id, message.string, flags=message.flags)
    catalogue.update(template, no_fuzzy_matching=False, update_header_comment=False)
    catalogue.obsolete.clear()
    return catalogue


def po_text(catalogue: Catalog) -> bytes:
    """The catalogue as written to disk: no dates, no line numbers, no wrapping (one line per message)."""
    for message in catalogue:
        # Babel guesses these from braces and percent signs; the messages are Markdown, not format strings.
        message.flags -= {"python-format", "python-brace-format"}
    with tempfile.TemporaryFile() as buffer:
        write_po(buffer, catalogue, width=0, omit_header=True, no_location=True, sort_output=False)
        buffer.seek(0)
        return buffer.read()


def read_catalogue(path: Path) -> Catalog | None:
    if not path.is_file():
        return None
    with path.open("rb") as file:
        return read_po(file)


def expected_catalogues(templates: dict[str, Catalog]) -> dict[Path, bytes]:
    """What every translated edition's catalogues must hold, by path, given the sources' messages."""
    expected = {}
    for chosen in translations():
        folder = catalogue_dir(chosen.language)
        for page, template in templates.items():
            path = folder / f"{page}.po"
            expected[path] = po_text(merged(template, read_catalogue(path), chosen.language))
    return expected


def update() -> None:
    templates = extract_templates(BUILD / "gettext")
    expected = expected_catalogues(templates)
    for path, text in expected.items():
        if not path.is_file() or path.read_bytes() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text)
            print(f"updated {path.relative_to(ROOT)}")
    for chosen in translations():
        for path in catalogue_dir(chosen.language).rglob("*.po"):
            if path not in expected:
                path.unlink()
                print(f"removed {path.relative_to(ROOT)} (its page is gone)")
    status()


def counts(catalogue: Catalog) -> tuple[int, int, int]:
    """(translated, fuzzy, untranslated) messages."""
    translated = fuzzy = untranslated = 0
    for message in catalogue:
        if not message.id:
            continue
        if not message.string:
            untranslated += 1
        elif message.fuzzy:
            fuzzy += 1
        else:
            translated += 1
    return translated, fuzzy, untranslated


def status() -> None:
    for chosen in translations():
        totals = [0, 0, 0]
        for path in sorted(catalogue_dir(chosen.language).rglob("*.po")):
            numbers = counts(read_catalogue(path))
            totals = [total + number for total, number in zip(totals, numbers, strict=True)]
            translated, fuzzy, untranslated = numbers
            name = path.relative_to(ROOT)
            print(f"{name}: {translated} translated, {fuzzy} fuzzy, {untranslated} untranslated")
        print(f"{chosen.language}: {totals[0]} translated, {totals[1]} fuzzy, {totals[2]} untranslated")


# The plain-text exchange format of `export` and `import`: no quoting or escaping, so that a translator edits
# the Markdown exactly as it is written in the sources.
PAGE_MARK = "#### page: "
SOURCE_MARK = "##### message "
TRANSLATION_MARK = "##### translation"
SAME = "="  # a translation identical to the source (a formula, a name), written as a lone "="


def export(language: str, page: str, everything: bool = False) -> str:
    """The messages of one page still to translate (or all of them), as text to edit and `import`."""
    catalogue = read_catalogue(catalogue_dir(language) / f"{page}.po")
    if catalogue is None:
        raise SystemExit(f"no catalogue for {page!r} in {catalogue_dir(language)}: run `make translations`")
    blocks = [f"{PAGE_MARK}{page}\n"]
    for index, message in enumerate(item for item in catalogue if item.id):
        if everything or message.fuzzy or not message.string:
            flag = " fuzzy" if message.fuzzy else ""
            blocks.append(f"{SOURCE_MARK}{index}{flag}\n{message.id.strip()}\n{TRANSLATION_MARK}\n")
            blocks.append((message.string.strip() if message.string else "") + "\n")
    return "".join(blocks)


def _with_whitespace_of(source: str, text: str) -> str:
    lead = source[: len(source) - len(source.lstrip())]
    trail = source[len(source.rstrip()) :]
    return lead + text.strip() + trail


def import_translations(language: str, path: Path) -> int:
    """Write the translations of an edited `export` file into the page's catalogue; returns how many."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines or not lines[0].startswith(PAGE_MARK):
        raise SystemExit(f"{path}: the first line must be {PAGE_MARK!r} and the page")
    page = lines[0].removeprefix(PAGE_MARK).strip()
    po_path = catalogue_dir(language) / f"{page}.po"
    catalogue = read_catalogue(po_path)
    messages = [item for item in catalogue if item.id]
    entries: list[tuple[int, list[str], list[str]]] = []
    part = None
    for line in lines[1:]:
        if line.startswith(SOURCE_MARK):
            entries.append((int(line.removeprefix(SOURCE_MARK).split()[0]), [], []))
            part = 1
        elif line == TRANSLATION_MARK and entries:
            part = 2
        elif entries and part is not None:
            entries[-1][part].append(line)
    written = 0
    for index, source_lines, translation_lines in entries:
        message = messages[index]
        source, text = "\n".join(source_lines).strip(), "\n".join(translation_lines).strip()
        if source != message.id.strip():
            raise SystemExit(f"{path}: message {index} is not the catalogue's (the sources changed?)")
        if not text:
            continue
        message.string = message.id if text == SAME else _with_whitespace_of(message.id, text)
        message.flags.discard("fuzzy")
        written += 1
    po_path.write_bytes(po_text(catalogue))
    return written


# Markup a translation must keep exactly: roles and their targets, inline and display math (text inside
# \text{...} may be translated), code, link addresses, footnote references.
_ROLE = re.compile(r"\{([\w:+-]+)\}`([^`]*)`|:([\w:+-]+):`([^`]*)`")
_MATH = re.compile(r"\$\$(.+?)\$\$|\$([^$]+)\$", re.S)
_CODE = re.compile(r"(?<![`}:])(``?)([^`]+?)\1(?!`)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FOOTNOTE = re.compile(r"\[\^[^\]]+\]")
_TEXT_IN_MATH = re.compile(r"\\(?:text|textrm|mathrm|textbf|textit)\{[^{}]*\}")
_BLOCK_START = re.compile(r"^(?:\d+[.)]\s|[-*+>]\s|#)")
# Roles whose whole content is a target (nothing to translate).
_VERBATIM_ROLES = {"cite", "cite:t", "cite:p", "cite:ps", "cite:ts", "eq", "math"}


def _role_keys(text: str) -> list[str]:
    keys = []
    for match in _ROLE.finditer(text):
        name = match.group(1) or match.group(3)
        content = match.group(2) if match.group(1) else match.group(4)
        if name in _VERBATIM_ROLES:
            target = _TEXT_IN_MATH.sub(r"\\text{}", content) if name == "math" else content
        else:
            explicit = re.search(r"<([^<>]+)>\s*$", content)
            target = explicit.group(1) if explicit else content
        keys.append(f"{name}:{target.strip()}")
    return sorted(keys)


def _rest_inline_counts(text: str) -> Counter | None:
    """How many inline elements of each kind docutils finds in ``text`` read as reStructuredText, or None
    when it reports a problem."""
    import io

    from docutils.core import publish_doctree
    from docutils.parsers.rst import roles

    for name in set(re.findall(r":([\w:+-]+):`", text)) - {"math"}:
        roles.register_generic_role(name, nodes.inline)
    settings = {
        "report_level": 5,
        "halt_level": 5,
        "warning_stream": io.StringIO(),
        "input_encoding": "unicode",
    }
    tree = publish_doctree(text, settings_overrides=settings)
    if any(True for _ in tree.findall(nodes.problematic)) or any(
        True for _ in tree.findall(nodes.system_message)
    ):
        return None
    kinds = (nodes.literal, nodes.math, nodes.inline, nodes.emphasis, nodes.strong, nodes.title_reference)
    return Counter(
        kind.__name__ for node in tree.findall(nodes.Inline) for kind in kinds if isinstance(node, kind)
    )


def _markdown_inline_counts(text: str) -> Counter:
    """How many inline elements of each kind (bold, italic, code or role, link, math) Markdown finds."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    parser = MarkdownIt("commonmark").use(dollarmath_plugin)
    kinds = {"strong_open", "em_open", "code_inline", "link_open", "math_inline"}
    return Counter(
        child.type
        for line in parser.parseInline(text)
        for child in line.children or []
        if child.type in kinds
    )


def rest_problems(source: str, translation: str) -> list[str]:
    """For a message in reStructuredText (a docstring): inline markup that docutils no longer recognises.

    reStructuredText ends inline markup only before whitespace or punctuation other than an opening
    bracket, and starts it only after whitespace or punctuation other than a closing one: ``code``（注释）
    or 调用:func:`f` is plain text. Write ``code``\\ （注释） and 调用\\ :func:`f` (an escaped space, which
    renders as nothing) or put punctuation between.
    """
    if not translation or translation == source:
        return []
    expected = _rest_inline_counts(source)
    if expected is None:  # not reStructuredText (a Markdown message of the page around the docstrings)
        return []
    found = _rest_inline_counts(translation)
    if found != expected:
        return [f"reStructuredText inline markup not recognised (expected {dict(expected)}, found {found})"]
    return []


def markup_problems(source: str, translation: str) -> list[str]:
    """What the translation of one message lost or changed of the source's markup (empty if nothing)."""
    if not translation or translation == source:
        return []
    problems = []
    if _role_keys(source) != _role_keys(translation):
        problems.append(f"roles differ: {_role_keys(source)} vs {_role_keys(translation)}")
    without_roles = [_ROLE.sub("", text) for text in (source, translation)]
    maths = [
        sorted(
            _TEXT_IN_MATH.sub(r"\\text{}", "".join(match.groups(""))).strip()
            for match in _MATH.finditer(text)
        )
        for text in without_roles
    ]
    if maths[0] != maths[1]:
        problems.append(f"math differs: {set(maths[0]) ^ set(maths[1]) or 'count'}")
    without_math = [_MATH.sub("", text) for text in without_roles]
    codes = [sorted(match.group(2) for match in _CODE.finditer(text)) for text in without_math]
    if codes[0] != codes[1]:
        problems.append(f"code differs: {set(codes[0]) ^ set(codes[1]) or 'count'}")
    for pattern, what in ((_LINK, "link addresses"), (_FOOTNOTE, "footnote references")):
        if sorted(pattern.findall(source)) != sorted(pattern.findall(translation)):
            problems.append(f"{what} differ")
    if not _is_rest(source) and _markdown_inline_counts(source) != _markdown_inline_counts(translation):
        # CommonMark closes ** only before a space or punctuation when it follows punctuation: in
        # "**小结。**本章" the bold is lost; write "**小结**。本章".
        expected, found = _markdown_inline_counts(source), _markdown_inline_counts(translation)
        problems.append(
            f"Markdown inline markup differs (bold, italic, code): {dict(expected)} vs {dict(found)}"
        )
    if _BLOCK_START.match(translation.lstrip()) and not _BLOCK_START.match(source.lstrip()):
        problems.append("starts like a list, quote or heading: escape it (e.g. '4\\. ')")
    if _BLOCK_START.match(translation.lstrip()) and re.match(r"\d+\.\s", translation.lstrip()):
        problems.append("starts with 'N. ', which Markdown reads as a list: write 'N\\. '")
    return problems


def _is_rest(message: str) -> bool:
    """A message of the API page in reStructuredText (a docstring), not Markdown (the page's own text)."""
    return not re.search(r"\{[\w:-]+\}`|\$", message) and bool(re.search(r"``|:[\w:+-]+:`|\*", message))


def check(language: str | None = None) -> int:
    """Print every markup problem of every translated edition (or one); returns how many there are."""
    found = 0
    for chosen in translations():
        if language and chosen.language != language:
            continue
        for path in sorted(catalogue_dir(chosen.language).rglob("*.po")):
            docstrings = path.name == "api.po"
            for index, message in enumerate(item for item in read_catalogue(path) if item.id):
                problems = markup_problems(message.id, message.string)
                if docstrings and _is_rest(message.id):
                    problems += rest_problems(message.id, message.string)
                for problem in problems:
                    found += 1
                    print(f"{path.relative_to(ROOT)}, message {index}: {problem}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build translated editions into _build/html/<folder>/")
    build_parser.add_argument("languages", nargs="*", help="default: every translated edition")
    build_parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    commands.add_parser("update", help="rewrite the catalogues from the sources")
    commands.add_parser("status", help="count translated, fuzzy and untranslated messages")
    export_parser = commands.add_parser("export", help="print a page's messages still to translate")
    export_parser.add_argument("language")
    export_parser.add_argument("page", help="e.g. notebooks/04_rope or book/glossary")
    export_parser.add_argument("--all", action="store_true", help="every message, translated ones too")
    import_parser = commands.add_parser("import", help="write an edited export file into its catalogue")
    import_parser.add_argument("language")
    import_parser.add_argument("file", type=Path)
    check_parser = commands.add_parser("check", help="markup that translations lost or changed")
    check_parser.add_argument("language", nargs="?")
    arguments = parser.parse_args()
    if arguments.command == "build":
        for language in arguments.languages or [chosen.language for chosen in translations()]:
            build(language, quiet=arguments.quiet)
    elif arguments.command == "update":
        update()
    elif arguments.command == "export":
        sys.stdout.write(export(arguments.language, arguments.page, arguments.all))
    elif arguments.command == "import":
        print(f"{import_translations(arguments.language, arguments.file)} translations written")
    elif arguments.command == "check":
        sys.exit(1 if check(arguments.language) else 0)
    else:
        status()


if __name__ == "__main__":
    main()
