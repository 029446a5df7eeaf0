"""Sphinx extension: the book in more than one language, from one source (``book/editions.py`` builds them).

The editions are listed in ``_config.yml`` (``posenc_editions``): English at the root of the site, each
translation in its own folder below it (``zh_CN/``). This extension

- puts on every page a link to the same page in the other editions (:func:`add_language_links`): a component
  of the primary sidebar, under the book's title, and ``<link rel="alternate" hreflang="...">`` in the head.
  A page has the same name in every edition, so the link is the page's own path moved from one edition's
  root to the other's, relative so that it works from a local build (``file://``) as on the published site;
- and makes Sphinx 7.4 translate what it left in English or broke, each explained where it is fixed:
  display formulas (:class:`TranslateDisplayMath`), docstrings on a Markdown page
  (:func:`use_rest_for_docstrings`), the captions of the table of contents (:class:`TranslateTocCaptions`),
  and the titles of exercises and solutions (:class:`ExerciseTitlesAreMessages`,
  :class:`ExerciseTitlesInCatalogues`, :class:`TranslateSolutionTitles`,
  :class:`FullWidthBracketsInExerciseTitles`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.errors import ConfigError
from sphinx.locale import init as init_locale
from sphinx.transforms import SphinxTransform, i18n
from sphinx.transforms.i18n import Locale
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.i18n import docname_to_domain
from sphinx_exercise.nodes import exercise_enumerable_node, exercise_subtitle, solution_node
from sphinx_external_toc.events import InsertToctrees

TEMPLATE = "language-switch.html"


def _current(app: Sphinx) -> dict:
    editions = app.config.posenc_editions
    language = app.config.language or "en"
    for entry in editions:
        if entry["language"] == language:
            return entry
    raise ConfigError(
        f"posenc_editions lists {[entry['language'] for entry in editions]}, not the language being built, "
        f"{language!r}"
    )


def _hreflang(language: str) -> str:
    return language.replace("_", "-")


def add_language_links(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Put the other editions' addresses of this page into the template context and the page's head."""
    if app.builder.format != "html" or not app.config.posenc_editions:
        return
    current = _current(app)
    # From this page to the root of this edition, then up to the site's root (the English edition's).
    edition_root = context["pathto"]("", 1)
    if edition_root in ("#", ".", "./"):
        edition_root = ""
    site_root = edition_root + "../" * len(Path(current["folder"]).parts)
    links = []
    for entry in app.config.posenc_editions:
        if entry is current:
            continue
        folder = f"{entry['folder']}/" if entry["folder"] else ""
        links.append(
            {
                "url": f"{site_root}{folder}{pagename}.html",
                "name": entry["name"],
                "hreflang": _hreflang(entry["language"]),
            }
        )
    context["language_links"] = links
    context["metatags"] = context.get("metatags", "") + "".join(
        f'\n<link rel="alternate" hreflang="{link["hreflang"]}" href="{link["url"]}" />' for link in links
    )
    sidebars = context.get("sidebars")
    if sidebars is not None and TEMPLATE not in sidebars:
        sidebars = list(sidebars)
        # Under the logo and title, above the search field and the table of contents.
        after = sidebars.index("navbar-logo.html") + 1 if "navbar-logo.html" in sidebars else 0
        sidebars.insert(after, TEMPLATE)
        context["sidebars"] = sidebars


def _page_catalogue(transform: SphinxTransform) -> Any:
    """The translations of the page being read (a gettext catalogue), or None in the source language."""
    if not transform.config.language or transform.config.language == "en":
        return None
    domain = docname_to_domain(transform.env.docname, transform.config.gettext_compact)
    folders = [str(Path(transform.env.srcdir) / folder) for folder in transform.config.locale_dirs]
    catalogue, found = init_locale(folders, transform.config.language, domain)
    return catalogue if found else None


