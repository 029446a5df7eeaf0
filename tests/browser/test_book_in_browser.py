"""The HTML book as a reader's browser shows it: every page opened in headless Chromium.

The built book (``_build/html``, from ``make book``) is served on localhost, and each page is opened in
Chromium driven by Playwright. Requests the page makes to a CDN are answered from the npm packages that
``make browser-assets`` fetched (see ``cdn_assets.py``), so the tests need no internet; any other request to
the outside is refused and reported. For every page the tests check that it loads without JavaScript
errors, that every image loads, that its mathematics is typeset by MathJax, that every animation player
(matplotlib's ``to_jshtml``) responds to its slider without a kernel, that no page shows a Jupyter widget (a
control that could not respond without a kernel), that notebook pages carry the right Colab link, and that
every internal link and anchor resolves. A full-page screenshot of each page is written to
``_build/screenshots/``.

Every edition of the book is checked the same way: English at the root of ``_build/html``, each translation
in its folder (``zh_CN/``, see ``posenc_editions`` in ``_config.yml``). In addition, every page links to the
same page in the other editions, Chinese text renders with a font the page declares (not whatever the system
falls back to), and no translated page holds a paragraph still in English.

Where Chromium, Playwright, the fetched assets or the built book are missing, the tests skip and say how to
get them; with ``POSENC_REQUIRE_BROWSER=1`` (set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest
import yaml
from cdn_assets import is_complete, local_file

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
ASSETS = Path(os.environ.get("POSENC_BROWSER_ASSETS", ROOT / ".venv" / "browser-assets"))
CHROMIUM = os.environ.get("POSENC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
COLAB = "https://colab.research.google.com/github/"
EDITIONS = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["sphinx"]["config"][
    "posenc_editions"
]
TRANSLATED_FOLDERS = [edition["folder"] for edition in EDITIONS if edition["folder"]]
# Chinese characters (CJK Unified Ideographs) and punctuation, for the checks of the Chinese edition.
CJK = re.compile(r"[\u4e00-\u9fff\u3000-\u303f\uff00-\uffef]")
# Words of English prose: lower-case words, not parts of dotted names (``collections.abc``) or type hints.
ENGLISH_WORD = re.compile(r"\b[a-z]{2,}\b")
DOTTED_NAME = re.compile(r"\w+(?:\.\w+)+")
# What a translation keeps in English on purpose: quoted titles and messages, paths and repository names.
QUOTED_OR_PATH = re.compile(r"“[^”]*”|\"[^\"]*\"|‘[^’]*’|\S*/\S*")


def _pages() -> list[str]:
    """Every HTML page of the built book, relative to its root (Sphinx's asset folders start with '_')."""
    if not BOOK.is_dir():
        return []
    return sorted(
        path.relative_to(BOOK).as_posix()
        for path in BOOK.rglob("*.html")
        if not any(part.startswith("_") for part in path.relative_to(BOOK).parts)
    )


PAGES = _pages()


def _edition_folder(page: str) -> str:
    """The folder of the page's edition: "" for English, "zh_CN" for the Chinese edition."""
    first = page.split("/", 1)[0]
    return first if first in TRANSLATED_FOLDERS else ""


def _source_page(page: str) -> str:
    """The page's path within its edition, the same in every edition (``notebooks/04_rope.html``)."""
    folder = _edition_folder(page)
    return page.removeprefix(f"{folder}/") if folder else page


def _is_chinese(page: str) -> bool:
    folder = _edition_folder(page)
    return any(edition["folder"] == folder and edition["language"].startswith("zh") for edition in EDITIONS)


def _page_source(page: str) -> str:
    return (BOOK / page).read_text(encoding="utf-8")


def _missing_requirement() -> str | None:
    """Why the browser tests cannot run here, with how to fix it, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: `make test` installs it (pip install -e '.[test]')."
    if CHROMIUM is None:
        return "Chromium is not installed: on Debian or Ubuntu, `sudo apt-get install chromium`."
    if not PAGES:
        return "the book is not built: run `make book` first."
    if not is_complete(ASSETS):
        return f"the CDN scripts are not in {ASSETS}: run `make browser-assets` (needs npm)."
    return None


@pytest.fixture(scope="session", autouse=True)
def requirements() -> None:
    reason = _missing_requirement()
    if reason is None:
        return
    if os.environ.get("POSENC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"POSENC_REQUIRE_BROWSER=1, but {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def base_url(requirements: None) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(BOOK))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser(requirements: None) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class PageReport:
    """What a reader's browser met on one page."""

    errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    math: dict = field(default_factory=dict)
    players: list[dict] = field(default_factory=list)
    url: str = ""  # where the browser ended up (index.html redirects to the first page)
    links: list[str] = field(default_factory=list)
    wide_code: list[str] = field(default_factory=list)
    colab_links: list[str] = field(default_factory=list)
    language_links: list[str] = field(default_factory=list)
    cjk_fonts: dict = field(default_factory=dict)
    screenshot: Path | None = None


# Each to_jshtml player: move its slider to the last frame as a reader would, and report whether the
# picture changed (the frames are distinct images, so a working player shows another one).
_MOVE_PLAYERS = """() => Array.from(document.querySelectorAll('div.animation')).map((player) => {
    const image = player.querySelector('img');
    const slider = player.querySelector('input.anim-slider');
    const before = image ? image.src : null;
    if (slider) {
        slider.value = slider.max;
        slider.dispatchEvent(new Event('input'));
        slider.dispatchEvent(new Event('change'));
    }
    return {
        frames: slider ? Number(slider.max) + 1 : 0,
        height: image ? image.getBoundingClientRect().height : 0,
        changed: image !== null && before !== image.src,
    };
})"""
_COUNT_MATH = """() => ({
    elements: document.querySelectorAll('.math').length,
    typeset: Array.from(document.querySelectorAll('.math'))
        .filter((element) => element.querySelector('mjx-container') !== null).length,
    mathjax_errors: document.querySelectorAll('mjx-merror').length,
})"""
# Code cells whose lines are wider than the page (the reader would have to scroll sideways).
_WIDE_CODE = """() => Array.from(document.querySelectorAll('div.cell_input pre'))
    .filter((pre) => pre.scrollWidth > pre.clientWidth + 1)
    .map((pre) => pre.textContent.split('\\n')[0].slice(0, 60))"""
_IMAGES = """() => Array.from(document.images).map((image) => ({
    src: image.currentSrc || image.src, complete: image.complete, naturalWidth: image.naturalWidth,
}))"""


def _visit(browser: object, base_url: str, page: str) -> PageReport:
    report = PageReport()
    context = browser.new_context(viewport=VIEWPORT)

    def answer(route: object) -> None:
        url = route.request.url
        if url.startswith(base_url) or not url.startswith(("http://", "https://")):
            route.continue_()
            return
        path = local_file(url, ASSETS)
        if path is None:
            report.errors.append(f"request to the internet with no local copy: {url}")
            route.abort()
            return
        route.fulfill(path=str(path), headers={"Access-Control-Allow-Origin": "*"})

    context.route("**/*", answer)
    tab = context.new_page()
    tab.on("pageerror", lambda error: report.errors.append(f"JavaScript error: {error}"))
    tab.on(
        "console",
        lambda message: (
            report.errors.append(f"console error: {message.text}") if message.type == "error" else None
        ),
    )
    tab.on(
        "requestfailed",
        lambda request: report.errors.append(f"request failed: {request.url} ({request.failure})"),
    )
    tab.on(
        "response",
        lambda response: (
            report.errors.append(f"HTTP {response.status}: {response.url}")
            if response.status >= 400
            else None
        ),
    )
    tab.goto(base_url + page, wait_until="load")
    tab.wait_for_load_state("networkidle")
    if tab.evaluate("() => window.MathJax !== undefined && window.MathJax.startup !== undefined"):
        tab.evaluate("() => window.MathJax.startup.promise")
    tab.wait_for_function(
        "() => Array.from(document.images).every((image) => image.complete)", timeout=20_000
    )
    report.math = tab.evaluate(_COUNT_MATH)
    report.images = tab.evaluate(_IMAGES)
    report.wide_code = tab.evaluate(_WIDE_CODE)
    report.players = tab.evaluate(_MOVE_PLAYERS)
    report.links = tab.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map((a) => a.href)")
    report.colab_links = [
        link for link in report.links if link.startswith("https://colab.research.google.com")
    ]
    report.url = tab.url
    report.language_links = tab.evaluate(
        "() => Array.from(document.querySelectorAll('.language-switch a')).map((a) => a.href)"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    report.screenshot = SCREENSHOTS / (page.removesuffix(".html").replace("/", "__") + ".png")
    tab.screenshot(path=str(report.screenshot), full_page=True)
    report.cjk_fonts = _fonts_of_chinese_text(context, tab, chinese_page=_is_chinese(page))
    context.close()
    return report


# A probe of Chinese text only, put where the page's running text is (after the screenshot), so that the
# fonts Chromium renders it with are the fonts of the page's Chinese characters and nothing else.
_ADD_PROBE = """(selector) => {
    const host = Array.from(document.querySelectorAll(selector))
        .find((element) => element.getBoundingClientRect().height > 0);
    if (host === undefined) return null;
    const probe = document.createElement('span');
    probe.id = 'posenc-cjk-probe';
    probe.textContent = '旋转位置编码的外推与插值';
    host.appendChild(probe);
    return getComputedStyle(probe).fontFamily;
}"""


def _fonts_of_chinese_text(context: object, tab: object, chinese_page: bool) -> dict:
    """The font-family the page declares for Chinese text and the fonts Chromium actually used for it.

    On a Chinese page the probe goes into the article's first visible paragraph (or heading, on the index
    pages); on every other page into the link to the Chinese edition (its name is written in Chinese).
    """
    selector = "article p, article h1, main h1" if chinese_page else ".language-switch a[lang|='zh']"
    declared = tab.evaluate(_ADD_PROBE, selector)
    if declared is None:
        return {}
    cdp = context.new_cdp_session(tab)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "#posenc-cjk-probe"})["nodeId"]
    used = [font["familyName"] for font in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]]
    cdp.detach()
    return {"declared": [name.strip().strip('"') for name in declared.split(",")], "used": used}


