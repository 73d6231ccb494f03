# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ckptd-installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml deploy/install.sh
	PYTHON=$(PYTHON) deploy/install.sh $(VENV) dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ckptd demo

lint: $(STAMP)
	$(BIN)/ruff check ckptd tests benchmarks migrations
	$(BIN)/ruff format --check ckptd tests benchmarks migrations

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
