# Developer tasks; `make` lists them. CI runs .ci/run, which builds the release wheel once.
.DEFAULT_GOAL := help
PYTHON ?= python3
DIST ?= dist

.PHONY: help
help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: build-dev
build-dev: ## build the extension into the source tree (maturin develop, optimized, no LTO)
	maturin develop --profile dev-opt

.PHONY: wheel
wheel: ## the release abi3 wheel for this machine's platform, into dist/
	maturin build --release -o $(DIST)

.PHONY: wheel-manylinux
wheel-manylinux: ## a manylinux_2_17 (manylinux2014) wheel from any Linux host, linked with zig
	$(PYTHON) -m pip install --quiet ziglang
	CARGO_ZIGBUILD_ZIG_PATH="$$($(PYTHON) -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')" \
	maturin build --release --zig --compatibility manylinux2014 -o $(DIST)

.PHONY: sdist
sdist: ## the source distribution, into dist/
	maturin sdist -o $(DIST)

.PHONY: check-wheel
check-wheel: ## install dist/'s wheel into a fresh venv without Rust on PATH and generate
	$(PYTHON) .ci/check_wheel.py $(firstword $(wildcard $(DIST)/rllm-*.whl))

.PHONY: format
format: ## format Rust and Python
	cargo fmt --all
	ruff format python tests .ci
	ruff check --fix python tests .ci

.PHONY: lint
lint: ## formatting, ruff, the extension's stubs (stubtest) and clippy
	cargo fmt --all -- --check
	ruff check python tests .ci
	ruff format --check python tests .ci
	$(PYTHON) -m mypy.stubtest rllm._rllm
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: test
test: ## Rust tests, then pytest (build the extension first: make build-dev)
	cargo test --workspace --exclude rllm-py -q
	cd tests && $(PYTHON) -m pytest -q -p no:cacheprovider .

.PHONY: bench
bench: ## llama-bench style speed of the default model
	$(PYTHON) -m rllm bench -m smollm2-135m -p 128 -n 32 -r 3

.PHONY: ci
ci: ## the whole CI run, as on a fresh clone
	bash .ci/run
