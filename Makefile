# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(if $(wildcard $(HOME)/.cache/flordb-target),$(HOME)/.cache/flordb-target,$(CURDIR)/target)

.PHONY: test test-rust demo
test: test-rust

test-rust:
	cargo test --workspace --no-fail-fast
