# normlab: `make figures` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# worker processes per sweep for `make figures` (the results do not depend on it)
JOBS ?= 2

.PHONY: figures figures-quick slides handouts handouts-quick test lint format lab bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The editable install runs with -qq: setuptools' advisory box about editable installs is not
# for users, and failures still show.
$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install -qq --no-deps -e .
	touch $@

$(TEST_STAMP): requirements-test.txt $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-test.txt
	touch $@

figures: $(STAMP)  ## regenerate every lecture figure into figures/
	MPLBACKEND=Agg $(BIN)/python -m normlab figures --jobs $(JOBS) --out figures

figures-quick: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m normlab figures --quick --jobs $(JOBS) --out figures-quick

slides: $(STAMP)  ## the lecture slides (16:9, one message each) and slides/deck.pdf, from figures/*.json
	MPLBACKEND=Agg $(BIN)/python -m normlab slides --out slides

# The notebooks read the runs that `make figures` (`figures-quick`) cached and compute the rest
handouts: $(STAMP)  ## every notebook (lessons, solutions) run, as HTML with its figures, into handouts/
	NORMLAB_CACHE=figures/.cache $(BIN)/python -m normlab.handouts --out handouts

handouts-quick: $(STAMP)
	NORMLAB_CACHE=figures-quick/.cache $(BIN)/python -m normlab.handouts --quick --out handouts-quick

test: $(TEST_STAMP)  ## the whole test suite (parity tests run when torch is installed)
	# two processes, one test file each at a time (the machine has two cores)
	MPLBACKEND=Agg $(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lab: $(STAMP)
	$(BIN)/python -m jupyter lab notebooks/

bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_layers.py
	$(BIN)/python benchmarks/bench_conv.py
	$(BIN)/python benchmarks/bench_transformer.py --profile

clean:
	rm -rf $(VENV) .pytest_cache figures-quick figures-custom slides handouts handouts-quick