@pytest.fixture(scope="session")
def visit(browser: object, base_url: str) -> Callable[[str], PageReport]:
    """Open a page once per session; later tests reuse what the browser saw."""
    return functools.cache(lambda page: _visit(browser, base_url, page))


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors(page: str, visit: Callable[[str], PageReport]) -> None:
    report = visit(page)
    assert not report.errors, f"{page}:\n" + "\n".join(report.errors)
    assert report.screenshot is not None and report.screenshot.stat().st_size > 0


@pytest.mark.parametrize("page", PAGES)
def test_every_image_loads(page: str, visit: Callable[[str], PageReport]) -> None:
    broken = [image["src"][:120] for image in visit(page).images if image["naturalWidth"] == 0]
    assert not broken, f"{page}: images that did not load: {broken}"


@pytest.mark.parametrize("page", PAGES)
def test_code_cells_fit_the_page(page: str, visit: Callable[[str], PageReport]) -> None:
    """At 1280 px, notebook code (88 columns, notebooks/ruff.toml) must not scroll sideways (book.css)."""
    wide = visit(page).wide_code
    assert not wide, f"{page}: code cells wider than the page, starting with {wide}"


MATH_PAGES = [page for page in PAGES if 'class="math' in _page_source(page)]
PLAYER_PAGES = [page for page in PAGES if 'class="animation"' in _page_source(page)]
NOTEBOOK_PAGES = [page for page in PAGES if (ROOT / _source_page(page)).with_suffix(".ipynb").is_file()]
CHINESE_PAGES = [page for page in PAGES if _is_chinese(page)]


