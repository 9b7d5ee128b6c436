# One-word tasks. Each installs what it needs: uv (bootstrapped with pip into .tools/
# when missing), then the locked workspace environment in .venv/.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --locked
export UV_PYTHON_DOWNLOADS ?= never
# uv hardlinks files from its cache by default; nltk (used by LlamaIndex's sentence
# splitter) refuses to open hardlinked data files ("refusing multiply-linked file").
export UV_LINK_MODE ?= copy

.PHONY: help demo test lint typecheck unit sync

help:
	@echo "make demo   index the sample images and search them (CLIP_HYBRID_CLIP_MODEL=path for a local checkpoint)"
	@echo "make test   lint, type-check and run every test"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv>=0.5,<1"

sync: $(if $(findstring .tools,$(UV)),.tools/bin/uv)
	$(UV) sync --locked --quiet

demo: sync
	$(RUN) python examples/demo.py

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync
	$(RUN) mypy -p llama_index.retrievers.selfhit -p llama_index.packs.clip_hybrid

unit: sync
	$(RUN) pytest

test: lint typecheck unit
