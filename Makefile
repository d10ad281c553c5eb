# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(if $(wildcard $(HOME)/.cache/flordb-target),$(HOME)/.cache/flordb-target,$(CURDIR)/target)

.PHONY: test test-rust test-python demo
test: test-rust test-python

# The C example test (ffi/tests/c_example.rs) links the cdylib, which
# `cargo test` alone does not build on a clean target directory.
test-rust:
	cargo build -p flordb-ffi --lib
	cargo test --workspace --no-fail-fast

# The Python package (pyproject.toml, python/) from a fresh virtual
# environment: pip install of the repository path, then pytest python/tests.
test-python:
	scripts/pytest.sh -q

# The main job (examples/quickstart/demo.sh) in a local virtual environment.
VENV ?= $(CURDIR)/.venv
PYTHON ?= python3
demo: $(VENV)/.installed
	examples/quickstart/demo.sh $(VENV)/bin/python $(CURDIR)/demo-output

$(VENV)/.installed: pyproject.toml $(shell find ffi/src flordb/src flor-*/src python/flordb -type f 2>/dev/null)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet . numpy scikit-learn
	touch $@
