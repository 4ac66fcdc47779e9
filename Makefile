# One-command entry points. `make run ARGS="task=sr8 method=ddnm"` passes Hydra overrides.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: help install run test test-fast lint format schedules benchmark train clean

help:
	@echo "make run [ARGS=...]   set up .venv if needed and run the default experiment"
	@echo "make test             set up .venv if needed and run the test suite"
	@echo "make lint | format    ruff check / ruff format"
	@echo "make schedules        plot every lambda schedule to outputs/schedules.png"
	@echo "make benchmark        seconds per image of pinv, ddnm, rnsf and the sampler overhead"
	@echo "make train [ARGS=...] retrain the built-in prior"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python run.py $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schedules: install
	$(BIN)/python -m rnsf.schedules.plot outputs/schedules.png

benchmark: install
	$(BIN)/python benchmarks/bench_methods.py $(ARGS)

train: install
	$(BIN)/python train.py $(ARGS)

clean:
	rm -rf outputs/runs outputs/multirun .pytest_cache .ruff_cache
