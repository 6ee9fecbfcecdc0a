# make train: the default agent (IMPALA) on its default env (CartPole-v1), locally.
# make test:  the whole suite (the fast tests, then the slow learning runs).
#             make test-fast: without the slow learning runs.
# make dist:  an sdist and a wheel in dist/ (python -m build).
# make test-compat: the fast tests (but those marked jax_independent) against what a Colab
#                   TPU runtime preinstalls (jax 0.7.2, flax 0.11.2, ...;
#                   constraints-colab.txt), in .venv-compat,
#                   and launch/colab.ipynb run from a wheel of the checkout on those packages.
# Each target creates and fills its venv when it is missing or pyproject.toml changed.
# uv installs (pip takes minutes where uv takes seconds, to the same versions); it reads none
# of pip's settings: where a pip.conf names a private index, `make ... INSTALL=pip` uses pip.
# uv compiles the bytecode at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (this
# machine and CI set it) nothing else would, and every process of the suite (each Ray worker,
# each CLI run) would compile jax, ray and flax from source: 9 s an import instead of 3.
# The fast tests run in JOBS processes (pytest-xdist; JOBS=0: in pytest's own), each taking
# the next test when it is free. Much of their time is spent waiting (on Ray, on a process
# starting, on a sleep): on 2 cores two processes ran them in 7.8 minutes against 11.3 in one
# (2026-12-02, load 1-4); on 2026-12-04 the two kept 91% of two cores busy. The slow tests
# (learning runs) keep the CPU busy, 76% of two cores in one process (2026-12-04): in two
# processes they ran at a load of 9, and a run stopped by SIGTERM while starting took 35 s to
# its final checkpoint against its 30 s budget (a spot VM's grace); they run in one.
JOBS ?= 2
XDIST = -n $(JOBS) --dist load --maxschedchunk 1
PYTHON ?= python3
INSTALL ?= uv
$(if $(filter-out uv pip,$(INSTALL)),$(error INSTALL=$(INSTALL): use INSTALL=uv (the default) or INSTALL=pip))
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

COMPAT := .venv-compat
COMPAT_STAMP := $(COMPAT)/.installed

# $(call install,VENV,CONSTRAINTS): rltpu editable, with its test extras, into VENV.
ifeq ($(INSTALL),uv)
install = $(1)/bin/python -m pip install --quiet --upgrade pip uv==$(UV_VERSION) \
	&& $(1)/bin/uv pip install --quiet --compile-bytecode --python $(1)/bin/python -c $(2) -e '.[test]'
else
install = $(1)/bin/python -m pip install --quiet --upgrade pip \
	&& PIP_CONSTRAINT=$(2) $(1)/bin/python -m pip install --quiet -e '.[test]'
endif

.PHONY: train test test-fast test-compat bench bench-anakin dist clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call install,$(VENV),constraints.txt)
	touch $@

train: $(STAMP)
	$(BIN)/rltpu train $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow" --durations=30
	$(BIN)/python -m pytest -q -m slow --durations=30

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

$(COMPAT_STAMP): pyproject.toml constraints-colab.txt
	test -x $(COMPAT)/bin/python || $(PYTHON) -m venv $(COMPAT)
	$(call install,$(COMPAT),constraints-colab.txt)
	touch $@

test-compat: $(COMPAT_STAMP)
	$(COMPAT)/bin/python -c "import jax, flax, optax, orbax.checkpoint as o, numpy; print('compat lane: jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'numpy', numpy.__version__)"
	$(COMPAT)/bin/python -m pytest -q $(XDIST) -m "not slow and not jax_independent" --durations=30
	# The notebook's end-to-end test (slow) needs this lane's packages: it skips elsewhere.
	$(COMPAT)/bin/python -m pytest -q -m slow tests/test_colab_notebook.py

bench: $(STAMP)
	$(BIN)/python bench/cartpole.py $(ARGS)

bench-anakin: $(STAMP)
	$(BIN)/python bench/anakin.py $(ARGS)

# The sdist first, and the wheel built from it (python -m build's default): a wheel that
# builds only from the checkout would hide files missing from the sdist.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf $(VENV) $(COMPAT) *.egg-info dist build