@pytest.mark.parametrize("page", MATH_PAGES)
def test_math_is_typeset(page: str, visit: Callable[[str], PageReport]) -> None:
    math = visit(page).math
    assert math["elements"] > 0
    assert math["typeset"] == math["elements"], f"{page}: MathJax typeset {math['typeset']} of {math}"
    assert math["mathjax_errors"] == 0, f"{page}: MathJax could not parse {math['mathjax_errors']} formulas"


@pytest.mark.parametrize("page", PAGES)
def test_no_jupyter_widget_is_shown(page: str) -> None:
    """A widget in the web book would be a control that does not respond: there is no kernel behind it."""
    source = _page_source(page)
    assert WIDGET_VIEW not in source and "widget-state+json" not in source, page


@pytest.mark.parametrize("page", PLAYER_PAGES)
def test_animation_players_respond_without_a_kernel(page: str, visit: Callable[[str], PageReport]) -> None:
    players = visit(page).players
    assert players, f"{page}: the page holds an animation, but no player was found"
    for index, player in enumerate(players):
        assert player["frames"] >= 2, f"{page}, player {index}: {player}"
        assert player["height"] > 0, f"{page}, player {index} is not visible: {player}"
        assert player["changed"], f"{page}, player {index}: moving the slider did not change the picture"


