# zeroserve: `make run` serves the example app on an embedded local cluster,
# `make test` runs the lint checks and the whole test suite (`make test-unit` its unit tier),
# `make lint` the checks alone (ruff, and mypy on the packages it is clean on), `make bench`
# the benchmarks (vs_ray.py installs Ray Serve into its own virtualenv under ~/.cache/zeroserve-bench), `make chaos` the fault drills and hostile HTTP (tests/chaos, part of `make test` too)
# with the drill table, `make image` the container images (zeroserve:latest, zeroserve:examples;
# needs a Docker daemon and debootstrap, as root: see deploy/docker/).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Packages type-checked by `make lint` (serve joins when it is clean).
TYPED := actors cluster proxy serve

.PHONY: install run test test-unit lint bench chaos image clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

run: install
	$(BIN)/python examples/serve_app.py

test: lint
	$(BIN)/python -m pytest -q tests

test-unit: install  # logic only, no processes: seconds
	$(BIN)/python -m pytest -q tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy $(TYPED)

bench: install
	$(BIN)/python benchmarks/actor_calls.py
	$(BIN)/python benchmarks/cluster_scale.py
	$(BIN)/python benchmarks/handle_calls.py
	$(BIN)/python benchmarks/payloads.py
	$(BIN)/python benchmarks/http_noop.py
	$(BIN)/python benchmarks/http_tail.py
	$(BIN)/python benchmarks/http_payload.py
	$(BIN)/python benchmarks/batching.py
	$(BIN)/python benchmarks/pipeline_http.py
	$(BIN)/python benchmarks/metrics_scrape.py
	$(BIN)/python benchmarks/head_state.py
	$(BIN)/python benchmarks/reconcile_cost.py
	$(BIN)/python benchmarks/control_plane.py
	$(BIN)/python benchmarks/vs_ray.py
	$(BIN)/python benchmarks/multiplexing.py
	$(BIN)/python benchmarks/scale_to_zero.py
	$(BIN)/python benchmarks/dashboard_cpu.py

chaos: install  # tests/chaos alone (~5 min), then the drill table it measured
	$(BIN)/python benchmarks/drills.py

image: install  # a Debian base made by debootstrap once per machine, then the Dockerfile's two targets
	$(BIN)/python deploy/docker/build_image.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
