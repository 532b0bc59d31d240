# The verbs a newcomer uses. Every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODES ?= 5
AREA ?=
PYTEST_ARGS ?=
SEEDS ?= 10000
SOAK_S ?= 1800

.PHONY: help install test test-unit lint format demo bench soak up down docs clean sim

help:
	@echo "make demo    start a 5-host local mesh, show it working, tear it down"
	@echo "make test    install everything into $(VENV) and run the whole suite"
	@echo "make lint    ruff and mypy --strict"
	@echo "make bench   benchmarks into bench/results/ (AREA=bus for one area)"
	@echo "make soak    the lab under a stream of faults for SOAK_S seconds (default 1800)"
	@echo "make up / make down   a local mesh that stays up (NODES=$(NODES))"
	@echo "make docs    regenerate docs/protocol.md and docs/schemas/ from the protocol module"
	@echo "make sim     seeded Raft simulations (SEEDS=$(SEEDS); one: python -m tests.kit.raft_sim --seed S)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU torch first: an unpinned torch would pull several GB of CUDA packages.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check libs services tests bench
	$(BIN)/ruff format --check libs services tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format libs services tests bench
	$(BIN)/ruff check --fix libs services tests bench

demo: $(STAMP)
	$(BIN)/meshctl demo --nodes 5

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(AREA)

soak: $(STAMP)
	$(BIN)/python -m bench.soak --duration $(SOAK_S)

up: $(STAMP)
	$(BIN)/meshctl up --nodes $(NODES)

down: $(STAMP)
	$(BIN)/meshctl down

sim: $(STAMP)
	$(BIN)/python -m tests.kit.raft_sim --seeds $(SEEDS)

docs: $(STAMP)
	$(BIN)/python -m meshmind.bus.docs

clean:
	-$(BIN)/meshctl down 2>/dev/null
	rm -rf .meshmind bench/results .mypy_cache .ruff_cache .pytest_cache
