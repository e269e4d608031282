# The two README commands. Both create/refresh .venv from the pinned set
# (pyproject.toml + constraints.txt) only when those files change.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT ?= results/quickstart
PYTEST_ARGS ?=
# Test processes (pytest-xdist): each file runs whole in one of them; 0 runs in this process.
TEST_WORKERS ?= 2

.PHONY: quickstart test lint format bench notebooks clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

## make quickstart: build the embedded data, train a tiny cascade, write videos + metrics to $(OUT)
quickstart: $(STAMP)
	$(BIN)/python -m cascade.quickstart --out=$(OUT)

## make test: lint + the test suite (pytest exit 5, "no tests ran", fails too)
test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

## make notebooks: JupyterLab on notebooks/; its "Python 3" kernel is this environment's python
NB_STAMP := $(VENV)/.notebooks-stamp
$(NB_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,notebooks]'
	touch $(NB_STAMP)

notebooks: $(NB_STAMP)
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check cascade configs experiments tests
	$(BIN)/ruff format --check cascade configs experiments tests

format: $(STAMP)
	$(BIN)/ruff format cascade configs experiments tests
	$(BIN)/ruff check --fix cascade configs experiments tests

bench: $(STAMP)
	$(BIN)/python -m cascade.bench --config=configs/keyframes.py:bench

clean-venv:
	rm -rf $(VENV)
