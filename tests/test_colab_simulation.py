"""Run a chapter notebook the way Google Colab runs it: posenc_lib is installed by the notebook's first cell.

The simulation, step by step:

1. A fresh virtual environment without posenc_lib plays the Colab machine. Colab comes with torch, numpy,
   matplotlib, ipywidgets and Jupyter preinstalled; here these are the packages of the environment running
   the tests, made visible to the fresh one by a `.pth` file that points at a folder of links to them. The
   folder leaves out posenc_lib (package, metadata and editable-install hook), and the test checks that
   posenc_lib can neither be imported nor found by `importlib.metadata` before the notebook runs.
2. The install guard is forced on honestly: a stub `google.colab` package lives in the fresh environment and
   the kernel loads it at start-up as an IPython extension, so `"google.colab" in sys.modules` is true in
   the notebook, as in Colab. The first cell's text is kept, except for the URL.
3. Instead of `git+<repository>@main` (from `_config.yml`) the cell installs from a copy of the checkout's
   files that git tracks or would track, as a `file://` URL. pip runs offline (`PIP_NO_INDEX`, no pip
   configuration file) and without build isolation, so setuptools and the dependencies must come from the
   preinstalled packages: pip installs posenc_lib alone, into the fresh environment.
4. The notebook runs end to end in a kernel of the fresh environment, with a temporary working directory
   (the checkout is not importable from there). Afterwards posenc_lib must be a regular install in the
   fresh environment, nothing else may have been installed there, and the text outputs must match the
   stored ones (as nbval compares them, with the substitutions of nbval_sanitize.cfg).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the Colab simulation needs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the Colab simulation needs nbclient")
pytest.importorskip("ipykernel", reason="the Colab simulation needs ipykernel for the notebook's kernel")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "01_why_position.ipynb"  # the fastest chapter
CELL_TIMEOUT_S = 600
KERNEL_NAME = "colab-simulation"
PREINSTALLED_PTH = "colab_preinstalled.pth"
IGNORE_OUTPUT_MARK, IGNORE_OUTPUT_TAG = "NBVAL_IGNORE_OUTPUT", "nbval-ignore-output"
GOOGLE_COLAB_STUB = '''"""Stand-in for Colab's google.colab: in sys.modules, it turns the install guard on."""


def load_ipython_extension(ipython):
    """Loaded by the kernel at start-up, which imports this package."""
