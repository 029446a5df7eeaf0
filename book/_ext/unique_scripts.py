"""Sphinx extension: write each ``<script>`` into a page once.

sphinx-thebe 0.3.1, which Jupyter Book 1.x always loads, registers its inline configuration script
(``const THEBE_JS_URL = ...``) twice, so every page declared the same ``const`` twice and the browser
reported ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` (sphinx-togglebutton's inline
script was written twice too). The browser tests (``tests/browser``) fail on any page error; this handler
drops the exact duplicates, keeping the first of each and the order of the rest.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def drop_duplicate_scripts(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any
) -> None:
    """Keep the first of each identical script (same file, attributes and body) in ``script_files``."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        # The two copies differ only in how "no file" is spelled (None in one, "" in the other).
        key = (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict[str, Any]:
    # Late priority: after the extensions that add scripts in their own html-page-context handlers.
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
