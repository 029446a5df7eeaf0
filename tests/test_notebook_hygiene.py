"""Every chapter notebook is stored the way the book and nbval need it (see README, Contributing)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_outputs_are_clean(path: Path) -> None:
    """No stored errors and nothing on stderr (a warning there would also fail nbval on a clean run)."""
    for index, cell in enumerate(_code_cells(json.loads(path.read_text(encoding="utf-8")))):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{path.name}, code cell {index}: stored error"
            is_stderr = output["output_type"] == "stream" and output.get("name") == "stderr"
            assert not is_stderr, f"{path.name}, code cell {index}: output on stderr"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_first_cell_installs_posenc_lib_in_colab_from_the_configured_repository(
    path: Path, repository_url: str
) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    first = notebook["cells"][0]
    source = "".join(first["source"])
    assert first["cell_type"] == "code" and 'if "google.colab" in sys.modules:' in source
    assert f"git+{repository_url}@main" in source, "the install URL must be the one in _config.yml"
    assert "remove-cell" in first.get("metadata", {}).get("tags", []), "the HTML book hides the Colab cell"
    later_code = "".join("".join(cell["source"]) for cell in _code_cells(notebook)[1:])
    assert "import posenc_lib" in later_code


def _constraints() -> dict[str, str]:
    """The pinned versions of constraints.txt, by lower-case package name."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, separator, version = line.partition("==")
        if separator:
            pins[name.strip().lower()] = version.strip()
    return pins


# Modules of posenc_lib that import transformers when called.
USES_TRANSFORMERS = re.compile(
    r"^\s*(from transformers\b|import transformers\b|from posenc_lib\.(hf|pretrained) import)", re.M
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_colab_cell_pins_what_the_chapter_needs_as_constraints_txt_does(path: Path) -> None:
    """Colab comes with its own transformers; a chapter that uses it installs the version it is tested with.

    Every ``package==version`` the Colab cell installs must be the version in constraints.txt, so that Colab
    readers run what CI runs.
    """
    notebook = json.loads(path.read_text(encoding="utf-8"))
    colab_cell = "".join(notebook["cells"][0]["source"])
    pins = _constraints()
    installed = dict(re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s\"]*)", colab_cell))
    for package, version in installed.items():
        assert pins.get(package.lower()) == version, (
            f"{path.name}: the Colab cell installs {package}=={version}, constraints.txt pins "
            f"{pins.get(package.lower())}"
        )
    later_code = "\n".join("".join(cell["source"]) for cell in _code_cells(notebook)[1:])
    if USES_TRANSFORMERS.search(later_code):
        assert "transformers" in installed, f"{path.name} uses transformers: its Colab cell must pin it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_kernel_and_widgets_only_for_notebook_readers(path: Path) -> None:
    """ipywidgets need a live kernel: they are for readers who run the notebook, never in the web book.

    A cell that shows a widget is tagged ``remove-cell`` (the web book shows a kernel-free to_jshtml player
    instead, see posenc_lib.plotting.slider_animation), and no widget state is saved, so that no page of the
    book shows a control that cannot respond.
    """
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in notebook["metadata"], "saved widget state (make execute does not store it)"
    assert "jupytext" not in notebook["metadata"], "a jupytext header was left in the notebook's metadata"
    for index, cell in enumerate(_code_cells(notebook)):
        shows_widget = any(WIDGET_VIEW in output.get("data", {}) for output in cell.get("outputs", []))
        if shows_widget:
            tags = cell.get("metadata", {}).get("tags", [])
            assert "remove-cell" in tags, (
                f"{path.name}, code cell {index} shows a widget but is not remove-cell"
            )


# Outputs stay as small as they need to be (the repository carries every stored figure). Limits in bytes of
# the stored JSON: a figure at the book's 80 dpi is under 200 kB; the to_jshtml animation of chapter 4
# (base64 frames) is the largest single output.
OUTPUT_LIMITS = {"image/png": 250_000, "text/html": 500_000}
TEXT_LIMIT = 20_000  # any other output (printed text, reprs)
NOTEBOOK_LIMIT = 1_200_000  # chapter 4, with its animation, is the largest (about 1.0 MB)
NOTEBOOKS_LIMIT = 8_000_000  # all twelve chapters together (6.9 MB with chapters 11 and 12)


def _output_sizes(notebook: dict) -> list[tuple[int, str, int]]:
    """(code cell index, mime type or 'stream', size) of every stored output."""
    sizes = []
    for index, cell in enumerate(_code_cells(notebook)):
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                sizes.append((index, "stream", len("".join(output["text"]))))
            for mime, value in output.get("data", {}).items():
                text = "".join(value) if isinstance(value, list) else json.dumps(value)
                sizes.append((index, mime, len(text)))
    return sizes


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_outputs_are_no_larger_than_needed(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    too_large = [
        f"code cell {index}: {mime} of {size} bytes (limit {OUTPUT_LIMITS.get(mime, TEXT_LIMIT)})"
        for index, mime, size in _output_sizes(notebook)
        if size > OUTPUT_LIMITS.get(mime, TEXT_LIMIT)
    ]
    assert not too_large, f"{path.name}: " + "; ".join(too_large)
    assert path.stat().st_size <= NOTEBOOK_LIMIT, f"{path.name} is {path.stat().st_size} bytes"


def test_notebooks_folder_stays_small() -> None:
    total = sum(path.stat().st_size for path in NOTEBOOKS)
    assert NOTEBOOKS and total <= NOTEBOOKS_LIMIT, f"notebooks/ holds {total} bytes (limit {NOTEBOOKS_LIMIT})"