'''
PIP_SCRIPT = """#!{python}
import sys

from pip._internal.cli.main import main

sys.exit(main())
"""
# Before the notebook, each snippet must succeed (True) or fail in the fresh venv: Colab's packages only.
BEFORE_INSTALL = {
    "import posenc_lib": False,
    "import importlib.metadata; importlib.metadata.distribution('posenc_lib')": False,
    "import torch, numpy, matplotlib, ipywidgets, tqdm": True,
}
INSTALL_REPORT = """
import importlib.metadata, json, posenc_lib
dist = importlib.metadata.distribution("posenc_lib")
direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
site = str(dist.locate_file(""))
print(json.dumps({"module": posenc_lib.__file__, "site": site, "direct_url": direct_url}))
"""


def _run(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command and return its stdout; fail with its output if it fails."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _succeeds(python: Path, code: str, cwd: Path, env: dict[str, str]) -> bool:
    result = subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, check=False)
    return result.returncode == 0


def _preinstalled_site_packages() -> list[Path]:
    """The site-packages of the environment running the tests: Colab's preinstalled packages."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the Colab simulation borrows the packages of a virtual environment; run it from .venv")
    paths = {Path(sysconfig.get_path(name)).resolve() for name in ("purelib", "platlib")}
    return sorted(path for path in paths if path.is_dir())


def _is_posenc_lib(name: str) -> bool:
    return "posenc_lib" in name.lower().replace("-", "_")


def _link_preinstalled_packages(sources: list[Path], target: Path) -> None:
    """Link every package of sources into target, except posenc_lib (and .pth files: none are processed)."""
    target.mkdir()
    for source in sources:
        for entry in source.iterdir():
            if _is_posenc_lib(entry.name) or entry.suffix == ".pth" or (target / entry.name).exists():
                continue
            (target / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())


def _venv_site_packages(python: Path, cwd: Path) -> Path:
    return Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd).strip())


def _make_colab_venv(tmp_path: Path, preinstalled_sources: list[Path]) -> tuple[Path, Path]:
    """A fresh venv that sees the preinstalled packages and has google.colab and a pip command.

    Returns the venv's python and its own site-packages.
    """
    venv = tmp_path / "colab"
    _run([sys._base_executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    site_packages = _venv_site_packages(python, tmp_path)
    preinstalled = tmp_path / "preinstalled"
    _link_preinstalled_packages(preinstalled_sources, preinstalled)
    (site_packages / PREINSTALLED_PTH).write_text(f"{preinstalled}\n", encoding="utf-8")
    stub = site_packages / "google" / "colab" / "__init__.py"  # google stays a namespace package
    stub.parent.mkdir(parents=True)
    stub.write_text(GOOGLE_COLAB_STUB, encoding="utf-8")
    pip = venv / "bin" / "pip"  # Colab's `!pip` is the pip of its Python, preinstalled like the rest
    pip.write_text(PIP_SCRIPT.format(python=python), encoding="utf-8")
    pip.chmod(0o755)
    return python, site_packages


def _copy_checkout(target: Path) -> None:
    """Copy the files git tracks or would track (what the repository will hold) to target."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the files of the checkout")
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: {listing.stderr.strip()}")
    for name in filter(None, listing.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _colab_notebook(source_url: str, repository_url: str) -> nbformat.NotebookNode:
    """The notebook, its first cell installing from source_url instead of the course repository."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = notebook.cells[0]
    git_url = f"git+{repository_url}@main"
    assert first.cell_type == "code" and first.source.count(git_url) == 1, f"no {git_url} in the first cell"
    first.source = first.source.replace(git_url, source_url)
    return notebook


def _write_kernelspec(jupyter_path: Path, python: Path) -> None:
    """A kernel of the fresh venv that loads google.colab at start-up."""
    spec = jupyter_path / "kernels" / KERNEL_NAME / "kernel.json"
    spec.parent.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    argv.append("--InteractiveShellApp.extensions=google.colab")
    spec.write_text(json.dumps({"argv": argv, "display_name": "Colab", "language": "python"}))


def _kernel_env(python: Path, ipython_dir: Path) -> dict[str, str]:
    """The kernel's environment: the venv's commands first, pip offline and without build isolation."""
    dropped = {"MPLBACKEND", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env = {key: value for key, value in env.items() if not key.startswith("PIP_")}
    env |= {
        "PATH": f"{python.parent}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(python.parent.parent),
        "IPYTHONDIR": str(ipython_dir),  # no profile or start-up files of this machine
        "TQDM_DISABLE": "1",
        "PIP_CONFIG_FILE": os.devnull,  # no extra indexes or find-links from this machine's pip.conf
        "PIP_NO_INDEX": "1",
        # pip reads this as the value of build_isolation: "0" (or "false") means --no-build-isolation.
        "PIP_NO_BUILD_ISOLATION": "0",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    return env


def _execute(client: nbclient.NotebookClient, env: dict[str, str]) -> None:
    """Run the notebook; on an error, show the install cell's output too (a failing `!pip` raises none)."""
    try:
        client.execute(env=env)
    except nbclient.exceptions.CellExecutionError as error:
        printed = "".join(output.get("text", "") for output in client.nb.cells[0].get("outputs", []))
        message = f"{NOTEBOOK.name} failed in the simulated Colab:\n{error}\n\nThe install cell printed:\n"
        raise AssertionError(message + (printed or "(nothing)")) from None


def _sanitize_patterns() -> list[tuple[str, str]]:
    """The (regex, replacement) pairs of nbval_sanitize.cfg, read as nbval reads them."""
    text = (ROOT / "nbval_sanitize.cfg").read_text(encoding="utf-8")
    return re.findall(r"^regex: (.*)$\n^replace: (.*)$", text, flags=re.MULTILINE)


def _text_outputs(cell: nbformat.NotebookNode, patterns: list[tuple[str, str]]) -> list[str]:
    """What nbval compares, less images: each stream (merged by name) and each text/plain, sanitized."""
    texts: list[str] = []
    streams: dict[str, int] = {}
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name in streams:
            texts[streams[output.name]] += output.text
        elif output.output_type == "stream":
            streams[output.name] = len(texts)
            texts.append(f"[{output.name}] {output.text}")
        elif "text/plain" in output.get("data", {}):
            texts.append(f"[{output.output_type}] {output.data['text/plain']}")
    for regex, replacement in patterns:
        texts = [re.sub(regex, replacement, text) for text in texts]
    return texts


def _output_mismatches(stored: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> list[str]:
    patterns = _sanitize_patterns()
    mismatches = []
    pairs = zip(stored.cells[1:], executed.cells[1:], strict=True)
    for index, (old, new) in enumerate(pairs, start=1):
        ignored = IGNORE_OUTPUT_MARK in old.source or IGNORE_OUTPUT_TAG in old.metadata.get("tags", [])
        if old.cell_type != "code" or ignored:
            continue
        expected, actual = _text_outputs(old, patterns), _text_outputs(new, patterns)
        if expected != actual:
            mismatches.append(f"notebook cell {index}:\n  stored:   {expected}\n  executed: {actual}")
    return mismatches


def _install_report(python: Path, cwd: Path, env: dict[str, str]) -> dict:
    """Where the fresh venv's python finds posenc_lib and its metadata, and where pip installed it from."""
    return json.loads(_run([python, "-c", INSTALL_REPORT], cwd, env))


def test_notebook_installs_posenc_lib_and_runs_in_simulated_colab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repository_url: str
) -> None:
    work = tmp_path / "content"  # Colab's working directory; not the checkout, so posenc_lib is not there
    work.mkdir()
    python, site_packages = _make_colab_venv(tmp_path, _preinstalled_site_packages())
    env = _kernel_env(python, tmp_path / "ipython")
    for code, expected in BEFORE_INSTALL.items():
        outcome = "succeed" if expected else "fail"
        assert _succeeds(python, code, work, env) == expected, f"before the install, `{code}` must {outcome}"

    source = tmp_path / "posenc-course"
    _copy_checkout(source)
    stored = nbformat.read(NOTEBOOK, as_version=4)
    notebook = _colab_notebook(source.as_uri(), repository_url)
    _write_kernelspec(tmp_path / "jupyter", python)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(work)}}
    )
    _execute(client, env)

    installed = _install_report(python, work, env)
    assert Path(installed["module"]).is_relative_to(site_packages), f"posenc_lib not installed: {installed}"
    assert Path(installed["site"]) == site_packages, f"posenc_lib's metadata is elsewhere: {installed}"
    assert installed["direct_url"].get("url") == source.as_uri(), f"not from the checkout: {installed}"
    editable = installed["direct_url"].get("dir_info", {}).get("editable", False)
    assert not editable, f"an editable install: {installed}"
    extra = {name for name in os.listdir(site_packages) if not _is_posenc_lib(name)}
    assert extra == {PREINSTALLED_PTH, "google"}, f"pip installed more than posenc_lib: {sorted(extra)}"
    mismatches = _output_mismatches(stored, notebook)
    assert not mismatches, f"{NOTEBOOK.name}: outputs differ from the stored ones\n" + "\n".join(mismatches)
