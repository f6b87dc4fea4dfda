# The book's commands. On a fresh machine `make book` and `make test` do all the set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NB ?=
INSTALLED := $(VENV)/.installed

export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= $(OMP_NUM_THREADS)
export TOKENIZERS_PARALLELISM ?= false
# Nothing may reach the Hugging Face Hub: every model and dataset comes from llmbook.assets.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONWARNINGS ?= ignore::DeprecationWarning:jupyter_client.connect
export JUPYTER_PLATFORM_DIRS := 1

# Print how long a stage took: $(call timed,label,command)
define timed
	@start=$$(date +%s); echo "== $(1)"; \
	$(2); rc=$$?; \
	echo "[time] $(1): $$(( $$(date +%s) - start )) s (exit $$rc)"; exit $$rc
endef

# pytest exits 5 when it collected no test: in this suite that is always a mistake.
# $(call pytest_strict,pytest arguments[,command prefix])
define pytest_strict
	( rc=0; $(2) $(BIN)/pytest $(1) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests for '$(1)'"; rc=1; fi; exit $$rc )
endef

.PHONY: help install assets book test unit freshness nbval build check execute lab clean

help:
	@echo "make book      set up, fetch assets, build the HTML into _build/html"
	@echo "make test      set up, then the whole CI suite (unit, freshness, notebooks under smoke, book build)"
	@echo "make check     quick checks: stamps fresh, unit tests without assets, lint"
	@echo "make execute   re-run notebooks under 'full' and stamp them (NB=notebooks/01_....ipynb for one)"
	@echo "make lab       JupyterLab in the book's environment"
	@echo "make assets    fetch and verify the offline assets"
	@echo "make clean     remove the venv and the build (the asset cache stays)"

$(INSTALLED): requirements.txt constraints.txt pyproject.toml
	@set -o pipefail; start=$$(date +%s); quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | quiet && \
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | quiet && \
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt 2>&1 | quiet && \
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | quiet && \
	$(BIN)/python -c "import torch, llmbook; assert torch.__version__.startswith('2.13.0'), torch.__version__" && \
	touch $@ && echo "[time] install: $$(( $$(date +%s) - start )) s"

install: $(INSTALLED)

assets: $(INSTALLED)
	$(call timed,assets,$(BIN)/python -m llmbook.assets fetch && $(BIN)/python -m llmbook.assets verify)

build: $(INSTALLED)
	$(call timed,book build,rm -rf _build/html && $(BIN)/jupyter-book build . -W -n --keep-going && test -f _build/html/index.html)

book: assets build
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

unit: $(INSTALLED)
	$(call timed,unit tests,$(call pytest_strict,-q -m "not notebooks" tests))

freshness: $(INSTALLED)
	$(call timed,freshness,$(BIN)/python -m llmbook.execute --check && $(call pytest_strict,-q -m notebooks tests))

nbval: $(INSTALLED)
	$(call timed,notebooks (smoke; offline),$(call pytest_strict,-q --nbval-lax --nbval-current-env --nbval-sanitize-with .ci/nbval-sanitize.cfg --nbval-cell-timeout=900 -p no:cacheprovider notebooks,env LLMBOOK_PROFILE=smoke .ci/offline))

test: assets
	@start=$$(date +%s); $(MAKE) --no-print-directory unit freshness nbval build; rc=$$?; \
	echo "[time] make test total (after install and assets): $$(( $$(date +%s) - start )) s"; exit $$rc

check: $(INSTALLED)
	$(call timed,check,$(BIN)/python -m llmbook.execute --check && $(BIN)/ruff check llmbook tests notebooks && $(call pytest_strict,-q -x -m "not assets and not notebooks" tests))

execute: assets
	$(BIN)/python -m llmbook.execute --profile full $(NB)

lab: assets
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build $(VENV) .pytest_cache .ruff_cache