def test_every_chapter_notebook_has_a_page_in_every_edition() -> None:
    notebooks = {
        path.relative_to(ROOT).with_suffix(".html").as_posix() for path in ROOT.glob("notebooks/*.ipynb")
    }
    assert notebooks
    for folder in ["", *TRANSLATED_FOLDERS]:
        in_edition = {_source_page(page) for page in NOTEBOOK_PAGES if _edition_folder(page) == folder}
        assert notebooks <= in_edition, f"edition {folder or 'en'} lacks {sorted(notebooks - in_edition)}"


def test_every_edition_has_the_same_pages() -> None:
    english = {page for page in PAGES if _edition_folder(page) == ""}
    assert TRANSLATED_FOLDERS and CHINESE_PAGES
    for folder in TRANSLATED_FOLDERS:
        translated = {_source_page(page) for page in PAGES if _edition_folder(page) == folder}
        assert translated == english, f"{folder}: {sorted(translated ^ english)}"


@pytest.mark.parametrize("page", PAGES)
def test_language_switch_leads_to_the_same_page_in_the_other_editions(
    page: str, visit: Callable[[str], PageReport], base_url: str
) -> None:
    report = visit(page)
    shown = report.url.removeprefix(base_url)  # the page itself, or where its redirect led
    own = _edition_folder(shown)
    expected = [
        base_url + (f"{edition['folder']}/" if edition["folder"] else "") + _source_page(shown)
        for edition in EDITIONS
        if edition["folder"] != own
    ]
    assert report.language_links == expected
    for link in expected:
        assert (BOOK / link.removeprefix(base_url)).is_file(), link


# Fonts a browser substitutes when the page names none that has the character: not a declared choice.
_GENERIC_FAMILIES = {"serif", "sans-serif", "monospace", "system-ui", "cursive", "fantasy"}


@pytest.mark.parametrize("page", PAGES)
def test_chinese_text_renders_with_a_font_the_page_declares(
    page: str, visit: Callable[[str], PageReport]
) -> None:
    """book.css names Simplified Chinese fonts for Chinese text; Chromium must render it with one of them."""
    fonts = visit(page).cjk_fonts
    assert fonts, f"{page}: no running text (Chinese page) or no link to the Chinese edition"
    declared = {name for name in fonts["declared"] if name not in _GENERIC_FAMILIES}
    assert fonts["used"], f"{page}: Chromium reports no font for the Chinese text"
    assert set(fonts["used"]) <= declared, (
        f"{page}: Chinese text rendered with {fonts['used']}, not one of the declared {sorted(declared)}"
    )