class TranslateDisplayMath(SphinxTransform):
    """Replace each display formula with its translation from the page's catalogue, as written there.

    Sphinx translates a display formula (``$$ ... $$``, whose words in ``\\text{...}`` the catalogues
    translate) as it would a reStructuredText literal block: it parses ``::`` followed by the indented
    formula, which on a Markdown page (MyST) is a paragraph reading "::", and that replaced the formula.
    This runs first and marks the block translated, so that Sphinx leaves it alone.
    """

    default_priority = Locale.default_priority - 1

    def apply(self, **kwargs: Any) -> None:
        catalogue = _page_catalogue(self)
        if catalogue is None:
            return
        for block in self.document.findall(nodes.math_block):
            # The message is the block's source, as Sphinx's gettext builder extracts it.
            message = block.rawsource or block.astext()
            translation = catalogue.gettext(message)
            if translation and translation != message:
                block[:] = [nodes.Text(translation)]
                block.rawsource = translation
                block["translated"] = True  # Sphinx's Locale transform skips it


class TranslateTocCaptions(SphinxTransform):
    """Translate the captions of the parts of the table of contents (``_toc.yml``).

    sphinx-external-toc inserts the root page's toctrees (priority 100) after Sphinx has translated the page
    (Locale, 20), so their captions, which the gettext builder does extract, stayed in English.
    """

    default_priority = InsertToctrees.default_priority + 1

    def apply(self, **kwargs: Any) -> None:
        catalogue = _page_catalogue(self)
        if catalogue is None:
            return
        for toctree in self.document.findall(addnodes.toctree):
            for message in toctree.extract_original_messages():
                translation = catalogue.gettext(message)
                if translation and translation != message:
                    toctree.apply_translated_message(message, translation)


class ExerciseTitlesAreMessages(SphinxTransform):
    """Give the titles of exercises (``{exercise} <title>``) the source that makes them messages.

    sphinx-exercise builds the title node itself, without a source or line, and Sphinx treats a text node
    without a source as built-in text: the gettext builder did not extract the 39 exercise titles, and the
    Chinese edition showed them in English. Runs before Sphinx translates the page (Locale, 20), and in the
    gettext builder alike.
    """

    default_priority = Locale.default_priority - 2

    def apply(self, **kwargs: Any) -> None:
        for subtitle in self.document.findall(exercise_subtitle):
            if not subtitle.source:
                subtitle.source = self.document["source"]
                subtitle.rawsource = subtitle.astext()  # titles are plain text: the message is what is shown


class ExerciseTitlesInCatalogues(SphinxPostTransform):
    """Let the gettext builder extract the exercise titles that :class:`ExerciseTitlesAreMessages` marked.

    The builder reads each page after its post-transforms, and sphinx-exercise's (priority 20) rebuild the
    title from the subtitle's children, dropping the subtitle node. Just before that, this puts the title's
    text next to it as a paragraph, which only the message catalogue sees (no HTML is written by gettext).
    """

    default_priority = 19
    builders = ("gettext",)

    def run(self, **kwargs: Any) -> None:
        for subtitle in list(self.document.findall(exercise_subtitle)):
            title, exercise = subtitle.parent, subtitle.parent.parent
            if not subtitle.rawsource or exercise is None:
                continue
            message = nodes.paragraph(subtitle.rawsource, subtitle.rawsource)
            message.source, message.line = subtitle.source, subtitle.line
            message.uid = uuid4().hex  # the builder keeps only messages with one (sphinx.versioning)
            exercise.insert(exercise.index(title) + 1, message)


