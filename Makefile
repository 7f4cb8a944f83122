# spikereg-neuro: every target sets itself up when .venv is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHON310

.PHONY: setup test demo bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@py=$$(scripts/find_python310.sh) || exit 1; \
	  echo "using $$py ($$($$py --version))"; \
	  [ -x $(PY) ] || $$py -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=23" 
	@echo "installing spikereg-neuro and its dependencies (first time: torch 2.3.1 is a ~2.5 GB CUDA build; a few minutes)"
	$(PY) -m pip install --progress-bar off -e ".[test,baselines]"
	@$(PY) -c "from spikereg_neuro.model import native; print('FusedALIF time loop:', native.status())"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests -q

demo: $(STAMP)
	$(VENV)/bin/spikereg-neuro demo
	$(VENV)/bin/spikereg-neuro benchmark --out out/benchmark --quick

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only

clean-venv:
	rm -rf $(VENV)