_BLOCK_TAGS = frozenset({"p", "li", "dt", "dd", "th", "td", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption"})
_SKIPPED_TAGS = frozenset({"pre", "code", "script", "style", "kbd", "svg", "math", "mjx-container"})
_SKIPPED_CLASSES = frozenset(
    {
        "math",  # formulas (their words are in \\text{}, which the catalogue test checks)
        "cell_output",  # code outputs are single-sourced
        "cell_input",
        "highlight",
        "citation",  # bibliography entries: authors and paper titles
        "bibtex-citation",  # "Su et al. [2021]" in the text
        "sig",  # API signatures
        "headerlink",
        "language-switch",  # the other language's name
    }
)
_VOID_TAGS = frozenset(
    {"br", "img", "hr", "input", "meta", "link", "wbr", "source", "col", "area", "base", "embed"}
)


class _TextBlocks(HTMLParser):
    """The running text of a page, block by block, without code, formulas, outputs and citations."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, skipped, starts a block)
        self.blocks: list[list[str]] = []

    def _skipped(self) -> bool:
        return any(skipped for _, skipped, _ in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID_TAGS:
            return
        classes = set((dict(attrs).get("class") or "").split())
        skipped = tag in _SKIPPED_TAGS or bool(classes & _SKIPPED_CLASSES)
        block = tag in _BLOCK_TAGS
        if block and not self._skipped() and not skipped:
            self.blocks.append([])
        self.stack.append((tag, skipped, block))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            open_tag, _, block = self.stack.pop()
            if block and not self._skipped():
                self.blocks.append([])  # text after a nested block belongs to a block of its own
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.blocks and not self._skipped() and self.stack:
            self.blocks[-1].append(data)


def _english_blocks(html: str) -> list[str]:
    """Text left in English: a run of five or more English words with no Chinese character in between.

    A block of a translated page may keep English names, a term's English in parentheses or a paper's title
    (in quotes), but not a phrase of English prose: "练习 3（T5's untouched buckets at another
    scale）" is caught as well as a whole paragraph.
    """
    article = html.split('<article class="bd-article">', 1)[-1].split("</article>", 1)[0]
    parser = _TextBlocks()
    parser.feed(article)
    english = []
    for pieces in parser.blocks:
        text = " ".join("".join(pieces).split())
        runs = CJK.split(DOTTED_NAME.sub("", QUOTED_OR_PATH.sub("", text)))
        if any(len(ENGLISH_WORD.findall(run)) >= 5 for run in runs):
            english.append(text[:120])
    return english


@pytest.mark.parametrize("page", CHINESE_PAGES)
def test_translated_page_has_no_english_paragraph(page: str) -> None:
    """A reader of the Chinese edition meets no paragraph, heading, list item or cell left in English."""
    english = _english_blocks(_page_source(page))
    assert not english, f"{page}: {len(english)} blocks still in English, e.g.\n" + "\n".join(english[:8])


def test_english_paragraph_check_finds_english() -> None:
    """The check above can fail: on the English edition's pages it finds English everywhere."""
    page = "notebooks/04_rope.html"
    assert page in PAGES
    assert len(_english_blocks(_page_source(page))) > 20


@pytest.mark.parametrize("page", PAGES)
def test_colab_button(page: str, visit: Callable[[str], PageReport], repository_url: str) -> None:
    links = set(visit(page).colab_links)
    if page not in NOTEBOOK_PAGES:
        assert not links, f"{page} is not a notebook, yet links to Colab: {links}"
        return
    notebook = Path(_source_page(page)).with_suffix(".ipynb").as_posix()
    assert links == {f"{COLAB}{urlsplit(repository_url).path.strip('/')}/blob/main/{notebook}"}, links
    assert (ROOT / notebook).is_file()


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and (name == "id" or (tag == "a" and name == "name")):
                self.ids.add(value)


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return frozenset(parser.ids)


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_resolve(page: str, visit: Callable[[str], PageReport], base_url: str) -> None:
    broken = []
    for link in visit(page).links:
        if not link.startswith(base_url):
            continue
        address, fragment = urldefrag(link)
        target = BOOK / unquote(urlsplit(address).path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{link}: no such file")
        elif fragment and target.suffix == ".html" and unquote(fragment) not in _anchors(target):
            broken.append(f"{link}: no element with id {fragment!r}")
    assert not broken, f"{page}:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", [page for page in CHINESE_PAGES if page in MATH_PAGES])
def test_translated_display_formulas_are_formulas(page: str) -> None:
    """A display formula whose \\text{} words were translated is that formula, not Sphinx's "::" literal-block
    marker (book/_ext/editions.py, TranslateDisplayMath)."""
    blocks = re.findall(
        r'<div class="math notranslate nohighlight">\s*\\\[(.*?)\\\]\s*</div>', _page_source(page), re.S
    )
    assert all(block.strip() != "::" for block in blocks), f"{page}: a display formula reads '::'"


def test_a_display_formula_with_translated_words_is_shown() -> None:
    source = _page_source("zh_CN/notebooks/12_inference_positions.html")
    assert "\\text{一个固定矩阵}" in source
