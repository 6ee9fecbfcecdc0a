# make train: the default agent (IMPALA) on its default env (CartPole-v1), locally.
# make test:  the whole suite.  make test-fast: without the slow learning runs.
# Each target creates and fills .venv when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test test-fast bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT=constraints.txt $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

train: $(STAMP)
	$(BIN)/rltpu train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/cartpole.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
