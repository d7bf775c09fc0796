# tilemesh: every target bootstraps the virtual environment first (nothing to install by hand).
PYTHON ?= python3
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
PRESET ?= default
BOARD  ?= ulx3s-85f
# Debian packages: Icarus (simulator), ccache (Verilator rebuilds), liblz4-dev (FST waveforms).
APT_PACKAGES := iverilog ccache liblz4-dev

.DEFAULT_GOAL := help
.PHONY: help venv sim test lint formal synth bitstream bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "installing$$missing (apt)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing$$missing and not root: run 'sudo apt-get install$$missing'"; fi; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m tilemesh.toolchain
	touch $(STAMP)

venv: $(STAMP) ## create the virtual environment and install every tool (once)

sim: $(STAMP) ## the main job: random GEMMs on the PRESET mesh (Verilator) vs numpy, with a report
	$(BIN)/tilemesh sim --preset $(PRESET)

test: $(STAMP) ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup -q

lint: $(STAMP) ## ruff on the Python, verilator --lint-only on the generated Verilog
	$(BIN)/ruff check hdl sim tests boards
	$(BIN)/tilemesh lint --preset $(PRESET)

formal: $(STAMP) ## SymbiYosys proofs (FIFO, router)
	$(BIN)/python -m pytest -n $(JOBS) -q -m formal tests/formal

TARGET ?= ecp5
synth: $(STAMP) ## synthesis + place-and-route report for PRESET on TARGET (ice40|ecp5)
	$(BIN)/tilemesh synth --preset $(PRESET) --target $(TARGET)

bitstream: $(STAMP) ## bitstream of BOARD (icebreaker|ulx3s-85f) with its preset, under build/board
	$(BIN)/tilemesh build --board $(BOARD)

bench: $(STAMP) ## benchmarks: tables, JSON and plots under build/bench
	$(BIN)/tilemesh bench matrix
	$(BIN)/tilemesh bench noc
	$(BIN)/tilemesh bench gemm

clean: ## remove generated files (keeps the virtual environment)
	rm -rf build .pytest_cache
