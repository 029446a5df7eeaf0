"""The scripts and fonts the HTML book loads from CDNs, fetched from the npm registry and served locally.

The published book loads MathJax 3 and (through the players of matplotlib's ``to_jshtml()`` animations) Font
Awesome from public CDNs. The browser tests run without internet, so
``make browser-assets`` runs this file as a script: it fetches the same package versions with ``npm pack``
(tarballs only, no dependencies, no install scripts), checks each tarball against the integrity hash
recorded here, and unpacks it under ``.venv/browser-assets/``. During a test the browser's requests to a CDN
are answered from those files (:func:`local_file`); nothing third-party is committed to the repository.

Usage: ``python tests/browser/cdn_assets.py DEST`` (the Makefile passes ``.venv/browser-assets``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CdnPackage:
    """One npm package standing in for a CDN URL prefix.

    A request for ``url_prefix + rest`` is answered with the file ``rest`` of the unpacked package.
    """

    url_prefix: str
    npm_spec: str  # name@version, exactly the version in the CDN URL
    integrity: str  # npm's sha512 integrity of the tarball

    @property
    def directory_name(self) -> str:
        return self.npm_spec.replace("/", "__")


PACKAGES = (
    CdnPackage(
        "https://cdn.jsdelivr.net/npm/mathjax@3.2.2/",
        "mathjax@3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
    ),
    CdnPackage(
        "https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/",
        "font-awesome@4.4.0",
        "sha512-h45v/TF2b9d6JiBnyluFrjZRyJXXkRjWbTKxb0ygTScxdP8gWdgMBaghbDuSLQFHNkj3M0eNrLxfTEiQo93ARQ==",
    ),
)


def local_file(url: str, assets: Path) -> Path | None:
    """The local file that answers a request for ``url``, or None when no package stands in for it."""
    address = url.split("#", 1)[0].split("?", 1)[0]
    for package in PACKAGES:
        if address.startswith(package.url_prefix):
            relative = address[len(package.url_prefix) :]
            candidate = (assets / package.directory_name / relative).resolve()
            root = (assets / package.directory_name).resolve()
            if candidate.is_relative_to(root) and candidate.is_file():
                return candidate
            return None
    return None


def is_complete(assets: Path) -> bool:
    """True when every package has been fetched into ``assets``."""
    return all((assets / package.directory_name / "package.json").is_file() for package in PACKAGES)


def _integrity(tarball: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()


def fetch(assets: Path) -> None:
    """Fetch every package with ``npm pack``, check its integrity, and unpack it into ``assets``."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed: install Node.js and npm (Debian: apt-get install npm)")
    assets.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        specs = [package.npm_spec for package in PACKAGES]
        listing = subprocess.run(
            [npm, "pack", "--json", "--pack-destination", scratch, *specs],
            check=True,
            capture_output=True,
            text=True,
        )
        tarballs = {entry["id"]: Path(scratch) / entry["filename"] for entry in json.loads(listing.stdout)}
        for package in PACKAGES:
            tarball = tarballs[package.npm_spec]
            if _integrity(tarball) != package.integrity:
                raise SystemExit(f"{package.npm_spec}: the tarball's sha512 differs from the one recorded")
            target = assets / package.directory_name
            shutil.rmtree(target, ignore_errors=True)
            with tarfile.open(tarball) as archive:
                # The "data" filter refuses links and paths outside the target (Python 3.10.12+, 3.11.4+).
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                archive.extractall(scratch + "/unpacked-" + package.directory_name, **safe)
            shutil.move(scratch + "/unpacked-" + package.directory_name + "/package", target)
            print(f"{package.npm_spec} -> {target}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    fetch(Path(sys.argv[1]))
