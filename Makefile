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
.PHONY: help install run test lint protos eval-search train-reward eval-reward distill merge fit-fusion eval promote \
	retrain bench bench-throughput clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet -e '.[train,dev,ray]'
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

# --- reward model (training/train_reward.py, training/evaluate_reward.py) ---
# RECIPE names recipes/<RECIPE>.toml; ARGS overrides recipe settings, e.g.
# make train-reward RECIPE=search-scifact ARGS="--max-pairs 2000 --epochs 1"
RECIPE ?= translation-mqm-zhen
ARGS ?=

train-reward: install  ## prepare RECIPE's data, train the reward model, evaluate it (artifacts/reward/)
	$(PY) -m training.train_reward --recipe $(RECIPE) $(ARGS)

eval-reward: install  ## evaluate RECIPE's latest reward model and the baselines on its test split
	$(PY) -m training.evaluate_reward --recipe $(RECIPE) $(ARGS)
# --- end reward model ---

# --- fusion loop (docs/fusion.md): each step reads the previous one's output ---
distill: install  ## distil RECIPE's reward model into the retriever (artifacts/fuse/<recipe>/distilled)
	$(PY) -m training.distill --recipe $(RECIPE) $(ARGS)

merge: install  ## sweep alpha of base/distilled retriever merging on dev, keep the best (.../merged)
	$(PY) -m training.merge --recipe $(RECIPE) $(ARGS)

fit-fusion: install  ## fit fusion weights and calibration on dev (.../fusion.json)
	$(PY) -m training.fit_fusion --recipe $(RECIPE) $(ARGS)

eval: install  ## ablation on test; writes bundle models/<recipe>/<version> and reports/<version>/report.md
	$(PY) -m training.evaluate_bundle --recipe $(RECIPE) $(ARGS)

promote: install  ## point models/<recipe>/current at the newest bundle unless it is worse than current
	$(PY) -m training.promote --recipe $(RECIPE) $(ARGS)

retrain: install  ## the whole loop for RECIPE: train-reward, distill, merge, fit-fusion, eval, promote
	$(MAKE) --no-print-directory train-reward RECIPE=$(RECIPE) ARGS='$(ARGS)'
	$(MAKE) --no-print-directory distill RECIPE=$(RECIPE) ARGS='$(ARGS)'
	$(MAKE) --no-print-directory merge RECIPE=$(RECIPE) ARGS='$(ARGS)'
	$(MAKE) --no-print-directory fit-fusion RECIPE=$(RECIPE) ARGS='$(ARGS)'
	$(MAKE) --no-print-directory eval RECIPE=$(RECIPE) ARGS='$(ARGS)'
	$(MAKE) --no-print-directory promote RECIPE=$(RECIPE) ARGS='$(ARGS)'
# --- end fusion loop ---

bench: install  ## gRPC Rerank vs in-process scoring; results go to BENCHMARKS.md by hand
	$(PY) bench/rerank_latency.py

# Infinity, the comparison server, lives in its own venv so its pins never touch ours.
INFINITY_VENV := build/infinity-venv
$(INFINITY_VENV)/bin/infinity_emb:
	$(PYTHON) -m venv $(INFINITY_VENV)
	$(INFINITY_VENV)/bin/pip install --quiet --upgrade pip==$(PIP_VERSION)
	$(INFINITY_VENV)/bin/pip install --quiet torch==2.13.0 "infinity-emb[server,torch]==0.0.78"

bench-throughput: install $(INFINITY_VENV)/bin/infinity_emb  ## backends, latency, concurrency, Infinity
	$(PY) bench/rerank_throughput.py

clean:  ## remove the virtual environment and caches (keeps ./prefrank-data)
	rm -rf $(VENV) .pytest_cache build *.egg-info
