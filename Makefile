# One-word tasks. Each installs what it needs: uv (always the pinned copy bootstrapped with
# pip into .tools/, never one from PATH, so every machine runs the same path as a fresh
# one), then the locked workspace environment in .venv/.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
RUN := $(UV) run --locked
# The tests call uv too (building and installing the wheels): they use this one.
export CLIP_HYBRID_UV := $(abspath $(UV))
export UV_PYTHON_DOWNLOADS ?= never
# uv hardlinks files from its cache by default; nltk (used by LlamaIndex's sentence
# splitter) refuses to open hardlinked data files ("refusing multiply-linked file").
export UV_LINK_MODE ?= copy
# Test processes: four keep two cores busy (many tests wait on subprocesses and servers);
# tests that share a build (the wheels) run in one worker (--dist loadgroup).
TEST_WORKERS ?= 4

.PHONY: help demo test lint typecheck unit sync

help:
	@echo "make demo   index the sample images and search them (CLIP_HYBRID_CLIP_MODEL=path for a local checkpoint)"
	@echo "make test   lint, type-check and run every test"

# The stamp names the version: bumping UV_VERSION reinstalls it.
.tools/uv-$(UV_VERSION):
	rm -rf .tools
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"
	touch $@

# --compile-bytecode: the environment's bytecode is compiled once at install (34 s here,
# then ~1 s per sync). Where PYTHONDONTWRITEBYTECODE is set (CI images often set it),
# every process, and the test suite starts hundreds, would compile each module it
# imports again.
sync: .tools/uv-$(UV_VERSION)
	$(UV) sync --locked --quiet --compile-bytecode

demo: sync
	$(RUN) python examples/demo.py

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync
	$(RUN) mypy -p llama_index.retrievers.selfhit -p llama_index.packs.clip_hybrid

unit: sync
	$(RUN) pytest -n $(TEST_WORKERS) --dist loadgroup

test: lint typecheck unit
