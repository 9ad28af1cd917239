# prefrank: install, run, test, evaluate. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_VERSION := 26.3
# Where the shared datasets live (read only; nothing is copied into the repository).
PREFRANK_DATA_DIR ?= ../shared/data
export PREFRANK_DATA_DIR
# Models load from local directories only.
export HF_HUB_OFFLINE := 1

.DEFAULT_GOAL := help
.PHONY: help install run test lint protos eval-search bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet -e '.[train,dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install prefrank with every extra

run: install  ## serve on 127.0.0.1:50051 with the embedded defaults (index under ./prefrank-data)
	$(VENV)/bin/prefrank serve

test: install  ## run the whole test suite
	$(PY) -m pytest

lint: install  ## ruff over the code (generated stubs excluded)
	$(VENV)/bin/ruff check prefrank training tests bench scripts

protos: install  ## regenerate prefrank/proto from protos/
	$(PY) scripts/generate_protos.py

eval-search: install  ## index SciFact through the CLI and evaluate Search over gRPC
	$(PY) -m training.eval_search

bench: install  ## gRPC Rerank vs in-process scoring; results go to BENCHMARKS.md by hand
	$(PY) bench/rerank_latency.py

clean:  ## remove the virtual environment and caches (keeps ./prefrank-data)
	rm -rf $(VENV) .pytest_cache build *.egg-info
