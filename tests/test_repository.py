"""Checks of the repository layout: pinned versions, the book's contents and API page, the notebooks."""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def read_constraints() -> dict[str, Version]:
    """Parse constraints.txt into {canonical name: version}; fail on any line that is not `name==version`."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        assert match, f"constraints.txt line {line!r} is not an exact pin 'name==version'"
        pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def project_requirements() -> list[Requirement]:
    """Every requirement of posenc_lib (core and all extras) as installed from pyproject.toml."""
    return [Requirement(text) for text in importlib.metadata.requires("posenc_lib") or []]


def test_constraints_are_exact_portable_pins() -> None:
    pins = read_constraints()
    assert "posenc-lib" not in pins, "constraints.txt must not pin the project itself"
    local = {name: str(version) for name, version in pins.items() if version.local}
    assert not local, f"drop the local labels (e.g. +cpu) so the pins also match PyPI wheels: {local}"


def test_constraints_pin_every_requirement_within_its_range() -> None:
    pins = read_constraints()
    for requirement in project_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (from pyproject.toml) is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject.toml's range {requirement}"
        )


def test_installed_versions_match_constraints() -> None:
    mismatched = {}
    for name, pinned in read_constraints().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. the `lab` extra, installed only by `make lab`
        if installed.public != pinned.public:
            mismatched[name] = f"installed {installed}, pinned {pinned}"
    assert not mismatched, f"the environment differs from constraints.txt: {mismatched}"


def toc_files() -> list[str]:
    """All files named in _toc.yml (root, chapters, sections, parts), without extension."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                found.append(entry["file"])
            for key in ("chapters", "sections"):
                walk(entry.get(key, []))
            for part in entry.get("parts", []):
                walk(part.get("chapters", []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return found


def test_toc_files_exist() -> None:
    for name in toc_files():
        candidates = [ROOT / f"{name}{suffix}" for suffix in ("", ".md", ".ipynb")]
        assert any(path.is_file() for path in candidates), f"_toc.yml names {name}, which does not exist"


def test_api_page_documents_exactly_the_public_modules() -> None:
    documented = re.findall(r"^\.\. automodule:: (\S+)$", (ROOT / "book" / "api.md").read_text(), re.M)
    on_disk = {"posenc_lib"} | {
        f"posenc_lib.{path.stem}"
        for path in (ROOT / "posenc_lib").glob("*.py")
        if not path.stem.startswith("_")
    }
    assert len(documented) == len(set(documented)), "book/api.md documents a module twice"
    assert on_disk - set(documented) == set(), "add these modules to book/api.md"
    assert set(documented) - on_disk == set(), "book/api.md documents modules that do not exist"


def h1_titles(markdown: str) -> list[str]:
    """The `# Title` lines of a markdown text, skipping fenced code blocks."""
    titles, fence = [], None
    for line in markdown.splitlines():
        marker = re.match(r"\s*(```+|~~~+)", line)
        if marker and (fence is None or marker[1].startswith(fence)):
            fence = marker[1] if fence is None else None
        elif fence is None and re.match(r"# \S", line):
            titles.append(line)
    return titles


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_is_in_book_and_executed_in_order(notebook: Path) -> None:
    assert f"notebooks/{notebook.stem}" in toc_files(), f"{notebook.name} is not listed in _toc.yml"
    cells = json.loads(notebook.read_text())["cells"]
    headings = [
        heading
        for cell in cells
        if cell["cell_type"] == "markdown"
        for heading in h1_titles("".join(cell["source"]))
    ]
    assert len(headings) == 1, f"{notebook.name} needs exactly one H1 title, found {headings}"
    # nbval does not compare a cell whose execution_count is null: every cell must have run, top to bottom.
    counts = [
        cell["execution_count"]
        for cell in cells
        if cell["cell_type"] == "code" and "".join(cell["source"]).strip()
    ]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{notebook.name}: run it top to bottom in a fresh kernel and save (execution counts {counts})"
    )


def test_readme_python_examples_run() -> None:
    """The README's Python examples are code a reader will paste: each one runs as written."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    assert blocks, "README.md has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_gives_the_site_of_the_configured_repository(repository_url: str) -> None:
    """The published site's address follows from `repository.url` in _config.yml, its one source of truth."""
    owner, name = repository_url.removeprefix("https://github.com/").split("/")
    site = f"https://{owner.lower()}.github.io/{name}/"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    addresses = set(re.findall(r"https://[\w-]+\.github\.io/[\w./-]*", readme))
    assert site in addresses, f"README.md should give the site, {site}"
    assert all(address.startswith(site) for address in addresses), addresses
    for workflow in (ROOT / ".github" / "workflows").glob("*.yml"):
        text = workflow.read_text(encoding="utf-8")
        assert f"{owner}/{name}" not in text, f"{workflow.name} names the repository; use _config.yml's"


def test_pages_workflow_publishes_what_make_book_builds() -> None:
    """The deploy workflow builds with `make book` and uploads _build/html, both editions, with the official
    actions and the permissions they need."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text(encoding="utf-8"))
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert workflow[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as True
    steps = {step.get("uses", "").split("@")[0]: step for step in build["steps"]}
    assert any(step.get("run") == "make book" for step in build["steps"])
    assert steps["actions/upload-pages-artifact"]["with"]["path"] == "_build/html"
    assert "actions/configure-pages" in steps
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["group"] == "pages"