class TranslateSolutionTitles(SphinxPostTransform):
    """Translate the exercise's title that sphinx-exercise repeats in its solution's title.

    The solution's title ("Solution to Exercise 3 (<title>)") is built when the page is written, from the
    exercise as sphinx-exercise registered it while reading, before Sphinx translated the page: the title
    came out in English. Exercises and their solutions are on one page, so the page's catalogue has it.
    """

    default_priority = 22  # after sphinx-exercise builds the titles of exercises (20) and solutions (21)

    def run(self, **kwargs: Any) -> None:
        catalogue = _page_catalogue(self)
        if catalogue is None:
            return
        for solution in self.document.findall(solution_node):
            title = solution.children[0] if solution.children else None
            if not isinstance(title, nodes.title):
                continue
            for reference in title.findall(nodes.reference):
                texts = list(reference.findall(nodes.Text))
                opening = next((i for i, text in enumerate(texts) if str(text) == " ("), None)
                if opening is None or str(texts[-1]) != ")":
                    continue
                inside = texts[opening + 1 : -1]
                message = "".join(str(text) for text in inside)
                translation = catalogue.gettext(message)
                if inside and translation != message:
                    inside[0].parent.replace(inside[0], nodes.Text(translation))
                    for text in inside[1:]:
                        text.parent.remove(text)


class FullWidthBracketsInExerciseTitles(SphinxPostTransform):
    """In a Chinese edition, "练习 3（标题）" rather than the "练习 3 (标题)" that sphinx-exercise writes."""

    default_priority = 23  # after the titles are built and translated

    def run(self, **kwargs: Any) -> None:
        if not (self.config.language or "").startswith("zh"):
            return
        for title in list(self.document.findall(nodes.title)):
            if not isinstance(title.parent, exercise_enumerable_node | solution_node):
                continue
            for text in list(title.findall(nodes.Text)):
                replacement = {" (": "（", ")": "）"}.get(str(text))
                if replacement is not None:
                    text.parent.replace(text, nodes.Text(replacement))


# The node whose message Sphinx's Locale transform is translating (Sphinx reads one document at a time).
_translating: list[nodes.Node | None] = [None]
DOCSTRING = "docstring of "  # "<file>:docstring of <object>", or "docstring of <object>" for data


def use_rest_for_docstrings() -> None:
    """Parse the translation of a docstring as reStructuredText, not as the page's Markdown.

    Sphinx parses every translated message of a page with the page's parser; the API page is Markdown, but
    its docstrings (``automodule``) are reStructuredText, so their translated roles (``:func:`...```) came
    out as plain text. This wraps the two functions of ``sphinx.transforms.i18n`` that Locale calls by name.

    ``extract_messages`` yields each node with its message; the wrapper remembers the node. ``publish_msgstr``
    parses a translated message with the parser that the path it is given implies; for a node from a
    docstring (autodoc sets its source to ``<module file>:docstring of <object>``) the wrapper gives it that
    source, with the suffix of reStructuredText, so that warnings also point at the docstring.
    """
    extract, publish = i18n.extract_messages, i18n.publish_msgstr
    if getattr(extract, "remembers_node", False):
        return

    def extract_messages(doctree: nodes.Element) -> Any:
        for node, message in extract(doctree):
            _translating[0] = node
            yield node, message
        _translating[0] = None

    def publish_msgstr(app: Sphinx, source: str, source_path: str, *args: Any) -> Any:
        node = _translating[0]
        origin = getattr(node, "source", None) or ""
        if DOCSTRING in origin:
            source_path = f"{origin}.rst"
        return publish(app, source, source_path, *args)

    extract_messages.remembers_node = True
    i18n.extract_messages, i18n.publish_msgstr = extract_messages, publish_msgstr


def add_templates(app: Sphinx, config: Any) -> None:
    config.templates_path.append(str(Path(__file__).parent / "templates"))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("posenc_editions", [], "html", types=[list])
    app.connect("config-inited", add_templates)
    app.connect("html-page-context", add_language_links)
    app.add_transform(ExerciseTitlesAreMessages)
    app.add_transform(TranslateDisplayMath)
    app.add_post_transform(ExerciseTitlesInCatalogues)
    app.add_post_transform(TranslateSolutionTitles)
    app.add_post_transform(FullWidthBracketsInExerciseTitles)
    app.add_transform(TranslateTocCaptions)
    use_rest_for_docstrings()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
